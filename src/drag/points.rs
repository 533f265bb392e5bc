//! Handle/target points (docs/ALGORITHM.md §1.3). Users give `[x, y]` image pixels; the algorithm works in
//! `[row, col]` at the feature ("half") resolution `⌊s·H⌋ × ⌊s·W⌋` (s = 0.5):
//! `p = round([y/H·⌊sH⌋, x/W·⌊sW⌋])` with round-half-to-even (`torch.round`), and back
//! `[x, y] = round([col·W/⌊sW⌋, row·H/⌊sH⌋])`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A point in feature-resolution pixels, `[row, col]` (fractional during supervision).
pub type Point = [f64; 2];

/// Image size and the feature resolution derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Image width W.
    pub width: usize,
    /// Image height H.
    pub height: usize,
    /// Feature-map width ⌊s·W⌋.
    pub feat_width: usize,
    /// Feature-map height ⌊s·H⌋.
    pub feat_height: usize,
}

impl Frame {
    /// The frame of a `width × height` image at feature scale `scale` (0.5 in GoodDrag).
    pub fn new(width: usize, height: usize, scale: f64) -> Result<Self> {
        // PARITY: int(0.5 * H) — truncation.
        let (fw, fh) = (
            (scale * width as f64) as usize,
            (scale * height as f64) as usize,
        );
        if width < 8 || height < 8 || fw == 0 || fh == 0 {
            return Err(Error::InvalidInput(format!(
                "the image is {width}×{height} pixels; GoodDrag needs at least 8×8"
            )));
        }
        Ok(Self {
            width,
            height,
            feat_width: fw,
            feat_height: fh,
        })
    }

    /// Image `[x, y]` → feature `[row, col]`, rounded half to even.
    pub fn to_feature(&self, xy: [f64; 2]) -> Point {
        let row = xy[1] / self.height as f64 * self.feat_height as f64;
        let col = xy[0] / self.width as f64 * self.feat_width as f64;
        [row.round_ties_even(), col.round_ties_even()]
    }

    /// Feature `[row, col]` → image `[x, y]`, rounded half to even.
    pub fn to_image(&self, p: Point) -> [f64; 2] {
        [
            (p[1] * self.width as f64 / self.feat_width as f64).round_ties_even(),
            (p[0] * self.height as f64 / self.feat_height as f64).round_ties_even(),
        ]
    }
}

/// The edit's point pairs, validated: `[x, y]` image pixels, alternating handle, target.
#[derive(Debug, Clone, PartialEq)]
pub struct PointPairs {
    /// Handles in feature `[row, col]`.
    pub handles: Vec<Point>,
    /// Targets in feature `[row, col]`.
    pub targets: Vec<Point>,
}

impl PointPairs {
    /// Splits `[h₀, t₀, h₁, t₁, …]` image points and maps them to feature resolution. Every
    /// point must lie inside the image; there must be at least one pair.
    pub fn from_image_points(points: &[[f64; 2]], frame: &Frame) -> Result<Self> {
        if points.is_empty() || !points.len().is_multiple_of(2) {
            return Err(Error::InvalidInput(format!(
                "{} points given: give handle/target pairs (an even number, at least 2)",
                points.len()
            )));
        }
        for (i, p) in points.iter().enumerate() {
            let inside = p[0].is_finite()
                && p[1].is_finite()
                && p[0] >= 0.0
                && p[1] >= 0.0
                && p[0] <= (frame.width - 1) as f64
                && p[1] <= (frame.height - 1) as f64;
            if !inside {
                return Err(Error::InvalidInput(format!(
                    "{} {} at [{}, {}] is outside the {}×{} image",
                    if i % 2 == 0 { "handle" } else { "target" },
                    i / 2 + 1,
                    p[0],
                    p[1],
                    frame.width,
                    frame.height
                )));
            }
        }
        let mut handles = Vec::new();
        let mut targets = Vec::new();
        for pair in points.chunks_exact(2) {
            handles.push(frame.to_feature(pair[0]));
            targets.push(frame.to_feature(pair[1]));
        }
        Ok(Self { handles, targets })
    }
}

/// `{"points": [[x, y], …]}` — the official `points.json` / `new_points.json` layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointsFile {
    /// Alternating handle, target, in image pixels.
    pub points: Vec<[f64; 2]>,
}

impl PointsFile {
    /// Parses `points.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| {
            Error::InvalidInput(format!(
                "points.json is not valid: {e} (expected {{\"points\": [[x, y], …]}})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_round_half_to_even_like_torch() {
        let f = Frame::new(512, 512, 0.5).unwrap();
        // x = 101 → 50.5 → 50 (even); x = 103 → 51.5 → 52.
        assert_eq!(f.to_feature([101.0, 103.0]), [52.0, 50.0]);
        assert_eq!(f.to_image([52.0, 50.0]), [100.0, 104.0]);
        // Odd sizes: 300×212 → 150×106.
        let g = Frame::new(300, 212, 0.5).unwrap();
        assert_eq!((g.feat_width, g.feat_height), (150, 106));
        assert_eq!(g.to_feature([299.0, 211.0]), [106.0, 150.0]);
        let g = Frame::new(301, 213, 0.5).unwrap();
        assert_eq!((g.feat_width, g.feat_height), (150, 106));
    }

    #[test]
    fn bad_points_are_named() {
        let f = Frame::new(64, 48, 0.5).unwrap();
        assert!(PointPairs::from_image_points(&[[1.0, 1.0]], &f).is_err());
        let err = PointPairs::from_image_points(&[[1.0, 1.0], [64.0, 3.0]], &f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("target 1") && err.contains("64×48"), "{err}");
        assert!(PointPairs::from_image_points(&[[f64::NAN, 1.0], [2.0, 3.0]], &f).is_err());
        let ok = PointPairs::from_image_points(&[[0.0, 0.0], [63.0, 47.0]], &f).unwrap();
        assert_eq!(ok.handles, vec![[0.0, 0.0]]);
        assert_eq!(ok.targets, vec![[24.0, 32.0]]);
        assert!(Frame::new(7, 100, 0.5).is_err());
        assert!(PointsFile::from_json(r#"{"points": [[1, 2], [3]]}"#).is_err());
        assert_eq!(
            PointsFile::from_json(r#"{"points": [[1, 2.5]]}"#)
                .unwrap()
                .points,
            vec![[1.0, 2.5]]
        );
    }
}
