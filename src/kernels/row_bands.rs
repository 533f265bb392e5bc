//! Row bands: the VAE decoder's large layers evaluated exactly on horizontal bands of the
//! activation, so that no single buffer exceeds the device's binding limit and no layer's
//! intermediate exists whole (docs/ARCHITECTURE.md §3, "Row bands").
//!
//! At 512×512 the SD 1.5 decoder's last up blocks hold 256 channels × 512² = 256 MiB in f32,
//! twice WebGPU's default `maxStorageBufferBindingSize`; such an allocation fails when its
//! kernel runs ("can't allocate buffer"). Here each of those activations is a list of
//! `[b, c, rows, w]` tensors stacked along the height, and every layer is computed so the
//! result equals the whole-tensor computation (not a tiled approximation with seams):
//! - 3×3 convolutions read one halo row from each neighbouring band (zeros at the image edge,
//!   which is the convolution's own zero padding);
//! - GroupNorm statistics are taken over all bands (two passes: mean, then centred variance);
//! - 1×1 convolutions and residual additions are per band.
//!
//! What a convolution's input is made from — GroupNorm + SiLU, or nearest ×2 upsampling — is
//! applied band by band (halo rows included) just before that band's convolution, so only a
//! band of it exists at a time. And every banded convolution consumes its input: a band is
//! dropped once no later band's halo reaches it, so input and output never both exist whole; a
//! ResNet's shortcut and residual addition ride along band by band
//! ([`Bands::norm_silu_conv_then`]). At 512×512 the decoder's activations went from 1.1 GiB
//! (whole tensors) to about 0.5 GiB (bands, copies per band); streaming took the decode's
//! measured peak down by another 0.25 GiB.
//!
//! Only inference uses this (decoding is never differentiated). The blocks' `forward_bands`
//! live beside their `forward` in `models::resnet` and `models::unet_2d_blocks`.

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::ops::ConvOptions;

