//! DIFT features (Tang et al. 2023, "Emergent Correspondence from Image Diffusion") as
//! DragBench's MD computes them (docs/EVALUATION.md §2.3): an image is noised to one timestep
//! and the UNet's `up_blocks[1]` output, averaged over an ensemble of noise draws, is its
//! feature map. DragBench uses Stable Diffusion 2.1 (any diffusers SD 1.x/2.x folder loads).
//!
//! Per image, with ensemble size n (8) and timestep t (261):
//! 1. `x = (pixel/255 − 0.5)·2`, the whole image at its own size;
//! 2. the VAE's posterior `(mean, std)`; `z = (mean + std·ε₁)·scaling_factor` for n draws ε₁;
//! 3. `x_t = √ᾱ_t·z + √(1−ᾱ_t)·ε₂` (the scheduler's `add_noise`) for n more draws ε₂;
//! 4. the UNet at t with the prompt's embedding (positive only, no guidance), the output of
//!    `up_blocks[1]` including its upsampler, averaged over the n copies; the UNet stops there
//!    ([`UNet2DConditionModel::forward_to_up_block`](crate::models::unet_2d_condition::UNet2DConditionModel::forward_to_up_block)).
//!
//! The noise comes from a seeded [`Rng`], or is given ([`DiftNoise::Given`]) so a test can
//! inject the reference's PyTorch draws and compare features exactly. The encoder runs once, not
//! n times: the n copies of the image are identical, only their noise differs.
//! Reference: DragDiffusion `drag_bench_evaluation/dift_sd.py` (`SDFeaturizer.forward`,
//! `OneStepSDPipeline`, `MyUNet2DConditionModel`), Tsingularity/dift.

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::image::{RgbImage, planar_rgb};
use crate::model_set::Models;
use crate::rng::Rng;
use crate::schedulers::DdimScheduler;
use crate::tensor_io::read_f32;

/// The DIFT settings DragBench's MD uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiftSettings {
    /// The noise timestep (261).
    pub timestep: usize,
    /// Which up block's output is the feature (1).
    pub up_ft_index: usize,
    /// Noise draws averaged (8).
    pub ensemble: usize,
}

impl Default for DiftSettings {
    fn default() -> Self {
        Self {
            timestep: 261,
            up_ft_index: 1,
            ensemble: 8,
        }
    }
}

/// Where the two noise tensors of one featurizer call come from.
pub enum DiftNoise<'a> {
    /// Drawn from this generator: ε₁ (posterior sample), then ε₂ (forward noise), each
    /// `[n, latent, h, w]` in row-major order.
    Seeded(&'a mut Rng),
    /// Given (a reference's draws), each `[n, latent, h, w]` row-major.
    Given {
        /// ε₁, the posterior sample's noise.
        posterior: Vec<f32>,
        /// ε₂, the forward process noise.
        forward: Vec<f32>,
    },
}

/// A feature map on the host: `[channels, height, width]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Values, channel-major.
    pub data: Vec<f32>,
}

/// `[1, 3, h, w]` in [−1, 1] as DIFT's preprocessing computes it: `(x/255 − 0.5)·2`
/// (PARITY: not `x/127.5 − 1`, which differs by an ulp).
fn dift_input(image: &RgbImage, device: &burn::tensor::Device) -> Tensor<4> {
    let planar = planar_rgb(&image.rgb, |v| (v as f32 / 255.0 - 0.5) * 2.0);
    Tensor::from_data(
        TensorData::new(planar, [1, 3, image.height, image.width]),
        device,
    )
}

/// The DIFT feature map of `image` with `prompt` (module docs), `[C, h', w']` at about 1/16
/// of the image's size.
pub async fn dift_features(
    models: &Models,
    image: &RgbImage,
    prompt: &str,
    settings: DiftSettings,
    noise: DiftNoise<'_>,
) -> Result<FeatureMap> {
    let device = &models.device;
    let n = settings.ensemble.max(1);
    if settings.up_ft_index >= models.unet.up_blocks.len() {
        return Err(Error::InvalidInput(format!(
            "DIFT up_ft_index {} but the UNet has {} up blocks",
            settings.up_ft_index,
            models.unet.up_blocks.len()
        )));
    }
    let posterior = models.vae.encode(dift_input(image, device));
    let [_, c, h, w] = posterior.mean.dims();
    let count = n * c * h * w;
    let (eps1, eps2) = match noise {
        DiftNoise::Seeded(rng) => (rng.normal_vec(count, 1.0), rng.normal_vec(count, 1.0)),
        DiftNoise::Given { posterior, forward } => {
            if posterior.len() != count || forward.len() != count {
                return Err(Error::InvalidInput(format!(
                    "DIFT noise: {} and {} values given, {count} needed ([{n}, {c}, {h}, {w}])",
                    posterior.len(),
                    forward.len()
                )));
            }
            (posterior, forward)
        }
    };
    let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), device);
    let mean = posterior.mean.clone().repeat_dim(0, n);
    let std = posterior.std().repeat_dim(0, n);
    // PARITY: `latent_dist.sample() * scaling_factor`, no shift factor (as dift_sd.py).
    let z = (mean + std * tensor(eps1)) * models.vae.scaling_factor;
    let scheduler = DdimScheduler::forward_process(models.scheduler.clone())?;
    let noisy = scheduler.add_noise(z, tensor(eps2), &vec![settings.timestep; n])?;
    let text = models.embed_prompt(prompt)?;
    let [_, tokens, width] = text.dims();
    let text = text.expand([n, tokens, width]);
    // The layers after up_blocks[index] are never run (DIFT's truncated UNet does the same).
    let features = models
        .unet
        .forward_to_up_block(
            noisy,
            &[settings.timestep as f32],
            text,
            settings.up_ft_index,
        )
        .ok_or_else(|| Error::InvalidInput("DIFT: the UNet returned no features".into()))?;
    let [_, channels, height, width] = features.dims();
    let mean = features.mean_dim(0);
    Ok(FeatureMap {
        channels,
        height,
        width,
        data: read_f32(mean).await?,
    })
}
