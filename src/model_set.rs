//! The networks of one diffusers Stable Diffusion model, assembled in one place for every face
//! (CLI, browser worker, tests, benchmarks): the small files (configs, tokenizer, scheduler)
//! become [`Models::init`] — networks initialised on the device, weights not yet loaded — and
//! [`Models::frozen`] marks loaded networks as not trainable. The CLI loads weight files
//! from a folder ([`Models::load_dir`]); the worker streams chunks from IndexedDB into the same
//! networks (docs/ARCHITECTURE.md §7).
//!
//! Prompt embeddings are cached while the model stays loaded ([`PromptCache`]): the text encoder
//! runs once per distinct prompt (the empty one included), not once per edit or per benchmark
//! sample. Between those runs its weights wait in host memory ([`HostModule`]) instead of
//! taking ≈ 0.3 GB of GPU memory through every later phase of an edit.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::exec::plan::MemoryBudget;
use crate::kernels::precision::Precision;
use crate::models::attention::attention_budget;
use crate::models::clip::{ClipTextConfig, ClipTextModel};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::schedulers::DdimSchedulerConfig;
use crate::weights::HostModule;

/// The loaded networks of one diffusers model, on one (autodiff) device.
pub struct Models {
    /// The UNet; its base weights never require gradients.
    pub unet: UNet2DConditionModel,
    /// The VAE.
    pub vae: AutoencoderKL,
    /// CLIP text encoder, in host memory; uploaded for each prompt not in the cache.
    pub text_encoder: HostModule<ClipTextModel>,
    /// CLIP tokenizer.
    pub tokenizer: ClipTokenizer,
    /// `scheduler/scheduler_config.json` (defaults when absent).
    pub scheduler: DdimSchedulerConfig,
    /// The device everything lives on (autodiff, so the drag can differentiate).
    pub device: Device,
    /// Embeddings of the prompts this model encoded last.
    pub prompts: PromptCache,
    /// The device memory an edit may use: it picks the UNet's backward plan per edit
    /// (`exec::plan`); `auto` (unknown) picks the least memory.
    pub memory_budget: MemoryBudget,
    /// The UNet's compute dtype for the edit's f16-eligible phases (LoRA, drag, denoising;
    /// `kernels::precision`), resolved by the face from the user's choice and the adapter.
    pub precision: Precision,
}

/// The last [`PromptCache::CAPACITY`] prompts' CLIP embeddings (least recently used evicted),
/// and how often the text encoder actually ran.
#[derive(Default)]
pub struct PromptCache {
    entries: std::sync::Mutex<Vec<(String, Tensor<3>)>>,
    encoder_runs: std::sync::atomic::AtomicUsize,
}

impl PromptCache {
    /// Prompts kept (each `[1, 77, 768]` f32: 231 KB at SD 1.5's width).
    pub const CAPACITY: usize = 8;

    /// How many times the text encoder ran for this model.
    pub fn encoder_runs(&self) -> usize {
        self.encoder_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cached embedding of `prompt`, made most recent.
    fn get(&self, prompt: &str) -> Option<Tensor<3>> {
        let mut entries = self.entries.lock().ok()?;
        let i = entries.iter().position(|(p, _)| p == prompt)?;
        let hit = entries.remove(i);
        let value = hit.1.clone();
        entries.push(hit);
        Some(value)
    }

    fn insert(&self, prompt: &str, value: Tensor<3>) {
        self.encoder_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.remove(0);
            }
            entries.push((prompt.to_string(), value));
        }
    }
}

/// The small files of a diffusers model folder, as text: what the networks are built from.
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    /// `unet/config.json`.
    pub unet_config: String,
    /// `vae/config.json`.
    pub vae_config: String,
    /// `text_encoder/config.json`.
    pub text_encoder_config: String,
    /// `tokenizer/vocab.json`.
    pub vocab: String,
    /// `tokenizer/merges.txt`.
    pub merges: String,
    /// `tokenizer/tokenizer_config.json`, when present.
    pub tokenizer_config: Option<String>,
    /// `tokenizer/special_tokens_map.json`, when present.
    pub special_tokens_map: Option<String>,
    /// `scheduler/scheduler_config.json`, when present (else DDIM with SD 1.5's defaults).
    pub scheduler_config: Option<String>,
}

impl Models {
    /// Builds every network from `files` on `device`'s autodiff twin, with initial weights,
    /// ready for the weights to be loaded. `max_binding` is the device's largest storage
    /// binding (the attention chunk budget).
    pub fn init(files: &ModelFiles, device: &Device, max_binding: u64) -> Result<Self> {
        let device = crate::device::training(device);
        let budget = attention_budget(max_binding);
        let scheduler = match &files.scheduler_config {
            Some(json) => DdimSchedulerConfig::from_json(json)?,
            None => DdimSchedulerConfig::default(),
        };
        Ok(Self {
            unet: UNet2DConditionConfig::from_json(&files.unet_config)?.init(budget, &device)?,
            vae: AutoencoderKLConfig::from_json(&files.vae_config)?.init(budget, &device)?,
            text_encoder: HostModule::new(
                ClipTextConfig::from_json(&files.text_encoder_config)?.init(budget, &device)?,
                Default::default(),
            ),
            tokenizer: ClipTokenizer::from_files_content_with_config(
                &files.vocab,
                &files.merges,
                files.tokenizer_config.as_deref(),
                files.special_tokens_map.as_deref(),
            )?,
            scheduler,
            device,
            prompts: PromptCache::default(),
            memory_budget: MemoryBudget::default(),
            precision: Precision::default(),
        })
    }

