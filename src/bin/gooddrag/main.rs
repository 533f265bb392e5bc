//! `gooddrag` — the native command line. Argument parsing and printing only; the work is in the
//! library. One module per subcommand (`edit`, `bench`, `eval`, `dai`, `probe`, and `synthetic`
//! for the synthetic benchmarks, with `judge` for GScore) over `common` (model flags, files,
//! output) and `report` (per-sample reports, shards, `merge`). Background: docs/ARCHITECTURE.md.

mod bench;
mod common;
mod dai;
mod edit;
mod eval;
mod judge;
mod probe;
mod progress_bar;
mod report;
mod synthetic;

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Drag-edit one image: writes output_image.png, new_points.json, image_with_new_points.png
    /// and timings.json into --out (and the trained LoRA as pytorch_lora_weights.safetensors).
    Edit(edit::EditArgs),
    /// Edit every sample folder under --data (GoodDrag/Drag100 or DragBench layout) and report
    /// per-sample results, DAI and timings; one bad sample never stops the run.
    Bench(bench::BenchArgs),
    /// Join the reports of `bench`/`eval --shard K/N` runs (every K of one N) into the report.jsonl,
    /// summary.json and summary.md an unsharded run writes.
    Merge(report::MergeArgs),
    /// DAI (paper Eq. 8 and compute_DAI.py) of a results folder against a dataset.
    Dai(dai::DaiArgs),
    /// Score any method's results folder against a dataset with the papers' metrics (DAI;
    /// IF = 1 − LPIPS as DragBench) into report.jsonl, summary.json and summary.md; shards
    /// and merges like `bench`.
    Eval(eval::EvalArgs),
    /// GScore: every method's results judged side by side, per sample, by a multimodal model
    /// behind any OpenAI-compatible chat-completions endpoint (hosted, vLLM, llama.cpp,
    /// Ollama); answers cached, the key read from an environment variable.
    Gscore(eval::GscoreArgs),
    /// Run the device probe (GroupNorm → SiLU → Conv2d → attention, forward + backward) and
    /// print the adapter and the numbers; the browser test compares its WebGPU run to this.
    Probe(probe::ProbeArgs),
    /// Every phase of the default edit on the full SD 1.5 UNet + VAE with random weights (nothing
    /// downloaded), measured once each and extrapolated by the default schedule's counts:
    /// time, reserved device memory and the largest buffer per phase.
    BenchSynthetic(synthetic::SyntheticRunArgs),
    /// Benchmark the full-size SD 1.5 UNet with random weights (nothing downloaded) on the
    /// native wgpu device: time, peak device memory and largest buffer of one forward and one
    /// forward + backward to the latent.
    BenchUnet(synthetic::BenchUnetArgs),
    /// Where the time of one full-size SD 1.5 UNet forward goes (random weights): per
    /// operation (convolution, linear, attention core, norms, GEGLU, f16 widening) and per layer
    /// kind, next to unprofiled forward and forward + backward times.
    ProfileUnet(synthetic::SyntheticRunArgs),
    /// Time one 3×3 convolution of each SD 1.5 UNet level both with burn's kernel and as
    /// matrix multiplications (what the networks use), random data.
    BenchConv(synthetic::BenchConvArgs),
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

fn run(cli: Cli) -> gooddrag::Result<()> {
    match cli.command {
        Command::Edit(args) => edit::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Merge(args) => report::merge(args),
        Command::Dai(args) => dai::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Gscore(args) => eval::run_gscore(args),
        Command::Probe(args) => probe::run(args),
        Command::BenchSynthetic(args) => synthetic::bench_synthetic(args),
        Command::BenchUnet(args) => synthetic::bench_unet(args),
        Command::ProfileUnet(args) => synthetic::profile_unet(args),
        Command::BenchConv(args) => synthetic::bench_conv(args),
    }
}
