//! Synthetic full-size benchmarks: the Stable Diffusion 1.5 UNet built from its default config
//! with random weights (nothing downloaded), run at a chosen latent size on a real device, with
//! wall time and what the allocator reports — the peak of reserved device memory and the largest
//! single allocation, which must stay under WebGPU's 128 MiB default binding limit.
//!
//! The UNet forward is the one GoodDrag uses everywhere (inversion, denoising, the reference
//! features); forward + backward with respect to the latent is one motion-supervision step
//! (GoodDrag §3.3): gradients flow into the latent only, never into the weights.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::clock::now_ms;
use crate::kernels::flash_attention::{self, AttentionKernel, ChunkedOnly};
use crate::kernels::precision::Precision;
use crate::models::attention::attention_budget;
use crate::models::clip::ClipTextConfig;
use crate::models::unet_2d_condition::{
    BackwardPlan, PerBlock, UNet2DConditionConfig, UNet2DConditionModel,
};
use crate::models::vae::AutoencoderKLConfig;
use crate::progress::Cancel;
use crate::tensor_io::read_f32;
use crate::{Error, Result};

/// GoodDrag reads the features of `up_blocks[2]` (docs/ALGORITHM.md §1.10).
const FEATURE_BLOCK: usize = 2;

/// The phase whose one UNet pass is the unit of forward-equivalents.
const INVERSION_PHASE: &str = "DDIM inversion step";

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
    /// The largest single allocation served by the sliced pools, in requested bytes (`None`
    /// where the pools do not track it: WebGPU in Chromium). An allocation over the page limit
    /// (min of maxStorageBufferBindingSize and maxBufferSize) is never served: its kernels fail
    /// with "can't allocate buffer" when they run (and are silently skipped in a dry run).
    pub largest_sliced_alloc_bytes: Option<u64>,
}

/// Reads the allocator's report, or `None` on a backend that keeps none (e.g. the CPU device).
pub fn memory_report(device: &Device) -> Option<MemoryReport> {
    let pools = device.memory_pool_report()?;
    let usage = device.memory_pool_usage();
    Some(MemoryReport {
        reserved_bytes: usage.map_or(0, |u| u.bytes_reserved),
        sliced_peak_bytes: pools.iter().map(|p| p.page_size * p.pages_peak).sum(),
        largest_sliced_alloc_bytes: pools
            .iter()
            .map(|p| p.largest_alloc)
            .max()
            .filter(|&bytes| bytes > 0),
    })
}

/// The autodiff twin of `device`: the editor's ([`crate::device::training`], with gradient
/// checkpointing) or, to measure what checkpointing saves, one without.
fn autodiff_device(device: &Device, checkpointing: bool) -> Device {
    if checkpointing {
        crate::device::training(device)
    } else {
        device.clone().autodiff()
    }
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
    /// Whether gradient checkpointing was on.
    pub checkpointing: bool,
    /// The gradient passes' backward plan.
    pub backward_plan: BackwardPlan,
    /// Memory only (kernels compiled, not run): times are meaningless.
    pub dry_run: bool,
    /// Whether the UNet's matrices and kernels were held in f16.
    pub f16_weights: bool,
    /// The UNet's compute dtype.
    pub precision: Precision,
    /// How attention ran: fused kernels or chunks.
    pub attention: AttentionKernel,
    /// Forward (weights are initialised lazily during the first, so it is not timed as a phase),
    /// then a timed forward, then a timed forward + backward to the latent.
    pub phases: Vec<PhaseReport>,
}

/// How [`unet_sd15`] and [`edit_synthetic`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Latent height and width (64 for 512×512).
    pub latent_size: usize,
    /// Run everything once untimed first (initialises the weights, compiles the kernels).
    /// Without it the first run's time includes both; memory is the same. On a software
    /// adapter (lavapipe) skipping it saves one full pass of each phase.
    pub warm_up: bool,
    /// burn's balanced gradient checkpointing (memory-bound ops recomputed in backward).
    pub checkpointing: bool,
    /// Which layers a gradient pass keeps the graph of instead of recomputing.
    pub backward_plan: BackwardPlan,
    /// Measure memory only (see [`MemoryPlan`]): times are then meaningless.
    pub dry_run: bool,
    /// Hold the weights in f32 even where the device has f16 (as on an adapter without
    /// shader-f16); by default matrices and kernels are f16, as loading fp16 files gives.
    pub f32_weights: bool,
    /// The UNet's compute dtype in the phases the editor runs it in (LoRA, motion supervision,
    /// MasaCtrl denoising; inversion and the reference trajectory are f32, as in an edit).
    pub precision: Precision,
    /// Every attention by chunks with materialised scores, even where the fused kernels
    /// apply (`kernels::flash_attention`): to measure what they save.
    pub chunked_attention: bool,
}