use super::layers::widen;
use super::upsample::upsample_nearest2x;
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

    /// The bands' dtype (f32 for an empty activation).
    pub fn dtype(&self) -> burn::tensor::DType {
        self.0
            .first()
            .map_or(burn::tensor::DType::F32, Tensor::dtype)
    }

    /// A 3×3 (or any odd k×k, stride 1, "same" padding) convolution: each band is extended by
    /// k/2 rows of its neighbours (zeros at the top and bottom of the image) and convolved
    /// without row padding.
    pub fn conv(self, conv: &Conv2d) -> Self {
        self.conv_stream(conv, &Prologue::None, &mut |_, y| y)
    }

    /// `conv(silu(group_norm(x)))` without the normalised activation ever existing whole: the
    /// statistics are taken over every band, then each band and its halo rows are normalised
    /// just before their convolution (the same elementwise operations on the same rows as the
    /// whole-tensor layers).
    pub fn norm_silu_conv(self, norm: &GroupNorm, conv: &Conv2d) -> Self {
        self.norm_silu_conv_then(norm, conv, &mut |_, y| y)
    }

    /// [`norm_silu_conv`](Self::norm_silu_conv) whose output bands are `finish(input band,
    /// convolved band)`, band by band: a ResNet takes its shortcut from the input band and adds
    /// its residual there, so that neither needs a whole activation of its own.
    pub fn norm_silu_conv_then(
        self,
        norm: &GroupNorm,
        conv: &Conv2d,
        finish: &mut dyn FnMut(Tensor<4>, Tensor<4>) -> Tensor<4>,
    ) -> Self {
        let (mean, var) = self.moments(norm);
        let prologue = Prologue::NormSilu {
            norm,
            mean: &mean,
            var: &var,
        };
        self.conv_stream(conv, &prologue, finish)
    }

    /// Nearest ×2 upsampling followed by `conv`, each band upsampled just before its
    /// convolution (output row `r` reads input row `⌊r/2⌋` of the same band, so the halo is
    /// the neighbour's nearest input row, doubled): the upsampled activation never exists whole.
    pub fn upsample_conv(self, conv: &Conv2d) -> Self {
        self.conv_stream(conv, &Prologue::Upsample2x, &mut |_, y| y)
    }

    /// The convolution of `prologue` applied to this activation band by band, consuming it:
    /// each input band is dropped as soon as no later band's halo reaches it, so the input
    /// shrinks while the output grows and the two never both exist whole (at 512×512: the
    /// decoder's 256 MiB activations). Output band `i` is `finish(input band i, its
    /// convolution)`.
    fn conv_stream(
        self,
        conv: &Conv2d,
        prologue: &Prologue,
        finish: &mut dyn FnMut(Tensor<4>, Tensor<4>) -> Tensor<4>,
    ) -> Self {
        let [k, _] = conv.kernel_size;
        let halo = k / 2;
        let Some(dtype) = self.0.first().map(Tensor::dtype) else {
            return Self(Vec::new());
        };
        let convolve = band_convolution(conv, dtype);
        // Input rows a halo of `halo` output rows needs from a neighbour.
        let halo_in = halo.div_ceil(prologue.row_factor());
        let mut slots: Vec<Option<Tensor<4>>> = self.0.into_iter().map(Some).collect();
        let rows = |t: &Option<Tensor<4>>| t.as_ref().map_or(0, |t| t.dims()[2]);
        let mut first_kept = 0;
        let mut out = Vec::with_capacity(slots.len());
        for i in 0..slots.len() {
            let input = slots[i]
                .clone()
                .expect("a band is kept until it is convolved");
            let core = prologue.apply(input.clone());
            let y = if halo == 0 {
                convolve(core)
            } else {
                // Neighbour rows are transformed like the band, then cut to the halo; rows
                // beyond the image are the convolution's zero padding (after the prologue).
                let above = rows_before(&slots, i, halo_in).map(|t| {
                    let t = prologue.apply(t);
                    let h = t.dims()[2];
                    t.narrow(2, h - halo.min(h), halo.min(h))
                });
                let below = rows_after(&slots, i, halo_in).map(|t| {
                    let t = prologue.apply(t);
                    let h = t.dims()[2];
                    t.narrow(2, 0, halo.min(h))
                });
                let zero_row = core.clone().narrow(2, 0, 1).zeros_like();
                let zeros = |n: usize| zero_row.clone().repeat_dim(2, n);
                let (top, bottom) = (halo - rows(&above), halo - rows(&below));
                let mut parts = Vec::with_capacity(5);
                if top > 0 {
                    parts.push(zeros(top));
                }
                parts.extend(above);
                parts.push(core);
                parts.extend(below);
                if bottom > 0 {
                    parts.push(zeros(bottom));
                }
                convolve(Tensor::cat(parts, 2))
            };
            out.push(finish(input, y));
            // Drop the bands above band i + 1's halo: nothing reads them again.
            while first_kept < i
                && slots[first_kept + 1..=i].iter().map(rows).sum::<usize>() >= halo_in
            {
                slots[first_kept] = None;
                first_kept += 1;
            }
        }
        Self(out)
    }

    /// GroupNorm's mean and variance per group over every band.
    fn moments(&self, norm: &GroupNorm) -> (Tensor<3>, Tensor<3>) {
        let pieces: Vec<Tensor<3>> = self.0.iter().map(|x| grouped(norm, x.clone())).collect();
        statistics::moments(&pieces)
    }
}

