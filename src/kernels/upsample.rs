//! Nearest-neighbour upsampling with PyTorch's index rules (`F.interpolate(mode="nearest")`):
//! the UNet's and the VAE decoder's `Upsample2D`, whole or per row band
//! ([`super::row_bands`]).

use burn::tensor::{Int, Tensor, TensorData};

/// Nearest-neighbour resize to `[oh, ow]` with PyTorch's index rule for an explicit size:
/// `src = min(⌊dst · (in/out)⌋, in − 1)` with the scale in f32.
///
/// x: `[b, c, h, w]` → `[b, c, oh, ow]`.
pub fn upsample_nearest(x: Tensor<4>, [oh, ow]: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let index = |inp: usize, out: usize| -> Vec<i64> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| (((d as f32) * scale).floor() as usize).min(inp - 1) as i64)
            .collect()
    };
    gather_hw(x, index(h, oh), index(w, ow))
}

/// Nearest ×2 as PyTorch's `scale_factor=2.0` (`src = ⌊dst / 2⌋`). x: `[b, c, h, w]` → `[b, c, 2h, 2w]`.
pub fn upsample_nearest2x(x: Tensor<4>, [oh, ow]: [usize; 2]) -> Tensor<4> {
    let index = |out: usize| -> Vec<i64> { (0..out).map(|d| (d / 2) as i64).collect() };
    gather_hw(x, index(oh), index(ow))
}

fn gather_hw(x: Tensor<4>, rows: Vec<i64>, cols: Vec<i64>) -> Tensor<4> {
    let device = x.device();
    let [nr, nc] = [rows.len(), cols.len()];
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [nr]), &device);
    let cols = Tensor::<1, Int>::from_data(TensorData::new(cols, [nc]), &device);
    x.select(2, rows).select(3, cols)
}