/// A memory-only measurement: while it lives, cubecl compiles every kernel launch and drops it
/// instead of running it, and new memory pages are carved without device backing — the
/// allocator still measures every allocation (page high-water, largest allocation, reserved
/// bytes) exactly as a real run would make them. A full-size 512×512 pass then costs kernel
/// compilation only, even on a software adapter (lavapipe). Values read back are meaningless,
/// so callers must not branch on them beyond what shapes decide (tracking picks an index in
/// range either way). An allocation the device refuses (over its page limit) fails only when
/// its kernel runs, so a dry run cannot see it. Native only: the browser measures real runs.
pub struct MemoryPlan {
    #[cfg(not(target_arch = "wasm32"))]
    _guard: cubecl_runtime::dry_run::DryRun,
}

impl MemoryPlan {
    /// Starts a memory-only measurement (process-wide until dropped).
    pub fn start() -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            Ok(Self {
                _guard: cubecl_runtime::dry_run::DryRun::new(),
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            Err(Error::InvalidInput(
                "a memory-only (dry) run is native only".into(),
            ))
        }
    }
}

impl BenchOptions {
    /// Refuses a latent size that is not a positive multiple of 8.
    fn check(&self) -> Result<()> {
        check_latent_size(self.latent_size)
    }

    /// The memory-only measurement these options ask for, if any (held for the whole run).
    fn plan(&self) -> Result<Option<MemoryPlan>> {
        self.dry_run.then(MemoryPlan::start).transpose()
    }

    /// The attention these options ask for on `device`, and the guard that keeps the fused
    /// kernels off while it lives when they ask for chunks.
    fn attention(&self, device: &Device) -> (AttentionKernel, Option<ChunkedOnly>) {
        let guard = self.chunked_attention.then(flash_attention::chunked_only);
        (AttentionKernel::on(device), guard)
    }

    /// Whether weights are held in f16, as the editor holds fp16 files on `device` (see
    /// `kernels::layers`).
    fn f16_weights(&self, device: &Device) -> bool {
        !self.f32_weights && device.supports_dtype(burn::tensor::FloatDType::F16)
    }
}

/// Refuses a latent size that is not a positive multiple of 8 (the UNet halves it three times).
fn check_latent_size(n: usize) -> Result<()> {
    if n == 0 || !n.is_multiple_of(8) {
        return Err(Error::InvalidInput(format!(
            "latent size {n}: use a positive multiple of 8 (64 for 512×512 images)"
        )));
    }
    Ok(())
}

/// `module` as the editor would hold it: matrices and kernels in f16 when `f16`.
fn held<M: Module>(module: M, f16: bool) -> M {
    if f16 {
        crate::kernels::layers::store_f16(module)
    } else {
        module
    }
}

/// Whether a [`MemoryPlan`] is active (readbacks are meaningless then).
fn planning_only() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        cubecl_runtime::dry_run::dry_run()
    }
    #[cfg(target_arch = "wasm32")]
    {
        false
    }
}

/// The UNet benchmarks' loss: it reads the noise prediction and the tapped features, so its
/// backward crosses the whole UNet as a motion-supervision step's does.
fn synthetic_loss(noise_pred: &Tensor<4>, features: &Tensor<4>) -> Tensor<1> {
    noise_pred.clone().powi_scalar(2).mean() + features.clone().powi_scalar(2).mean()
}

