//! DAI, the Dragging Accuracy Index (GoodDrag §4.1, Eq. 8; docs/EVALUATION.md §2.1): how well the content
//! around each handle pᵢ of the original reappears around its target qᵢ in the result.
//!
//! With images as floats in [0, 1] and patches of `(1+2γ)²` pixels × RGB,
//! `Dᵢ = Σ (orig_patch(pᵢ) − result_patch(qᵢ))²` and
//!
//! * the paper's Eq. 8: `DAI = (1/l) Σᵢ Dᵢ / (1+2γ)²`;
//! * the official `evaluation/compute_DAI.py`: `Σᵢ Dᵢ / l / (1+2γ)² / l` — divided by the number
//!   of pairs l twice (a bug; equal for single-pair images).
//!
//! Borders: the official script slices with Python semantics and no border handling (a window
//! past the top/left edge wraps or comes out empty; mismatched shapes raise). [`dai_official`]
//! reproduces those slices exactly and reports an error where the script would raise;
//! [`dai_paper`] crops each pair's two windows to the offsets valid in both images.

use crate::error::{Error, Result};

/// An RGB image as floats in [0, 1] (`torchvision ToTensor`: `byte / 255`).
#[derive(Debug, Clone)]
pub struct FloatImage {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Row-major RGB.
    pub data: Vec<f32>,
}

impl FloatImage {
    /// From RGB8 bytes.
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Self {
        Self {
            width,
            height,
            data: rgb.iter().map(|&b| b as f32 / 255.0).collect(),
        }
    }

    fn px(&self, y: usize, x: usize, c: usize) -> f64 {
        self.data[(y * self.width + x) * 3 + c] as f64
    }
}

/// `slice(start, stop)` on an axis of length `n`, as Python resolves it (step 1).
fn py_slice(start: i64, stop: i64, n: usize) -> std::ops::Range<usize> {
    let n = n as i64;
    let resolve = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
    let (a, b) = (resolve(start), resolve(stop));
    (a as usize)..(b.max(a) as usize)
}

fn check_sizes(original: &FloatImage, result: &FloatImage) -> Result<()> {
    if (original.width, original.height) != (result.width, result.height) {
        return Err(Error::InvalidInput(format!(
            "DAI compares images of the same size: the original is {}×{}, the result {}×{}",
            original.width, original.height, result.width, result.height
        )));
    }
    Ok(())
}

fn pairs_of(points: &[[f64; 2]]) -> Result<Vec<([i64; 2], [i64; 2])>> {
    if points.is_empty() || !points.len().is_multiple_of(2) {
        return Err(Error::InvalidInput(format!(
            "DAI needs handle/target pairs, got {} points",
            points.len()
        )));
    }
    Ok(points
        .chunks_exact(2)
        .map(|p| {
            (
                [p[0][0] as i64, p[0][1] as i64],
                [p[1][0] as i64, p[1][1] as i64],
            )
        })
        .collect())
}

/// The official script's per-image value (see the module docs), with Python slicing.
pub fn dai_official(
    original: &FloatImage,
    result: &FloatImage,
    points: &[[f64; 2]],
    gamma: usize,
) -> Result<f64> {
    check_sizes(original, result)?;
    let pairs = pairs_of(points)?;
    let g = gamma as i64;
    let mut sum = 0.0;
    for (p, q) in &pairs {
        let (py, px) = (
            py_slice(p[1] - g, p[1] + g + 1, original.height),
            py_slice(p[0] - g, p[0] + g + 1, original.width),
        );
        let (qy, qx) = (
            py_slice(q[1] - g, q[1] + g + 1, result.height),
            py_slice(q[0] - g, q[0] + g + 1, result.width),
        );
        if py.len() != qy.len() || px.len() != qx.len() {
            return Err(Error::InvalidInput(format!(
                "DAI (official) is undefined for the pair {p:?} → {q:?} at γ = {gamma}: its windows cross the \
                 image border differently (compute_DAI.py raises a broadcast error here)"
            )));
        }
        for (ya, yb) in py.clone().zip(qy.clone()) {
            for (xa, xb) in px.clone().zip(qx.clone()) {
                for c in 0..3 {
                    let d = original.px(ya, xa, c) - result.px(yb, xb, c);
                    sum += d * d;
                }
            }
        }
    }
    let l = pairs.len() as f64;
    let area = ((1 + 2 * gamma) * (1 + 2 * gamma)) as f64;
    // PARITY: divided by the number of pairs twice, as compute_DAI.py does.
    Ok(sum / l / area / l)
}

