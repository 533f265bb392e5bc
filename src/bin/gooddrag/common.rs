//! What several subcommands share: the model flags of `edit` and `bench` and loading what they
//! name, reading and writing files with the CLI's error messages, one edit with a progress bar,
//! and the output helpers (`--json` or text, aligned text tables). Background:
//! docs/ARCHITECTURE.md.

use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::drag::{DragConfig, PRESETS, PointsFile};
use gooddrag::edit::{EditInput, EditOutput, run_edit};
use gooddrag::eval::dataset::{self, Timings};
use gooddrag::lora::write_lora;
use gooddrag::model_set::Models;
use gooddrag::progress::Cancel;
use gooddrag::{Error, Result, device};

use crate::progress_bar::ProgressBar;

/// Options shared by `edit` and `bench`.
#[derive(Args)]
pub struct ModelArgs {
    /// A diffusers Stable Diffusion 1.5 folder (unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/); fp16 weight files are preferred when present.
    #[arg(long)]
    model: PathBuf,
    /// A diffusers VAE folder to use instead of `<model>/vae` (GoodDrag uses stabilityai/sd-vae-ft-mse).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// `auto` (a hardware GPU through wgpu when there is one, else the CPU device), `wgpu`
    /// (Vulkan/Metal/DX12; lavapipe without a GPU), `wgpu:N` (the N-th discrete GPU, from 0) or
    /// `cpu` (every core; `RAYON_NUM_THREADS` limits it).
    #[arg(long, default_value = "auto")]
    device: String,
    /// The device memory an edit may use: `auto` (unknown — wgpu and WebGPU do not tell: the
    /// least-memory backward plan, ≈ 2.9 GiB at 512×512) or a size such as `8GiB`/`16GiB`: the
    /// plan with the least work that fits (at 512×512 with f16 weights, recompute-top from ≈ 5.2
    /// GiB with f16 compute and ≈ 7.6 GiB with f32, plain autodiff from ≈ 10.7 / 12.7 GiB;
    /// README "Backward plans"). Results are the same on every plan.
    #[arg(long, default_value = "auto", value_name = "auto|SIZE")]
    memory_budget: gooddrag::exec::plan::MemoryBudget,
    /// The UNet's compute dtype in the LoRA, drag and denoising phases: `auto` (f16 on a
    /// hardware GPU with shader-f16, else f32), `f32`, or `f16` (f16 activations with f32
    /// normalisation statistics, softmax, LoRA and losses, as PyTorch's autocast; README
    /// "Precision"). Inversion and the reference trajectory run in f32, as the official code.
    #[arg(long, default_value = "auto", value_name = "auto|f32|f16")]
    precision: gooddrag::kernels::precision::PrecisionChoice,
    /// Named hyperparameter preset.
    #[arg(long, conflicts_with = "config", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    preset: Option<String>,
    /// A JSON DragConfig (missing fields take the defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ModelArgs {
    /// The weights files `load_models` reads, each with its SHA-256, as a report's settings
    /// record them.
    pub fn weights_json(&self) -> Result<serde_json::Value> {
        let mut files = serde_json::Map::new();
        insert_model_weights(&mut files, "", &self.model, self.vae.as_deref())?;
        Ok(files.into())
    }

    /// The preset named, if any.
    pub fn preset(&self) -> Option<&str> {
        self.preset.as_deref()
    }
}

/// A weights file as a report's settings record it: its path and SHA-256.
pub fn weights_entry(path: &Path, sha256: String) -> serde_json::Value {
    serde_json::json!({ "file": path.display().to_string(), "sha256": sha256 })
}

/// Adds the UNet, VAE and text-encoder files `Models::load_dir(model, vae)` reads to `files`,
/// as `{prefix}unet`, `{prefix}vae`, `{prefix}text_encoder`, each with its SHA-256 (read in
/// pieces: SD's fp16 files are 2 GB).
pub fn insert_model_weights(
    files: &mut serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    model: &Path,
    vae: Option<&Path>,
) -> Result<()> {
    let vae_dir = vae.map_or_else(|| model.join("vae"), Path::to_path_buf);
    for (role, dir, base) in [
        ("unet", model.join("unet"), "diffusion_pytorch_model"),
        ("vae", vae_dir, "diffusion_pytorch_model"),
        ("text_encoder", model.join("text_encoder"), "model"),
    ] {
        let file = gooddrag::model_set::weights_file(&dir, base)?;
        let sha = gooddrag::eval::sha256_file(&file)?;
        files.insert(format!("{prefix}{role}"), weights_entry(&file, sha));
    }
    Ok(())
}

