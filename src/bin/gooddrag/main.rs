//! `gooddrag` — the native command line. Argument parsing and printing only; the work is in the
//! library.

mod progress_bar;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use gooddrag::benchmark::{self, DaiScores, Sample};
use gooddrag::drag::{DragConfig, PRESETS, PointsFile};
use gooddrag::edit::{EditInput, LoraChoice, Models, run_edit};
use gooddrag::lora::{parse_lora, write_lora};
use gooddrag::progress::Cancel;
use gooddrag::{Error, Result, bench, device, imageio, probe};
use progress_bar::ProgressBar;

#[derive(Parser)]
#[command(
    name = "gooddrag",
    version,
    about = "GoodDrag drag editing on Stable Diffusion 1.5 (native CLI)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by `edit` and `bench`.
#[derive(Args)]
struct ModelArgs {
    /// A diffusers Stable Diffusion 1.5 folder (unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/); fp16 weight files are preferred when present.
    #[arg(long)]
    model: PathBuf,
    /// A diffusers VAE folder to use instead of `<model>/vae` (GoodDrag uses stabilityai/sd-vae-ft-mse).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// `wgpu` (Vulkan/Metal/DX12; lavapipe without a GPU) or `cpu`.
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Named hyperparameter preset.
    #[arg(long, conflicts_with = "config", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    preset: Option<String>,
    /// A JSON DragConfig (missing fields take the defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Drag-edit one image: writes output_image.png, new_points.json, image_with_new_points.png
    /// and timings.json into --out (and the trained LoRA as pytorch_lora_weights.safetensors).
    Edit {
        #[command(flatten)]
        model: ModelArgs,
        /// The photo (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        /// points.json: {"points": [[x, y], …]}, handle/target alternating, image pixels.
        #[arg(long)]
        points: PathBuf,
        /// Editable region (white/non-zero = may change), the image's size.
        #[arg(long)]
        mask: Option<PathBuf>,
        /// Use this LoRA file instead of training one.
        #[arg(long, conflicts_with = "no_lora")]
        lora: Option<PathBuf>,
        /// Edit with the base model (no LoRA).
        #[arg(long)]
        no_lora: bool,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Also write the run's tensors (z0, zT, drag_loss, handles, z_drag_end, z_final) here.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Edit every sample folder under --data (GoodDrag/Drag100 or DragBench layout) and report
    /// per-sample results, DAI and timings; one bad sample never stops the run.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Output folder: <sample>/…, report.jsonl, summary.md, summary.json.
        #[arg(long)]
        out: PathBuf,
        /// Use DragBench's per-sample prompts (GoodDrag's bench uses "").
        #[arg(long)]
        dataset_prompts: bool,
    },
    /// DAI (paper Eq. 8 and compute_DAI.py) of a results folder against a dataset.
    Dai {
        /// Dataset folder (originals and points).
        #[arg(long)]
        data: PathBuf,
        /// Results: <results>/<sample>/output_image.png or <results>/<sample>.png.
        #[arg(long)]
        results: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the device probe (GroupNorm → SiLU → Conv2d → attention, forward + backward) and
    /// print the adapter and the numbers; the browser test compares its WebGPU run to this.
    Probe {
        /// `cpu` (burn-flex) or `wgpu` (Vulkan; lavapipe without a GPU).
        #[arg(long, default_value = "wgpu")]
        device: String,
        /// Print the full result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Every phase of the default edit on the full SD 1.5 UNet + VAE with random weights (nothing
    /// downloaded), measured once each and extrapolated by the default schedule's counts:
    /// time, reserved device memory and the largest buffer per phase.
    BenchSynthetic {
        #[command(flatten)]
        synthetic: SyntheticArgs,
        #[command(flatten)]
        flags: BenchFlags,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the full-size SD 1.5 UNet with random weights (nothing downloaded) on the
    /// native wgpu device: time, peak device memory and largest buffer of one forward and one
    /// forward + backward to the latent.
    BenchUnet {
        /// Latent size (image size / 8): 64 for 512×512.
        #[arg(long, default_value_t = 64)]
        latent: usize,
        #[command(flatten)]
        flags: BenchFlags,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Where the time of one full-size SD 1.5 UNet forward goes (random weights): per
    /// operation (convolution, linear, attention core, norms, GEGLU, f16 widening) and per layer
    /// kind, next to unprofiled forward and forward + backward times.
    ProfileUnet {
        #[command(flatten)]
        synthetic: SyntheticArgs,
        #[command(flatten)]
        flags: BenchFlags,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Time one 3×3 convolution of each SD 1.5 UNet level both with burn's kernel and as
    /// matrix multiplications (what the networks use), random data.
    BenchConv {
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
    },
}

/// What a synthetic benchmark builds (random weights) and where it runs.
#[derive(Args, Debug)]
struct SyntheticArgs {
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
struct BenchFlags {
    /// Run each phase once, without the untimed warm-up run (the time then includes weight
    /// initialisation and kernel compilation; memory is unaffected).
    #[arg(long)]
    no_warm_up: bool,
    /// Turn off the gradient checkpointing the editor uses (to measure what it saves).
    #[arg(long)]
    no_checkpointing: bool,
    /// Hold the weights in f32 even where the device has f16 (as on an adapter without
    /// shader-f16).
    #[arg(long)]
    f32_weights: bool,
    /// Measure memory only: every kernel is compiled but not run and pages get no device
    /// backing, while the allocator measures exactly the allocations a real run makes
    /// (cubecl's DryRun). Times are then meaningless; a 512×512 pass takes seconds even on
    /// lavapipe.
    #[arg(long)]
    dry_run: bool,
}

impl BenchFlags {
    fn options(&self, latent_size: usize) -> bench::BenchOptions {
        bench::BenchOptions {
            latent_size,
            warm_up: !self.no_warm_up && !self.dry_run,
            checkpointing: !self.no_checkpointing,
            dry_run: self.dry_run,
            f32_weights: self.f32_weights,
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ModelArgs) -> Result<DragConfig> {
    match (&args.preset, &args.config) {
        (Some(name), _) => DragConfig::preset(name),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidInput(format!("cannot read `{}`: {e}", path.display()))
            })?;
            DragConfig::from_json(&json)
        }
        (None, None) => Ok(DragConfig::default()),
    }
}

fn load_models(args: &ModelArgs) -> Result<(Models, String)> {
    let (dev, adapter) = device::by_name(&args.device)?;
    eprintln!(
        "device: {} ({}, {})",
        adapter.name, adapter.backend, adapter.device_type
    );
    let started = std::time::Instant::now();
    let models = Models::load_dir(
        &args.model,
        args.vae.as_deref(),
        &dev,
        adapter.max_storage_buffer_binding_size,
    )?;
    eprintln!(
        "model loaded from {} in {:.1} s",
        args.model.display(),
        started.elapsed().as_secs_f64()
    );
    Ok((models, adapter.name))
}

fn read_points(path: &Path) -> Result<Vec<[f64; 2]>> {
    let json = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(PointsFile::from_json(&json)?.points)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| Error::InvalidInput(format!("cannot write `{}`: {e}", path.display())))
}

/// One edit with a progress bar; writes the official outputs into `out`.
fn edit_sample(
    models: &mut Models,
    device: &str,
    input: EditInput,
    out: &Path,
    dump: Option<&Path>,
) -> Result<(gooddrag::edit::EditOutput, benchmark::Timings)> {
    let mut bar = ProgressBar::new();
    let result = pollster::block_on(run_edit(
        models,
        input,
        &mut |p| bar.update(&p),
        &Cancel::new(),
    ));
    bar.finish();
    let output = result?;
    let timings = benchmark::write_edit_outputs(out, &output, device)?;
    if let Some(lora) = &output.lora
        && !output.lora_losses.is_empty()
    {
        write_file(
            &out.join("pytorch_lora_weights.safetensors"),
            &write_lora(lora)?,
        )?;
    }
    if let Some(path) = dump {
        write_file(path, &pollster::block_on(benchmark::dump_bytes(&output))?)?;
    }
    Ok((output, timings))
}

fn run(cli: Cli) -> gooddrag::Result<()> {
    match cli.command {
        Command::Edit {
            model,
            image,
            points,
            mask,
            lora,
            no_lora,
            out,
            dump,
        } => {
            let config = load_config(&model)?;
            let image = imageio::load_rgb(&image)?;
            let points = read_points(&points)?;
            let mask = match mask {
                Some(path) => {
                    let (w, h, m) = imageio::load_mask(&path)?;
                    if (w, h) != (image.width, image.height) {
                        return Err(Error::InvalidInput(format!(
                            "the mask is {w}×{h} but the image is {}×{}; use a mask of the image's size",
                            image.width, image.height
                        )));
                    }
                    Some(m)
                }
                None => None,
            };
            let lora = match (lora, no_lora) {
                (Some(path), _) => {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        Error::InvalidInput(format!("cannot read `{}`: {e}", path.display()))
                    })?;
                    LoraChoice::Use(parse_lora(&path.display().to_string(), &bytes)?)
                }
                (None, true) => LoraChoice::None,
                (None, false) => LoraChoice::Train,
            };
            let (mut models, device) = load_models(&model)?;
            let input = EditInput {
                image,
                mask,
                points,
                config,
                lora,
            };
            let (output, timings) =
                edit_sample(&mut models, &device, input, &out, dump.as_deref())?;
            println!(
                "{}",
                serde_json::json!({
                    "out": out,
                    "final_handles": output.final_handles,
                    "stop": format!("{:?}", output.record.stop),
                    "supervision_steps": output.record.losses.len(),
                    "timings": timings,
                })
            );
            Ok(())
        }
        Command::Bench {
            model,
            data,
            out,
            dataset_prompts,
        } => {
            let config = load_config(&model)?;
            let samples = benchmark::discover(&data)?;
            if samples.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "no sample folders (with points.json or meta_data.pkl) under `{}`",
                    data.display()
                )));
            }
            let (mut models, device) = load_models(&model)?;
            std::fs::create_dir_all(&out).map_err(|e| {
                Error::InvalidInput(format!("cannot create `{}`: {e}", out.display()))
            })?;
            let mut report = String::new();
            let mut scores: Vec<DaiScores> = Vec::new();
            let mut failures: Vec<(String, String)> = Vec::new();
            let mut phase_sums: std::collections::BTreeMap<String, (f64, usize)> =
                Default::default();
            for (i, (name, dir)) in samples.iter().enumerate() {
                eprintln!("[{}/{}] {name}", i + 1, samples.len());
                let result = (|| -> Result<serde_json::Value> {
                    let s: Sample = benchmark::load_sample(name, dir)?;
                    let mut cfg = config.clone();
                    if dataset_prompts {
                        cfg.prompt = s.prompt.clone();
                    }
                    let input = EditInput {
                        image: s.image.clone(),
                        mask: s.mask.clone(),
                        points: s.points.clone(),
                        config: cfg,
                        lora: LoraChoice::Train,
                    };
                    let (output, timings) =
                        edit_sample(&mut models, &device, input, &out.join(name), None)?;
                    let dai = benchmark::dai_scores(&s.image, &output.image, &s.points)?;
                    for (phase, ms) in &timings.phases_ms {
                        let e = phase_sums.entry(phase.clone()).or_default();
                        e.0 += ms;
                        e.1 += 1;
                    }
                    scores.push(dai.clone());
                    Ok(serde_json::json!({
                        "sample": name, "layout": s.layout, "ok": true, "dai": dai, "timings": timings,
                        "stop": format!("{:?}", output.record.stop), "supervision_steps": output.record.losses.len(),
                        "final_handles": output.final_handles,
                    }))
                })();
                let line = match result {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("  failed: {e}");
                        failures.push((name.clone(), e.to_string()));
                        serde_json::json!({ "sample": name, "ok": false, "error": e.to_string() })
                    }
                };
                report.push_str(&line.to_string());
                report.push('\n');
                write_file(&out.join("report.jsonl"), report.as_bytes())?;
            }
            let mean = benchmark::mean_scores(&scores);
            let mut md = format!(
                "# GoodDrag benchmark: {}\n\n{} samples, {} edited, {} failed.\n\n",
                data.display(),
                samples.len(),
                scores.len(),
                failures.len()
            );
            md += &benchmark::dai_table(&mean, scores.len());
            md += "\n| phase | mean time (s) |\n|---|---|\n";
            for (phase, (sum, n)) in &phase_sums {
                md += &format!("| {phase} | {:.2} |\n", sum / *n as f64 / 1e3);
            }
            if !failures.is_empty() {
                md += "\n## Failures\n\n";
                for (name, why) in &failures {
                    md += &format!("- `{name}`: {why}\n");
                }
            }
            write_file(&out.join("summary.md"), md.as_bytes())?;
            let summary = serde_json::json!({
                "samples": samples.len(), "edited": scores.len(), "failed": failures.len(), "dai_mean": mean,
                "mean_phase_ms": phase_sums.iter().map(|(k, (s, n))| (k.clone(), s / *n as f64)).collect::<std::collections::BTreeMap<_, _>>(),
                "failures": failures.iter().map(|(n, w)| serde_json::json!({"sample": n, "error": w})).collect::<Vec<_>>(),
            });
            write_file(
                &out.join("summary.json"),
                serde_json::to_string_pretty(&summary)
                    .unwrap_or_default()
                    .as_bytes(),
            )?;
            println!("{md}");
            Ok(())
        }
        Command::Dai {
            data,
            results,
            json,
        } => {
            let samples = benchmark::discover(&data)?;
            let mut per = Vec::new();
            let mut failures = Vec::new();
            for (name, dir) in &samples {
                match benchmark::load_sample(name, dir)
                    .and_then(|s| benchmark::dai_for_result(&s, &results))
                {
                    Ok(s) => per.push((name.clone(), s)),
                    Err(e) => failures.push((name.clone(), e.to_string())),
                }
            }
            let mean = benchmark::mean_scores(per.iter().map(|(_, s)| s));
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "mean": mean,
                        "images": per.iter().map(|(n, s)| serde_json::json!({"sample": n, "dai": s})).collect::<Vec<_>>(),
                        "failures": failures.iter().map(|(n, w)| serde_json::json!({"sample": n, "error": w})).collect::<Vec<_>>(),
                    })
                );
            } else {
                print!("{}", benchmark::dai_table(&mean, per.len()));
                for (name, why) in &failures {
                    println!("skipped `{name}`: {why}");
                }
            }
            if per.is_empty() {
                return Err(Error::InvalidInput("no result could be scored".into()));
            }
            Ok(())
        }
        Command::Probe { device, json } => {
            let (device, adapter) = device::by_name(&device)?;
            let started = std::time::Instant::now();
            let result = pollster::block_on(probe::run(&device, probe::ProbeConfig::default()))?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            if json {
                let out = serde_json::json!({ "adapter": adapter, "result": result, "elapsedMs": elapsed_ms });
                println!("{out}");
            } else {
                println!(
                    "adapter: {} ({}, {}), shader-f16: {}",
                    adapter.name, adapter.backend, adapter.device_type, adapter.shader_f16
                );
                println!(
                    "maxBufferSize: {}, maxStorageBufferBindingSize: {}",
                    adapter.max_buffer_size, adapter.max_storage_buffer_binding_size
                );
                println!(
                    "loss: {:.6}, |output| = {}, |grad| = {}, {elapsed_ms:.1} ms",
                    result.loss,
                    result.output.len(),
                    result.input_grad.len()
                );
            }
            Ok(())
        }
        Command::BenchSynthetic {
            synthetic,
            flags,
            json,
        } => {
            let (model, dev, adapter) = synthetic.open()?;
            let latent = synthetic.latent;
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
            if flags.dry_run && synthetic.device != "wgpu" {
                return Err(Error::InvalidInput(
                    "--dry-run measures the wgpu allocator; use --device wgpu".into(),
                ));
            }
            let options = flags.options(latent);
            let report = pollster::block_on(bench::edit_synthetic(
                &dev,
                &model,
                options,
                adapter.max_storage_buffer_binding_size,
                &mut |p| eprintln!("  {p}"),
                &Cancel::new(),
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "adapter": adapter, "report": report })
                );
            } else {
                let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
                println!(
                    "{:<58} {:>10} {:>6} {:>12} {:>14} {:>16}",
                    "phase (f32)",
                    "once (s)",
                    "×",
                    "in edit (s)",
                    "reserved (MiB)",
                    "largest (MiB)"
                );
                for p in &report.phases {
                    let m = p.memory.unwrap_or_default();
                    println!(
                        "{:<58} {:>10.2} {:>6} {:>12.1} {:>14.0} {:>16.1}",
                        p.name,
                        p.millis / 1e3,
                        p.count_in_edit,
                        p.millis * p.count_in_edit as f64 / 1e3,
                        mib(m.reserved_bytes),
                        mib(m.largest_sliced_alloc_bytes)
                    );
                }
                println!(
                    "UNet matrices and kernels held in {} (compute in f32)",
                    if report.f16_weights { "f16" } else { "f32" }
                );
                println!(
                    "extrapolated default edit: {:.1} s on {}{}",
                    report.extrapolated_total_millis / 1e3,
                    adapter.name,
                    if report.dry_run {
                        " (dry run: memory only, times meaningless)"
                    } else {
                        ""
                    }
                );
                if let Some(rss) = report.host_peak_rss_bytes {
                    println!(
                        "host peak resident memory: {:.0} MiB (the CPU device's whole need, weights included)",
                        mib(rss)
                    );
                }
            }
            Ok(())
        }
        Command::BenchUnet {
            latent,
            flags,
            json,
        } => {
            let (device, adapter) = device::wgpu()?;
            eprintln!(
                "adapter: {} ({}), maxStorageBufferBindingSize {} MiB; SD 1.5 UNet, latent {latent}×{latent}",
                adapter.name,
                adapter.backend,
                adapter.max_storage_buffer_binding_size >> 20
            );
            let options = flags.options(latent);
            let report = pollster::block_on(bench::unet_sd15(
                &device,
                options,
                adapter.max_storage_buffer_binding_size,
            ))?;
            if json {
                let out = serde_json::json!({ "adapter": adapter, "report": report });
                println!("{out}");
            } else {
                let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
                println!(
                    "SD 1.5 UNet, {} parameters, latent {l}×{l}, attention chunk budget {:.0} MiB, gradient checkpointing {}, on {}{}",
                    report.parameters,
                    report.attention_budget_bytes as f64 / (1u64 << 20) as f64,
                    if report.checkpointing { "on" } else { "off" },
                    adapter.name,
                    if report.dry_run {
                        " (dry run: memory only, times meaningless)"
                    } else {
                        ""
                    },
                    l = report.latent_size
                );
                println!(
                    "{:<58} {:>9} {:>15} {:>17} {:>17}",
                    "phase", "time (s)", "reserved (MiB)", "transient peak", "largest transient"
                );
                for p in &report.phases {
                    let m = p.memory.unwrap_or_default();
                    println!(
                        "{:<58} {:>9.1} {:>15.0} {:>17.0} {:>17.1}",
                        p.name,
                        p.millis / 1e3,
                        mib(m.reserved_bytes),
                        mib(m.sliced_peak_bytes),
                        mib(m.largest_sliced_alloc_bytes)
                    );
                }
                println!(
                    "reserved: all device memory held after the phase (weights included; a lower bound of its peak); \
                     transient: burn's sliced pools (activations), MiB; no buffer can exceed maxStorageBufferBindingSize = {} MiB.",
                    adapter.max_storage_buffer_binding_size >> 20
                );
            }
            Ok(())
        }
        Command::BenchConv {
            latent,
            device: which,
            reps,
            json,
        } => {
            let (device, adapter) = device::by_name(&which)?;
            let rows = pollster::block_on(bench::conv_kernels(&device, latent, reps))?;
            if json {
                let out = serde_json::json!({ "adapter": adapter, "convolutions": rows });
                println!("{out}");
            } else {
                println!(
                    "3×3 convolutions of the SD 1.5 UNet at latent {latent}×{latent} on {}",
                    adapter.name
                );
                println!(
                    "{:<22} {:>12} {:>12} {:>8} {:>10}",
                    "input", "burn (ms)", "matmul (ms)", "speed-up", "max |Δ|"
                );
                for r in &rows {
                    let [b, c, h, w] = r.input;
                    println!(
                        "{:<22} {:>12.1} {:>12.1} {:>7.2}× {:>10.1e}",
                        format!("{b}×{c}×{h}×{w}"),
                        r.burn_millis,
                        r.matmul_millis,
                        r.burn_millis / r.matmul_millis,
                        r.max_abs_difference
                    );
                }
            }
            Ok(())
        }
        Command::ProfileUnet {
            synthetic,
            flags,
            json,
        } => {
            let (model, device, adapter) = synthetic.open()?;
            let latent = synthetic.latent;
            eprintln!(
                "adapter: {} ({}); {} UNet, latent {latent}×{latent}",
                adapter.name, adapter.backend, model.name
            );
            let report = pollster::block_on(bench::profile_unet(
                &device,
                &model,
                flags.options(latent),
                adapter.max_storage_buffer_binding_size,
            ))?;
            if json {
                let out = serde_json::json!({ "adapter": adapter, "report": report });
                println!("{out}");
            } else {
                print_profile(&report, &adapter.name);
            }
            Ok(())
        }
    }
}

