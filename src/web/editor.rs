//! The editing engine behind the worker: a model loaded chunk by chunk (the page fetches and
//! caches the chunks; see `www/weights.js`), and edits run on it with progress events and a
//! cancel flag that can be set while an edit awaits the GPU.
//!
//! JS API (all async-safe; one call at a time except `cancelEdit`):
//! `beginModel(files)`, `weightsHeaderLength(first8)`, `planWeights(part, file, header, fileLength)`,
//! `loadWeightsChunk(part, index, bytes)`, `finishModel()`, `modelInfo()`, `unloadModel()`,
//! `edit(request, onProgress)`, `cancelEdit()`.

use std::cell::RefCell;

use burn::module::Module;
use burn::tensor::Device;
use wasm_bindgen::prelude::*;

use super::{device, js_error, report, to_js};
use crate::drag::DragConfig;
use crate::edit::{EditCache, EditInput, LoraChoice, run_edit_cached};
use crate::error::Error;
use crate::exec::plan::MemoryBudget;
use crate::image::RgbImage;
use crate::image::working::WorkingSize;
use crate::kernels::precision::PrecisionChoice;
use crate::lora::{parse_lora, write_lora};
use crate::model_set::{ModelFiles, Models};
use crate::models::clip::ClipTextModel;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::progress::Cancel;
use crate::schedulers::DdimSchedulerConfig;
use crate::weights::HostModule;
use crate::weights::load::{Component, WeightLoader};
use crate::weights::{Chunk, Header, MAX_CHUNK_BYTES, chunk_tensors, plan_chunks};

/// One weights file being loaded.
struct Part<M: Module> {
    loader: Option<WeightLoader<M>>,
    header: Option<Header>,
    chunks: Vec<Chunk>,
    loaded: Vec<bool>,
    module: Option<M>,
}

impl<M: Module> Part<M> {
    fn new(module: M) -> Self {
        Self {
            loader: None,
            header: None,
            chunks: Vec::new(),
            loaded: Vec::new(),
            module: Some(module),
        }
    }
}

/// A model under construction.
struct Loading {
    unet: Part<UNet2DConditionModel>,
    vae: Part<AutoencoderKL>,
    text_encoder: Part<ClipTextModel>,
    tokenizer: ClipTokenizer,
    scheduler: DdimSchedulerConfig,
    device: Device,
}

enum ModelState {
    None,
    Loading(Box<Loading>),
    Ready(Box<Models>),
    /// Taken by a running edit.
    Busy,
}

thread_local! {
    static MODEL: RefCell<ModelState> = const { RefCell::new(ModelState::None) };
    static CACHE: RefCell<EditCache> = RefCell::new(EditCache::default());
    static CANCEL: Cancel = Cancel::new();
}

fn invalid(msg: impl Into<String>) -> JsValue {
    js_error(Error::InvalidInput(msg.into()))
}

fn field(obj: &JsValue, name: &str) -> Option<String> {
    js_sys::Reflect::get(obj, &name.into())
        .ok()
        .and_then(|v| v.as_string())
}

/// Starts loading a model from its small files: `{ unetConfig, vaeConfig, textEncoderConfig,
/// vocab, merges, tokenizerConfig?, specialTokensMap?, schedulerConfig? }` (file contents as
/// strings). Replaces any loaded model.
#[wasm_bindgen(js_name = beginModel)]
pub fn begin_model(files: JsValue) -> Result<(), JsValue> {
    let need = |name: &str| {
        field(&files, name).ok_or_else(|| invalid(format!("model file `{name}` is missing")))
    };
    let files = ModelFiles {
        unet_config: need("unetConfig")?,
        vae_config: need("vaeConfig")?,
        text_encoder_config: need("textEncoderConfig")?,
        vocab: need("vocab")?,
        merges: need("merges")?,
        tokenizer_config: field(&files, "tokenizerConfig"),
        special_tokens_map: field(&files, "specialTokensMap"),
        scheduler_config: field(&files, "schedulerConfig"),
    };
    let models = Models::init(
        &files,
        &device()?,
        report()?.max_storage_buffer_binding_size,
    )
    .map_err(js_error)?;
    let Models {
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        device,
        prompts: _,
        memory_budget: _,
        precision: _,
    } = models;
    CACHE.with_borrow_mut(EditCache::clear);
    MODEL.set(ModelState::Loading(Box::new(Loading {
        unet: Part::new(unet),
        vae: Part::new(vae),
        text_encoder: Part::new(text_encoder.into_module()),
        tokenizer,
        scheduler,
        device,
    })));
    Ok(())
}

