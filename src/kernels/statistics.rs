//! Normalisation statistics whose rounding error does not grow with the group size
//! (docs/ARCHITECTURE.md §3, "Statistics").
//!
//! GroupNorm (paper: SD 1.5's ResNet blocks and the VAE) averages over `channels / groups · h · w`
//! values: 1,048,576 of them in the VAE encoder's first level at 512×512. A device reduction that
//! adds them as one running f32 sum (burn-flex without SIMD does) loses ~17 bits: the latent
//! of a 512×512 photo came out 5.9e-4 (relative) away from PyTorch's, and a group with a large
//! mean and a small spread (mean 1000, deviation 0.1) got a variance 10⁴ times too large,
//! because the centring used a mean that was off by 1 %.
//!
//! Here every long sum is a tree of short ones: a row of more than [`DIRECT`] values is cut into
//! blocks of [`BLOCK`] values, each block is summed by the device, and the block sums are summed
//! the same way until one value is left. Every device reduction then adds at most [`BLOCK`]
//! terms, whatever the device does inside it (a running sum, SIMD lanes, a workgroup tree), so
//! the relative error is ~ε·√BLOCK per level over ⌈log_BLOCK n⌉ levels (measured against f64 in
//! `tests/statistics.rs`). Rows of ≤ [`DIRECT`] values are one reduction. The statistics are
//! two-pass, as PyTorch's: the mean, then the mean of the squared deviations from it (never
//! E[x²] − E[x]², which cancels).
//!
//! The extra levels read 1/BLOCK, 1/BLOCK², … of the data: the cost is a few small kernel
//! launches per normalisation of a large group, no extra pass over the activation.

use burn::nn::GroupNorm;
use burn::tensor::{DType, FloatDType, Tensor};

/// Rows up to this length are summed by one device reduction. The device reductions' error at
/// this length is ≤ 1.8e-6 relative (measured: cubecl on lavapipe), far inside f32 parity, and
/// one kernel instead of a tree keeps dispatch-bound devices (SwiftShader, lavapipe) as fast as
/// burn's own GroupNorm on the small groups of SD's deepest levels and of the tiny test models.
pub const DIRECT: usize = 4096;

/// A longer row is cut into blocks of at most this many values, and the block sums are summed
/// the same way down to one value: no device reduction then adds more than `BLOCK` terms.
pub const BLOCK: usize = 64;

/// Sum over the last dimension (kept, with size 1): one reduction for a row of ≤ [`DIRECT`]
/// values, else a tree of sums of ≤ [`BLOCK`] terms. Differentiable (only reshapes, sums and a
/// zero padding).
pub fn blocked_sum(x: Tensor<3>) -> Tensor<3> {
    if x.dims()[2] <= DIRECT {
        x.sum_dim(2)
    } else {
        tree_sum(x)
    }
}

/// Sum over the last dimension as a tree of sums of ≤ [`BLOCK`] terms.
fn tree_sum(x: Tensor<3>) -> Tensor<3> {
    let [b, g, n] = x.dims();
    if n <= BLOCK {
        return x.sum_dim(2);
    }
    let block = block_size(n);
    let x = match n % block {
        0 => x,
        rest => {
            // Rare (no divisor of n between BLOCK/4 and BLOCK): pad with exact zeros.
            let pad = block - rest;
            let zeros = x.clone().narrow(2, 0, pad).zeros_like();
            Tensor::cat(vec![x, zeros], 2)
        }
    };
    let blocks = x.dims()[2] / block;
    let partial = x
        .reshape([b, g * blocks, block])
        .sum_dim(2)
        .reshape([b, g, blocks]);
    tree_sum(partial)
}

/// The block length for a row of `n > BLOCK` values: the largest divisor of `n` not above
/// [`BLOCK`] (no padding needed), or [`BLOCK`] itself (with padding) when every divisor that
/// small is below BLOCK/4 and would need many more levels.
fn block_size(n: usize) -> usize {
    let divisor = (1..=BLOCK)
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1);
    if divisor >= BLOCK / 4 { divisor } else { BLOCK }
}

/// Mean and population variance over the last dimension of the concatenation of `pieces`
/// (each `[b, g, n_i]`; one piece for a whole tensor, several for an activation held in row
/// bands), computed in f32 whatever the pieces' dtype: `([b, g, 1], [b, g, 1])`.
pub fn moments(pieces: &[Tensor<3>]) -> (Tensor<3>, Tensor<3>) {
    let count: usize = pieces.iter().map(|p| p.dims()[2]).sum();
    let total = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
        pieces
            .iter()
            .map(|p| blocked_sum(f(in_f32(p.clone()))))
            .reduce(|a, b| a + b)
            .expect("at least one piece")
    };
    let mean = total(&|p| p) / count as f64;
    let var = total(&|p| (p - mean.clone()).powi_scalar(2)) / count as f64;
    (mean, var)
}

/// `norm.forward(x)` with the statistics of [`moments`]: `(x − mean) / √(var + ε)`, then the
/// affine per channel. Equal to PyTorch's `group_norm` up to f32 rounding at any group size.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    let shape = x.dims();
    let g = norm.num_groups;
    let n = shape.iter().skip(1).product::<usize>() / g;
    let grouped: Tensor<3> = x.reshape([shape[0], g, n]);
    let (mean, var) = moments(std::slice::from_ref(&grouped));
    let normalised = group_normalise(norm, grouped, mean, var);
    normalised.reshape(shape)
}

/// `x` (`[b, g, n]`, channels major within each group) normalised with the given statistics and
/// the norm's affine applied per channel; the result has `x`'s shape and dtype.
pub(crate) fn group_normalise(
    norm: &GroupNorm,
    x: Tensor<3>,
    mean: Tensor<3>,
    var: Tensor<3>,
) -> Tensor<3> {
    let [b, g, n] = x.dims();
    let dtype = x.dtype();
    let inv_std = (var + norm.epsilon).sqrt().recip();
    let y = (in_f32(x) - mean) * inv_std;
    let y = if norm.affine {
        let c = norm.num_channels;
        let per_channel = |t: Tensor<1>| t.reshape([1, c, 1]);
        let y: Tensor<3> = y.reshape([b, c, n / (c / g)]);
        let y = match &norm.gamma {
            Some(gamma) => y * per_channel(in_f32(gamma.val())),
            None => y,
        };
        let y = match &norm.beta {
            Some(beta) => y + per_channel(in_f32(beta.val())),
            None => y,
        };
        y.reshape([b, g, n])
    } else {
        y
    };
    if dtype == DType::F32 {
        y
    } else {
        y.cast(dtype)
    }
}

/// `t` in f32 (a no-op when it already is): statistics and the normalisation run in f32.
fn in_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}