/// The paper's Eq. 8 per image (see the module docs).
pub fn dai_paper(
    original: &FloatImage,
    result: &FloatImage,
    points: &[[f64; 2]],
    gamma: usize,
) -> Result<f64> {
    check_sizes(original, result)?;
    let pairs = pairs_of(points)?;
    let g = gamma as i64;
    let (w, h) = (original.width as i64, original.height as i64);
    let mut sum = 0.0;
    for (p, q) in &pairs {
        for dy in -g..=g {
            let (ya, yb) = (p[1] + dy, q[1] + dy);
            if ya < 0 || yb < 0 || ya >= h || yb >= h {
                continue;
            }
            for dx in -g..=g {
                let (xa, xb) = (p[0] + dx, q[0] + dx);
                if xa < 0 || xb < 0 || xa >= w || xb >= w {
                    continue;
                }
                for c in 0..3 {
                    let d = original.px(ya as usize, xa as usize, c)
                        - result.px(yb as usize, xb as usize, c);
                    sum += d * d;
                }
            }
        }
    }
    let area = ((1 + 2 * gamma) * (1 + 2 * gamma)) as f64;
    Ok(sum / pairs.len() as f64 / area)
}

/// The γ values the paper and the script report.
pub const DAI_GAMMAS: [usize; 4] = [1, 5, 10, 20];

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> u8) -> FloatImage {
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    rgb.push(f(x, y, c));
                }
            }
        }
        FloatImage::from_rgb8(w, h, &rgb)
    }

    #[test]
    fn perfect_move_scores_zero_and_known_differences_score_exactly() {
        // A 5×5 bright square at (10, 10) moved to (20, 12).
        let sq = |cx: usize, cy: usize| {
            move |x: usize, y: usize, _c: usize| {
                if x.abs_diff(cx) <= 2 && y.abs_diff(cy) <= 2 {
                    255
                } else {
                    0
                }
            }
        };
        let orig = image(40, 30, sq(10, 10));
        let moved = image(40, 30, sq(20, 12));
        let pts = [[10.0, 10.0], [20.0, 12.0]];
        assert_eq!(dai_official(&orig, &moved, &pts, 1).unwrap(), 0.0);
        assert_eq!(dai_paper(&orig, &moved, &pts, 2).unwrap(), 0.0);
        // Not moved: at γ = 1 the 3×3 window at q is black, at p it is white: 9 px × 3 ch × 1².
        assert!((dai_paper(&orig, &orig, &pts, 1).unwrap() - 27.0 / 9.0).abs() < 1e-12);
        // Two pairs, one perfect and one fully wrong: the paper halves, the script quarters.
        let two = [[10.0, 10.0], [20.0, 12.0], [10.0, 10.0], [30.0, 25.0]];
        let paper = dai_paper(&orig, &moved, &two, 1).unwrap();
        let official = dai_official(&orig, &moved, &two, 1).unwrap();
        assert!((paper - 27.0 / 9.0 / 2.0).abs() < 1e-12, "{paper}");
        assert!((official - 27.0 / 9.0 / 4.0).abs() < 1e-12, "{official}");
    }

    #[test]
    fn half_intensity_difference_is_quarter_per_channel() {
        let a = image(9, 9, |_, _, _| 255);
        let b = image(9, 9, |_, _, c| if c == 0 { 0 } else { 255 });
        // Only the red channel differs by 1.0: γ = 1 → 9 px × 1 / 9.
        assert!((dai_paper(&a, &b, &[[4.0, 4.0], [4.0, 4.0]], 1).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn python_slicing_is_reproduced_at_borders() {
        assert_eq!(py_slice(-2, 3, 10), 8..8); // [8:3] is empty
        assert_eq!(py_slice(-2, 3, 4), 2..3);
        assert_eq!(py_slice(5, 20, 10), 5..10);
        let a = image(10, 10, |x, _, _| (x * 20) as u8);
        // p near the left edge (empty window), q inside (3 columns): the script would raise.
        assert!(dai_official(&a, &a, &[[1.0, 5.0], [5.0, 5.0]], 3).is_err());
        // Both empty: 0, as numpy sums an empty difference.
        assert_eq!(
            dai_official(&a, &a, &[[1.0, 5.0], [2.0, 5.0]], 3).unwrap(),
            0.0
        );
        assert!(dai_paper(&a, &a, &[[1.0, 5.0], [5.0, 5.0]], 3).unwrap() > 0.0);
        let small = image(5, 5, |_, _, _| 0);
        assert!(dai_paper(&a, &small, &[[1.0, 1.0], [2.0, 2.0]], 1).is_err());
    }
}
