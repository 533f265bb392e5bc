//! The synthetic benchmarks (random weights, nothing downloaded): `gooddrag bench-synthetic`
//! (every phase of the default edit), `bench-unet` (one UNet forward and forward + backward),
//! `profile-unet` (where a UNet forward's time goes) and `bench-conv` (3×3 convolutions, burn's
//! kernel against matrix multiplications). Each prints a table or, with `--json`, the report.
//! Background: docs/ARCHITECTURE.md.

use std::path::PathBuf;

use clap::Args;
use gooddrag::perf::profiler::KindTime;
use gooddrag::perf::synthetic;
use gooddrag::progress::Cancel;
use gooddrag::{Error, Result, device};

use crate::common::{Table, print_report, read_text};

/// What a synthetic benchmark builds (random weights) and where it runs.
#[derive(Args, Debug)]
pub struct SyntheticArgs {
    /// Latent size (image size / 8): 64 for 512×512.
    #[arg(long, default_value_t = 64)]
    latent: usize,
    /// `wgpu` or `cpu`.
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Build the architecture from this diffusers folder's `unet/`, `vae/` and
    /// `text_encoder/config.json` instead of SD 1.5 (weights are still random; none are read).
    #[arg(long)]
    architecture: Option<PathBuf>,
}

/// How the synthetic benchmarks run (shared by `bench-synthetic` and `bench-unet`).
#[derive(Args, Debug)]
pub struct BenchFlags {
    /// Run each phase once, without the untimed warm-up run (the time then includes weight
    /// initialisation and kernel compilation; memory is unaffected).
    #[arg(long)]
    no_warm_up: bool,
    /// Turn off the gradient checkpointing the editor uses (to measure what it saves).
    #[arg(long)]
    no_checkpointing: bool,
    /// The gradient passes' backward plan: `recompute` (every layer recomputed, the least
    /// memory), `recompute-top` (only the full-resolution level) or `autodiff` (none).
    #[arg(long, default_value = "recompute", value_name = "PLAN")]
    backward_plan: gooddrag::models::unet_2d_condition::BackwardPlan,
    /// Hold the weights in f32 even where the device has f16 (as on an adapter without
    /// shader-f16).
    #[arg(long)]
    f32_weights: bool,
    /// The UNet's compute dtype in the LoRA, supervision and denoising phases: `f32`, `f16`
    /// (f16 activations, f32 statistics/softmax/LoRA/losses) or `auto` (f16 on a hardware GPU
    /// with shader-f16).
    #[arg(long, default_value = "f32", value_name = "auto|f32|f16")]
    precision: gooddrag::kernels::precision::PrecisionChoice,
    /// Measure memory only: every kernel is compiled but not run and pages get no device
    /// backing, while the allocator measures exactly the allocations a real run makes
    /// (cubecl's DryRun). Times are then meaningless; a 512×512 pass takes seconds even on
    /// lavapipe.
    #[arg(long)]
    dry_run: bool,
    /// Every attention by chunks with materialised scores, even where the fused kernels apply
    /// (to measure what they save; the CPU device always uses chunks).
    #[arg(long)]
    chunked_attention: bool,
}

