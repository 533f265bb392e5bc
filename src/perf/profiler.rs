//! Where the time of a UNet pass goes (issue 9, speed): an opt-in profiler that the networks'
//! leaf operations (convolution, linear, attention core, normalisation, GEGLU, f16 widening)
//! and the UNet's layers (resnet, transformer, resampler) report to.
//!
//! While a [`Profiler`] lives on a thread, every [`op`] / [`layer`] scope on that thread waits
//! for the device to finish all earlier work, runs, waits again and adds the wall time to its
//! kind. Waiting drains the GPU's queue at every operation, so the profiled pass is slower than
//! a plain one and its shares are what matters; the totals of [`crate::perf::synthetic`] are measured
//! without it. When no profiler is active a scope is one thread-local check. Native only: in
//! the browser (no blocking device wait) scopes just run their closure.

use burn::tensor::Device;
use serde::Serialize;

/// Time spent in one kind of operation or layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindTime {
    /// What ran, e.g. `conv 3×3`, `attention core (QKᵀ, softmax, ·V)`, `resnet`.
    pub kind: String,
    /// Wall milliseconds, summed.
    pub millis: f64,
    /// How many times it ran.
    pub count: usize,
}

#[cfg(not(target_arch = "wasm32"))]
mod active {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// (ops, layers): kind → (seconds, count).
    pub(super) type Tally = BTreeMap<&'static str, (f64, usize)>;

    thread_local! {
        pub(super) static TALLY: RefCell<Option<(Tally, Tally)>> = const { RefCell::new(None) };
    }
}

/// Runs `f` as one operation of `kind` on `device`.
#[inline]
pub fn op<T>(kind: &'static str, device: &Device, f: impl FnOnce() -> T) -> T {
    scope(false, kind, device, f)
}

/// Runs `f` as one UNet layer of `kind` (`resnet`, `transformer`, …).
#[inline]
pub fn layer<T>(kind: &'static str, device: &Device, f: impl FnOnce() -> T) -> T {
    scope(true, kind, device, f)
}

#[cfg(not(target_arch = "wasm32"))]
fn scope<T>(is_layer: bool, kind: &'static str, device: &Device, f: impl FnOnce() -> T) -> T {
    let on = active::TALLY.with(|t| t.borrow().is_some());
    if !on {
        return f();
    }
    // A failed wait shows up in the timed pass itself; the profile only needs the barrier.
    let _ = device.sync();
    let started = std::time::Instant::now();
    let out = f();
    let _ = device.sync();
    let seconds = started.elapsed().as_secs_f64();
    active::TALLY.with(|t| {
        if let Some((ops, layers)) = t.borrow_mut().as_mut() {
            let entry = if is_layer { layers } else { ops }.entry(kind).or_default();
            entry.0 += seconds;
            entry.1 += 1;
        }
    });
    out
}

#[cfg(target_arch = "wasm32")]
fn scope<T>(_is_layer: bool, _kind: &'static str, _device: &Device, f: impl FnOnce() -> T) -> T {
    f()
}

/// Collects the scopes run on this thread until [`finish`](Self::finish) (or drop).
pub struct Profiler {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// What a [`Profiler`] collected, slowest kind first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// By leaf operation.
    pub ops: Vec<KindTime>,
    /// By UNet layer.
    pub layers: Vec<KindTime>,
}

impl Profiler {
    /// Starts collecting on this thread (native only; in the browser nothing is collected).
    pub fn start() -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        active::TALLY.with(|t| *t.borrow_mut() = Some(Default::default()));
        Self {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Stops collecting and returns the times.
    pub fn finish(self) -> Profile {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let taken = active::TALLY.with(|t| t.borrow_mut().take());
            if let Some((ops, layers)) = taken {
                return Profile {
                    ops: sorted(ops),
                    layers: sorted(layers),
                };
            }
        }
        Profile::default()
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        active::TALLY.with(|t| *t.borrow_mut() = None);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn sorted(tally: std::collections::BTreeMap<&'static str, (f64, usize)>) -> Vec<KindTime> {
    let mut v: Vec<KindTime> = tally
        .into_iter()
        .map(|(kind, (seconds, count))| KindTime {
            kind: kind.to_string(),
            millis: seconds * 1e3,
            count,
        })
        .collect();
    v.sort_by(|a, b| b.millis.total_cmp(&a.millis));
    v
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    #[test]
    fn scopes_are_counted_only_while_profiling() {
        let (device, _) = crate::device::cpu();
        let x = Tensor::<2>::ones([8, 8], &device);
        let _ = op("matmul", &device, || x.clone().matmul(x.clone()));
        let profiler = Profiler::start();
        for _ in 0..3 {
            let _ = op("matmul", &device, || x.clone().matmul(x.clone()));
        }
        let _ = layer("block", &device, || x.clone() + 1.0);
        let profile = profiler.finish();
        assert_eq!(profile.ops.len(), 1);
        assert_eq!(
            (profile.ops[0].kind.as_str(), profile.ops[0].count),
            ("matmul", 3)
        );
        assert!(profile.ops[0].millis >= 0.0);
        assert_eq!(
            (profile.layers[0].kind.as_str(), profile.layers[0].count),
            ("block", 1)
        );
        // Nothing is collected after finish.
        let _ = op("matmul", &device, || x.clone().matmul(x.clone()));
        assert_eq!(Profiler::start().finish(), Profile::default());
    }
}
