//! MD (mean distance, DragBench; docs/EVALUATION.md §2.3): where does the content under each
//! handle end up? Each handle's DIFT feature in the original is matched, by cosine similarity,
//! against every pixel of the edited image's feature map, both bilinearly upsampled to the
//! original's size; the distance from the best match to the target, in pixels, pooled over all
//! pairs of all images, is MD (lower is better).
//!
//! The upsampled maps (`[1280, H, W]` f32 for SD 2.1: 1.3 GB at 512×512) are never held: every
//! full-resolution vector is a 4-tap blend of the low-resolution map ([`torch_blend`], PyTorch's
//! operation order), computed row by row on every core, so the cosine of each pixel equals the
//! reference's `CosineSimilarity` over `F.interpolate`'s output up to float summation order.
//! Reference: DragDiffusion `drag_bench_evaluation/run_eval_point_matching.py`.

use rayon::prelude::*;

use super::dift::FeatureMap;
use crate::error::{Error, Result};
use crate::image::resample::{TorchTap, torch_axis, torch_blend};

/// PyTorch `cosine_similarity`'s eps: each norm is clamped to at least this.
const COS_EPS: f32 = 1e-8;

/// One handle's match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointMatch {
    /// The best-matching pixel `[x, y]` in the edited image.
    pub found: [usize; 2],
    /// Its cosine similarity to the handle's source feature.
    pub cosine: f32,
    /// Euclidean distance from `found` to the target, in pixels.
    pub distance: f64,
}

/// Writes into `out` the map's vector at full-resolution pixel `(x, y)` of its upsampling with
/// these row and column taps.
fn upsampled_vector(
    map: &FeatureMap,
    taps: (&[TorchTap], &[TorchTap]),
    x: usize,
    y: usize,
    out: &mut [f32],
) {
    let (y0, y1, a0, a1) = taps.0[y];
    let (x0, x1, b0, b1) = taps.1[x];
    let plane = map.height * map.width;
    for (c, value) in out.iter_mut().enumerate() {
        let p = &map.data[c * plane..(c + 1) * plane];
        let at = |yy: usize, xx: usize| p[yy * map.width + xx];
        *value = torch_blend(
            [at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1)],
            (a0, a1),
            (b0, b1),
        );
    }
}

fn unit(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(COS_EPS);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Matches each handle `[x, y]` (integer pixels of the original, as DragBench indexes them) of
/// `source` against every pixel of `edited`, both upsampled to `width × height`; the first
/// maximum in row-major order wins (numpy's `argmax`). `targets` pair with `handles`.
pub fn match_points(
    source: &FeatureMap,
    edited: &FeatureMap,
    (width, height): (usize, usize),
    handles: &[[usize; 2]],
    targets: &[[f64; 2]],
) -> Result<Vec<PointMatch>> {
    if source.channels != edited.channels {
        return Err(Error::InvalidInput(format!(
            "MD: feature maps of {} and {} channels",
            source.channels, edited.channels
        )));
    }
    let taps = |m: &FeatureMap| (torch_axis(m.height, height), torch_axis(m.width, width));
    let (sy, sx) = taps(source);
    let (ey, ex) = taps(edited);
    handles
        .iter()
        .zip(targets)
        .map(|(&[hx, hy], &[tx, ty])| {
            if hx >= width || hy >= height {
                return Err(Error::InvalidInput(format!(
                    "MD: handle ({hx}, {hy}) is outside the {width}×{height} image"
                )));
            }
            let mut v = vec![0f32; source.channels];
            upsampled_vector(source, (&sy, &sx), hx, hy, &mut v);
            unit(&mut v);
            // Best (cosine, x) of each row, then the first best row.
            let rows: Vec<(f32, usize)> = (0..height)
                .into_par_iter()
                .map(|y| {
                    let mut best = (f32::NEG_INFINITY, 0);
                    let mut f = vec![0f32; edited.channels];
                    for x in 0..width {
                        upsampled_vector(edited, (&ey, &ex), x, y, &mut f);
                        unit(&mut f);
                        let cos: f32 = v.iter().zip(&f).map(|(a, b)| a * b).sum();
                        if cos > best.0 {
                            best = (cos, x);
                        }
                    }
                    best
                })
                .collect();
            let (mut cosine, mut found) = (f32::NEG_INFINITY, [0, 0]);
            for (y, &(c, x)) in rows.iter().enumerate() {
                if c > cosine {
                    (cosine, found) = (c, [x, y]);
                }
            }
            // PARITY: the target minus the match as integers (the reference casts the target
            // to an int64 tensor), then the Euclidean norm.
            let dx = tx.trunc() - found[0] as f64;
            let dy = ty.trunc() - found[1] as f64;
            Ok(PointMatch {
                found,
                cosine,
                distance: (dx * dx + dy * dy).sqrt(),
            })
        })
        .collect()
}