/// ∂[`synthetic_loss`]/∂latent by layer-wise recomputation (the editor's backward).
fn recomputed_latent_gradient(
    unet: &UNet2DConditionModel,
    latent: Tensor<4>,
    timestep: &[f32],
    text: Tensor<3>,
) -> Result<Tensor<4>> {
    let fb = unet.forward_backward(
        latent,
        timestep,
        text,
        Some(FEATURE_BLOCK),
        &mut |x| {
            let features = x.features.as_ref().expect("tapped");
            Ok(synthetic_loss(&x.noise_pred, features))
        },
        &mut |_| {},
    )?;
    Ok(fb.sample_grad)
}

/// How a benchmark pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Forward only.
    Forward,
    /// Forward + backward to the latent by layer-wise recomputation (what the editor does).
    Recompute,
    /// Forward + backward to the latent with burn's autodiff keeping the whole graph.
    Autodiff,
}

/// Runs the full-size SD 1.5 UNet with random weights: (optionally) one warm-up forward, one
/// timed forward, one timed forward + backward with respect to the latent by layer-wise
/// recomputation (the editor's) and one by plain autodiff. `max_binding` is the device's
/// `maxStorageBufferBindingSize`.
pub async fn unet_sd15(
    device: &Device,
    options: BenchOptions,
    max_binding: u64,
) -> Result<UNetBenchReport> {
    options.check()?;
    let _plan = options.plan()?;
    let (attention, _attention_guard) = options.attention(device);
    let latent_size = options.latent_size;
    let config = UNet2DConditionConfig::default();
    let budget = attention_budget(max_binding);
    let device = autodiff_device(device, options.checkpointing);
    // Gradients go to the latent only: the weights never require them.
    let f16_weights = options.f16_weights(&device);
    let mut unet = held(config.init(budget, &device)?.no_grad(), f16_weights);
    unet.backward_plan = options.backward_plan;
    unet.precision = options.precision;
    let parameters = unet.num_params();
    let cross_dim = cross_attention_dim(&config);

    let shape = [1, config.in_channels, latent_size, latent_size];
    let latent = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random([1, 77, cross_dim], Distribution::Normal(0.0, 1.0), &device);
    let timestep = [741.0f32];
    let mut phases = Vec::new();

    let mut run = async |name: &str, pass: Pass| -> Result<()> {
        // Pages kept from the previous phase are given back, so the reserved bytes read
        // after this one are its own need (weights included).
        device.memory_cleanup();
        let started = now_ms();
        let check = match pass {
            Pass::Forward => {
                let out = unet.forward(latent(), &timestep, text.clone(), &[FEATURE_BLOCK]);
                let f = out.up_block(FEATURE_BLOCK).cloned().expect("tapped");
                synthetic_loss(&out.noise_pred, &f)
            }
            Pass::Autodiff => {
                let z = latent().require_grad();
                let out = unet.forward(z.clone(), &timestep, text.clone(), &[FEATURE_BLOCK]);
                let f = out.up_block(FEATURE_BLOCK).cloned().expect("tapped");
                let grads = synthetic_loss(&out.noise_pred, &f).backward();
                let g = z
                    .grad(&grads)
                    .ok_or_else(|| Error::Readback("the latent received no gradient".into()))?;
                g.abs().sum()
            }
            Pass::Recompute => {
                recomputed_latent_gradient(&unet, latent(), &timestep, text.clone())?
                    .abs()
                    .sum()
            }
        };
        let value = read_f32(check).await?[0];
        if !value.is_finite() && !planning_only() {
            return Err(Error::Readback(format!(
                "{name}: non-finite result {value}"
            )));
        }
        phases.push(PhaseReport {
            name: name.into(),
            millis: now_ms() - started,
            memory: memory_report(&device),
        });
        Ok(())
    };
    if options.warm_up {
        run(
            "warm-up forward (weights initialised, kernels compiled)",
            Pass::Forward,
        )
        .await?;
        run("UNet forward", Pass::Forward).await?;
    } else {
        run(
            "UNet forward (first: weights initialised, kernels compiled)",
            Pass::Forward,
        )
        .await?;
    }
    let editors = format!(
        "UNet forward + backward to the latent (the editor's, backward plan {})",
        options.backward_plan.name()
    );
    run(&editors, Pass::Recompute).await?;
    run(
        "UNet forward + backward to the latent (plain autodiff)",
        Pass::Autodiff,
    )
    .await?;
    Ok(UNetBenchReport {
        latent_size,
        f16_weights,
        precision: options.precision,
        attention,
        checkpointing: options.checkpointing,
        backward_plan: options.backward_plan,
        dry_run: options.dry_run,
        parameters,
        attention_budget_bytes: budget,
        phases,
    })
}

