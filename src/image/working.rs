//! The working resolution (docs/ARCHITECTURE.md §8): Stable Diffusion 1.5 was trained at
//! 512×512 and its memory grows with the pixel count, so a photo is edited at a working size —
//! by default its long side scaled to 512, sides multiples of 8, aspect kept (the official
//! GoodDrag UI resizes every photo to a width of 512) — and the points, the mask and the result
//! are mapped between the photo and that size exactly. Benchmarks keep the official behaviour
//! with [`WorkingSize::Native`] (the dataset's own size).

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::resample::Resampler;

/// The long side by default (SD 1.5's training resolution).
pub const DEFAULT_LONG_SIDE: usize = 512;
/// Long sides accepted; above [`DEFAULT_LONG_SIDE`] memory grows with the square of the side
/// (a 768 edit needs about 2.3× a 512 edit's activations), below it SD 1.5 loses detail (the
/// page offers 384–768; small sides are for tests and previews on the tiny model).
pub const LONG_SIDE_RANGE: std::ops::RangeInclusive<usize> = 64..=1024;
/// The most pixels an edit runs at (1024×1024, latent 128×128: four times a 512×512 edit's
/// activations). Larger sizes are refused up front instead of failing deep inside a GPU
/// allocation.
pub const MAX_EDIT_PIXELS: usize = 1024 * 1024;

/// The size an edit runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkingSize {
    /// The image's own size (the official benchmark behaviour).
    Native,
    /// The long side scaled to this many pixels (a multiple of 8 in [`LONG_SIDE_RANGE`]),
    /// the short side to the nearest multiple of 8 that keeps the aspect.
    LongSide(usize),
}

impl Default for WorkingSize {
    fn default() -> Self {
        Self::LongSide(DEFAULT_LONG_SIDE)
    }
}

impl std::fmt::Display for WorkingSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Native => f.write_str("native"),
            Self::LongSide(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for WorkingSize {
    type Err = Error;

    /// `native` or a long side such as `512`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "native" {
            return Ok(Self::Native);
        }
        let n: usize = s.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "the working size must be `native` or a long side in pixels, not `{s}`"
            ))
        })?;
        Self::LongSide(n).checked()
    }
}

impl WorkingSize {
    /// Checks a long side: a multiple of 8 in [`LONG_SIDE_RANGE`].
    pub fn checked(self) -> Result<Self> {
        if let Self::LongSide(n) = self
            && (!LONG_SIDE_RANGE.contains(&n) || n % 8 != 0)
        {
            return Err(Error::InvalidInput(format!(
                "the working long side must be a multiple of 8 from {} to {} pixels, not {n}",
                LONG_SIDE_RANGE.start(),
                LONG_SIDE_RANGE.end()
            )));
        }
        Ok(self)
    }

    /// The working size of a `width × height` image.
    pub fn dims(self, width: usize, height: usize) -> Result<(usize, usize)> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidInput(format!(
                "the image is {width}×{height}: it has no pixels"
            )));
        }
        match self.checked()? {
            Self::Native => Ok((width, height)),
            Self::LongSide(n) => {
                let scale = n as f64 / width.max(height) as f64;
                let side = |s: usize| (((s as f64 * scale) / 8.0).round() as usize).max(1) * 8;
                Ok((side(width), side(height)))
            }
        }
    }
}

/// Refuses an edit over [`MAX_EDIT_PIXELS`] with a message that says what to do.
pub fn check_edit_size(width: usize, height: usize) -> Result<()> {
    if width.saturating_mul(height) > MAX_EDIT_PIXELS {
        return Err(Error::InvalidInput(format!(
            "an edit at {width}×{height} would need more GPU memory than this editor plans for \
             (at most {MAX_EDIT_PIXELS} pixels, e.g. 1024×1024); edit at a working size such as \
             the default long side of {DEFAULT_LONG_SIDE}"
        )));
    }
    Ok(())
}

/// The map between a photo (`original`) and its working size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeMap {
    /// The photo's `(width, height)`.
    pub original: (usize, usize),
    /// The working `(width, height)`.
    pub working: (usize, usize),
}

impl SizeMap {
    /// The map of a `width × height` photo at `size`.
    pub fn new(width: usize, height: usize, size: WorkingSize) -> Result<Self> {
        Ok(Self {
            original: (width, height),
            working: size.dims(width, height)?,
        })
    }

    /// Whether the working size is the photo's.
    pub fn is_identity(&self) -> bool {
        self.original == self.working
    }

    fn scales(&self) -> (f64, f64) {
        (
            self.working.0 as f64 / self.original.0 as f64,
            self.working.1 as f64 / self.original.1 as f64,
        )
    }

    /// A photo point `[x, y]` (pixel indices, centres at integers) at the working size: the
    /// pixel-centre convention of the resampling, `x' = (x + ½)·s − ½` per axis.
    pub fn to_working(&self, p: [f64; 2]) -> [f64; 2] {
        let (sx, sy) = self.scales();
        [(p[0] + 0.5) * sx - 0.5, (p[1] + 0.5) * sy - 0.5]
    }

