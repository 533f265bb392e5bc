//! `gooddrag probe`: the device probe (GroupNorm → SiLU → Conv2d → attention, forward +
//! backward) on the native device, printed as text or JSON; the browser test compares its WebGPU
//! run to this. Background: docs/ARCHITECTURE.md.

use clap::Args;
use gooddrag::probe::ProbeConfig;
use gooddrag::{Result, device};

use crate::common::print_report;

/// `gooddrag probe`'s flags.
#[derive(Args)]
pub struct ProbeArgs {
    /// `cpu` (burn-flex) or `wgpu` (Vulkan; lavapipe without a GPU).
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Print the full result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `gooddrag probe`.
pub fn run(args: ProbeArgs) -> Result<()> {
    let (device, adapter) = device::by_name(&args.device)?;
    let started = std::time::Instant::now();
    let result = pollster::block_on(gooddrag::probe::run(&device, ProbeConfig::default()))?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    print_report(
        args.json,
        || serde_json::json!({ "adapter": adapter, "result": result, "elapsedMs": elapsed_ms }),
        || {
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
        },
    );
    Ok(())
}
