//! The synthetic benchmark in the browser (`www/bench.html`): the same
//! [`edit_synthetic`](crate::perf::synthetic::edit_synthetic) the native `gooddrag bench-synthetic` runs,
//! on the page's WebGPU device.

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use super::{device, editor, js_error, report, to_js};
use crate::error::Error;
use crate::perf::synthetic::{BenchOptions, SyntheticModel, edit_synthetic};

/// `benchSynthetic` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BenchRequest {
    /// Latent size (64 for 512×512).
    #[serde(default = "default_latent")]
    latent: usize,
    /// Gradient checkpointing as the editor uses it (default on; off to compare).
    #[serde(default = "default_checkpointing")]
    checkpointing: bool,
    /// The gradient passes' backward plan (`recompute` unless asked).
    #[serde(default)]
    backward_plan: crate::models::unet_2d_condition::BackwardPlan,
    /// The UNet's compute dtype: `auto` (f16 on a hardware adapter with shader-f16), `f32`,
    /// `f16`.
    #[serde(default)]
    precision: crate::kernels::precision::PrecisionChoice,
    /// Every attention by chunks with materialised scores instead of the fused kernels (to
    /// measure what they save).
    #[serde(default)]
    chunked_attention: bool,
    /// Run each phase twice and time the second (default on); off, one run whose time
    /// includes compiling the GPU programs (memory is unaffected).
    #[serde(default = "default_warm_up")]
    warm_up: bool,
    /// A name for the architecture below (shown in the report).
    #[serde(default)]
    name: Option<String>,
    /// diffusers `unet/config.json` content; SD 1.5 when all three configs are absent.
    #[serde(default)]
    unet_config: Option<String>,
    /// diffusers `vae/config.json` content.
    #[serde(default)]
    vae_config: Option<String>,
    /// diffusers `text_encoder/config.json` content.
    #[serde(default)]
    text_encoder_config: Option<String>,
}

fn default_latent() -> usize {
    64
}

fn default_checkpointing() -> bool {
    true
}

fn default_warm_up() -> bool {
    true
}

/// Runs every phase of the default edit once on random weights and resolves to
/// `{ adapter, report }` (see `EditBenchReport`). `request`: `{ latent?: 64, checkpointing?:
/// true, backwardPlan?: "recompute", precision?: "auto" | "f32" | "f16", chunkedAttention?:
/// false, warmUp?: true, name?,
/// unetConfig?, vaeConfig?, textEncoderConfig? }` (configs as JSON text; all three or none).
/// `onProgress` receives a line before each run; `cancelEdit()` stops it between runs.
#[wasm_bindgen(js_name = benchSynthetic)]
pub async fn bench_synthetic(
    request: JsValue,
    on_progress: js_sys::Function,
) -> Result<JsValue, JsValue> {
    let request: BenchRequest = serde_wasm_bindgen::from_value(request)
        .map_err(|e| js_error(Error::InvalidInput(format!("bench request: {e}"))))?;
    let model = match (
        &request.unet_config,
        &request.vae_config,
        &request.text_encoder_config,
    ) {
        (None, None, None) => SyntheticModel::sd15(),
        (Some(unet), Some(vae), Some(te)) => {
            SyntheticModel::from_json(request.name.as_deref().unwrap_or("custom"), unet, vae, te)
                .map_err(js_error)?
        }
        _ => {
            return Err(js_error(Error::InvalidInput(
                "bench request: give unetConfig, vaeConfig and textEncoderConfig, or none (SD 1.5)"
                    .into(),
            )));
        }
    };
    let dev = device()?;
    let adapter = report()?;
    let cancel = editor::cancel_flag();
    cancel.reset();
    let mut progress = |line: &str| {
        let _ = on_progress.call1(&JsValue::NULL, &JsValue::from_str(line));
    };
    let options = BenchOptions {
        latent_size: request.latent,
        warm_up: request.warm_up,
        checkpointing: request.checkpointing,
        backward_plan: request.backward_plan,
        dry_run: false,
        f32_weights: false,
        precision: request.precision.resolve(&adapter).map_err(js_error)?,
        chunked_attention: request.chunked_attention,
    };
    let result = edit_synthetic(
        &dev,
        &model,
        options,
        adapter.max_storage_buffer_binding_size,
        &mut progress,
        &cancel,
    )
    .await;
    // The random model is dropped here; give its pages back before anything else runs.
    dev.memory_cleanup();
    let report = result.map_err(js_error)?;
    to_js(&serde_json::json!({ "adapter": adapter, "report": report }))
}