    /// The inverse of [`to_working`](Self::to_working).
    pub fn to_original(&self, p: [f64; 2]) -> [f64; 2] {
        let (sx, sy) = self.scales();
        [(p[0] + 0.5) / sx - 0.5, (p[1] + 0.5) / sy - 0.5]
    }

    /// The photo at the working size (antialiased when shrinking).
    pub fn image(&self, photo: &RgbImage) -> RgbImage {
        if self.is_identity() {
            return photo.clone();
        }
        RgbImage {
            width: self.working.0,
            height: self.working.1,
            rgb: Resampler::new(self.original, self.working, 3).resample_u8(&photo.rgb),
        }
    }

    /// A mask (one byte per pixel, > 0 = editable) at the working size: a working pixel is
    /// editable when at least half of what it averages is.
    pub fn mask(&self, mask: &[u8]) -> Vec<u8> {
        if self.is_identity() {
            return mask.to_vec();
        }
        let binary: Vec<u8> = mask.iter().map(|&m| if m > 0 { 255 } else { 0 }).collect();
        let mut out = Vec::with_capacity(self.working.0 * self.working.1);
        Resampler::new(self.original, self.working, 1).rows(&binary, |_, row| {
            out.extend(row.iter().map(|&v| if v >= 127.5 { 255u8 } else { 0 }))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_side_512_keeps_aspect_in_multiples_of_8() {
        let s = WorkingSize::default();
        assert_eq!(s.dims(4032, 3024).unwrap(), (512, 384));
        assert_eq!(s.dims(3024, 4032).unwrap(), (384, 512));
        assert_eq!(s.dims(512, 512).unwrap(), (512, 512));
        // Small photos are enlarged to the model's resolution, as the official UI does.
        assert_eq!(s.dims(300, 200).unwrap(), (512, 344));
        // Odd sizes: 1001×667 → 512 × 341.2 → 344.
        assert_eq!(s.dims(1001, 667).unwrap(), (512, 344));
        // A panorama keeps at least one latent row.
        assert_eq!(s.dims(10000, 50).unwrap(), (512, 8));
        assert_eq!(WorkingSize::Native.dims(1001, 667).unwrap(), (1001, 667));
        assert!(s.dims(0, 10).is_err());
        assert_eq!(
            WorkingSize::LongSide(768).dims(4000, 3000).unwrap(),
            (768, 576)
        );
    }

    #[test]
    fn sizes_parse_and_out_of_range_sides_are_refused() {
        assert_eq!(
            "native".parse::<WorkingSize>().unwrap(),
            WorkingSize::Native
        );
        assert_eq!(
            "640".parse::<WorkingSize>().unwrap(),
            WorkingSize::LongSide(640)
        );
        for bad in ["500", "56", "2048", "big", ""] {
            let e = bad.parse::<WorkingSize>().unwrap_err().to_string();
            assert!(e.contains("working"), "{bad}: {e}");
        }
        assert!(check_edit_size(1024, 1024).is_ok());
        let e = check_edit_size(4032, 3024).unwrap_err().to_string();
        assert!(e.contains("4032×3024") && e.contains("working size"), "{e}");
    }

    #[test]
    fn points_round_trip_exactly_and_follow_pixel_centres() {
        for (w, h) in [(4032, 3024), (3024, 4032), (1001, 667), (77, 513)] {
            let map = SizeMap::new(w, h, WorkingSize::default()).unwrap();
            for p in [[0.0, 0.0], [w as f64 - 1.0, h as f64 - 1.0], [123.4, 56.7]] {
                let back = map.to_original(map.to_working(p));
                assert!((back[0] - p[0]).abs() < 1e-9 && (back[1] - p[1]).abs() < 1e-9);
            }
            // The photo's centre is the working image's centre.
            let c = map.to_working([(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0]);
            let (ww, wh) = map.working;
            assert!((c[0] - (ww as f64 - 1.0) / 2.0).abs() < 1e-9);
            assert!((c[1] - (wh as f64 - 1.0) / 2.0).abs() < 1e-9);
        }
        // 8× reduction: the centre of the 8×8 block at (8..16) is working pixel 1.
        let map = SizeMap::new(4096, 4096, WorkingSize::default()).unwrap();
        assert_eq!(map.to_working([11.5, 11.5]), [1.0, 1.0]);
    }

    #[test]
    fn a_mask_keeps_its_region_at_the_working_size() {
        // Left half editable on a 1000×800 photo → left half of 512×408.
        let (w, h) = (1000, 800);
        let mask: Vec<u8> = (0..w * h)
            .map(|i| if i % w < w / 2 { 1 } else { 0 })
            .collect();
        let map = SizeMap::new(w, h, WorkingSize::default()).unwrap();
        let m = map.mask(&mask);
        let (ww, wh) = map.working;
        assert_eq!((ww, wh), (512, 408));
        for y in 0..wh {
            for x in 0..ww {
                assert_eq!(m[y * ww + x] > 0, x < ww / 2, "({x}, {y})");
            }
        }
        let photo = RgbImage {
            width: w,
            height: h,
            rgb: vec![9; w * h * 3],
        };
        let img = map.image(&photo);
        assert_eq!((img.width, img.height), (512, 408));
        assert!(img.rgb.iter().all(|&v| v == 9));
    }
}