/// Where one SD 1.5 UNet forward's time goes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UNetProfileReport {
    /// What was built (`SD 1.5` or the architecture's folder).
    pub model: String,
    /// Latent height and width (64 for a 512×512 image).
    pub latent_size: usize,
    /// Whether matrices and kernels were held in f16.
    pub f16_weights: bool,
    /// The UNet's compute dtype.
    pub precision: Precision,
    /// How attention ran: fused kernels or chunks.
    pub attention: AttentionKernel,
    /// One forward, unprofiled, in milliseconds.
    pub forward_millis: f64,
    /// One forward + backward to the latent by layer-wise recomputation (the editor's),
    /// unprofiled, in milliseconds.
    pub forward_backward_millis: f64,
    /// The profiled forward in milliseconds: slower than `forward_millis`, since the device is
    /// drained around every operation.
    pub profiled_forward_millis: f64,
    /// By operation and by layer, slowest first. Time not in any operation (SiLU, residual adds,
    /// concatenation, reshapes, the time embedding) is `profiled_forward_millis` − Σ ops.
    pub profile: crate::perf::profiler::Profile,
}

/// Profiles `model`'s UNet (the full-size SD 1.5 one by default) with random weights: (optionally) a warm-up forward +
/// backward, an unprofiled forward and forward + backward for reference, then one forward with
/// [`crate::perf::profiler`] collecting per-operation and per-layer times.
pub async fn profile_unet(
    device: &Device,
    model: &SyntheticModel,
    options: BenchOptions,
    max_binding: u64,
) -> Result<UNetProfileReport> {
    options.check()?;
    if options.dry_run {
        return Err(Error::InvalidInput(
            "a dry run measures memory only; profile a real run".into(),
        ));
    }
    let (attention, _attention_guard) = options.attention(device);
    let latent_size = options.latent_size;
    let config = &model.unet;
    let device = autodiff_device(device, options.checkpointing);
    let f16_weights = options.f16_weights(&device);
    let budget = attention_budget(max_binding);
    let mut unet = held(config.init(budget, &device)?.no_grad(), f16_weights);
    unet.precision = options.precision;
    let shape = [1, config.in_channels, latent_size, latent_size];
    let latent = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random(
        [1, 77, cross_attention_dim(config)],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let timestep = [741.0f32];

    let forward = async || -> Result<f64> {
        let started = now_ms();
        let out = unet.record(latent(), &timestep, text.clone(), Some(FEATURE_BLOCK))?;
        read_f32(out.noise_pred.sum()).await?;
        Ok(now_ms() - started)
    };
    let forward_backward = async || -> Result<f64> {
        let started = now_ms();
        let grad = recomputed_latent_gradient(&unet, latent(), &timestep, text.clone())?;
        read_f32(grad.abs().sum()).await?;
        Ok(now_ms() - started)
    };
    if options.warm_up {
        forward_backward().await?;
    }
    let forward_millis = forward().await?;
    let forward_backward_millis = forward_backward().await?;
    let profiler = crate::perf::profiler::Profiler::start();
    let profiled_forward_millis = forward().await?;
    let profile = profiler.finish();
    Ok(UNetProfileReport {
        model: model.name.clone(),
        latent_size,
        f16_weights,
        precision: options.precision,
        attention,
        forward_millis,
        forward_backward_millis,
        profiled_forward_millis,
        profile,
    })
}

/// One convolution shape timed both ways.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvTiming {
    /// `[batch, channels, height, width]` of the input; the kernel is 3×3, channels → channels.
    pub input: [usize; 4],
    /// burn's convolution kernel (cubecl's direct kernel without autotune), ms per call.
    pub burn_millis: f64,
    /// [`crate::kernels::conv_gemm`] (what the networks use), ms per call.
    pub matmul_millis: f64,
    /// Largest |difference| between the two outputs.
    pub max_abs_difference: f32,
}