/// Length of the safetensors header JSON + 8 from a file's first 8 bytes: fetch that many
/// bytes to call [`plan_weights`].
#[wasm_bindgen(js_name = weightsHeaderLength)]
pub fn weights_header_length(first8: &[u8]) -> Result<f64, JsValue> {
    Ok((Header::json_len(first8).map_err(js_error)? + 8) as f64)
}

fn with_loading<T>(f: impl FnOnce(&mut Loading) -> Result<T, JsValue>) -> Result<T, JsValue> {
    MODEL.with_borrow_mut(|state| match state {
        ModelState::Loading(l) => f(l),
        ModelState::Busy => Err(invalid("the engine is busy with an edit")),
        _ => Err(invalid("no model is being loaded: call beginModel first")),
    })
}

fn component(part: &str) -> Result<Component, JsValue> {
    match part {
        "unet" => Ok(Component::Unet),
        "vae" => Ok(Component::Vae),
        "text_encoder" => Ok(Component::TextEncoder),
        other => Err(invalid(format!(
            "unknown model part `{other}`: use unet, vae or text_encoder"
        ))),
    }
}

fn plan<M: Module>(
    p: &mut Part<M>,
    comp: Component,
    file: &str,
    header_bytes: &[u8],
    file_len: u64,
) -> Result<JsValue, JsValue> {
    let header = Header::parse_named(file, header_bytes, Some(file_len)).map_err(js_error)?;
    // Every tensor lives in one GPU buffer as f32 (the CLIP token table is split in ≤ 64 MiB
    // blocks): refuse a model this adapter cannot hold before downloading it.
    let adapter = report()?;
    let limit = adapter
        .max_storage_buffer_binding_size
        .min(adapter.max_buffer_size);
    let split_ok = |name: &str| name.ends_with("token_embedding.weight");
    if let Some(t) = header
        .tensors()
        .iter()
        .find(|t| !split_ok(&t.name) && t.num_elements() * 4 > limit)
    {
        return Err(invalid(format!(
            "This GPU's WebGPU limits are too small for this model: tensor `{}` needs {} MiB in \
             one buffer but the adapter allows {} MiB. Use a GPU (or browser) with larger limits.",
            t.name,
            (t.num_elements() * 4) >> 20,
            limit >> 20
        )));
    }
    let chunks = plan_chunks(&header, MAX_CHUNK_BYTES);
    let module = p
        .module
        .take()
        .or_else(|| p.loader.take().map(|l| l.into_module()))
        .ok_or_else(|| invalid("model part already finished"))?;
    let loader = WeightLoader::new(module, comp, header.file_label());
    // The text encoder waits in host memory between prompts (`weights::host`).
    p.loader = Some(if comp == Component::TextEncoder {
        loader.on_host()
    } else {
        loader
    });
    p.loaded = vec![false; chunks.len()];
    let out: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({ "index": i, "start": c.start, "end": c.end }))
        .collect();
    p.chunks = chunks;
    p.header = Some(header);
    to_js(&out)
}

/// Parses a weights file's header (`header` = its first `weightsHeaderLength` bytes) and returns
/// its chunk plan `[{ index, start, end }]` (tensor-aligned, ≤ 64 MiB; byte offsets in the file).
#[wasm_bindgen(js_name = planWeights)]
pub fn plan_weights(
    part: &str,
    file: &str,
    header: &[u8],
    file_length: f64,
) -> Result<JsValue, JsValue> {
    let comp = component(part)?;
    let len = file_length as u64;
    with_loading(|l| match comp {
        Component::Unet => plan(&mut l.unet, comp, file, header, len),
        Component::Vae => plan(&mut l.vae, comp, file, header, len),
        Component::TextEncoder => plan(&mut l.text_encoder, comp, file, header, len),
    })
}

