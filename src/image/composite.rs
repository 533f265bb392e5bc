//! The full-resolution result (docs/ARCHITECTURE.md §8): the photo at its own size with only
//! the edited region replaced. The edit (at the working size) is enlarged and blended into the
//! photo through a feathered version of the region — the mask, or where none was drawn, the
//! area the edit changed around the dragged points — after a colour correction measured on the
//! seam, so the VAE's small colour shift does not show as an edge. Everywhere the feathered
//! region is zero the output bytes are the photo's own.

use crate::image::RgbImage;
use crate::image::resample::Resampler;
use crate::image::working::SizeMap;

/// How a result is composited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompositeSettings {
    /// Width of the blend band outside the region, in working pixels.
    pub feather: usize,
    /// Where no mask was drawn: a working pixel counts as changed when its largest channel
    /// difference from the photo (smoothed over 5×5 pixels) exceeds this (0–255).
    pub change_threshold: f32,
    /// The largest colour correction applied, per channel (0–255).
    pub max_correction: f32,
}

impl Default for CompositeSettings {
    fn default() -> Self {
        Self {
            feather: 8,
            change_threshold: 24.0,
            max_correction: 24.0,
        }
    }
}

/// A one-channel map at the working size.
type Plane = Vec<f32>;

/// Running-window maximum (`max == true`) or mean over `2r + 1` samples of every line along
/// one axis; windows are clipped at the borders (the mean divides by the samples inside).
fn window_1d(plane: &mut [f32], (w, h): (usize, usize), r: usize, horizontal: bool, max: bool) {
    let (lines, len) = if horizontal { (h, w) } else { (w, h) };
    let at = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let mut buf = vec![0f32; len];
    for line in 0..lines {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = plane[at(line, i)];
        }
        for i in 0..len {
            let (lo, hi) = (i.saturating_sub(r), (i + r + 1).min(len));
            let window = &buf[lo..hi];
            plane[at(line, i)] = if max {
                window.iter().copied().fold(0.0, f32::max)
            } else {
                window.iter().sum::<f32>() / window.len() as f32
            };
        }
    }
}

/// A square dilation (`max`) or box blur of radius `r`.
fn window_2d(plane: &mut [f32], size: (usize, usize), r: usize, max: bool) {
    if r > 0 {
        window_1d(plane, size, r, true, max);
        window_1d(plane, size, r, false, max);
    }
}

/// The region the edit changed, where no mask was drawn: pixels whose smoothed difference
/// from the photo exceeds the threshold and that are connected to the dragged points, plus a
/// band of `feather` working pixels around each handle → target segment. Changes elsewhere
/// (the VAE's reconstruction error on fine texture) are not part of the edit and are dropped.
pub fn changed_region(
    photo: &RgbImage,
    edited: &RgbImage,
    points: &[[f64; 2]],
    settings: &CompositeSettings,
) -> Vec<u8> {
    let (w, h) = (edited.width, edited.height);
    let mut diff: Plane = photo
        .rgb
        .chunks_exact(3)
        .zip(edited.rgb.chunks_exact(3))
        .map(|(a, b)| {
            (0..3)
                .map(|c| (f32::from(a[c]) - f32::from(b[c])).abs())
                .fold(0.0, f32::max)
        })
        .collect();
    window_2d(&mut diff, (w, h), 2, false);
    let mut region = vec![0u8; w * h];
    let mut stack = Vec::new();
    let radius = settings.feather.max(1) as f64;
    for pair in points.chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = (dx * dx + dy * dy).max(1e-12);
        let lo = |u: f64, v: f64| (u.min(v) - radius).floor().max(0.0) as usize;
        let hi = |u: f64, v: f64, n: usize| ((u.max(v) + radius).ceil() as usize).min(n - 1);
        for y in lo(a[1], b[1])..=hi(a[1], b[1], h) {
            for x in lo(a[0], b[0])..=hi(a[0], b[0], w) {
                let (px, py) = (x as f64 - a[0], y as f64 - a[1]);
                let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - t * dx, py - t * dy);
                if ex * ex + ey * ey <= radius * radius {
                    region[y * w + x] = 1;
                    stack.push((x, y));
                }
            }
        }
    }
    // Grow from the seeds over changed pixels (4-connected).
    while let Some((x, y)) = stack.pop() {
        let neighbours = [
            (x.wrapping_sub(1), y),
            (x + 1, y),
            (x, y.wrapping_sub(1)),
            (x, y + 1),
        ];
        for (nx, ny) in neighbours {
            if nx < w && ny < h {
                let i = ny * w + nx;
                if region[i] == 0 && diff[i] > settings.change_threshold {
                    region[i] = 1;
                    stack.push((nx, ny));
                }
            }
        }
    }
    region
}