/// Times one 3×3 convolution of each SD 1.5 UNet level at `latent_size` (320 channels at the
/// full latent size, 640 at half, 1280 at a quarter and an eighth) both with burn's kernel and
/// as matrix multiplications, after one untimed call of each; `reps` timed calls each.
pub async fn conv_kernels(
    device: &Device,
    latent_size: usize,
    reps: usize,
) -> Result<Vec<ConvTiming>> {
    use crate::kernels::conv_gemm;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    check_latent_size(latent_size)?;
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let mut out = Vec::new();
    for (channels, size) in [
        (320, latent_size),
        (640, latent_size / 2),
        (1280, latent_size / 4),
        (1280, latent_size / 8),
    ] {
        let input = [1, channels, size, size];
        let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), device);
        let w = Tensor::<4>::random(
            [channels, channels, 3, 3],
            Distribution::Normal(0.0, 0.02),
            device,
        );
        let burn = || conv2d(x.clone(), w.clone(), None, options.clone());
        let matmul = || {
            conv_gemm::conv2d_by_matmul(
                x.clone(),
                w.clone(),
                None,
                options.clone(),
                conv_gemm::COLUMN_BYTES,
            )
        };
        let difference = read_f32((burn() - matmul()).abs().max()).await?[0];
        let time = async |f: &dyn Fn() -> Tensor<4>| -> Result<f64> {
            let started = now_ms();
            for _ in 0..reps.max(1) {
                read_f32(f().sum()).await?;
            }
            Ok((now_ms() - started) / reps.max(1) as f64)
        };
        let burn_millis = time(&burn).await?;
        let matmul_millis = time(&matmul).await?;
        out.push(ConvTiming {
            input,
            burn_millis,
            matmul_millis,
            max_abs_difference: difference,
        });
    }
    Ok(out)
}

/// One phase of the default edit, measured once and multiplied by how often the default
/// schedule runs it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditPhase {
    /// What ran.
    pub name: String,
    /// Milliseconds of one measured run (after a warm-up run that compiles the kernels).
    pub millis: f64,
    /// How many times the default edit (docs/ALGORITHM.md §1.18) runs it (an upper bound for the drag).
    pub count_in_edit: usize,
    /// Floating-point operations of one run, counted from the shapes the code ran
    /// ([`crate::perf::work`]: every forward computation, recomputed ones included; the
    /// autodiff backward's own kernels are not counted).
    pub flops: u64,
    /// `flops` in UNet forward passes (batch 1, this latent size, adapters attached as in the
    /// edit): 1 for an inversion step, 2 for a batch-2 denoising step.
    pub unet_forward_equivalents: f64,
    /// The allocator after the phase.
    pub memory: Option<MemoryReport>,
}

/// The architecture a synthetic benchmark builds (random weights).
#[derive(Debug, Clone)]
pub struct SyntheticModel {
    /// Shown in reports: `SD 1.5` or what the caller names it.
    pub name: String,
    /// The UNet.
    pub unet: UNet2DConditionConfig,
    /// The VAE.
    pub vae: AutoencoderKLConfig,
    /// The CLIP text encoder (held through the edit, as the editor does).
    pub text_encoder: ClipTextConfig,
}

impl SyntheticModel {
    /// Stable Diffusion 1.5 (the diffusers defaults of both configs).
    pub fn sd15() -> Self {
        Self {
            name: "SD 1.5".into(),
            unet: UNet2DConditionConfig::default(),
            vae: AutoencoderKLConfig::default(),
            text_encoder: ClipTextConfig::default(),
        }
    }

    /// Any SD-family architecture from its diffusers `unet/config.json`, `vae/config.json` and
    /// `text_encoder/config.json` (e.g. the tiny test model, or SD 2.1-base).
    pub fn from_json(
        name: &str,
        unet_json: &str,
        vae_json: &str,
        text_encoder_json: &str,
    ) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            unet: UNet2DConditionConfig::from_json(unet_json)?,
            vae: AutoencoderKLConfig::from_json(vae_json)?,
            text_encoder: ClipTextConfig::from_json(text_encoder_json)?,
        })
    }
}

