//! Row bands: the VAE decoder's full-resolution layers evaluated exactly on horizontal bands of
//! the activation, so that no single buffer exceeds the device's binding limit.
//!
//! At 512×512 the SD 1.5 decoder's last up blocks hold 256 channels × 512² = 256 MiB in f32,
//! twice WebGPU's default `maxStorageBufferBindingSize`; such an allocation fails when its
//! kernel runs ("can't allocate buffer"). Here each of those activations is a list of
//! `[b, c, rows, w]` tensors stacked along the height, and every layer is computed so the
//! result equals the whole-tensor computation (not a tiled approximation with seams):
//! - 3×3 convolutions read one halo row from each neighbouring band (zeros at the image edge,
//!   which is the convolution's own zero padding);
//! - GroupNorm statistics are taken over all bands (two passes: mean, then centred variance);
//! - nearest ×2 upsampling, SiLU, residual additions and 1×1 convolutions are per band.
//!
//! Only inference uses this (decoding is never differentiated). The blocks' `forward_bands`
//! live beside their `forward` in `models::resnet` and `models::unet_2d_blocks`.

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::ops::ConvOptions;

use super::layers::widen;
use super::{conv_gemm, statistics};
use crate::perf::work;

/// An activation `[b, c, h, w]` held as bands of rows, top to bottom.
#[derive(Debug, Clone)]
pub struct Bands(Vec<Tensor<4>>);

impl Bands {
    /// Splits `x` into `n` bands of (nearly) equal height (at least one row each).
    pub fn split(x: Tensor<4>, n: usize) -> Self {
        let [_, _, h, _] = x.dims();
        let n = n.clamp(1, h.max(1));
        let rows = h.div_ceil(n);
        let mut parts = Vec::with_capacity(n);
        let mut start = 0;
        while start < h {
            let len = rows.min(h - start);
            parts.push(x.clone().narrow(2, start, len));
            start += len;
        }
        Self(parts)
    }

    /// Splits every band into up to `n` bands.
    pub fn refine(self, n: usize) -> Self {
        if n <= 1 {
            return self;
        }
        Self(
            self.0
                .into_iter()
                .flat_map(|band| Self::split(band, n).0)
                .collect(),
        )
    }

    /// The tallest band's shape.
    pub fn largest_dims(&self) -> [usize; 4] {
        self.0
            .iter()
            .map(|t| t.dims())
            .max_by_key(|d| d[2])
            .unwrap_or([0; 4])
    }

    /// The whole tensor (only when it fits one buffer).
    pub fn merge(self) -> Tensor<4> {
        Tensor::cat(self.0, 2)
    }

    /// `f` applied to each band (for operations that act on rows independently).
    pub fn map(self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self(self.0.into_iter().map(f).collect())
    }

    /// Band-wise sum of two activations split the same way (a residual addition).
    pub fn add_bands(self, other: Self) -> Self {
        Self(
            self.0
                .into_iter()
                .zip(other.0)
                .map(|(a, b)| a + b)
                .collect(),
        )
    }

