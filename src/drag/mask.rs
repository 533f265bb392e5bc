//! The editable-region mask (docs/ALGORITHM.md §1.4): white/non-zero = may change. It is resized with
//! nearest-neighbour to the feature resolution and again to the latent resolution
//! (`F.interpolate(mode='nearest')`: source index `⌊dst·in/out⌋`).
//!
//! Empty mask (deliberate deviation, documented): the reference regularises the whole latent
//! when nothing is painted, so handles barely move (DragDiffusion issue #45). Here an empty mask
//! means "no mask term", as DragDiffusion does.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// PyTorch's nearest source index (`nearest_idx`): the scale and product in f32.
fn nearest_index(dst: usize, input: usize, output: usize) -> usize {
    if input == output {
        dst
    } else if output == 2 * input {
        dst >> 1
    } else {
        let scale = input as f32 / output as f32;
        ((dst as f32 * scale).floor() as usize).min(input - 1)
    }
}

/// Nearest-neighbour resize of a row-major `w × h` grid (PyTorch `mode='nearest'`).
pub fn resize_nearest(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        let sy = nearest_index(y, h, oh);
        for x in 0..ow {
            let sx = nearest_index(x, w, ow);
            out[y * ow + x] = src[sy * w + sx];
        }
    }
    out
}

/// The mask at latent resolution, as GoodDrag uses it.
#[derive(Debug, Clone)]
pub struct LatentMask {
    /// `1 − M` at latent resolution `[1, 1, h, w]` (1 = keep close to the reference), or
    /// `None` when the mask is empty (no mask term).
    pub keep: Option<Tensor<4>>,
    /// Fraction of the image that is editable.
    pub editable_fraction: f64,
}

impl LatentMask {
    /// From an image-size mask (`width·height` values, > 0 = editable; `None` = no mask):
    /// binarise, nearest to the feature resolution, nearest to the latent resolution.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mask: Option<&[u8]>,
        width: usize,
        height: usize,
        feat: (usize, usize),
        latent: (usize, usize),
        device: &Device,
    ) -> Result<Self> {
        let Some(mask) = mask else {
            return Ok(Self {
                keep: None,
                editable_fraction: 0.0,
            });
        };
        if mask.len() != width * height {
            return Err(Error::InvalidInput(format!(
                "the mask has {} pixels but the image is {width}×{height}; use a mask of the \
                 image's size",
                mask.len()
            )));
        }
        let binary: Vec<f32> = mask.iter().map(|&v| f32::from(v > 0)).collect();
        let editable = binary.iter().filter(|&&v| v > 0.0).count();
        if editable == 0 {
            return Ok(Self {
                keep: None,
                editable_fraction: 0.0,
            });
        }
        let half = resize_nearest(&binary, width, height, feat.0, feat.1);
        let lat = resize_nearest(&half, feat.0, feat.1, latent.0, latent.1);
        let keep: Vec<f32> = lat.iter().map(|m| 1.0 - m).collect();
        Ok(Self {
            keep: Some(Tensor::from_data(
                TensorData::new(keep, [1, 1, latent.1, latent.0]),
                device,
            )),
            editable_fraction: editable as f64 / mask.len() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_resize_picks_floor_sources() {
        let src: Vec<f32> = (0..8).map(|v| v as f32).collect(); // 4 × 2
        assert_eq!(resize_nearest(&src, 4, 2, 2, 1), vec![0.0, 2.0]);
        assert_eq!(
            resize_nearest(&src, 4, 2, 8, 2)[..8],
            [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
        );
    }

    #[test]
    fn empty_or_missing_mask_means_no_mask_term_and_wrong_size_is_an_error() {
        let device = Device::flex();
        let none = LatentMask::new(None, 16, 16, (8, 8), (2, 2), &device).unwrap();
        assert!(none.keep.is_none());
        let empty = LatentMask::new(Some(&[0u8; 256]), 16, 16, (8, 8), (2, 2), &device).unwrap();
        assert!(empty.keep.is_none());
        let mut m = vec![0u8; 256];
        for y in 0..8 {
            for x in 0..8 {
                m[y * 16 + x] = 255;
            }
        }
        let quarter = LatentMask::new(Some(&m), 16, 16, (8, 8), (2, 2), &device).unwrap();
        let keep: Vec<f32> = quarter.keep.unwrap().into_data().try_into_vec().unwrap();
        assert_eq!(keep, vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(quarter.editable_fraction, 0.25);
        assert!(LatentMask::new(Some(&m[..100]), 16, 16, (8, 8), (2, 2), &device).is_err());
    }
}