/// The width of the text embeddings a UNet config cross-attends to.
fn cross_attention_dim(config: &UNet2DConditionConfig) -> usize {
    match &config.cross_attention_dim {
        PerBlock::One(d) => *d,
        PerBlock::Many(d) => d.first().copied().unwrap_or(768),
    }
}

/// The synthetic full-edit benchmark's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditBenchReport {
    /// What was built.
    pub model: String,
    /// Parameters of the UNet.
    pub unet_parameters: usize,
    /// Whether the UNet's matrices and kernels were held in f16.
    pub f16_weights: bool,
    /// The UNet's compute dtype in the LoRA, supervision and denoising phases.
    pub precision: Precision,
    /// How attention ran: fused kernels or chunks.
    pub attention: AttentionKernel,
    /// Latent size (64 for 512×512).
    pub latent_size: usize,
    /// Whether gradient checkpointing was on.
    pub checkpointing: bool,
    /// The gradient passes' backward plan.
    pub backward_plan: BackwardPlan,
    /// Memory only (kernels compiled, not run): times are meaningless.
    pub dry_run: bool,
    /// Phases, in edit order.
    pub phases: Vec<EditPhase>,
    /// Σ millis × count.
    pub extrapolated_total_millis: f64,
    /// FLOPs of one UNet forward (batch 1, the inversion step's pass).
    pub unet_forward_flops: u64,
    /// Σ flops × count: the default edit's counted work.
    pub total_flops: f64,
    /// Σ forward-equivalents × count.
    pub total_unet_forward_equivalents: f64,
    /// Peak resident memory of this process (Linux `VmHWM`): on the CPU device, the memory the
    /// whole run needed, weights included.
    pub host_peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process from `/proc/self/status` (Linux only).
