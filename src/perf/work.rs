//! Floating-point work counted where it is launched (docs/ARCHITECTURE.md §5): the layers'
//! entry points ([`crate::kernels::layers::linear`], [`crate::kernels::layers::conv2d`]) and the
//! attention core ([`crate::models::attention::scaled_dot_product_attention`]) add the
//! multiply-accumulate work of every call, from the shapes actually run (2 FLOPs per
//! multiply-add; normalisations, activations and other elementwise work are not counted —
//! under 1 % of a UNet pass). A leaf like [`super::profiler`]: when nothing counts, a call is one
//! thread-local check.
//!
//! What is counted is every forward computation, including the forwards a recomputing
//! backward runs again (`exec::recompute`); the autodiff backward's own kernels are not seen
//! here (for input-only gradients, as in GoodDrag's two gradient passes, they cost about one
//! forward of the same layers, twice that in attention's two matrix products).

use std::cell::Cell;

thread_local! {
    static COUNTER: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Adds `flops` to the running count, if one is running on this thread.
pub fn add(flops: u64) {
    COUNTER.with(|c| {
        if let Some(v) = c.get() {
            c.set(Some(v + flops));
        }
    });
}

/// FLOPs of a matrix product `[rows, inner] · [inner, cols]`.
pub fn matmul_flops(rows: usize, inner: usize, cols: usize) -> u64 {
    2 * rows as u64 * inner as u64 * cols as u64
}

/// Runs `f` and returns its result with the FLOPs it launched on this thread. Counts nest: an
/// outer count includes an inner one.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let running = Count::start();
    let out = f();
    (out, running.finish())
}

/// A running count that survives awaits and early returns: [`Count::start`] begins it,
/// [`Count::finish`] returns its FLOPs (added to any outer count); dropped unfinished (an
/// error returned mid-phase) it restores the outer count as it was.
pub struct Count {
    outer: Option<Option<u64>>,
}

impl Count {
    /// Starts counting on this thread.
    pub fn start() -> Self {
        Self {
            outer: Some(COUNTER.with(|c| c.replace(Some(0)))),
        }
    }

    /// Stops and returns the FLOPs launched since [`start`](Self::start).
    pub fn finish(mut self) -> u64 {
        let outer = self.outer.take().flatten();
        let inner = COUNTER.with(|c| c.replace(outer)).unwrap_or(0);
        add(inner);
        inner
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        if let Some(outer) = self.outer.take() {
            COUNTER.with(|c| c.set(outer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nest_and_nothing_is_counted_outside() {
        add(5);
        let ((), outer) = count(|| {
            add(3);
            let ((), inner) = count(|| add(matmul_flops(2, 3, 4)));
            assert_eq!(inner, 48);
        });
        assert_eq!(outer, 51);
        let ((), none) = count(|| {});
        assert_eq!(none, 0);
        let c = Count::start();
        add(7);
        let ((), outer) = count(|| {
            let inner = Count::start();
            add(2);
            drop(inner); // abandoned: its work is not added anywhere
        });
        assert_eq!(outer, 0);
        assert_eq!(c.finish(), 7);
    }
}
