//! Reading GoodDrag's feature map without building it (docs/ALGORITHM.md §1.10).
//!
//! The reference upsamples the UNet's `up_blocks[2]` output `[1, C, h, w]` (latent resolution)
//! bilinearly (align_corners = False) to the feature resolution `[1, C, ⌊H/2⌋, ⌊W/2⌋]` — 168 MB
//! per map at 512² — and then reads small windows of it. Upsampling and window sampling are
//! both separable linear maps, so every window is computed exactly as `Wy · F · Wxᵀ`, where
//! the rows of `Wy` (`Wx`) hold the bilinear weights of the wanted feature-resolution rows
//! (columns) on the latent rows (columns). Two small matmuls per window, differentiable in `F`.
//!
//! Borders (deliberate fix, documented): feature-resolution indices outside the map are clamped
//! to the edge (replicate padding). The reference slices out of range there and crashes
//! (docs/ALGORITHM.md §1.12, §1.14).

use burn::tensor::{Device, Tensor, TensorData};

/// One output position of a separable sampler: (source index, weight) taps.
pub type Taps = Vec<(usize, f32)>;

/// PyTorch's bilinear upsampling taps (align_corners = False, `area_pixel_compute_source_index`)
/// for output index `dst` of an `input → output` resize, computed in f32 like ATen.
pub fn upsample_taps(dst: usize, input: usize, output: usize) -> Taps {
    if input == output {
        return vec![(dst, 1.0)];
    }
    let scale = input as f32 / output as f32;
    let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (src as usize).min(input - 1);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    let l1 = src - i0 as f32;
    let l0 = 1.0 - l1;
    if i1 == i0 {
        vec![(i0, 1.0)]
    } else {
        vec![(i0, l0), (i1, l1)]
    }
}

/// Taps of feature-resolution index `idx` (clamped into `0..output`) on the latent axis.
fn clamped(idx: i64, input: usize, output: usize) -> Taps {
    let i = idx.clamp(0, output as i64 - 1) as usize;
    upsample_taps(i, input, output)
}

/// Taps of integer feature-resolution positions `start..start + n` (clamped at the borders).
pub fn integer_axis(start: i64, n: usize, input: usize, output: usize) -> Vec<Taps> {
    (0..n as i64)
        .map(|k| clamped(start + k, input, output))
        .collect()
}

/// Taps of the reference's fractional patch along one axis (`interpolate_feature_patch`): for
/// offsets `−r..=r` around centre `c`, `(c₁ − c)·U[⌊c⌋ + k] + (c − ⌊c⌋)·U[⌊c⌋ + 1 + k]`, where
/// `U` is the upsampled axis and `c₁ = ⌊c⌋ + 1`.
pub fn fractional_axis(center: f64, r: usize, input: usize, output: usize) -> Vec<Taps> {
    // PARITY: the reference computes floor and the weights in f32.
    let c = center as f32;
    let c0 = c.floor();
    let (w0, w1) = (c0 + 1.0 - c, c - c0);
    let base = c0 as i64;
    (-(r as i64)..=r as i64)
        .map(|k| {
            let mut taps: Taps = Vec::with_capacity(4);
            for (src, w) in clamped(base + k, input, output) {
                taps.push((src, w * w0));
            }
            for (src, w) in clamped(base + 1 + k, input, output) {
                taps.push((src, w * w1));
            }
            taps
        })
        .collect()
}

/// Dense `[n, input]` matrix of a list of taps.
pub fn taps_matrix(taps: &[Taps], input: usize, device: &Device) -> Tensor<2> {
    let mut m = vec![0f32; taps.len() * input];
    for (row, t) in taps.iter().enumerate() {
        for &(src, w) in t {
            m[row * input + src] += w;
        }
    }
    Tensor::from_data(TensorData::new(m, [taps.len(), input]), device)
}

/// `Wy · F · Wxᵀ` per channel: feat `[1, C, h, w]`, rows `[R, h]`, cols `[K, w]` → `[C, R, K]`.
pub fn sample_grid(feat: &Tensor<4>, rows: Tensor<2>, cols: Tensor<2>) -> Tensor<3> {
    let [_, c, h, w] = feat.dims();
    let [r, _] = rows.dims();
    let [k, _] = cols.dims();
    let t = feat.clone().reshape([c * h, w]).matmul(cols.transpose()); // [c·h, k]
    let t = t.reshape([c, h, k]).swap_dims(1, 2).reshape([c * k, h]); // [c·k, h]
    t.matmul(rows.transpose())
        .reshape([c, k, r])
        .swap_dims(1, 2) // [c, r, k]
}

/// Shapes of the maps involved: the latent-resolution feature map and the feature resolution
/// it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureGeometry {
    /// Latent-resolution map height h.
    pub map_height: usize,
    /// Latent-resolution map width w.
    pub map_width: usize,
    /// Feature-resolution height ⌊H/2⌋.
    pub feat_height: usize,
    /// Feature-resolution width ⌊W/2⌋.
    pub feat_width: usize,
}

impl FeatureGeometry {
    /// Integer window `[row0, row0 + rows) × [col0, col0 + cols)` of the upsampled map
    /// (clamped at the borders). feat `[1, C, h, w]` → `[C, rows, cols]`.
    pub fn window(
        &self,
        feat: &Tensor<4>,
        row0: i64,
        rows: usize,
        col0: i64,
        cols: usize,
    ) -> Tensor<3> {
        let device = feat.device();
        let wy = taps_matrix(
            &integer_axis(row0, rows, self.map_height, self.feat_height),
            self.map_height,
            &device,
        );
        let wx = taps_matrix(
            &integer_axis(col0, cols, self.map_width, self.feat_width),
            self.map_width,
            &device,
        );
        sample_grid(feat, wy, wx)
    }