pub fn host_peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs each phase of the default GoodDrag edit once on `model` (the full SD 1.5 UNet and VAE,
/// or another SD-family architecture) with random weights (nothing downloaded) at
/// `latent_size` (64 = 512×512) through the real code
/// paths: one LoRA step (one crop; the default step has 4), one inversion step, one reference
/// step, one motion-supervision step (forward + backward to the latent + Adam), one tracking,
/// one MasaCtrl denoising step (batch 2), VAE encode and decode. Each is run twice (once
/// without `options.warm_up`); the last run is timed. The total multiplies each by its count in the default schedule. `cancel` is
/// checked before every run.
pub async fn edit_synthetic(
    device: &Device,
    model: &SyntheticModel,
    options: BenchOptions,
    max_binding: u64,
    progress: &mut dyn FnMut(&str),
    cancel: &Cancel,
) -> Result<EditBenchReport> {
    use crate::drag::features::FeatureGeometry;
    use crate::drag::motion::{MotionInputs, motion_supervision_loss};
    use crate::drag::tracking::track;
    use crate::lora::{LoraSet, LoraTrainer, TrainSample};
    use crate::optim::{Adam, AdamConfig};
    use crate::rng::Rng;
    use crate::schedulers::{DdimScheduler, DdimSchedulerConfig};

    let BenchOptions {
        latent_size,
        warm_up,
        checkpointing,
        dry_run,
        ..
    } = options;
    options.check()?;
    let _plan = options.plan()?;
    let (attention, _attention_guard) = options.attention(device);
    let passes = if warm_up { 2 } else { 1 };
    let device = autodiff_device(device, checkpointing);
    let budget = attention_budget(max_binding);
    // As the editor holds SD 1.5 loaded from its fp16 files.
    let f16_weights = options.f16_weights(&device);
    let mut unet = held(model.unet.init(budget, &device)?.no_grad(), f16_weights);
    unet.backward_plan = options.backward_plan;
    let unet_parameters = unet.num_params();
    let cross_dim = cross_attention_dim(&model.unet);
    let vae = held(model.vae.init(budget, &device)?.no_grad(), f16_weights);
    // In host memory between prompts, as the editor holds it (`weights::host`).
    let text_encoder = crate::weights::HostModule::read_back(
        model.text_encoder.init(budget, &device)?.no_grad(),
        held(
            model.text_encoder.init(budget, &device)?.no_grad(),
            f16_weights,
        ),
    )
    .await?;
    // The default edit's settings (docs/ALGORITHM.md §1.19).
    let defaults = crate::drag::DragConfig::default();
    let sched = DdimScheduler::new(DdimSchedulerConfig::default(), 50)?;
    let mut rng = Rng::new(0);
    let n = 4 * latent_size * latent_size;
    let latent = |rng: &mut Rng| {
        Tensor::<4>::from_data(
            burn::tensor::TensorData::new(rng.normal_vec(n, 1.0), [1, 4, latent_size, latent_size]),
            &device,
        )
    };
    let mut ehs = Tensor::<3>::random([1, 77, cross_dim], Distribution::Normal(0.0, 1.0), &device);
    let image = Tensor::<4>::random(
        [1, 3, 8 * latent_size, 8 * latent_size],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let half = 4 * latent_size;
    let geometry = FeatureGeometry {
        map_height: latent_size,
        map_width: latent_size,
        feat_height: half,
        feat_width: half,
    };
    let (handle, target) = (
        [half as f64 * 0.4, half as f64 * 0.4],
        [half as f64 * 0.4, half as f64 * 0.6],
    );
    let mut phases = Vec::new();

    macro_rules! measure {
        ($name:expr, $count:expr, $body:expr) => {{
            for pass in 0..passes {
                cancel.check()?;
                // Give back the pages earlier phases left, so the reserved bytes read after
                // this phase are this phase's own need (weights included).
                device.memory_cleanup();
                let timed = pass + 1 == passes;
                progress(&format!(
                    "{} ({})",
                    $name,
                    if timed { "timed" } else { "warm-up" }
                ));
                let started = now_ms();
                let work = crate::perf::work::Count::start();
                $body;
                let flops = work.finish();
                if timed {
                    phases.push(EditPhase {
                        name: $name.to_string(),
                        millis: now_ms() - started,
                        count_in_edit: $count,
                        flops,
                        unet_forward_equivalents: 0.0,
                        memory: memory_report(&device),
                    });
                }
            }
        }};
    }

    // The prompt through CLIP (once per new prompt; uploaded for it, as in the editor).
    let vocab = model.text_encoder.vocab_size as u32;
    let ids = vec![(0..77u32).map(|i| i % vocab).collect::<Vec<_>>()];
    measure!("CLIP text encoder (the prompt)", 1, {
        ehs = text_encoder.upload().forward(&ids)?;
        read_f32(ehs.clone().sum()).await?;
    });

    // VAE encode (once per edit; LoRA encodes its 4 crops once more).
    measure!("VAE encode (posterior mean)", 1 + 4, {
        let z = crate::pipeline::encode(&vae, image.clone());
        read_f32(z.sum()).await?;
    });

    // LoRA: one crop's forward + backward + AdamW (the default step has 4 crops).
    unet.precision = options.precision;
    LoraSet::init_for(&mut unet, 16, &mut rng)?.attach(&mut unet, true, "bench", &device)?;
    let mut trainer = LoraTrainer::new(&crate::lora::LoraConfig::default());
    measure!("LoRA step, one crop (×4 crops × 70 steps)", 4 * 70, {
        let s = TrainSample {
            latents: latent(&mut rng),
            noise: latent(&mut rng),
            timestep: 500,
        };
        let (loss, grads) = LoraTrainer::gradients(&mut unet, &sched, &[s], &ehs)?;
        trainer.step(&mut unet, grads);
        read_f32(loss).await?;
    });
    unet = unet.no_grad();

    // Inversion and the reference trajectory run in f32, as in an edit (`edit`, `drag::session`).
    unet.precision = Precision::F32;
    measure!(INVERSION_PHASE, 38, {
        let z = latent(&mut rng);
        let eps = unet
            .forward(z.clone(), &[741.0], ehs.clone(), &[])
            .noise_pred;
        read_f32(sched.inversion_step(eps, 741, z).sum()).await?;
    });

    let mut reference_vector = None;
    let mut reference_patch = None;
    measure!("reference trajectory step (features kept)", 7, {
        let z = latent(&mut rng);
        let out = unet.forward(z.clone(), &[741.0], ehs.clone(), &[2]);
        let f = out
            .up_block(2)
            .cloned()
            .ok_or_else(|| Error::InvalidInput("no up block 2".into()))?
            .detach();
        reference_patch = Some(geometry.integer_patch(&f, handle, defaults.r1));
        reference_vector = Some(geometry.vector(&f, handle));
        read_f32(sched.step(out.noise_pred, 741, z).sum()).await?;
    });
    let patches = vec![reference_patch.expect("measured")];
    let vectors = vec![reference_vector.expect("measured")];

    unet.precision = options.precision;
    let z_prev0 = latent(&mut rng);
    // The area outside the editable region: the left half of the latent (a mask term as in an
    // edit with a painted mask).
    let keep = Tensor::<4>::ones([1, 1, latent_size, latent_size / 2], &device).pad(
        (0, latent_size - latent_size / 2, 0, 0),
        burn::tensor::ops::PadMode::Constant(0.0),
    );
    let mut features = None;
    measure!(
        "motion-supervision step (fwd + bwd to the latent + Adam)",
        210,
        {
            let mut adam = Adam::<4>::new(AdamConfig::adam(defaults.latent_lr));
            let z = latent(&mut rng);
            // The editor's path: record, loss, backward by layer-wise recomputation.
            let fb = unet.forward_backward(
                z.clone(),
                &[741.0],
                ehs.clone(),
                Some(2),
                &mut |x| {
                    let f = x.features.as_ref().expect("tapped features");
                    let z_prev = sched.step(x.noise_pred.clone(), 741, x.sample.clone());
                    Ok(motion_supervision_loss(
                        &MotionInputs {
                            features: f,
                            geometry,
                            z_prev,
                            reference_prev: &z_prev0,
                            keep: Some(&keep),
                            reference_patches: Some(&patches),
                            handles: &[handle],
                            targets: &[target],
                        },
                        &defaults.motion_settings(),
                    )
                    .total)
                },
                &mut |_| {},
            )?;
            let updated = adam.step(vec![z], vec![Some(fb.sample_grad)]).remove(0);
            read_f32(updated.sum()).await?;
            features = fb.features;
        }
    );
    let f = features.expect("measured");
    measure!("point tracking", 77, {
        track(&f, geometry, &vectors, &[handle], defaults.r2).await?;
    });

    unet.set_mutual_self_attention(Some(defaults.masactrl_start_layer));
    measure!("denoising step with MasaCtrl (batch 2)", 31, {
        let z = Tensor::cat(vec![latent(&mut rng), latent(&mut rng)], 0);
        let e2 = Tensor::cat(vec![ehs.clone(), ehs.clone()], 0);
        let eps = unet.forward(z.clone(), &[601.0], e2, &[]).noise_pred;
        read_f32(sched.step(eps, 601, z).sum()).await?;
    });
    unet.set_mutual_self_attention(None);

    measure!("VAE decode", 1, {
        let img = crate::pipeline::decode(&vae, latent(&mut rng));
        read_f32(img.sum()).await?;
    });

    let extrapolated_total_millis = phases
        .iter()
        .map(|p| p.millis * p.count_in_edit as f64)
        .sum();
    // One UNet forward: the inversion step's pass (the scheduler's arithmetic is not counted).
    let unet_forward_flops = phases
        .iter()
        .find(|p| p.name == INVERSION_PHASE)
        .map_or(0, |p| p.flops);
    for p in &mut phases {
        p.unet_forward_equivalents = p.flops as f64 / unet_forward_flops.max(1) as f64;
    }
    let total_flops = phases
        .iter()
        .map(|p| p.flops as f64 * p.count_in_edit as f64)
        .sum();
    let total_unet_forward_equivalents = phases
        .iter()
        .map(|p| p.unet_forward_equivalents * p.count_in_edit as f64)
        .sum();
    Ok(EditBenchReport {
        model: model.name.clone(),
        unet_parameters,
        f16_weights,
        precision: options.precision,
        attention,
        latent_size,
        checkpointing,
        backward_plan: options.backward_plan,
        dry_run,
        phases,
        extrapolated_total_millis,
        unet_forward_flops,
        total_flops,
        total_unet_forward_equivalents,
        host_peak_rss_bytes: host_peak_rss_bytes(),
    })
}
