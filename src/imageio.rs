//! Image files for the native CLI: PNG and JPEG in, PNG out, masks, and the official
//! `image_with_new_points.png` drawing (docs/ALGORITHM.md §1.17: red final handle, blue target, white arrow;
//! circle radius 5, arrow thickness 4, tip length 0.5). The browser decodes images itself.
//!
//! Every image is turned upright for its EXIF orientation as it is decoded
//! (`image::orientation`), so points refer to what a viewer shows. png and zune-jpeg are the
//! decoders the `image` crate itself uses for these formats; `image` would add only the
//! orientation (read here in 40 lines) and, through num-traits' default feature, a rebuild of
//! all of burn (see Cargo.toml).

use std::io::{BufReader, Cursor};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::orientation::{jpeg_orientation, tiff_orientation, upright_pixels};

fn unreadable(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "`{}` is not a readable PNG or JPEG image: {why}",
        path.display()
    ))
}

/// Decoded pixels with their channel count (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
struct Decoded {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

/// Decodes a PNG or JPEG file, upright (EXIF orientation applied).
fn decode(path: &Path) -> Result<Decoded> {
    let (d, orientation) = decode_stored(path)?;
    let (data, (width, height)) = upright_pixels(
        d.data,
        (d.width, d.height),
        d.channels,
        orientation.unwrap_or(1),
    );
    Ok(Decoded {
        width,
        height,
        channels: d.channels,
        data,
    })
}

/// The pixels as stored, and the EXIF orientation when the file has one.
fn decode_stored(path: &Path) -> Result<(Decoded, Option<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    if bytes.starts_with(b"\x89PNG") {
        let mut decoder = png::Decoder::new(BufReader::new(Cursor::new(&bytes)));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| unreadable(path, e))?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| unreadable(path, "image too large"))?;
        let mut data = vec![0; size];
        let info = reader
            .next_frame(&mut data)
            .map_err(|e| unreadable(path, e))?;
        data.truncate(info.buffer_size());
        let channels = info.color_type.samples();
        let orientation = reader
            .info()
            .exif_metadata
            .as_deref()
            .and_then(tiff_orientation);
        Ok((
            Decoded {
                width: info.width as usize,
                height: info.height as usize,
                channels,
                data,
            },
            orientation,
        ))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(Cursor::new(&bytes), options);
        let data = decoder
            .decode()
            .map_err(|e| unreadable(path, format!("{e:?}")))?;
        let info = decoder
            .info()
            .ok_or_else(|| unreadable(path, "no image header"))?;
        Ok((
            Decoded {
                width: info.width as usize,
                height: info.height as usize,
                channels: 3,
                data,
            },
            jpeg_orientation(&bytes),
        ))
    } else {
        Err(unreadable(path, "unknown file type (not PNG or JPEG)"))
    }
}

/// Loads an RGB image (alpha dropped, gray expanded).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let d = decode(path)?;
    let mut rgb = Vec::with_capacity(d.width * d.height * 3);
    for px in d.data.chunks_exact(d.channels) {
        match d.channels {
            1 | 2 => rgb.extend_from_slice(&[px[0]; 3]),
            _ => rgb.extend_from_slice(&px[..3]),
        }
    }
    Ok(RgbImage {
        width: d.width,
        height: d.height,
        rgb,
    })
}

/// Loads a mask: channel 0 of a gray or colour image (> 0 = editable), docs/EVALUATION.md §1.1.
pub fn load_mask(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let d = decode(path)?;
    let mask = d.data.chunks_exact(d.channels).map(|px| px[0]).collect();
    Ok((d.width, d.height, mask))
}

/// Writes an 8-bit PNG (`channels` 1 or 3).
pub fn save_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    data: &[u8],
) -> Result<()> {
    let io = |e: &dyn std::fmt::Display| {
        Error::InvalidInput(format!("cannot write `{}`: {e}", path.display()))
    };
    let file = std::fs::File::create(path).map_err(|e| io(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| io(&e))?;
    writer.write_image_data(data).map_err(|e| io(&e))?;
    writer.finish().map_err(|e| io(&e))
}

/// Writes an RGB image as PNG.
pub fn save_rgb(path: &Path, image: &RgbImage) -> Result<()> {
    save_png(path, image.width, image.height, 3, &image.rgb)
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        let i = (y as usize * img.width + x as usize) * 3;
        img.rgb[i..i + 3].copy_from_slice(&color);
    }
}

fn disc(img: &mut RgbImage, c: [f64; 2], r: f64, color: [u8; 3]) {
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f64 <= r * r {
                put(
                    img,
                    c[0].round() as i64 + dx,
                    c[1].round() as i64 + dy,
                    color,
                );
            }
        }
    }
}

fn thick_line(img: &mut RgbImage, a: [f64; 2], b: [f64; 2], thickness: f64, color: [u8; 3]) {
    let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
    let steps = (len * 2.0).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        disc(
            img,
            [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t],
            thickness / 2.0,
            color,
        );
    }
}

/// The official result preview: a white arrow (thickness 4, tip 0.5 of its length, like
/// `cv2.arrowedLine`) from each final handle to its target, then a red disc (radius 5) on the
/// handle and a blue one on the target. `points`: final handle, target, …
pub fn draw_points(image: &RgbImage, points: &[[f64; 2]]) -> RgbImage {
    let mut img = image.clone();
    for pair in points.chunks_exact(2) {
        let (h, t) = (pair[0], pair[1]);
        let (dx, dy) = (t[0] - h[0], t[1] - h[1]);
        let len = (dx * dx + dy * dy).sqrt();
        thick_line(&mut img, h, t, 4.0, [255, 255, 255]);
        if len > 0.0 {
            let tip = 0.5 * len;
            let angle = dy.atan2(dx);
            for side in [-1.0f64, 1.0] {
                let a = angle + std::f64::consts::PI + side * std::f64::consts::FRAC_PI_4;
                thick_line(
                    &mut img,
                    t,
                    [t[0] + tip * a.cos(), t[1] + tip * a.sin()],
                    4.0,
                    [255, 255, 255],
                );
            }
        }
        disc(&mut img, h, 5.0, [255, 0, 0]);
        disc(&mut img, t, 5.0, [0, 0, 255]);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_and_drawing_colours() {
        let dir = std::env::temp_dir().join(format!("gooddrag-imageio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = RgbImage {
            width: 40,
            height: 30,
            rgb: (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect(),
        };
        let path = dir.join("a.png");
        save_rgb(&path, &img).unwrap();
        assert_eq!(load_rgb(&path).unwrap(), img);
        let drawn = draw_points(&img, &[[5.0, 5.0], [30.0, 20.0]]);
        let at = |x: usize, y: usize| &drawn.rgb[(y * 40 + x) * 3..(y * 40 + x) * 3 + 3];
        assert_eq!(at(5, 5), [255, 0, 0]);
        assert_eq!(at(30, 20), [0, 0, 255]);
        assert_eq!(at(17, 12), [255, 255, 255]);
        std::fs::write(dir.join("junk.png"), b"not an image").unwrap();
        assert!(
            load_rgb(&dir.join("junk.png"))
                .unwrap_err()
                .to_string()
                .contains("junk.png")
        );
        assert!(load_rgb(&dir.join("missing.png")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