/// The flags of `bench-synthetic` and `profile-unet`.
#[derive(Args)]
pub struct SyntheticRunArgs {
    #[command(flatten)]
    synthetic: SyntheticArgs,
    #[command(flatten)]
    flags: BenchFlags,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `gooddrag bench-unet`'s flags.
#[derive(Args)]
pub struct BenchUnetArgs {
    /// Latent size (image size / 8): 64 for 512×512.
    #[arg(long, default_value_t = 64)]
    latent: usize,
    #[command(flatten)]
    flags: BenchFlags,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `gooddrag bench-conv`'s flags.
#[derive(Args)]
pub struct BenchConvArgs {
    /// Latent size (image size / 8): 64 for 512×512.
    #[arg(long, default_value_t = 64)]
    latent: usize,
    /// `wgpu` or `cpu`.
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Timed calls per kernel and shape (after one untimed call).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl BenchFlags {
    fn options(
        &self,
        latent_size: usize,
        adapter: &device::AdapterReport,
    ) -> Result<synthetic::BenchOptions> {
        Ok(synthetic::BenchOptions {
            latent_size,
            warm_up: !self.no_warm_up && !self.dry_run,
            checkpointing: !self.no_checkpointing,
            backward_plan: self.backward_plan,
            dry_run: self.dry_run,
            f32_weights: self.f32_weights,
            precision: self.precision.resolve(adapter)?,
            chunked_attention: self.chunked_attention,
        })
    }
}

impl SyntheticArgs {
    /// The architecture to build — SD 1.5, or `--architecture`'s `unet/`, `vae/` and
    /// `text_encoder/config.json` (weights are never read) — and the device to run it on.
    fn open(
        &self,
    ) -> Result<(
        synthetic::SyntheticModel,
        burn::tensor::Device,
        device::AdapterReport,
    )> {
        let model = match &self.architecture {
            None => synthetic::SyntheticModel::sd15(),
            Some(dir) => {
                let read = |part: &str| read_text(&dir.join(part).join("config.json"));
                synthetic::SyntheticModel::from_json(
                    &dir.display().to_string(),
                    &read("unet")?,
                    &read("vae")?,
                    &read("text_encoder")?,
                )?
            }
        };
        let (device, adapter) = device::by_name(&self.device)?;
        Ok((model, device, adapter))
    }
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The largest pooled allocation in MiB, or `n/a` where the allocator does not track it.
fn largest_alloc(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.1}", mib(b)))
}

/// The precision matrices and kernels are held in.
fn weights_dtype(f16: bool) -> &'static str {
    if f16 { "f16" } else { "f32" }
}

/// What a dry run's times are worth, appended to a report's summary line.
fn dry_run_note(dry_run: bool) -> &'static str {
    if dry_run {
        " (dry run: memory only, times meaningless)"
    } else {
        ""
    }
}

/// Runs `gooddrag bench-synthetic`.
pub fn bench_synthetic(args: SyntheticRunArgs) -> Result<()> {
    let SyntheticRunArgs {
        synthetic: arch,
        flags,
        json,
    } = args;
    let (model, dev, adapter) = arch.open()?;
    let latent = arch.latent;
    eprintln!(
        "adapter: {} ({}, {}), shader-f16 {}, maxStorageBufferBindingSize {} MiB; {}, latent {latent}×{latent} (image {}×{}){}",
        adapter.name,
        adapter.backend,
        adapter.device_type,
        adapter.shader_f16,
        adapter.max_storage_buffer_binding_size >> 20,
        model.name,
        8 * latent,
        8 * latent,
        if flags.no_checkpointing {
            ", no gradient checkpointing"
        } else {
            ""
        }
    );
    if flags.dry_run && arch.device != "wgpu" {
        return Err(Error::InvalidInput(
            "--dry-run measures the wgpu allocator; use --device wgpu".into(),
        ));
    }
    let report = pollster::block_on(synthetic::edit_synthetic(
        &dev,
        &model,
        flags.options(latent, &adapter)?,
        adapter.max_storage_buffer_binding_size,
        &mut |p| eprintln!("  {p}"),
        &Cancel::new(),
    ))?;
    print_report(
        json,
        || serde_json::json!({ "adapter": adapter, "report": report }),
        || print_edit_phases(&report, &adapter.name),
    );
    Ok(())
}

/// The edit's phases as a table, then the extrapolated edit.
fn print_edit_phases(report: &synthetic::EditBenchReport, adapter: &str) {
    let table = Table(&[58, 10, 6, 12, 11, 9, 14, 16]);
    table.row(&[
        "phase (f32)",
        "once (s)",
        "×",
        "in edit (s)",
        "GFLOP once",
        "UNet fwd",
        "reserved (MiB)",
        "largest (MiB)",
    ]);
    for p in &report.phases {
        let m = p.memory.unwrap_or_default();
        table.row(&[
            p.name.clone(),
            format!("{:.2}", p.millis / 1e3),
            p.count_in_edit.to_string(),
            format!("{:.1}", p.millis * p.count_in_edit as f64 / 1e3),
            format!("{:.1}", p.flops as f64 / 1e9),
            format!("{:.2}", p.unet_forward_equivalents),
            format!("{:.0}", mib(m.reserved_bytes)),
            largest_alloc(m.largest_sliced_alloc_bytes),
        ]);
    }
    println!(
        "counted work of the default edit: {:.1} TFLOP = {:.0} UNet forwards of {:.1} GFLOP \
         (forward computations as launched, recomputed ones included; backward kernels not counted)",
        report.total_flops / 1e12,
        report.total_unet_forward_equivalents,
        report.unet_forward_flops as f64 / 1e9
    );
    println!(
        "UNet matrices and kernels held in {}; compute in {} (LoRA, supervision, denoising; \
         inversion and reference in f32); attention {:?}",
        weights_dtype(report.f16_weights),
        report.precision,
        report.attention
    );
    println!(
        "extrapolated default edit: {:.1} s on {adapter}{}",
        report.extrapolated_total_millis / 1e3,
        dry_run_note(report.dry_run)
    );
    if let Some(rss) = report.host_peak_rss_bytes {
        println!(
            "host peak resident memory: {:.0} MiB (the CPU device's whole need, weights included)",
            mib(rss)
        );
    }
}

/// Runs `gooddrag bench-unet`.
pub fn bench_unet(args: BenchUnetArgs) -> Result<()> {
    let BenchUnetArgs {
        latent,
        flags,
        json,
    } = args;
    let (device, adapter) = device::wgpu()?;
    eprintln!(
        "adapter: {} ({}), maxStorageBufferBindingSize {} MiB; SD 1.5 UNet, latent {latent}×{latent}",
        adapter.name,
        adapter.backend,
        adapter.max_storage_buffer_binding_size >> 20
    );
    let report = pollster::block_on(synthetic::unet_sd15(
        &device,
        flags.options(latent, &adapter)?,
        adapter.max_storage_buffer_binding_size,
    ))?;
    print_report(
        json,
        || serde_json::json!({ "adapter": adapter, "report": report }),
        || print_unet_phases(&report, &adapter),
    );
    Ok(())
}

/// The UNet benchmark's settings, its phases as a table, and how to read the memory columns.
fn print_unet_phases(report: &synthetic::UNetBenchReport, adapter: &device::AdapterReport) {
    println!(
        "SD 1.5 UNet, {} parameters, latent {l}×{l}, weights {}, compute {}, attention {:?} (chunk budget {:.0} MiB), gradient checkpointing {}, on {}{}",
        report.parameters,
        weights_dtype(report.f16_weights),
        report.precision,
        report.attention,
        mib(report.attention_budget_bytes as u64),
        if report.checkpointing { "on" } else { "off" },
        adapter.name,
        dry_run_note(report.dry_run),
        l = report.latent_size
    );
    let table = Table(&[58, 9, 15, 17, 17]);
    table.row(&[
        "phase",
        "time (s)",
        "reserved (MiB)",
        "transient peak",
        "largest transient",
    ]);
    for p in &report.phases {
        let m = p.memory.unwrap_or_default();
        table.row(&[
            p.name.clone(),
            format!("{:.1}", p.millis / 1e3),
            format!("{:.0}", mib(m.reserved_bytes)),
            format!("{:.0}", mib(m.sliced_peak_bytes)),
            largest_alloc(m.largest_sliced_alloc_bytes),
        ]);
    }
    println!(
        "reserved: all device memory held after the phase (weights included; a lower bound of its peak); \
         transient: burn's sliced pools (activations), MiB; no buffer can exceed maxStorageBufferBindingSize = {} MiB.",
        adapter.max_storage_buffer_binding_size >> 20
    );
}

/// Runs `gooddrag bench-conv`.
pub fn bench_conv(args: BenchConvArgs) -> Result<()> {
    let BenchConvArgs {
        latent,
        device: which,
        reps,
        json,
    } = args;
    let (device, adapter) = device::by_name(&which)?;
    let rows = pollster::block_on(synthetic::conv_kernels(&device, latent, reps))?;
    print_report(
        json,
        || serde_json::json!({ "adapter": adapter, "convolutions": rows }),
        || {
            println!(
                "3×3 convolutions of the SD 1.5 UNet at latent {latent}×{latent} on {}",
                adapter.name
            );
            let table = Table(&[22, 12, 12, 8, 10]);
            table.row(&["input", "burn (ms)", "matmul (ms)", "speed-up", "max |Δ|"]);
            for r in &rows {
                let [b, c, h, w] = r.input;
                table.row(&[
                    format!("{b}×{c}×{h}×{w}"),
                    format!("{:.1}", r.burn_millis),
                    format!("{:.1}", r.matmul_millis),
                    format!("{:.2}×", r.burn_millis / r.matmul_millis),
                    format!("{:.1e}", r.max_abs_difference),
                ]);
            }
        },
    );
    Ok(())
}

/// Runs `gooddrag profile-unet`.
pub fn profile_unet(args: SyntheticRunArgs) -> Result<()> {
    let SyntheticRunArgs {
        synthetic: arch,
        flags,
        json,
    } = args;
    let (model, device, adapter) = arch.open()?;
    let latent = arch.latent;
    eprintln!(
        "adapter: {} ({}); {} UNet, latent {latent}×{latent}",
        adapter.name, adapter.backend, model.name
    );
    let report = pollster::block_on(synthetic::profile_unet(
        &device,
        &model,
        flags.options(latent, &adapter)?,
        adapter.max_storage_buffer_binding_size,
    ))?;
    print_report(
        json,
        || serde_json::json!({ "adapter": adapter, "report": report }),
        || print_profile(&report, &adapter.name),
    );
    Ok(())
}

/// The profile as two tables (operations, layers) with shares of the profiled forward.
fn print_profile(report: &synthetic::UNetProfileReport, adapter: &str) {
    let total = report.profiled_forward_millis;
    println!(
        "{} UNet, latent {l}×{l}, weights in {}, compute {}, attention {:?}, on {adapter}: \
         forward {:.0} ms, forward + backward (recomputation) {:.0} ms; profiled forward {:.0} ms",
        report.model,
        weights_dtype(report.f16_weights),
        report.precision,
        report.attention,
        report.forward_millis,
        report.forward_backward_millis,
        total,
        l = report.latent_size
    );
    print_kind_times(
        "operation",
        &report.profile.ops,
        total,
        Some("other (SiLU, adds, concat, reshapes, time emb.)"),
    );
    println!();
    print_kind_times("layer", &report.profile.layers, total, None);
}

/// One profile table: count, time and share of `total` per kind, then (with `rest`) the time
/// not in any row.
fn print_kind_times(title: &str, rows: &[KindTime], total: f64, rest: Option<&str>) {
    let table = Table(&[44, 7, 11, 7]);
    table.row(&[title, "count", "time (ms)", "share"]);
    let share = |millis: f64| format!("{:.1}%", 100.0 * millis / total);
    let mut sum = 0.0;
    for r in rows {
        sum += r.millis;
        table.row(&[
            r.kind.clone(),
            r.count.to_string(),
            format!("{:.1}", r.millis),
            share(r.millis),
        ]);
    }
    if let Some(rest) = rest {
        let other = (total - sum).max(0.0);
        table.row(&[
            rest.to_string(),
            String::new(),
            format!("{other:.1}"),
            share(other),
        ]);
    }
}
