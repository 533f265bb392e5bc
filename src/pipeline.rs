//! The diffusion steps around the drag (docs/ALGORITHM.md §1.5, §1.7, §1.8): image ↔ tensor, VAE encode to
//! the posterior mean, DDIM inversion to the edit strength, DDIM denoising, VAE decode.
//! Each long loop reports progress per step and checks for cancellation between steps; one
//! element is read back per step so that progress reflects finished device work and a
//! cancellation takes effect within one step.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::progress::{Cancel, Progress};
use crate::schedulers::DdimScheduler;
use crate::tensor_io::read_f32;

/// RGB8 pixels (row-major, `width·height·3` bytes) → `[1, 3, H, W]` in [−1, 1] (`x/127.5 − 1`).
pub fn image_to_tensor(
    rgb: &[u8],
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor<4>> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(Error::InvalidInput(format!(
            "image data has {} bytes but {width}×{height} RGB needs {}",
            rgb.len(),
            width * height * 3
        )));
    }
    let planar = crate::image::planar_rgb(rgb, |v| v as f32 / 127.5 - 1.0);
    Ok(Tensor::from_data(
        TensorData::new(planar, [1, 3, height, width]),
        device,
    ))
}

/// `[1, 3, H, W]` in [0, 1] → RGB8 bytes, truncating like the reference's
/// `(img·255).astype(uint8)` (docs/ALGORITHM.md §1.5).
pub async fn tensor_to_rgb8(image: Tensor<4>) -> Result<(Vec<u8>, usize, usize)> {
    let [_, c, h, w] = image.dims();
    if c != 3 {
        return Err(Error::InvalidInput(format!("expected 3 channels, got {c}")));
    }
    let data = read_f32(image).await?;
    let plane = h * w;
    let mut rgb = vec![0u8; 3 * plane];
    for i in 0..plane {
        for ch in 0..3 {
            // PARITY: truncation, not rounding.
            rgb[3 * i + ch] = (data[ch * plane + i].clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    Ok((rgb, w, h))
}

/// VAE latent of an image as GoodDrag inverts it: the posterior **mean** × scaling factor
/// (docs/ALGORITHM.md §1.5). image: `[1, 3, H, W]` in [−1, 1] → `[1, 4, ⌊H/8⌋, ⌊W/8⌋]`.
pub fn encode(vae: &AutoencoderKL, image: Tensor<4>) -> Tensor<4> {
    vae.scale_latent(vae.encode(image).mean)
}

/// Decodes a UNet latent to an image in [0, 1]: `(vae.decode(z / s)/2 + 0.5).clamp(0, 1)`.
/// z: `[b, 4, h, w]` → `[b, 3, 8h, 8w]`.
pub fn decode(vae: &AutoencoderKL, z: Tensor<4>) -> Tensor<4> {
    (vae.decode(vae.unscale_latent(z)) / 2.0 + 0.5).clamp(0.0, 1.0)
}

/// Waits until `t` is computed (reads one element back).
pub async fn sync<const D: usize>(t: &Tensor<D>) -> Result<()> {
    let first = t.clone().flatten::<1>(0, D - 1).narrow(0, 0, 1);
    let v = read_f32(first).await?;
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(Error::Readback(
            "the computation produced non-finite values".into(),
        ))
    }
}

/// Which direction a UNet-driven DDIM loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Invert,
    Denoise,
}

/// The shared loop of [`invert`] and [`denoise`]: per timestep, predict ε, apply the step,
/// wait for the device, report progress; cancellation is checked before each step.
#[allow(clippy::too_many_arguments)]
async fn ddim_loop(
    direction: Direction,
    unet: &UNet2DConditionModel,
    scheduler: &DdimScheduler,
    mut z: Tensor<4>,
    timesteps: &[usize],
    encoder_hidden_states: &Tensor<3>,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<Tensor<4>> {
    let of = timesteps.len();
    let order: Box<dyn Iterator<Item = &usize>> = match direction {
        Direction::Invert => Box::new(timesteps.iter().rev()),
        Direction::Denoise => Box::new(timesteps.iter()),
    };
    for (i, &t) in order.enumerate() {
        cancel.check()?;
        let eps = unet
            .forward(z.clone(), &[t as f32], encoder_hidden_states.clone(), &[])
            .noise_pred;
        let step = i + 1;
        z = match direction {
            Direction::Invert => scheduler.inversion_step(eps, t, z),
            Direction::Denoise => scheduler.step(eps, t, z),
        };
        sync(&z).await?;
        progress(match direction {
            Direction::Invert => Progress::Invert { step, of },
            Direction::Denoise => Progress::Denoise { step, of },
        });
    }
    Ok(z)
}

/// DDIM inversion of `z0` to the first of `timesteps` (GoodDrag §3.1; docs/ALGORITHM.md §1.8): for t in
/// `timesteps` from the least noisy (1, 21, …, 741 for 50 steps at strength 0.75), predict ε at
/// t on the current latent and apply [`DdimScheduler::inversion_step`]. Returns z_T.
///
/// timesteps: descending, as [`DdimScheduler::strength_timesteps`] returns them.
/// z0: `[1, 4, h, w]`; encoder_hidden_states: `[1, 77, d]`.
pub async fn invert(
    unet: &UNet2DConditionModel,
    scheduler: &DdimScheduler,
    z0: Tensor<4>,
    timesteps: &[usize],
    encoder_hidden_states: &Tensor<3>,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<Tensor<4>> {
    let d = Direction::Invert;
    ddim_loop(
        d,
        unet,
        scheduler,
        z0,
        timesteps,
        encoder_hidden_states,
        progress,
        cancel,
    )
    .await
}

/// Plain DDIM denoising (η = 0) of `z` through `timesteps` (descending).
pub async fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &DdimScheduler,
    z: Tensor<4>,
    timesteps: &[usize],
    encoder_hidden_states: &Tensor<3>,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<Tensor<4>> {
    let d = Direction::Denoise;
    ddim_loop(
        d,
        unet,
        scheduler,
        z,
        timesteps,
        encoder_hidden_states,
        progress,
        cancel,
    )
    .await
}