fn load<M: Module>(p: &mut Part<M>, index: usize, bytes: &[u8]) -> Result<(), JsValue> {
    let header = p
        .header
        .as_ref()
        .ok_or_else(|| invalid("planWeights must come before loadWeightsChunk"))?;
    let chunk = p
        .chunks
        .get(index)
        .ok_or_else(|| invalid(format!("chunk {index} is not in the plan")))?;
    let loader = p
        .loader
        .as_mut()
        .ok_or_else(|| invalid("model part already finished"))?;
    loader
        .load_tensors(chunk_tensors(header, chunk, bytes).map_err(js_error)?)
        .map_err(js_error)?;
    p.loaded[index] = true;
    Ok(())
}

/// Uploads one planned chunk (its bytes exactly) to the GPU.
#[wasm_bindgen(js_name = loadWeightsChunk)]
pub fn load_weights_chunk(part: &str, index: usize, bytes: &[u8]) -> Result<(), JsValue> {
    let comp = component(part)?;
    with_loading(|l| match comp {
        Component::Unet => load(&mut l.unet, index, bytes),
        Component::Vae => load(&mut l.vae, index, bytes),
        Component::TextEncoder => load(&mut l.text_encoder, index, bytes),
    })
}

/// The part's loaded module, in host memory for a loader `on_host`, else on the device.
fn finish<M: Module>(p: &mut Part<M>, name: &str) -> Result<HostModule<M>, JsValue> {
    if let Some(missing) = p.loaded.iter().position(|l| !l) {
        return Err(invalid(format!("{name}: chunk {missing} was never loaded")));
    }
    let loader = p
        .loader
        .take()
        .ok_or_else(|| invalid(format!("{name}: no weights were planned")))?;
    loader.finish_on_host().map_err(js_error)
}

/// Completes the model; edits can run afterwards.
#[wasm_bindgen(js_name = finishModel)]
pub fn finish_model() -> Result<(), JsValue> {
    let models = with_loading(|l| {
        Ok(Models {
            unet: finish(&mut l.unet, "unet")?.into_module(),
            vae: finish(&mut l.vae, "vae")?.into_module(),
            text_encoder: finish(&mut l.text_encoder, "text_encoder")?,
            tokenizer: l.tokenizer.clone(),
            scheduler: l.scheduler.clone(),
            device: l.device.clone(),
            prompts: Default::default(),
            // WebGPU tells no memory size: the least-memory backward plan unless an edit
            // request gives a budget; the precision too is set per edit.
            memory_budget: Default::default(),
            precision: Default::default(),
        }
        .frozen())
    })?;
    MODEL.set(ModelState::Ready(Box::new(models)));
    Ok(())
}

/// `{ state: "none" | "loading" | "ready" | "busy", parameters? }`.
#[wasm_bindgen(js_name = modelInfo)]
pub fn model_info() -> Result<JsValue, JsValue> {
    MODEL.with_borrow(|s| {
        let v = match s {
            ModelState::None => serde_json::json!({ "state": "none" }),
            ModelState::Loading(_) => serde_json::json!({ "state": "loading" }),
            ModelState::Busy => serde_json::json!({ "state": "busy" }),
            ModelState::Ready(m) => {
                serde_json::json!({ "state": "ready", "unetParameters": m.unet.num_params() })
            }
        };
        to_js(&v)
    })
}

/// Drops the model (frees GPU memory) and the edit cache.
#[wasm_bindgen(js_name = unloadModel)]
pub fn unload_model() -> Result<(), JsValue> {
    MODEL.with_borrow_mut(|s| match s {
        ModelState::Busy => Err(invalid("the engine is busy with an edit")),
        _ => {
            *s = ModelState::None;
            Ok(())
        }
    })?;
    CACHE.with_borrow_mut(EditCache::clear);
    Ok(())
}

/// The engine's cancel flag (shared by edits and the benchmark; `cancelEdit` sets it).
pub(super) fn cancel_flag() -> Cancel {
    CANCEL.with(Clone::clone)
}