/// `--preset`, else `--config`, else the defaults.
pub fn load_config(args: &ModelArgs) -> Result<DragConfig> {
    match (&args.preset, &args.config) {
        (Some(name), _) => DragConfig::preset(name),
        (None, Some(path)) => DragConfig::from_json(&read_text(path)?),
        (None, None) => Ok(DragConfig::default()),
    }
}

/// Opens `--device` and loads `--model` (and `--vae`) onto it, reporting both on stderr;
/// returns the models and the adapter's name.
pub fn load_models(args: &ModelArgs) -> Result<(Models, String)> {
    let (dev, adapter) = device::by_name(&args.device)?;
    eprintln!(
        "device: {} ({}, {})",
        adapter.name, adapter.backend, adapter.device_type
    );
    let started = std::time::Instant::now();
    let mut models = Models::load_dir(
        &args.model,
        args.vae.as_deref(),
        &dev,
        adapter.max_storage_buffer_binding_size,
    )?;
    models.memory_budget = args.memory_budget;
    models.precision = args.precision.resolve(&adapter)?;
    eprintln!(
        "precision: {} (asked: {})",
        models.precision, args.precision
    );
    eprintln!(
        "memory budget: {}{}",
        args.memory_budget,
        if args.memory_budget == gooddrag::exec::plan::MemoryBudget::Auto {
            " (the adapter's memory is unknown: least-memory backward plan; give --memory-budget \
             to trade memory for speed)"
        } else {
            ""
        }
    );
    eprintln!(
        "model loaded from {} in {:.1} s",
        args.model.display(),
        started.elapsed().as_secs_f64()
    );
    Ok((models, adapter.name))
}

/// The points of a points.json file.
pub fn read_points(path: &Path) -> Result<Vec<[f64; 2]>> {
    Ok(PointsFile::from_json(&read_text(path)?)?.points)
}

/// A text file's contents.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| cannot_read(path, e))
}

/// A file's bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| cannot_read(path, e))
}

fn cannot_read(path: &Path, e: std::io::Error) -> Error {
    Error::InvalidInput(format!("cannot read `{}`: {e}", path.display()))
}

/// Writes `bytes` to `path`.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| Error::InvalidInput(format!("cannot write `{}`: {e}", path.display())))
}

/// One edit with a progress bar; writes the official outputs into `out`.
pub fn edit_sample(
    models: &mut Models,
    device: &str,
    input: EditInput,
    out: &Path,
    dump: Option<&Path>,
) -> Result<(EditOutput, Timings)> {
    let size = input.size;
    let mut bar = ProgressBar::new();
    let result = pollster::block_on(run_edit(
        models,
        input,
        &mut |p| bar.update(&p),
        &Cancel::new(),
    ));
    bar.finish();
    let output = result?;
    let timings = dataset::write_edit_outputs(out, &output, device, size)?;
    if let Some(lora) = &output.lora
        && !output.lora_losses.is_empty()
    {
        write_file(
            &out.join("pytorch_lora_weights.safetensors"),
            &write_lora(lora)?,
        )?;
    }
    if let Some(path) = dump {
        write_file(path, &pollster::block_on(dataset::dump_bytes(&output))?)?;
    }
    Ok((output, timings))
}

/// Samples that failed, `(name, why)`, as `[{"sample": …, "error": …}, …]`.
pub fn failures_json(failures: &[(String, String)]) -> serde_json::Value {
    failures
        .iter()
        .map(|(n, w)| serde_json::json!({"sample": n, "error": w}))
        .collect()
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// Prints a result on stdout: `value()` as JSON with `--json`, else what `text` prints.
pub fn print_report(json: bool, value: impl FnOnce() -> serde_json::Value, text: impl FnOnce()) {
    if json {
        print_json(&value());
    } else {
        text();
    }
}

/// An aligned text table printed row by row on stdout: the first column left-aligned, the others
/// right-aligned, each padded to its width, one space between.
pub struct Table(pub &'static [usize]);

impl Table {
    /// Prints one row (or the header).
    pub fn row<S: AsRef<str>>(&self, cells: &[S]) {
        let mut line = String::new();
        for (i, (cell, &width)) in cells.iter().zip(self.0).enumerate() {
            let cell = cell.as_ref();
            if i == 0 {
                line += &format!("{cell:<width$}");
            } else {
                line += &format!(" {cell:>width$}");
            }
        }
        println!("{line}");
    }
}
