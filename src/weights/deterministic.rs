//! Closed-form deterministic weights: every value is a function of the tensor's name, its shape
//! and the element's index that Rust and Python (numpy) evaluate bit for bit, so parity tests at
//! SD 1.5's real widths need no committed weights, only the expected outputs
//! (docs/ARCHITECTURE.md §6, `scripts/make_full_width_fixtures.py`).
//!
//! For tensor `name` with shape `s` (the file layout: Linear `[out, in]`, Conv2d
//! `[out, in, kh, kw]`), element `i` (row-major):
//!
//! ```text
//! seed   = FNV-1a-64(UTF-8 bytes of name)
//! z      = splitmix64(seed + i · 0x9E3779B97F4A7C15)          (wrapping u64 arithmetic)
//! v      = 2 · (z >> 40) / 2²⁴ − 1                              (exact in f32, in [−1, 1))
//! value  = 1 + 0.1·v            norm weights (name has "norm" or is a LayerNorm, rank 1, ends ".weight")
//!          0.1·v                other rank-1 tensors (biases)
//!          v · √(3 / fan_in)    rank ≥ 2, fan_in = product of s[1..]   (unit-variance outputs)
//! ```
//!
//! The products and sums are single f32 operations on f32 operands (`√(3 / fan_in)` is computed
//! in f64 and rounded to f32 once), so numpy's float32 arithmetic gives the same bits.

use burn::module::Module;

use super::load::{Component, WeightLoader};
use super::safetensors::{Dtype, TensorInfo};
use crate::error::Result;
use crate::rng::{FNV1A64_OFFSET, SPLITMIX_GAMMA, fnv1a64, splitmix64_mix};

/// FNV-1a-64 of a tensor name: the seed of its values.
fn name_seed(name: &str) -> u64 {
    fnv1a64(FNV1A64_OFFSET, name.as_bytes())
}

/// Whether a rank-1 tensor is a normalisation's scale (GroupNorm / LayerNorm `weight`).
fn is_norm_scale(name: &str) -> bool {
    let leaf_module = name.rsplit('.').nth(1).unwrap_or("");
    name.ends_with(".weight") && (leaf_module.contains("norm") || leaf_module.contains("ln_"))
}

/// The values of tensor `name` with file-layout `shape`, as defined in the module docs.
pub fn deterministic_tensor(name: &str, shape: &[usize]) -> Vec<f32> {
    let seed = name_seed(name);
    let n: usize = shape.iter().product();
    let unit = |i: usize| {
        let z = splitmix64_mix(seed.wrapping_add((i as u64).wrapping_mul(SPLITMIX_GAMMA)));
        2.0 * ((z >> 40) as f32 / (1u64 << 24) as f32) - 1.0
    };
    if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let scale = (3.0 / fan_in as f64).sqrt() as f32;
        (0..n).map(|i| unit(i) * scale).collect()
    } else if is_norm_scale(name) {
        (0..n).map(|i| 1.0 + 0.1 * unit(i)).collect()
    } else {
        (0..n).map(|i| 0.1 * unit(i)).collect()
    }
}

/// Fills every parameter of `module` (a freshly built model: its parameters are still
/// uninitialised) with [`deterministic_tensor`] values through the real [`WeightLoader`] (key
/// names, shapes, Linear transposition and all), one tensor at a time so that only one f32 copy
/// of a tensor is ever on the host beside the model.
pub fn load_deterministic<M: Module>(module: M, component: Component) -> Result<M> {
    let mut loader = WeightLoader::new(module, component, "deterministic weights");
    for (name, shape) in loader.expected() {
        let bytes: Vec<u8> = deterministic_tensor(&name, &shape)
            .into_iter()
            .flat_map(f32::to_le_bytes)
            .collect();
        let info = TensorInfo {
            name,
            dtype: Dtype::F32,
            shape,
            start: 0,
            end: bytes.len() as u64,
        };
        loader.load_tensors([(&info, bytes.as_slice())])?;
    }
    loader.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_a_fixed_function_of_name_and_index() {
        // Pinned (printed by scripts/make_full_width_fixtures.py's numpy definition) so that a
        // change here, which would silently desynchronise the committed full-width fixtures,
        // fails first; the script asserts the same hash.
        assert_eq!(name_seed("conv_in.weight"), 0x1ce6_9906_bdc5_74a7);
        let as_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
        assert_eq!(
            as_f64(deterministic_tensor("conv_in.weight", &[2, 3, 1, 1])),
            [
                -0.39869225025177,
                0.14250004291534424,
                0.7665290832519531,
                -0.8199419975280762,
                -0.39537549018859863,
                -0.34525787830352783
            ]
        );
        assert_eq!(
            as_f64(deterministic_tensor("norm1.weight", &[4])),
            [
                0.9129988551139832,
                0.9878668785095215,
                1.064860224723816,
                0.9384245276451111
            ]
        );
        assert_eq!(
            as_f64(deterministic_tensor("conv_in.bias", &[4])),
            [
                0.05884220823645592,
                -0.051596272736787796,
                0.08521347492933273,
                -0.05779838562011719
            ]
        );
    }
}
