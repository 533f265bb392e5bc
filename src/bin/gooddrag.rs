//! `gooddrag` — the native command line. Argument parsing and printing only; the work is in the
//! library.

use clap::{Parser, Subcommand};
use gooddrag::{bench, device, probe};

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
    /// Benchmark the full-size SD 1.5 UNet with random weights (nothing downloaded) on the
    /// native wgpu device: time, peak device memory and largest buffer of one forward and one
    /// forward + backward to the latent.
    BenchUnet {
        /// Latent size (image size / 8): 64 for 512×512.
        #[arg(long, default_value_t = 64)]
        latent: usize,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
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
        Command::BenchUnet { latent, json } => {
            let (device, adapter) = device::wgpu()?;
            eprintln!(
                "adapter: {} ({}), maxStorageBufferBindingSize {} MiB; SD 1.5 UNet, latent {latent}×{latent}",
                adapter.name,
                adapter.backend,
                adapter.max_storage_buffer_binding_size >> 20
            );
            let report = pollster::block_on(bench::unet_sd15(
                &device,
                latent,
                adapter.max_storage_buffer_binding_size,
            ))?;
            if json {
                let out = serde_json::json!({ "adapter": adapter, "report": report });
                println!("{out}");
            } else {
                let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
                println!(
                    "SD 1.5 UNet, {} parameters, latent {l}×{l}, attention chunk budget {:.0} MiB, on {}",
                    report.parameters,
                    report.attention_budget_bytes as f64 / (1u64 << 20) as f64,
                    adapter.name,
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
    }
}