/// The blend weight at the working size: 1 on the region, falling to 0 over `feather` pixels
/// outside it (a dilation by ½ feather, then two box blurs of ¼ feather).
fn feathered(region: &[u8], size: (usize, usize), feather: usize) -> Plane {
    let mut alpha: Plane = region
        .iter()
        .map(|&m| if m > 0 { 1.0 } else { 0.0 })
        .collect();
    let r = feather.div_ceil(4);
    window_2d(&mut alpha, size, 2 * r, true);
    window_2d(&mut alpha, size, r, false);
    window_2d(&mut alpha, size, r, false);
    alpha
}

/// The photo with the edit composited in at the photo's own size (see the module docs).
/// `working_photo` is the photo at the working size (as the edit saw it), `edited` the edit's
/// result, `region` the editable or changed region at the working size (> 0 = part of it).
pub fn composite(
    photo: &RgbImage,
    working_photo: &RgbImage,
    edited: &RgbImage,
    region: &[u8],
    settings: &CompositeSettings,
) -> RgbImage {
    let map = SizeMap {
        original: (photo.width, photo.height),
        working: (edited.width, edited.height),
    };
    let alpha = feathered(region, map.working, settings.feather);
    // Colour correction: the mean photo − edit difference on the seam (0 < α < 1, outside the
    // region), where the edit should equal the photo.
    let mut sum = [0f64; 3];
    let mut n = 0usize;
    for (i, &a) in alpha.iter().enumerate() {
        if a > 0.0 && a < 1.0 && region[i] == 0 {
            for (c, s) in sum.iter_mut().enumerate() {
                *s += f64::from(working_photo.rgb[3 * i + c]) - f64::from(edited.rgb[3 * i + c]);
            }
            n += 1;
        }
    }
    let shift = sum.map(|s| {
        if n == 0 {
            0.0
        } else {
            ((s / n as f64) as f32).clamp(-settings.max_correction, settings.max_correction)
        }
    });
    // Enlarge the edit and its weight together (four channels, one pass, row by row: a
    // 12-megapixel result never exists as floats) and blend.
    let rgba: Vec<u8> = edited
        .rgb
        .chunks_exact(3)
        .zip(&alpha)
        .flat_map(|(p, a)| [p[0], p[1], p[2], (a * 255.0).round() as u8])
        .collect();
    let mut out = photo.rgb.clone();
    let row_bytes = 3 * photo.width;
    Resampler::new(map.working, map.original, 4).rows(&rgba, |y, row| {
        let dst = &mut out[y * row_bytes..(y + 1) * row_bytes];
        for (px, d) in row.chunks_exact(4).zip(dst.chunks_exact_mut(3)) {
            let a = px[3] / 255.0;
            if a <= 0.0 {
                continue;
            }
            for c in 0..3 {
                let e = (px[c] + shift[c]).clamp(0.0, 255.0);
                let p = f32::from(d[c]);
                d[c] = (p + a * (e - p)).round().clamp(0.0, 255.0) as u8;
            }
        }
    });
    RgbImage {
        width: photo.width,
        height: photo.height,
        rgb: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            rgb: (0..w * h).flat_map(|i| f(i % w, i / w)).collect(),
        }
    }

    /// A `w × h` region: the rectangle `xs × ys`.
    fn rectangle(
        (w, h): (usize, usize),
        xs: std::ops::Range<usize>,
        ys: std::ops::Range<usize>,
    ) -> Vec<u8> {
        (0..w * h)
            .map(|i| u8::from(xs.contains(&(i % w)) && ys.contains(&(i / w))))
            .collect()
    }

    /// A textured photo (so an exact copy is distinguishable from a resampled one).
    fn photo(w: usize, h: usize) -> RgbImage {
        image(w, h, |x, y| {
            [
                (x * 7 % 251) as u8,
                (y * 13 % 241) as u8,
                ((x + y) % 200) as u8,
            ]
        })
    }

    #[test]
    fn outside_the_feathered_region_the_photo_is_copied_exactly() {
        let full = photo(1000, 750);
        let map = SizeMap::new(1000, 750, crate::image::working::WorkingSize::default()).unwrap();
        let working = map.image(&full);
        let (w, h) = map.working;
        // The edit paints a block at working (100..150, 100..150) and shifts every colour by
        // +10 (a VAE-like shift); the region is that block.
        let edited = image(w, h, |x, y| {
            if (100..150).contains(&x) && (100..150).contains(&y) {
                [250, 0, 0]
            } else {
                let p = &working.rgb[3 * (y * w + x)..3 * (y * w + x) + 3];
                [
                    p[0].saturating_add(10),
                    p[1].saturating_add(10),
                    p[2].saturating_add(10),
                ]
            }
        });
        let region = rectangle((w, h), 100..150, 100..150);
        let out = composite(
            &full,
            &working,
            &edited,
            &region,
            &CompositeSettings::default(),
        );
        assert_eq!((out.width, out.height), (1000, 750));
        let scale = 1000.0 / 512.0;
        let mut copied = 0;
        for y in 0..750 {
            for x in 0..1000 {
                let (wx, wy) = (x as f64 / scale, y as f64 / scale);
                let far = !(80.0..170.0).contains(&wx) || !(80.0..170.0).contains(&wy);
                let i = 3 * (y * 1000 + x);
                if far {
                    assert_eq!(out.rgb[i..i + 3], full.rgb[i..i + 3], "({x}, {y})");
                    copied += 1;
                }
            }
        }
        assert!(copied > 700_000);
        // Inside the region: the edit's colour, with the +10 shift measured on the seam taken
        // back off (250 − 10 = 240).
        let i = 3 * (250 * 1000 + 250);
        assert!(
            (i16::from(out.rgb[i]) - 240).abs() <= 2,
            "{:?}",
            &out.rgb[i..i + 3]
        );
    }

    #[test]
    fn the_seam_has_no_step_from_a_colour_shift() {
        // A flat grey photo; the edit is the photo +20 everywhere (a pure colour shift) with a
        // region in the middle: after the correction the result stays grey across the seam.
        let full = image(600, 400, |_, _| [100, 100, 100]);
        let map = SizeMap::new(600, 400, crate::image::working::WorkingSize::default()).unwrap();
        let working = map.image(&full);
        let (w, h) = map.working;
        let edited = image(w, h, |_, _| [120, 120, 120]);
        let region = rectangle((w, h), 200..300, 100..200);
        let out = composite(
            &full,
            &working,
            &edited,
            &region,
            &CompositeSettings::default(),
        );
        assert!(out.rgb.iter().all(|&v| v == 100));
    }

    #[test]
    fn without_a_mask_the_region_is_the_change_around_the_points() {
        let (w, h) = (64, 48);
        let photo = image(w, h, |_, _| [50, 50, 50]);
        // Changed: a blob around (20, 20) and, unconnected, a patch at (55, 40).
        let edited = image(w, h, |x, y| {
            let blob = (x as i32 - 20).pow(2) + (y as i32 - 20).pow(2) < 64;
            let far = x >= 52 && y >= 37;
            if blob || far {
                [200, 50, 50]
            } else {
                [50, 50, 50]
            }
        });
        let settings = CompositeSettings {
            feather: 2,
            ..CompositeSettings::default()
        };
        let region = changed_region(&photo, &edited, &[[18.0, 20.0], [22.0, 20.0]], &settings);
        assert_eq!(region[20 * w + 20], 1);
        assert_eq!(
            region[20 * w + 26],
            1,
            "grown over the blob beyond the seed band"
        );
        assert_eq!(
            region[41 * w + 56],
            0,
            "a change not connected to the drag is not the edit"
        );
        assert_eq!(region[5 * w + 5], 0);
    }
}
