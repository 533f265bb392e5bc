//! LoRA fine-tuning on the input image, as the official code does it (docs/ALGORITHM.md §1.9,
//! `utils/lora_utils.py: train_lora`):
//!
//! 1. resize the image so its short side is `resolution` and draw `batch_size` random crops of
//!    `resolution`² once, VAE-encode them once (the per-step augmentation is off in the
//!    official code);
//! 2. attach a fresh rank-r LoRA (`down ~ N(0, 1/r²)`, `up = 0`) to every attention projection;
//!    only its weights receive gradients;
//! 3. each step: per crop, sample the posterior, scale it, draw t ~ U{0..999} and ε ~ N(0, I),
//!    noise with the DDPM forward process, predict ε with the prompt embedding, MSE (mean);
//!    the batch-mean gradient is accumulated crop by crop (batch 1 at a time — GroupNorm and
//!    attention are per sample, so this equals batch 4 exactly and needs a quarter of the
//!    activation memory);
//! 4. AdamW (lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2, constant schedule).
//!
//! All randomness comes from one seeded host [`Rng`], so a run is reproducible on every device.
//! PyTorch's generator cannot be reproduced; parity is checked on fixed tensors instead.

use burn::module::{Module, Param};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{LoraSet, lora_params_mut};
use crate::error::{Error, Result};
use crate::kernels::precision::Precision;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::{AutoencoderKL, LatentDistribution};
use crate::optim::{Adam, AdamConfig};
use crate::progress::{Cancel, Progress};
use crate::rng::Rng;
use crate::schedulers::DdimScheduler;
use crate::tensor_io::read_f32;

/// LoRA fine-tuning settings; defaults are the official UI's (docs/ALGORITHM.md §1.19).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Adapter rank.
    pub rank: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Crops per step.
    pub batch_size: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Crop size in image pixels (the short side is resized to it).
    pub resolution: usize,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            steps: 70,
            learning_rate: 5e-4,
            batch_size: 4,
            weight_decay: 1e-2,
            seed: 0,
            resolution: 512,
        }
    }
}

/// One training example: a scaled clean latent, the noise to add and predict, the timestep.
#[derive(Debug, Clone)]
pub struct TrainSample {
    /// `[1, 4, h, w]`, already multiplied by the VAE scaling factor.
    pub latents: Tensor<4>,
    /// `[1, 4, h, w]` standard normal noise.
    pub noise: Tensor<4>,
    /// DDPM timestep in `0..num_train_timesteps`.
    pub timestep: usize,
}

/// AdamW over the LoRA weights of a UNet, with PyTorch's `AdamW` semantics.
pub struct LoraTrainer {
    adam: Adam<2>,
}

impl LoraTrainer {
    /// An optimiser with fresh moments.
    pub fn new(config: &LoraConfig) -> Self {
        Self {
            adam: Adam::new(AdamConfig::adamw(config.learning_rate, config.weight_decay)),
        }
    }

    /// The batch's mean noise-prediction MSE and its gradient with respect to every LoRA
    /// weight (order of [`lora_params_mut`]), accumulated sample by sample.
    /// encoder_hidden_states: `[1, 77, d]`.
    pub fn gradients(
        unet: &mut UNet2DConditionModel,
        scheduler: &DdimScheduler,
        samples: &[TrainSample],
        encoder_hidden_states: &Tensor<3>,
    ) -> Result<(Tensor<1>, Vec<Option<Tensor<2>>>)> {
        let n = samples.len();
        if n == 0 {
            return Err(Error::InvalidInput(
                "a LoRA step needs at least one sample".into(),
            ));
        }
        let params: Vec<Tensor<2>> = lora_params_mut(unet).into_iter().map(|p| p.val()).collect();
        // Per sample: each parameter's gradient summed over the layers it is used in.
        let mut sample_sums: Vec<Option<Tensor<2>>> = vec![None; params.len()];
        let mut sums: Vec<Option<Tensor<2>>> = vec![None; params.len()];
        let mut total: Option<Tensor<1>> = None;
        for s in samples {
            let noisy = scheduler.add_noise(s.latents.clone(), s.noise.clone(), &[s.timestep])?;
            // Backward by layer-wise recomputation: one layer's graph alive at a time.
            let fb = unet.forward_backward(
                noisy,
                &[s.timestep as f32],
                encoder_hidden_states.clone(),
                None,
                &mut |x| {
                    Ok((x.noise_pred.clone() - s.noise.clone())
                        .powi_scalar(2)
                        .mean()
                        .div_scalar(n as f64))
                },
                &mut |grads| {
                    for (sum, p) in sample_sums.iter_mut().zip(&params) {
                        if let Some(g) = p.grad(grads) {
                            *sum = Some(match sum.take() {
                                Some(acc) => acc + g,
                                None => g,
                            });
                        }
                    }
                },
            )?;
            // f16 compute scales the gradients inside the UNet (`exec::recompute`): unscale.
            let scale = (unet.precision == Precision::F16).then(|| fb.grad_scale.unsqueeze::<2>());
            for (sum, g) in sums.iter_mut().zip(sample_sums.iter_mut()) {
                if let Some(g) = g.take() {
                    let g = match &scale {
                        Some(scale) => g / scale.clone(),
                        None => g,
                    };
                    *sum = Some(match sum.take() {
                        Some(acc) => acc + g,
                        None => g,
                    });
                }
            }
            total = Some(match total {
                Some(t) => t + fb.loss,
                None => fb.loss,
            });
        }
        Ok((total.expect("n > 0"), sums))
    }

