//! Images as the core sees them: RGB8 pixels in and out, and the bilinear resize the edit uses
//! between the photo's size and the latent grid (docs/ALGORITHM.md §1.2). Decoding files is
//! the faces' job (the browser decodes itself; the CLI uses `imageio`).
//!
//! Real photos (docs/ARCHITECTURE.md §8):
//! - [`orientation`]: EXIF orientation, so every image is upright before points refer to it;
//! - [`working`]: the working resolution and the exact map of points and masks to it;
//! - [`resample`]: the antialiased resampling both directions use;
//! - [`composite`]: the full-resolution result, the photo with only the edited region replaced.

pub mod composite;
pub mod orientation;
pub mod resample;
pub mod working;

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// An RGB8 image.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes, `3·width·height`.
    pub rgb: Vec<u8>,
}

/// RGB8 pixels (row-major, 3 bytes each) as planar `[3, h, w]` f32 values, each byte mapped by
/// `map` — the one conversion of the networks' inputs (`x/127.5 − 1`) and the metrics' (DIFT's
/// `(x/255 − 0.5)·2`, which differs by an ulp).
pub fn planar_rgb(rgb: &[u8], map: impl Fn(u8) -> f32) -> Vec<f32> {
    let plane = rgb.len() / 3;
    let mut planar = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * plane + i] = map(px[c]);
        }
    }
    planar
}

/// Bilinear resize of `[1, c, h, w]` to `height × width` (align_corners = False).
pub fn resize_bilinear(image: Tensor<4>, height: usize, width: usize) -> Tensor<4> {
    let [_, _, h, w] = image.dims();
    if (h, w) == (height, width) {
        return image;
    }
    interpolate(
        image,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([height, width]),
    )
}
