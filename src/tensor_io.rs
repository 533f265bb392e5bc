//! Tensors to the host and numbers compared: the one readback every face uses
//! (`into_data_async`, the only readback that works in wasm) and the error measures the parity
//! tests and benchmarks state their tolerances in (docs/ARCHITECTURE.md §6).

use burn::tensor::Tensor;

use crate::{Error, Result};

/// Reads a float tensor back to the host as f32, asynchronously (works in the browser).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::from_device_failure(format!("{e:?}")))?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// Largest absolute difference divided by the largest magnitude of `reference` (0 when equal).
pub fn relative_error(actual: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(
        actual.len(),
        reference.len(),
        "compared vectors differ in length"
    );
    let scale = reference
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    if actual.iter().chain(reference).any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let diff = actual
        .iter()
        .zip(reference)
        .fold(0f32, |m, (a, r)| m.max((a - r).abs()));
    diff / scale
}

/// The worst element of an element-wise comparison `|actual − reference| ≤ atol + rtol·|reference|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    /// Flat index of the element that exceeds its bound by the largest margin.
    pub index: usize,
    /// Its value in `actual`.
    pub actual: f32,
    /// Its value in `reference`.
    pub reference: f32,
    /// How many elements exceed their bound.
    pub count: usize,
}

/// Checks `|actual[i] − reference[i]| ≤ atol + rtol·|reference[i]|` for every `i` (NaN never
/// passes), as `numpy.allclose` does. Unlike [`relative_error`] it sees errors in small
/// entries that a max-norm hides behind the largest magnitude. `None` when all pass.
pub fn elementwise_mismatch(
    actual: &[f32],
    reference: &[f32],
    atol: f32,
    rtol: f32,
) -> Option<Mismatch> {
    assert_eq!(
        actual.len(),
        reference.len(),
        "compared vectors differ in length"
    );
    let mut worst: Option<(f32, Mismatch)> = None;
    let mut count = 0;
    for (index, (&a, &r)) in actual.iter().zip(reference).enumerate() {
        let excess = (a - r).abs() - (atol + rtol * r.abs());
        let bad = excess > 0.0 || excess.is_nan();
        if !bad {
            continue;
        }
        count += 1;
        let excess = if excess.is_nan() {
            f32::INFINITY
        } else {
            excess
        };
        if worst.as_ref().is_none_or(|(w, _)| excess > *w) {
            let mismatch = Mismatch {
                index,
                actual: a,
                reference: r,
                count: 0,
            };
            worst = Some((excess, mismatch));
        }
    }
    worst.map(|(_, m)| Mismatch { count, ..m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_mismatch_sees_small_entries_a_max_norm_hides() {
        let reference = [1000.0, 1e-3, -2.0];
        let actual = [1000.0, 2e-3, -2.0];
        // Max-norm relative error: 1e-3 / 1000 = 1e-6, passes a 1e-4 tolerance.
        assert!(relative_error(&actual, &reference) < 1e-5);
        let m =
            elementwise_mismatch(&actual, &reference, 1e-5, 1e-4).expect("entry 1 is off by 100 %");
        assert_eq!((m.index, m.count), (1, 1));
        assert_eq!((m.actual, m.reference), (2e-3, 1e-3));
    }

    #[test]
    fn elementwise_mismatch_passes_within_bounds_and_fails_on_nan() {
        assert_eq!(
            elementwise_mismatch(&[1.0001, -5e-6], &[1.0, 0.0], 1e-5, 1e-4),
            None
        );
        let m = elementwise_mismatch(&[f32::NAN, 0.0, 9.0], &[0.0, 0.0, 0.0], 1.0, 0.0).unwrap();
        assert_eq!((m.index, m.count), (0, 2));
    }
}