    /// A 3×3 (or any odd k×k, stride 1, "same" padding) convolution: each band is extended by
    /// k/2 rows of its neighbours (zeros at the top and bottom of the image) and convolved
    /// without row padding.
    pub fn conv(&self, conv: &Conv2d) -> Self {
        let [k, _] = conv.kernel_size;
        let halo = k / 2;
        // Weights stored as f16 are widened to the activations' dtype (see `kernels::layers`).
        let Some(dtype) = self.0.first().map(Tensor::dtype) else {
            return Self(Vec::new());
        };
        let weight = widen(conv.weight.val(), dtype);
        let bias = conv.bias.as_ref().map(|b| widen(b.val(), dtype));
        let options = ConvOptions::new([1, 1], [0, halo], [1, 1], 1);
        let [c_out, c_in, kh, kw] = weight.dims();
        // The work counter sees each band's convolution, as `layers::conv2d` counts a whole one.
        let counted = |y: Tensor<4>| {
            let [b, _, h, w] = y.dims();
            work::add(work::matmul_flops(b * h * w, c_in * kh * kw, c_out));
            y
        };
        let n = self.0.len();
        let out = (0..n)
            .map(|i| {
                let band = &self.0[i];
                if halo == 0 {
                    return counted(conv_gemm::conv2d(
                        band.clone(),
                        weight.clone(),
                        bias.clone(),
                        options.clone(),
                    ));
                }
                let [b, c, _, w] = band.dims();
                let zeros = || Tensor::zeros([b, c, halo, w], &band.device());
                let above = if i > 0 {
                    self.rows_before(i, halo)
                } else {
                    zeros()
                };
                let below = if i + 1 < n {
                    self.rows_after(i, halo)
                } else {
                    zeros()
                };
                let extended = Tensor::cat(vec![above, band.clone(), below], 2);
                counted(conv_gemm::conv2d(
                    extended,
                    weight.clone(),
                    bias.clone(),
                    options.clone(),
                ))
            })
            .collect();
        Self(out)
    }

    /// The `halo` rows just above band `i` (from the bands before it).
    fn rows_before(&self, i: usize, halo: usize) -> Tensor<4> {
        let mut need = halo;
        let mut pieces = Vec::new();
        let mut j = i;
        while need > 0 && j > 0 {
            j -= 1;
            let h = self.0[j].dims()[2];
            let take = need.min(h);
            pieces.push(self.0[j].clone().narrow(2, h - take, take));
            need -= take;
        }
        pieces.reverse();
        let t = Tensor::cat(pieces, 2);
        if need > 0 {
            let zeros = t.zeros_like().narrow(2, 0, 1).repeat_dim(2, need);
            Tensor::cat(vec![zeros, t], 2)
        } else {
            t
        }
    }

    /// The `halo` rows just below band `i` (from the bands after it).
    fn rows_after(&self, i: usize, halo: usize) -> Tensor<4> {
        let mut need = halo;
        let mut pieces = Vec::new();
        let mut j = i + 1;
        while need > 0 && j < self.0.len() {
            let h = self.0[j].dims()[2];
            let take = need.min(h);
            pieces.push(self.0[j].clone().narrow(2, 0, take));
            need -= take;
            j += 1;
        }
        let t = Tensor::cat(pieces, 2);
        if need > 0 {
            let zeros = t.zeros_like().narrow(2, 0, 1).repeat_dim(2, need);
            Tensor::cat(vec![t, zeros], 2)
        } else {
            t
        }
    }

    /// GroupNorm with statistics over every band ([`statistics::moments`], as exact as on the
    /// whole tensor), then each band normalised with the shared statistics.
    pub fn group_norm(&self, norm: &GroupNorm) -> Self {
        let g = norm.num_groups;
        let grouped = |x: &Tensor<4>| {
            let [b, c, h, w] = x.dims();
            x.clone().reshape([b, g, (c / g) * h * w])
        };
        let pieces: Vec<Tensor<3>> = self.0.iter().map(grouped).collect();
        let (mean, var) = statistics::moments(&pieces);
        self.clone().map(|x| {
            let shape = x.dims();
            statistics::group_normalise(norm, grouped(&x), mean.clone(), var.clone()).reshape(shape)
        })
    }

    /// SiLU per band.
    pub fn silu(self) -> Self {
        self.map(silu)
    }
}

/// How many bands an activation of `elements` f32 values with `rows` rows needs so that each
/// band, with one halo row above and below, fits `max_bytes`.
pub fn bands_needed(elements: usize, rows: usize, max_bytes: usize) -> usize {
    let bytes = elements * 4;
    if bytes <= max_bytes || rows == 0 {
        return 1;
    }
    let row_bytes = bytes.div_ceil(rows);
    // Band rows r with (r + 2) · row_bytes ≤ max_bytes.
    let max_rows = (max_bytes / row_bytes).saturating_sub(2).max(1);
    rows.div_ceil(max_rows)
}
