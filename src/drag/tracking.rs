//! Point tracking (GoodDrag §3.3; docs/ALGORITHM.md §1.14, `point_tracking`): each handle moves to the pixel
//! of a `(2r₂+1)²` window around it whose feature vector is nearest in L1 (summed over channels)
//! to the unedited trajectory's feature at the **original** handle; the first minimum in
//! row-major order wins.
//!
//! Borders (deliberate fix, documented): the window is cropped at the map's edges and offsets
//! are taken from the cropped corner, as DragDiffusion does. The reference slices with negative
//! starts near the top/left edge, gets an empty window and crashes.

use burn::tensor::Tensor;

use super::features::FeatureGeometry;
use super::points::Point;
use crate::error::Result;
use crate::tensor_io::read_f32;

/// The cropped window `[row0, row1) × [col0, col1)` around integer handle `p`.
pub fn window_bounds(
    p: Point,
    r2: usize,
    height: usize,
    width: usize,
) -> (usize, usize, usize, usize) {
    let (pr, pc) = (p[0] as i64, p[1] as i64);
    let r = r2 as i64;
    let row0 = (pr - r).max(0) as usize;
    let row1 = ((pr + r + 1).min(height as i64)).max(row0 as i64 + 1) as usize;
    let col0 = (pc - r).max(0) as usize;
    let col1 = ((pc + r + 1).min(width as i64)).max(col0 as i64 + 1) as usize;
    (row0.min(height - 1), row1, col0.min(width - 1), col1)
}

/// Index of the first minimum (row-major), `None` for an empty slice.
pub fn first_argmin(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v < b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Tracks every handle. features: current map `[1, C, h, w]` (read without gradient);
/// references: the reference vector `[C]` per handle. One readback for all handles.
pub async fn track(
    features: &Tensor<4>,
    geometry: FeatureGeometry,
    references: &[Tensor<1>],
    handles: &[Point],
    r2: usize,
) -> Result<Vec<Point>> {
    let feat = features.clone().detach();
    let [_, c, _, _] = feat.dims();
    let mut bounds = Vec::with_capacity(handles.len());
    let mut distances = Vec::with_capacity(handles.len());
    for (p, f0) in handles.iter().zip(references) {
        let (r0, r1, c0, c1) = window_bounds(*p, r2, geometry.feat_height, geometry.feat_width);
        let (rows, cols) = (r1 - r0, c1 - c0);
        let win = geometry.window(&feat, r0 as i64, rows, c0 as i64, cols); // [C, rows, cols]
        let dist = (win - f0.clone().detach().reshape([c, 1, 1]))
            .abs()
            .sum_dim(0); // [1, rows, cols]
        distances.push(dist.reshape([rows * cols]));
        bounds.push((r0, c0, cols));
    }
    if distances.is_empty() {
        return Ok(Vec::new());
    }
    let lens: Vec<usize> = distances.iter().map(|d| d.dims()[0]).collect();
    let all = read_f32(Tensor::cat(distances, 0)).await?;
    let mut out = Vec::with_capacity(handles.len());
    let mut offset = 0;
    for ((r0, c0, cols), (len, p)) in bounds.into_iter().zip(lens.into_iter().zip(handles)) {
        let slice = &all[offset..offset + len];
        offset += len;
        out.push(match first_argmin(slice) {
            Some(i) => [(r0 + i / cols) as f64, (c0 + i % cols) as f64],
            None => *p, // all NaN: keep the handle where it is
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_minimum_wins_ties_and_nans_are_ignored() {
        assert_eq!(first_argmin(&[3.0, 1.0, 2.0, 1.0]), Some(1));
        assert_eq!(first_argmin(&[f32::NAN, 2.0, 2.0]), Some(1));
        assert_eq!(first_argmin(&[]), None);
        assert_eq!(first_argmin(&[f32::NAN]), None);
    }

    #[test]
    fn window_is_cropped_at_every_border() {
        assert_eq!(window_bounds([20.0, 30.0], 12, 256, 256), (8, 33, 18, 43));
        assert_eq!(window_bounds([3.0, 0.0], 12, 256, 256), (0, 16, 0, 13));
        assert_eq!(
            window_bounds([255.0, 250.0], 12, 256, 256),
            (243, 256, 238, 256)
        );
        assert_eq!(window_bounds([1.0, 1.0], 12, 4, 3), (0, 4, 0, 3));
    }
}