/// A "same" convolution (odd k×k, stride 1) as applied to one band whose k/2 halo rows above
/// and below are already in place: no row padding, the layer's zero padding on the columns.
/// Weights stored as f16 are widened to the activations' dtype (see `kernels::layers`). Each
/// call is counted as the rows it outputs.
pub(crate) fn band_convolution(
    conv: &Conv2d,
    dtype: burn::tensor::DType,
) -> impl Fn(Tensor<4>) -> Tensor<4> {
    let weight = widen(conv.weight.val(), dtype);
    let bias = conv.bias.as_ref().map(|b| widen(b.val(), dtype));
    let options = ConvOptions::new([1, 1], [0, conv.kernel_size[1] / 2], [1, 1], 1);
    let [c_out, c_in, kh, kw] = weight.dims();
    move |x: Tensor<4>| {
        let y = conv_gemm::conv2d(x, weight.clone(), bias.clone(), options.clone());
        // The work counter sees each band's convolution, as `layers::conv2d` counts a whole
        // one.
        let [b, _, h, w] = y.dims();
        work::add(work::matmul_flops(b * h * w, c_in * kh * kw, c_out));
        y
    }
}

/// Up to `n` rows just above band `i` (from the bands before it; fewer at the image top,
/// none for the first band).
fn rows_before(bands: &[Option<Tensor<4>>], i: usize, n: usize) -> Option<Tensor<4>> {
    let mut need = n;
    let mut pieces = Vec::new();
    let mut j = i;
    while need > 0 && j > 0 {
        j -= 1;
        let band = bands[j].as_ref().expect("halo rows are kept");
        let h = band.dims()[2];
        let take = need.min(h);
        pieces.push(band.clone().narrow(2, h - take, take));
        need -= take;
    }
    pieces.reverse();
    (!pieces.is_empty()).then(|| Tensor::cat(pieces, 2))
}

/// Up to `n` rows just below band `i` (from the bands after it; fewer at the image bottom,
/// none for the last band).
fn rows_after(bands: &[Option<Tensor<4>>], i: usize, n: usize) -> Option<Tensor<4>> {
    let mut need = n;
    let mut pieces = Vec::new();
    let mut j = i + 1;
    while need > 0 && j < bands.len() {
        let band = bands[j].as_ref().expect("bands below are not dropped yet");
        let h = band.dims()[2];
        let take = need.min(h);
        pieces.push(band.clone().narrow(2, 0, take));
        need -= take;
        j += 1;
    }
    (!pieces.is_empty()).then(|| Tensor::cat(pieces, 2))
}

/// What a banded convolution applies to its input rows first.
enum Prologue<'a> {
    /// Nothing: the rows as they are.
    None,
    /// GroupNorm with the given statistics (over the whole activation), then SiLU.
    NormSilu {
        norm: &'a GroupNorm,
        mean: &'a Tensor<3>,
        var: &'a Tensor<3>,
    },
    /// Nearest ×2 upsampling (rows and columns).
    Upsample2x,
}

impl Prologue<'_> {
    /// Output rows per input row.
    fn row_factor(&self) -> usize {
        match self {
            Prologue::Upsample2x => 2,
            _ => 1,
        }
    }

    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Prologue::None => x,
            Prologue::NormSilu { norm, mean, var } => silu(normalise(norm, x, mean, var)),
            Prologue::Upsample2x => {
                let [_, _, h, w] = x.dims();
                upsample_nearest2x(x, [2 * h, 2 * w])
            }
        }
    }
}

/// `x` (`[b, c, rows, w]`) as `[b, groups, (c / groups) · rows · w]`.
fn grouped(norm: &GroupNorm, x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, norm.num_groups, (c / norm.num_groups) * h * w])
}

/// Rows `x` normalised with statistics of the whole activation (exact per row).
fn normalise(norm: &GroupNorm, x: Tensor<4>, mean: &Tensor<3>, var: &Tensor<3>) -> Tensor<4> {
    let shape = x.dims();
    statistics::group_normalise(norm, grouped(norm, x), mean.clone(), var.clone()).reshape(shape)
}

/// The largest band a decoder activation is cut into, in bytes, whatever the binding limit
/// allows: small enough that the per-band normalised or upsampled copies stay a few tens of
/// MiB, large enough (≥ 32 rows at SD 1.5's 512×512 widths) that the halo rows add ≤ 7 %.
pub const BAND_BYTES: usize = 32 << 20;

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