impl SyntheticArgs {
    /// The architecture to build — SD 1.5, or `--architecture`'s `unet/`, `vae/` and
    /// `text_encoder/config.json` (weights are never read) — and the device to run it on.
    fn open(
        &self,
    ) -> Result<(
        bench::SyntheticModel,
        burn::tensor::Device,
        device::AdapterReport,
    )> {
        let model = match &self.architecture {
            None => bench::SyntheticModel::sd15(),
            Some(dir) => {
                let read = |part: &str| {
                    let path = dir.join(part).join("config.json");
                    std::fs::read_to_string(&path).map_err(|e| {
                        Error::InvalidInput(format!("cannot read `{}`: {e}", path.display()))
                    })
                };
                bench::SyntheticModel::from_json(
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

/// The profile as two tables (operations, layers) with shares of the profiled forward.
fn print_profile(report: &bench::UNetProfileReport, adapter: &str) {
    let total = report.profiled_forward_millis;
    println!(
        "{} UNet, latent {l}×{l}, weights in {}, compute f32, on {adapter}: forward {:.0} ms, \
         forward + backward (recomputation) {:.0} ms; profiled forward {:.0} ms",
        report.model,
        if report.f16_weights { "f16" } else { "f32" },
        report.forward_millis,
        report.forward_backward_millis,
        total,
        l = report.latent_size
    );
    let table = |title: &str, rows: &[gooddrag::profile::KindTime], rest: Option<&str>| {
        println!(
            "{title:<44} {:>7} {:>11} {:>7}",
            "count", "time (ms)", "share"
        );
        let mut sum = 0.0;
        for r in rows {
            sum += r.millis;
            println!(
                "{:<44} {:>7} {:>11.1} {:>6.1}%",
                r.kind,
                r.count,
                r.millis,
                100.0 * r.millis / total
            );
        }
        if let Some(rest) = rest {
            let other = (total - sum).max(0.0);
            println!(
                "{rest:<44} {:>7} {other:>11.1} {:>6.1}%",
                "",
                100.0 * other / total
            );
        }
    };
    table(
        "operation",
        &report.profile.ops,
        Some("other (SiLU, adds, concat, reshapes, time emb.)"),
    );
    println!();
    table("layer", &report.profile.layers, None);
}
