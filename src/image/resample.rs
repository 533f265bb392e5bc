//! Separable resampling of 8-bit images on the CPU, for moving a photo between its own size and
//! the edit's working size (docs/ARCHITECTURE.md §8): a triangle (bilinear) filter whose support
//! widens by the reduction factor when shrinking, so a 4032-px photo shrunk to 512 px averages
//! every source pixel instead of sampling one in eight (PIL's `BILINEAR`, torch's
//! `interpolate(..., antialias=True)`); when enlarging it is plain bilinear with
//! align_corners = False. Pixel centres sit at `i + 0.5` on both grids, the convention
//! [`super::working::SizeMap`] maps points with.
//!
//! [`torch_bilinear`] is the other resize: PyTorch's non-antialiased `F.interpolate(...,
//! mode="bilinear")`, bit for bit, for the metrics whose reference code uses it.
//!
//! The output can be produced one row at a time ([`Resampler::rows`]) so a 12-megapixel result
//! is never held as floats (it would be 145 MB in a browser tab).

/// The taps of one output position: the first input index and the normalised weights.
#[derive(Debug, Clone)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Filter taps from `input` positions to `output` positions along one axis.
fn axis_taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    // Support of the triangle in input pixels: 1 when enlarging, the reduction factor when
    // shrinking (every input pixel then contributes to some output pixel).
    let support = scale.max(1.0);
    (0..output)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let first = (centre - support).floor().max(0.0) as usize;
            let last = ((centre + support).ceil() as usize).min(input);
            let mut weights: Vec<f32> = (first..last)
                .map(|i| {
                    let d = ((i as f64 + 0.5 - centre) / support).abs();
                    (1.0 - d).max(0.0) as f32
                })
                .collect();
            let total: f32 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps {
                start: first,
                weights,
            }
        })
        .collect()
}

/// A resampling from `width × height` to `out_width × out_height` of images with `channels`
/// interleaved channels.
pub struct Resampler {
    channels: usize,
    width: usize,
    out_width: usize,
    out_height: usize,
    columns: Vec<Taps>,
    rows: Vec<Taps>,
}

impl Resampler {
    /// The taps for one size change (sizes must be non-zero).
    pub fn new(
        (width, height): (usize, usize),
        (out_width, out_height): (usize, usize),
        channels: usize,
    ) -> Self {
        Self {
            channels,
            width,
            out_width,
            out_height,
            columns: axis_taps(width, out_width),
            rows: axis_taps(height, out_height),
        }
    }

    /// Calls `row(y, values)` for every output row, top to bottom, with the row's
    /// `out_width · channels` values (0–255 scale, not rounded). `input` holds
    /// `width · height · channels` values.
    pub fn rows(&self, input: &[u8], mut row: impl FnMut(usize, &[f32])) {
        let c = self.channels;
        let in_row = self.width * c;
        let out_row = self.out_width * c;
        // Horizontal pass over every input row the vertical taps read (all of them), then the
        // vertical pass per output row.
        let horizontal: Vec<f32> = input
            .chunks_exact(in_row)
            .flat_map(|src| {
                self.columns.iter().flat_map(move |t| {
                    (0..c).map(move |ch| {
                        t.weights
                            .iter()
                            .enumerate()
                            .map(|(k, w)| w * f32::from(src[(t.start + k) * c + ch]))
                            .sum::<f32>()
                    })
                })
            })
            .collect();
        let mut out = vec![0f32; out_row];
        for (y, t) in self.rows.iter().enumerate() {
            out.iter_mut().for_each(|v| *v = 0.0);
            for (k, w) in t.weights.iter().enumerate() {
                let src = &horizontal[(t.start + k) * out_row..(t.start + k + 1) * out_row];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
            row(y, &out);
        }
        debug_assert_eq!(self.rows.len(), self.out_height);
    }

    /// The whole output, rounded to 8 bits.
    pub fn resample_u8(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.out_width * self.out_height * self.channels);
        self.rows(input, |_, values| {
            out.extend(values.iter().map(|v| v.round().clamp(0.0, 255.0) as u8))
        });
        out
    }
}

/// One output position's source taps along an axis: `(i0, i1, λ0, λ1)`.
pub type TorchTap = (usize, usize, f32, f32);

/// The source taps of one output axis as PyTorch's CPU kernel computes them.
pub fn torch_axis(input: usize, output: usize) -> Vec<TorchTap> {
    // PARITY: the scale is an f32 quotient and the source index is computed in f32
    // (ATen `area_pixel_compute_scale` / `area_pixel_compute_source_index` with opmath = float);
    // an exact scale moves 256 → 224 samples by up to 2e-6.
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `F.interpolate(x, (out_h, out_w), mode="bilinear")` on planar `[c, h, w]` f32 data, as
/// PyTorch computes it: align_corners = False, no antialiasing, each output
/// `(x00·λ0w + x01·λ1w)·λ0h + (x10·λ0w + x11·λ1w)·λ1h` ([`torch_blend`]). The metrics use it
/// where their reference code does (DragBench's IF input, DIFT feature maps), never to resize
/// photos ([`Resampler`] does that).
pub fn torch_bilinear(
    planar: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let (ys, xs) = (torch_axis(h, out_h), torch_axis(w, out_w));
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for plane in planar.chunks_exact(h * w).take(channels) {
        for &(y0, y1, a0, a1) in &ys {
            let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
            for &(x0, x1, b0, b1) in &xs {
                out.push(torch_blend(
                    [r0[x0], r0[x1], r1[x0], r1[x1]],
                    (a0, a1),
                    (b0, b1),
                ));
            }
        }
    }
    out
}

/// One bilinear sample from its four neighbours `[top-left, top-right, bottom-left,
/// bottom-right]` with row weights `(λ0h, λ1h)` and column weights `(λ0w, λ1w)`, in PyTorch's
/// operation order.
#[inline]
pub fn torch_blend(v: [f32; 4], (a0, a1): (f32, f32), (b0, b1): (f32, f32)) -> f32 {
    let top = v[0] * b0 + v[1] * b1;
    let bottom = v[2] * b0 + v[3] * b1;
    top * a0 + bottom * a1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_image_stays_constant_at_any_size() {
        let input = vec![77u8; 13 * 7 * 3];
        for out in [(5, 3), (13, 7), (40, 21), (1, 1)] {
            let r = Resampler::new((13, 7), out, 3).resample_u8(&input);
            assert_eq!(r.len(), out.0 * out.1 * 3);
            assert!(r.iter().all(|&v| v == 77), "{out:?}");
        }
    }

    #[test]
    fn shrinking_by_an_integer_factor_averages_every_pixel() {
        // 32×1 → 4×1: each output is a triangle-weighted mean over 8 input pixels; stripes of
        // 0/200 come out as their mean, not as a sample of one stripe (the border outputs
        // lose the taps beyond the image: 96 and 104).
        let input: Vec<u8> = (0..32).map(|i| if i % 2 == 0 { 0 } else { 200 }).collect();
        let r = Resampler::new((32, 1), (4, 1), 1).resample_u8(&input);
        assert_eq!(r, vec![96, 100, 100, 104]);
    }

    #[test]
    fn enlarging_is_bilinear_with_half_pixel_centres() {
        // 2 → 4: output centres at input positions 0.25, 0.75, 1.25, 1.75 (clamped at the
        // borders): 0, 25, 75, 100 for inputs 0 and 100.
        let r = Resampler::new((2, 1), (4, 1), 1).resample_u8(&[0, 100]);
        assert_eq!(r, vec![0, 25, 75, 100]);
    }
}