    /// The reference's bilinear `(2r+1)²` patch centred at fractional `[row, col]`
    /// (`interpolate_feature_patch`). feat `[1, C, h, w]` → `[C, 2r+1, 2r+1]`.
    pub fn bilinear_patch(&self, feat: &Tensor<4>, center: [f64; 2], r: usize) -> Tensor<3> {
        let device = feat.device();
        let wy = taps_matrix(
            &fractional_axis(center[0], r, self.map_height, self.feat_height),
            self.map_height,
            &device,
        );
        let wx = taps_matrix(
            &fractional_axis(center[1], r, self.map_width, self.feat_width),
            self.map_width,
            &device,
        );
        sample_grid(feat, wy, wx)
    }

    /// The integer `(2r+1)²` patch centred at integer `[row, col]` (`F[:, :, r−r₁:r+r₁+1, …]`).
    pub fn integer_patch(&self, feat: &Tensor<4>, center: [f64; 2], r: usize) -> Tensor<3> {
        let n = 2 * r + 1;
        self.window(
            feat,
            center[0] as i64 - r as i64,
            n,
            center[1] as i64 - r as i64,
            n,
        )
    }

    /// The feature vector at integer `[row, col]` (`F[:, :, int(r), int(c)]`) → `[C]`.
    pub fn vector(&self, feat: &Tensor<4>, at: [f64; 2]) -> Tensor<1> {
        let [_, c, _, _] = feat.dims();
        self.window(feat, at[0] as i64, 1, at[1] as i64, 1)
            .reshape([c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    use crate::rng::deterministic_values;
    use crate::tensor_io::relative_error;

    fn map(c: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(deterministic_values(c * h * w, 0.3, 1.0), [1, c, h, w]),
            device,
        )
    }

    fn upsampled(feat: &Tensor<4>, oh: usize, ow: usize) -> Vec<f32> {
        let up = interpolate(
            feat.clone(),
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([oh, ow]),
        );
        up.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn windows_equal_slices_of_the_full_upsampled_map() {
        let device = Device::flex();
        // 8×6 latent map → 20×15 feature resolution (non-integer scales on both axes).
        let (c, h, w, oh, ow) = (3, 8, 6, 20, 15);
        let feat = map(c, h, w, &device);
        let full = upsampled(&feat, oh, ow);
        let g = FeatureGeometry {
            map_height: h,
            map_width: w,
            feat_height: oh,
            feat_width: ow,
        };
        let win: Vec<f32> = g
            .window(&feat, 4, 5, 7, 6)
            .into_data()
            .try_into_vec()
            .unwrap();
        let mut want = Vec::new();
        for ch in 0..c {
            for y in 4..9 {
                for x in 7..13 {
                    want.push(full[(ch * oh + y) * ow + x]);
                }
            }
        }
        assert!(relative_error(&win, &want) < 1e-6);
    }

    #[test]
    fn bilinear_patch_equals_the_reference_formula_at_fractional_positions() {
        let device = Device::flex();
        let (c, h, w, oh, ow) = (2, 8, 8, 16, 16);
        let feat = map(c, h, w, &device);
        let full = upsampled(&feat, oh, ow);
        let at = |ch: usize, y: i64, x: i64| full[(ch * oh + y as usize) * ow + x as usize] as f64;
        let g = FeatureGeometry {
            map_height: h,
            map_width: w,
            feat_height: oh,
            feat_width: ow,
        };
        let r = 2;
        for (y, x) in [(7.3, 6.75), (5.0, 9.5), (8.999, 4.001)] {
            let patch: Vec<f32> = g
                .bilinear_patch(&feat, [y, x], r)
                .into_data()
                .try_into_vec()
                .unwrap();
            // interpolate_feature_patch, written out.
            let (y0, x0) = (f64::floor(y) as i64, f64::floor(x) as i64);
            let (y1, x1) = (y0 + 1, x0 + 1);
            let (wa, wb, wc, wd) = (
                (x1 as f64 - x) * (y1 as f64 - y),
                (x1 as f64 - x) * (y - y0 as f64),
                (x - x0 as f64) * (y1 as f64 - y),
                (x - x0 as f64) * (y - y0 as f64),
            );
            let mut want = Vec::new();
            for ch in 0..c {
                for dy in -(r as i64)..=r as i64 {
                    for dx in -(r as i64)..=r as i64 {
                        want.push(
                            (wa * at(ch, y0 + dy, x0 + dx)
                                + wb * at(ch, y1 + dy, x0 + dx)
                                + wc * at(ch, y0 + dy, x1 + dx)
                                + wd * at(ch, y1 + dy, x1 + dx)) as f32,
                        );
                    }
                }
            }
            let err = relative_error(&patch, &want);
            assert!(err < 1e-6, "({y}, {x}): {err}");
        }
    }

    #[test]
    fn windows_past_the_border_replicate_the_edge() {
        let device = Device::flex();
        let feat = map(1, 4, 4, &device);
        let g = FeatureGeometry {
            map_height: 4,
            map_width: 4,
            feat_height: 4,
            feat_width: 4,
        };
        let win: Vec<f32> = g
            .window(&feat, -2, 3, 2, 3)
            .into_data()
            .try_into_vec()
            .unwrap();
        let src: Vec<f32> = feat.into_data().try_into_vec().unwrap();
        // Rows −2, −1, 0 all read row 0; columns 2, 3, 4 read 2, 3, 3.
        let row0 = [src[2], src[3], src[3]];
        assert_eq!(win, [row0, row0, row0].concat());
    }
}
