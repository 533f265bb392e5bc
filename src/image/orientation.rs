//! EXIF orientation (docs/ARCHITECTURE.md §8): a phone stores a portrait photo as landscape
//! pixels plus an orientation tag (TIFF tag 0x0112, values 1–8) that viewers apply. Every
//! image that enters is turned upright before anything else sees it, so points always refer
//! to the upright image. The browser applies the tag when it decodes
//! (`createImageBitmap(…, { imageOrientation: 'from-image' })`); the CLI reads it here, from a
//! JPEG's APP1 `Exif` segment or a PNG's `eXIf` chunk.

use crate::image::RgbImage;

/// Reads the orientation from a TIFF structure (the payload of an Exif segment or chunk).
pub fn tiff_orientation(tiff: &[u8]) -> Option<u8> {
    let little = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |i: usize| {
        let b = tiff.get(i..i + 2)?;
        Some(if little {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |i: usize| {
        let b = tiff.get(i..i + 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries).find_map(|k| {
        let entry = ifd + 2 + 12 * k;
        // Tag 0x0112, type SHORT, one value.
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3)
            .then(|| u16_at(entry + 8))
            .flatten()
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (1..=8).contains(v))
    })
}

/// The orientation of a JPEG file's bytes (`None` when it has no Exif orientation).
pub fn jpeg_orientation(bytes: &[u8]) -> Option<u8> {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        // Start of scan: the headers are over.
        if marker == 0xDA {
            return None;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        let payload = bytes.get(i + 4..(i + 2 + len).min(bytes.len()))?;
        if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return tiff_orientation(&payload[6..]);
        }
        i += 2 + len;
    }
    None
}

/// Pixels of `channels` interleaved bytes, `width × height` as stored, turned upright for EXIF
/// `orientation` (1 = as stored; 2–8 mirror and/or rotate; anything else is treated as 1).
/// Returns the pixels and the upright `(width, height)`.
pub fn upright_pixels(
    data: Vec<u8>,
    (w, h): (usize, usize),
    channels: usize,
    orientation: u8,
) -> (Vec<u8>, (usize, usize)) {
    if !(2..=8).contains(&orientation) {
        return (data, (w, h));
    }
    let (ow, oh) = if orientation >= 5 { (h, w) } else { (w, h) };
    // The stored pixel shown at upright (x, y).
    let source = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x),
        }
    };
    let mut out = Vec::with_capacity(data.len());
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = source(x, y);
            let i = channels * (sy * w + sx);
            out.extend_from_slice(&data[i..i + channels]);
        }
    }
    (out, (ow, oh))
}

/// `image` turned upright for EXIF `orientation` (see [`upright_pixels`]).
pub fn upright(image: RgbImage, orientation: u8) -> RgbImage {
    let (rgb, (width, height)) =
        upright_pixels(image.rgb, (image.width, image.height), 3, orientation);
    RgbImage { width, height, rgb }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TIFF block with one IFD entry: orientation `v`.
    fn tiff(v: u16, little: bool) -> Vec<u8> {
        type Writers = (fn(u16) -> [u8; 2], fn(u32) -> [u8; 4]);
        let (u16b, u32b): Writers = if little {
            (u16::to_le_bytes, u32::to_le_bytes)
        } else {
            (u16::to_be_bytes, u32::to_be_bytes)
        };
        let mut t = if little {
            b"II".to_vec()
        } else {
            b"MM".to_vec()
        };
        t.extend(u16b(42));
        t.extend(u32b(8));
        t.extend(u16b(1));
        t.extend(u16b(0x0112));
        t.extend(u16b(3));
        t.extend(u32b(1));
        t.extend(u16b(v));
        t.extend([0, 0]);
        t.extend(u32b(0));
        t
    }

    #[test]
    fn orientation_is_read_from_both_byte_orders_and_a_jpeg_header() {
        assert_eq!(tiff_orientation(&tiff(6, true)), Some(6));
        assert_eq!(tiff_orientation(&tiff(8, false)), Some(8));
        assert_eq!(tiff_orientation(&tiff(9, true)), None);
        assert_eq!(tiff_orientation(b"XX"), None);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff(6, false));
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xE1];
        jpeg.extend(((app1.len() + 2) as u16).to_be_bytes());
        jpeg.extend(app1);
        jpeg.extend([0xFF, 0xDA, 0, 2]);
        assert_eq!(jpeg_orientation(&jpeg), Some(6));
        assert_eq!(jpeg_orientation(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // Truncated headers are not an error, just no orientation.
        assert_eq!(jpeg_orientation(&jpeg[..14]), None);
    }

    #[test]
    fn every_orientation_puts_the_stored_top_left_where_a_viewer_shows_it() {
        // Stored 3×2: pixel values encode their stored position.
        let stored = RgbImage {
            width: 3,
            height: 2,
            rgb: (0..6u8).flat_map(|i| [i, 0, 0]).collect(),
        };
        let red = |img: &RgbImage| img.rgb.chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        // Stored layout:  0 1 2 / 3 4 5
        let expect: [(u8, (usize, usize), Vec<u8>); 8] = [
            (1, (3, 2), vec![0, 1, 2, 3, 4, 5]),
            (2, (3, 2), vec![2, 1, 0, 5, 4, 3]),
            (3, (3, 2), vec![5, 4, 3, 2, 1, 0]),
            (4, (3, 2), vec![3, 4, 5, 0, 1, 2]),
            (5, (2, 3), vec![0, 3, 1, 4, 2, 5]),
            // 6: rotate 90° clockwise: the stored bottom-left comes to the top-left.
            (6, (2, 3), vec![3, 0, 4, 1, 5, 2]),
            (7, (2, 3), vec![5, 2, 4, 1, 3, 0]),
            // 8: rotate 90° counter-clockwise: the stored top-right comes to the top-left.
            (8, (2, 3), vec![2, 5, 1, 4, 0, 3]),
        ];
        for (o, dims, pixels) in expect {
            let up = upright(stored.clone(), o);
            assert_eq!((up.width, up.height), dims, "orientation {o}");
            assert_eq!(red(&up), pixels, "orientation {o}");
        }
    }
}