    /// Prompt → CLIP last hidden state `[1, 77, d]` (detached), from the cache when this
    /// prompt was encoded recently.
    pub fn embed_prompt(&self, prompt: &str) -> Result<Tensor<3>> {
        if let Some(hit) = self.prompts.get(prompt) {
            return Ok(hit);
        }
        let ids = self
            .tokenizer
            .encode_padded(prompt, self.tokenizer.model_max_length());
        // Uploaded for this prompt only: dropped (its device memory freed) on return.
        let text_encoder = self.text_encoder.upload();
        let value = text_encoder.forward(&[ids])?.detach();
        self.prompts.insert(prompt, value.clone());
        Ok(value)
    }

    /// The model once `unet`, `vae` and `text_encoder` hold their loaded weights: none of the
    /// base weights requires gradients (only LoRA factors and the latent are trained).
    pub fn frozen(self) -> Models {
        Models {
            unet: self.unet.no_grad(),
            vae: self.vae.no_grad(),
            text_encoder: self.text_encoder.no_grad(),
            tokenizer: self.tokenizer,
            scheduler: self.scheduler,
            device: self.device,
            prompts: PromptCache::default(),
            memory_budget: self.memory_budget,
            precision: self.precision,
        }
    }
}

/// Loading a diffusers-layout model folder from disk (native).
#[cfg(not(target_arch = "wasm32"))]
mod load_dir {
    use std::path::{Path, PathBuf};

    use burn::tensor::Device;

    use super::{ModelFiles, Models};
    use crate::error::{Error, Result};
    use crate::weights::HostModule;
    use crate::weights::load::{Component, load_safetensors_file, read_weights_file};

    fn read(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read `{}` ({e}); --model must be a diffusers Stable Diffusion folder \
                 (unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
                path.display()
            ))
        })
    }

    /// The weights file of a component: the fp16 variant when present, else the fp32 one.
    pub fn weights_file(dir: &Path, base: &str) -> Result<PathBuf> {
        let fp16 = dir.join(format!("{base}.fp16.safetensors"));
        if fp16.is_file() {
            return Ok(fp16);
        }
        let full = dir.join(format!("{base}.safetensors"));
        if full.is_file() {
            return Ok(full);
        }
        Err(Error::InvalidInput(format!(
            "`{}` has neither {base}.fp16.safetensors nor {base}.safetensors",
            dir.display()
        )))
    }

    impl ModelFiles {
        /// Reads the small files of `dir` (diffusers layout); `vae_dir` overrides `dir/vae`.
        pub fn read_dir(dir: &Path, vae_dir: Option<&Path>) -> Result<Self> {
            let vae_dir = vae_dir.map_or_else(|| dir.join("vae"), Path::to_path_buf);
            let tok_dir = dir.join("tokenizer");
            let optional = |name: &str| std::fs::read_to_string(tok_dir.join(name)).ok();
            let sched_path = dir.join("scheduler").join("scheduler_config.json");
            Ok(Self {
                unet_config: read(&dir.join("unet").join("config.json"))?,
                vae_config: read(&vae_dir.join("config.json"))?,
                text_encoder_config: read(&dir.join("text_encoder").join("config.json"))?,
                vocab: read(&tok_dir.join("vocab.json"))?,
                merges: read(&tok_dir.join("merges.txt"))?,
                tokenizer_config: optional("tokenizer_config.json"),
                special_tokens_map: optional("special_tokens_map.json"),
                scheduler_config: if sched_path.is_file() {
                    Some(read(&sched_path)?)
                } else {
                    None
                },
            })
        }
    }

    impl Models {
        /// Loads `dir` (diffusers layout), preferring fp16 weight files, onto `device`'s
        /// autodiff twin. `max_binding` is the device's largest storage binding (attention
        /// chunk budget). `vae_dir` overrides `dir/vae` (GoodDrag uses sd-vae-ft-mse).
        pub fn load_dir(
            dir: &Path,
            vae_dir: Option<&Path>,
            device: &Device,
            max_binding: u64,
        ) -> Result<Self> {
            let files = ModelFiles::read_dir(dir, vae_dir)?;
            let mut models = Models::init(&files, device, max_binding)?;
            let vae_dir = vae_dir.map_or_else(|| dir.join("vae"), Path::to_path_buf);
            let unet_file = weights_file(&dir.join("unet"), "diffusion_pytorch_model")?;
            let vae_file = weights_file(&vae_dir, "diffusion_pytorch_model")?;
            let te_file = weights_file(&dir.join("text_encoder"), "model")?;
            models.unet = load_safetensors_file(models.unet, Component::Unet, &unet_file)?;
            models.vae = load_safetensors_file(models.vae, Component::Vae, &vae_file)?;
            let (name, bytes) = read_weights_file(&te_file)?;
            models.text_encoder = HostModule::load(
                models.text_encoder.into_module(),
                Component::TextEncoder,
                &name,
                &bytes,
            )?;
            Ok(models.frozen())
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use load_dir::weights_file;