/// Requests cancellation of the running edit; it stops within one step and keeps the model.
#[wasm_bindgen(js_name = cancelEdit)]
pub fn cancel_edit() {
    CANCEL.with(Cancel::cancel);
}

fn bytes_field(obj: &JsValue, name: &str) -> Option<Vec<u8>> {
    js_sys::Reflect::get(obj, &name.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
        .map(|v| js_sys::Uint8Array::new(&v).to_vec())
}

/// A string field parsed by its type's `FromStr` (its default when absent); a parse error
/// names the field.
fn parsed_field<T: std::str::FromStr<Err = String> + Default>(
    obj: &JsValue,
    name: &str,
) -> Result<T, JsValue> {
    field(obj, name)
        .map(|s| {
            s.parse()
                .map_err(|e| invalid(format!("request.{name}: {e}")))
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

fn number_field(obj: &JsValue, name: &str) -> Option<f64> {
    js_sys::Reflect::get(obj, &name.into())
        .ok()
        .and_then(|v| v.as_f64())
}

/// Runs an edit. `request`: `{ width, height, rgb: Uint8Array (RGB), mask?: Uint8Array (one byte
/// per pixel, > 0 = editable), points: [[x, y], …], preset?: string, config?: object (DragConfig
/// fields), lora?: "train" | "none", loraFile?: Uint8Array, size?: number | "native" }` (the
/// working size: a long side, default 512, or the photo's own size; points and mask at the
/// photo's size), `precision?: "auto" | "f32" | "f16"` (the UNet's compute dtype; `auto`: f16
/// on a hardware adapter with shader-f16), `memoryBudget?: "auto" | "8GiB" | …` (the device
/// memory the edit may use; `auto`, WebGPU telling none, takes the least-memory backward plan).
/// `onProgress` receives each progress event. Resolves to `{ width, height, rgb, working:
/// { width, height, rgb }, finalHandles, newPoints, timings, stop, supervisionSteps, cacheHits,
/// precision, backwardPlan, lora?: Uint8Array }`: `rgb` is the photo at its own size with the
/// edit composited in, `working` the edit at the working size; points in photo pixels.
#[wasm_bindgen]
pub async fn edit(request: JsValue, on_progress: js_sys::Function) -> Result<JsValue, JsValue> {
    let width = number_field(&request, "width")
        .ok_or_else(|| invalid("request.width is missing"))? as usize;
    let height = number_field(&request, "height")
        .ok_or_else(|| invalid("request.height is missing"))? as usize;
    let rgb = bytes_field(&request, "rgb").ok_or_else(|| invalid("request.rgb is missing"))?;
    let mask = bytes_field(&request, "mask");
    let points_js = js_sys::Reflect::get(&request, &"points".into())
        .map_err(|_| invalid("request.points is missing"))?;
    let points: Vec<[f64; 2]> = serde_wasm_bindgen::from_value(points_js)
        .map_err(|e| invalid(format!("request.points must be [[x, y], …]: {e}")))?;
    let mut config = match field(&request, "preset") {
        Some(name) => DragConfig::preset(&name).map_err(js_error)?,
        None => DragConfig::default(),
    };
    if let Ok(overrides) = js_sys::Reflect::get(&request, &"config".into())
        && !overrides.is_undefined()
        && !overrides.is_null()
    {
        let json = js_sys::JSON::stringify(&overrides)
            .map_err(|_| invalid("request.config is not JSON"))?;
        let mut base = serde_json::to_value(&config).map_err(|e| invalid(e.to_string()))?;
        let over: serde_json::Value =
            serde_json::from_str(&String::from(json)).map_err(|e| invalid(e.to_string()))?;
        merge(&mut base, over);
        config = DragConfig::from_json(&base.to_string()).map_err(js_error)?;
    }
    let lora = match (
        bytes_field(&request, "loraFile"),
        field(&request, "lora").as_deref(),
    ) {
        (Some(bytes), _) => LoraChoice::Use(parse_lora("the LoRA file", &bytes).map_err(js_error)?),
        (None, Some("none")) => LoraChoice::None,
        _ => LoraChoice::Train,
    };
    let size = match js_sys::Reflect::get(&request, &"size".into()) {
        Ok(v) if v.is_undefined() || v.is_null() => WorkingSize::default(),
        Ok(v) => match (v.as_f64(), v.as_string()) {
            (Some(n), _) => WorkingSize::LongSide(n as usize)
                .checked()
                .map_err(js_error)?,
            (None, Some(s)) => s.parse().map_err(js_error)?,
            _ => {
                return Err(invalid(
                    "request.size must be a long side in pixels or \"native\"",
                ));
            }
        },
        Err(_) => WorkingSize::default(),
    };
    let precision: PrecisionChoice = parsed_field(&request, "precision")?;
    let precision = precision.resolve(&report()?).map_err(js_error)?;
    let memory_budget: MemoryBudget = parsed_field(&request, "memoryBudget")?;
    let input = EditInput {
        image: RgbImage { width, height, rgb },
        mask,
        points,
        config,
        lora,
        size,
    };

    let mut models = MODEL.with_borrow_mut(|s| match std::mem::replace(s, ModelState::Busy) {
        ModelState::Ready(m) => Ok(m),
        other => {
            let msg = match &other {
                ModelState::Busy => "the engine is busy with an edit",
                ModelState::Loading(_) => "the model is still loading",
                _ => "no model is loaded",
            };
            *s = other;
            Err(invalid(msg))
        }
    })?;
    models.precision = precision;
    models.memory_budget = memory_budget;
    let cancel = CANCEL.with(Clone::clone);
    cancel.reset();
    let mut cache = CACHE.take();
    let mut progress = |p: crate::progress::Progress| {
        if let Ok(v) = to_js(&p) {
            let _ = on_progress.call1(&JsValue::NULL, &v);
        }
    };
    let result = run_edit_cached(&mut models, input, &mut cache, &mut progress, &cancel).await;
    CACHE.set(cache);
    MODEL.set(ModelState::Ready(models));
    let out = result.map_err(js_error)?;
    let lora_bytes = match (&out.lora, out.lora_losses.is_empty()) {
        (Some(set), false) => Some(write_lora(set).map_err(js_error)?),
        _ => None,
    };
    let summary = serde_json::json!({
        "width": out.full.width,
        "height": out.full.height,
        "working": { "width": out.image.width, "height": out.image.height },
        "finalHandles": out.final_handles,
        "newPoints": out.new_points,
        "timings": out.timings,
        "stop": out.record.stop,
        "supervisionSteps": out.record.losses.len(),
        "cacheHits": CACHE.with_borrow(|c| c.last_hits.clone()),
        "precision": out.precision,
        "backwardPlan": out.backward_plan,
    });
    let js = to_js(&summary)?;
    js_sys::Reflect::set(
        &js,
        &"rgb".into(),
        &js_sys::Uint8Array::from(&out.full.rgb[..]).into(),
    )
    .map_err(|_| invalid("result"))?;
    let working = js_sys::Reflect::get(&js, &"working".into()).map_err(|_| invalid("result"))?;
    js_sys::Reflect::set(
        &working,
        &"rgb".into(),
        &js_sys::Uint8Array::from(&out.image.rgb[..]).into(),
    )
    .map_err(|_| invalid("result"))?;
    if let Some(bytes) = lora_bytes {
        js_sys::Reflect::set(
            &js,
            &"lora".into(),
            &js_sys::Uint8Array::from(&bytes[..]).into(),
        )
        .map_err(|_| invalid("result"))?;
    }
    Ok(js)
}

/// Deep-merges `over` into `base` (objects merge, everything else replaces).
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Names of the hyperparameter presets.
#[wasm_bindgen]
pub fn presets() -> Result<JsValue, JsValue> {
    to_js(&crate::drag::PRESETS)
}

/// The full DragConfig of a preset (every field, for the advanced panel).
#[wasm_bindgen(js_name = presetConfig)]
pub fn preset_config(name: &str) -> Result<JsValue, JsValue> {
    to_js(&DragConfig::preset(name).map_err(js_error)?)
}
