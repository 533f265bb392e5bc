//! Cheap previews during the drag: the predicted clean latent x̂₀ mapped to RGB by a fixed
//! linear map of the four SD 1.x latent channels (the widely used "latent RGB factors"), at
//! latent resolution — no VAE decode, a few thousand multiply-adds.

use serde::Serialize;

/// SD 1.x latent channel → RGB contributions.
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// An RGB8 preview image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// Width in pixels (latent width).
    pub width: usize,
    /// Height in pixels (latent height).
    pub height: usize,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

/// Preview of a `[1, 4, h, w]` latent given as host values (channel-major).
pub fn latent_preview(latent: &[f32], width: usize, height: usize) -> Preview {
    let plane = width * height;
    let mut rgb = vec![0u8; 3 * plane];
    for i in 0..plane {
        for (c, out) in rgb[3 * i..3 * i + 3].iter_mut().enumerate() {
            let v: f32 = (0..4)
                .map(|k| latent.get(k * plane + i).copied().unwrap_or(0.0) * LATENT_RGB[k][c])
                .sum();
            *out = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
        }
    }
    Preview { width, height, rgb }
}
