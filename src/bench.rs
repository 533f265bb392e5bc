//! Synthetic full-size benchmarks: the Stable Diffusion 1.5 UNet built from its default config
//! with random weights (nothing downloaded), run at a chosen latent size on a real device, with
//! wall time and what the allocator reports — the peak of reserved device memory and the largest
//! single allocation, which must stay under WebGPU's 128 MiB default binding limit.
//!
//! The UNet forward is the one GoodDrag uses everywhere (inversion, denoising, the reference
//! features); forward + backward with respect to the latent is one motion-supervision step
//! (GoodDrag §3.3): gradients flow into the latent only, never into the weights.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::models::attention::attention_budget;
use crate::models::unet_2d_condition::{PerBlock, UNet2DConditionConfig};
use crate::probe::read_f32;
use crate::{Error, Result};

/// GoodDrag reads the features of `up_blocks[2]` (spec §1.10).
const FEATURE_BLOCK: usize = 2;

/// What the device allocator held.
///
/// burn 0.22.1 reports page statistics only for its sliced (dynamic) pools; allocations that own
/// their page (large tensors, most weights) appear only in the device-wide `reserved_bytes`,
/// read after the phase: a lower bound of the phase's true peak (the allocator keeps pages for
/// reuse, so in practice it is close to it, but this is not guaranteed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// Device memory reserved when read, all pools (weights included).
    pub reserved_bytes: u64,
    /// Σ page size × most pages ever held, over the sliced pools only (activations and other
    /// transient tensors), since the device started.
    pub sliced_peak_bytes: u64,
    /// The largest single allocation served by the sliced pools, in requested bytes. No
    /// allocation at all can exceed the device's maxStorageBufferBindingSize (burn's page limit).
    pub largest_sliced_alloc_bytes: u64,
}

/// Reads the allocator's report, or `None` on a backend that keeps none (e.g. the CPU device).
pub fn memory_report(device: &Device) -> Option<MemoryReport> {
    let pools = device.memory_pool_report()?;
    let usage = device.memory_pool_usage();
    Some(MemoryReport {
        reserved_bytes: usage.map_or(0, |u| u.bytes_reserved),
        sliced_peak_bytes: pools.iter().map(|p| p.page_size * p.pages_peak).sum(),
        largest_sliced_alloc_bytes: pools.iter().map(|p| p.largest_alloc).max().unwrap_or(0),
    })
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    /// What ran.
    pub name: String,
    /// Wall time in milliseconds, up to and including reading a result back (so all GPU work
    /// is finished).
    pub millis: f64,
    /// The allocator's state after the phase (peaks are cumulative since the device started).
    pub memory: Option<MemoryReport>,
}

/// The synthetic UNet benchmark's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UNetBenchReport {
    /// Latent height and width (64 for a 512×512 image).
    pub latent_size: usize,
    /// Parameters of the UNet.
    pub parameters: usize,
    /// Attention score chunk budget in bytes.
    pub attention_budget_bytes: usize,
    /// Forward (weights are initialised lazily during the first, so it is not timed as a phase),
    /// then a timed forward, then a timed forward + backward to the latent.
    pub phases: Vec<PhaseReport>,
}

/// Runs the full-size SD 1.5 UNet with random weights: one warm-up forward (initialises the
/// weights and compiles the kernels), one timed forward, one timed forward + backward with
/// respect to the latent. `max_binding` is the device's `maxStorageBufferBindingSize`.
pub async fn unet_sd15(
    device: &Device,
    latent_size: usize,
    max_binding: u64,
) -> Result<UNetBenchReport> {
    if latent_size == 0 || latent_size % 8 != 0 {
        return Err(Error::InvalidInput(format!(
            "latent size {latent_size}: use a positive multiple of 8 (64 for 512×512 images)"
        )));
    }
    let config = UNet2DConditionConfig::default();
    let budget = attention_budget(max_binding);
    let device = device.clone().autodiff();
    // Gradients go to the latent only: the weights never require them.
    let unet = config.init(budget, &device)?.no_grad();
    let parameters = unet.num_params();
    let cross_dim = match &config.cross_attention_dim {
        PerBlock::One(d) => *d,
        PerBlock::Many(d) => d.first().copied().unwrap_or(768),
    };

    let shape = [1, config.in_channels, latent_size, latent_size];
    let latent = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random([1, 77, cross_dim], Distribution::Normal(0.0, 1.0), &device);
    let timestep = [741.0f32];
    let mut phases = Vec::new();

    let mut run = async |name: &str, backward: bool| -> Result<()> {
        let started = Instant::now();
        let z = if backward {
            latent().require_grad()
        } else {
            latent()
        };
        let out = unet.forward(z.clone(), &timestep, text.clone(), &[FEATURE_BLOCK]);
        let features = out.up_block_features.into_iter().map(|(_, f)| f).next();
        let mut loss = out.noise_pred.powi_scalar(2).mean();
        if let Some(f) = features {
            loss = loss + f.powi_scalar(2).mean();
        }
        let check = if backward {
            let grads = loss.backward();
            let g = z
                .grad(&grads)
                .ok_or_else(|| Error::Readback("the latent received no gradient".into()))?;
            g.abs().sum()
        } else {
            loss
        };
        let value = read_f32(check).await?[0];
        if !value.is_finite() {
            return Err(Error::Readback(format!(
                "{name}: non-finite result {value}"
            )));
        }
        phases.push(PhaseReport {
            name: name.into(),
            millis: started.elapsed().as_secs_f64() * 1e3,
            memory: memory_report(&device),
        });
        Ok(())
    };
    run(
        "warm-up forward (weights initialised, kernels compiled)",
        false,
    )
    .await?;
    run("UNet forward", false).await?;
    run("UNet forward + backward to the latent", true).await?;
    Ok(UNetBenchReport {
        latent_size,
        parameters,
        attention_budget_bytes: budget,
        phases,
    })
}