    /// One AdamW step on the LoRA weights (they keep their ids and stay trainable).
    pub fn step(&mut self, unet: &mut UNet2DConditionModel, grads: Vec<Option<Tensor<2>>>) {
        let mut params = lora_params_mut(unet);
        let values: Vec<Tensor<2>> = params.iter().map(|p| p.val()).collect();
        let updated = self.adam.step(values, grads);
        for (param, value) in params.iter_mut().zip(updated) {
            let id = param.id;
            **param = Param::initialized(id, value.require_grad());
        }
    }
}

/// Fine-tunes a fresh LoRA on `image`, leaves it attached to `unet` (frozen again) and returns
/// the loss of every step. On an error or cancellation the UNet keeps its base weights and
/// has no LoRA.
///
/// unet: base weights on an autodiff device; image: `[1, 3, H, W]` in [−1, 1];
/// encoder_hidden_states: the prompt embedding `[1, 77, d]`.
#[allow(clippy::too_many_arguments)]
pub async fn train_lora(
    unet: &mut UNet2DConditionModel,
    vae: &AutoencoderKL,
    scheduler: &DdimScheduler,
    image: Tensor<4>,
    encoder_hidden_states: &Tensor<3>,
    config: &LoraConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<Vec<f32>> {
    let result = train(
        unet,
        vae,
        scheduler,
        image,
        encoder_hidden_states,
        config,
        progress,
        cancel,
    )
    .await;
    *unet = unet.clone().no_grad();
    if result.is_err() {
        super::detach(unet);
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn train(
    unet: &mut UNet2DConditionModel,
    vae: &AutoencoderKL,
    scheduler: &DdimScheduler,
    image: Tensor<4>,
    encoder_hidden_states: &Tensor<3>,
    config: &LoraConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<Vec<f32>> {
    if config.batch_size == 0 || config.resolution < 8 {
        return Err(Error::InvalidInput(format!(
            "LoRA batch size {} and resolution {}: use at least 1 and 8",
            config.batch_size, config.resolution
        )));
    }
    let device = image.device();
    let mut rng = Rng::new(config.seed);
    let n_train = scheduler.alphas_cumprod().len();

    // 1. Crops, encoded once.
    let crops = random_crops(image, config.resolution, config.batch_size, &mut rng);
    let posteriors: Vec<LatentDistribution> = crops
        .into_iter()
        .map(|c| {
            let d = vae.encode(c);
            LatentDistribution {
                mean: d.mean.detach(),
                logvar: d.logvar.detach(),
            }
        })
        .collect();

    // 2. Fresh LoRA, the only trainable weights.
    *unet = unet.clone().no_grad();
    let set = LoraSet::init_for(unet, config.rank, &mut rng)?;
    set.attach(unet, true, "the new LoRA", &device)?;

    // 3–4. Steps.
    let mut trainer = LoraTrainer::new(config);
    let mut losses = Vec::with_capacity(config.steps);
    for step in 1..=config.steps {
        cancel.check()?;
        let samples: Vec<TrainSample> = posteriors
            .iter()
            .map(|p| {
                let shape = p.mean.dims();
                let n: usize = shape.iter().product();
                let normal = |rng: &mut Rng| {
                    Tensor::<4>::from_data(TensorData::new(rng.normal_vec(n, 1.0), shape), &device)
                };
                let latents = vae.scale_latent(p.sample_with(normal(&mut rng)));
                let timestep = rng.below(n_train);
                TrainSample {
                    latents,
                    noise: normal(&mut rng),
                    timestep,
                }
            })
            .collect();
        let (loss, grads) =
            LoraTrainer::gradients(unet, scheduler, &samples, encoder_hidden_states)?;
        // With f16 compute, also whether every gradient is finite (same readback): an f16
        // overflow must stop the run, not reach the weights.
        let checked = match unet.precision {
            Precision::F32 => loss,
            Precision::F16 => {
                let magnitude = grads
                    .iter()
                    .flatten()
                    .map(|g| g.clone().abs().sum())
                    .reduce(|a, b| a + b)
                    .unwrap_or_else(|| loss.zeros_like());
                Tensor::cat(vec![loss, magnitude], 0)
            }
        };
        trainer.step(unet, grads);
        let values = read_f32(checked).await?;
        let loss = values[0];
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Readback(format!(
                "LoRA training diverged at step {step} (loss {loss}, gradients {}; \
                 with f16 compute, try f32)",
                values.get(1).copied().unwrap_or(0.0)
            )));
        }
        losses.push(loss);
        progress(Progress::Lora {
            step,
            of: config.steps,
            loss,
        });
    }
    Ok(losses)
}

/// Resizes `image` (`[1, 3, H, W]`) bilinearly so that its short side is `size` and takes
/// `count` random `size`² crops (torchvision `Resize(size)` + `RandomCrop(size)`, docs/ALGORITHM.md §1.9;
/// the resize is an identity for an image whose short side already is `size`).
fn random_crops(image: Tensor<4>, size: usize, count: usize, rng: &mut Rng) -> Vec<Tensor<4>> {
    let [_, _, h, w] = image.dims();
    let short = h.min(w).max(1);
    let (nh, nw) = if h <= w {
        (size, ((w * size) as f64 / short as f64) as usize)
    } else {
        (((h * size) as f64 / short as f64) as usize, size)
    };
    let resized = if (nh, nw) == (h, w) {
        image
    } else {
        // Deviation: torchvision resizes PIL images with antialiasing; burn's bilinear has none.
        interpolate(
            image,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([nh, nw]),
        )
    };
    (0..count)
        .map(|_| {
            let top = rng.below(nh - size + 1);
            let left = rng.below(nw - size + 1);
            resized
                .clone()
                .slice([0..1, 0..3, top..top + size, left..left + size])
        })
        .collect()
}
