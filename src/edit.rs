//! One whole GoodDrag edit (docs/ALGORITHM.md §1.0, Appendix A), the same for the browser and the CLI:
//!
//! 1. validate the image, mask and points; embed the prompt with CLIP;
//! 2. fine-tune a LoRA on the image (or apply a given one, or none);
//! 3. VAE-encode (posterior mean) and DDIM-invert to the edit strength;
//! 4. run the [`DragSession`] (reference trajectory, AlDD, Latent-MasaCtrl);
//! 5. VAE-decode, resize back to the input size, report the final handles.
//!
//! Around these, the photo is moved to its working size first (points and mask mapped
//! exactly, [`crate::image::working`]) and the result composited back into the photo at its own
//! size after ([`crate::image::composite`]); docs/ARCHITECTURE.md §8.
//!
//! Every phase is timed and reports progress; cancellation is checked between steps.

use burn::tensor::Tensor;

use crate::clock::now_ms;
use crate::drag::{DragConfig, DragRecord, DragSession, Frame, LatentMask, PointPairs};
use crate::error::{Error, Result};
use crate::image::composite::{CompositeSettings, changed_region, composite};
use crate::image::working::{SizeMap, WorkingSize, check_edit_size};
use crate::image::{RgbImage, resize_bilinear};
use crate::kernels::precision::Precision;
use crate::lora::{self, LoraSet, train_lora};
use crate::model_set::Models;
use crate::models::unet_2d_condition::BackwardPlan;
use crate::pipeline::{decode, encode, image_to_tensor, invert, tensor_to_rgb8};
use crate::progress::{Cancel, Progress};
use crate::rng;
use crate::schedulers::DdimScheduler;

/// Which LoRA the edit uses.
#[derive(Debug, Clone, Default)]
pub enum LoraChoice {
    /// Fine-tune one on the image (`config.lora`), unless `config.use_lora` is false.
    #[default]
    Train,
    /// Use this one (e.g. from an earlier edit of the same image, or a file).
    Use(LoraSet),
    /// The base model.
    None,
}

/// One edit request.
#[derive(Debug, Clone)]
pub struct EditInput {
    /// The photo.
    pub image: RgbImage,
    /// Editable region, one byte per pixel (> 0 = may change); `None` = no mask.
    pub mask: Option<Vec<u8>>,
    /// `[x, y]` image points: handle, target, handle, target, …
    pub points: Vec<[f64; 2]>,
    /// Hyperparameters.
    pub config: DragConfig,
    /// LoRA to use.
    pub lora: LoraChoice,
    /// The size the edit runs at (points, mask and image are given at the photo's size).
    pub size: WorkingSize,
}

/// Wall time of one phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhaseTiming {
    /// `text`, `lora`, `encode`, `invert`, `drag`, `decode`.
    pub phase: String,
    /// Milliseconds.
    pub millis: f64,
}

/// What an edit returns.
pub struct EditOutput {
    /// The edited image at the working size (with [`WorkingSize::Native`], the photo's size:
    /// what the official code returns).
    pub image: RgbImage,
    /// The photo at its own size with the edited region composited in.
    pub full: RgbImage,
    /// The photo's size and the working size.
    pub size: SizeMap,
    /// Final handle positions, photo `[x, y]`.
    pub final_handles: Vec<[f64; 2]>,
    /// `new_points.json` layout: final handle, original target, … (docs/ALGORITHM.md §1.17),
    /// photo `[x, y]`.
    pub new_points: Vec<[f64; 2]>,
    /// Per-phase wall times.
    pub timings: Vec<PhaseTiming>,
    /// Losses, tracked handles, drag timesteps, stop reason, latent after the drag.
    pub record: DragRecord,
    /// VAE latent of the input.
    pub z0: Tensor<4>,
    /// Inverted latent.
    pub z_t: Tensor<4>,
    /// Latent before decoding.
    pub z_final: Tensor<4>,
    /// The LoRA used (trained here or given).
    pub lora: Option<LoraSet>,
    /// Loss of every LoRA step (empty when none was trained).
    pub lora_losses: Vec<f32>,
    /// The image frame at the working size (sizes at image and feature resolution).
    pub frame: Frame,
    /// The backward plan the gradient passes ran with (chosen from the memory budget).
    pub backward_plan: BackwardPlan,
    /// The UNet's compute dtype in the LoRA, drag and denoising phases.
    pub precision: Precision,
}

impl EditOutput {
    /// The result at the photo's size: the edit itself when it ran there (the official
    /// output), else the full-resolution composite.
    pub fn at_photo_size(&self) -> &RgbImage {
        if self.size.is_identity() {
            &self.image
        } else {
            &self.full
        }
    }
}

/// What an edit of the same image can reuse (issue: re-editing must not retrain or re-invert):
/// the LoRA, keyed by image + prompt + LoRA settings, and z₀/z_T, keyed by that plus the
/// inversion settings. Keys are FNV-1a hashes.
#[derive(Default)]
pub struct EditCache {
    lora: Option<(u64, LoraSet)>,
    inversion: Option<(u64, Tensor<4>, Tensor<4>)>,
    /// How many phases the last edit took from the cache (`lora`, `inversion`).
    pub last_hits: Vec<&'static str>,
}

/// FNV-1a over byte slices, each followed by a 0xff separator.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(rng::FNV1A64_OFFSET, |h, part| {
        rng::fnv1a64(rng::fnv1a64(h, part), &[0xff])
    })
}

impl EditCache {
    /// Forgets everything (e.g. after the model changed).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Runs one edit (see the module docs).
pub async fn run_edit(
    models: &mut Models,
    input: EditInput,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<EditOutput> {
    run_edit_cached(models, input, &mut EditCache::default(), progress, cancel).await
}

/// Sets the UNet's backward plan for this edit from the model's memory budget: sized for the
/// larger of its two gradient passes, the LoRA's crops and the drag at the working size.
fn choose_backward_plan(models: &mut Models, config: &DragConfig, (w, h): (usize, usize)) {
    let lora_side = config.lora.resolution / 8;
    let latent_pixels = ((w / 8) * (h / 8)).max(lora_side * lora_side);
    let f16_weights = models.unet.conv_in.weight.val().dtype() == burn::tensor::DType::F16;
    let setting = crate::exec::plan::Setting {
        f16_weights,
        precision: models.precision,
        attention: crate::kernels::flash_attention::AttentionKernel::on(&models.device),
    };
    models.unet.backward_plan =
        crate::exec::plan::plan_for_budget(models.memory_budget, latent_pixels, setting);
}

/// [`run_edit`] that reuses (and fills) `cache`: a re-edit of the same image with the same
/// prompt and LoRA settings skips LoRA training, and with the same inversion settings too skips
/// the encode and the inversion.
pub async fn run_edit_cached(
    models: &mut Models,
    input: EditInput,
    cache: &mut EditCache,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<EditOutput> {
    let EditInput {
        image: photo,
        mask,
        points,
        config,
        lora,
        size,
    } = input;
    config.validate()?;
    // To the working size.
    let started = now_ms();
    let map = SizeMap::new(photo.width, photo.height, size)?;
    check_edit_size(map.working.0, map.working.1)?;
    if photo.rgb.len() != 3 * photo.width * photo.height {
        return Err(Error::InvalidInput(format!(
            "the image has {} bytes but {}×{} RGB needs {}",
            photo.rgb.len(),
            photo.width,
            photo.height,
            3 * photo.width * photo.height
        )));
    }
    if let Some(m) = &mask
        && m.len() != photo.width * photo.height
    {
        return Err(Error::InvalidInput(format!(
            "the mask has {} values but the image has {}×{} pixels",
            m.len(),
            photo.width,
            photo.height
        )));
    }
    let image = map.image(&photo);
    let mask = mask.map(|m| map.mask(&m));
    choose_backward_plan(models, &config, map.working);
    models.unet.precision = models.precision;
    let working_points: Vec<[f64; 2]> = points.iter().map(|&p| map.to_working(p)).collect();
    let resize_millis = now_ms() - started;
    let mut out = edit_at_working_size(
        models,
        WorkingInput {
            image: &image,
            mask: mask.as_deref(),
            points: &working_points,
            config,
            lora_choice: lora,
        },
        cache,
        progress,
        cancel,
    )
    .await?;
    // Back to the photo: points, and the result composited into it.
    let started = now_ms();
    let settings = CompositeSettings::default();
    let region = match &mask {
        Some(m) if m.iter().any(|&v| v > 0) => m.clone(),
        _ => {
            let pairs: Vec<[f64; 2]> = out
                .final_handles
                .iter()
                .zip(working_points.chunks_exact(2))
                .flat_map(|(h, pair)| [pair[0], *h, *h, pair[1]])
                .collect();
            changed_region(&image, &out.image, &pairs, &settings)
        }
    };
    out.full = composite(&photo, &image, &out.image, &region, &settings);
    out.size = map;
    out.final_handles = out
        .final_handles
        .iter()
        .map(|&p| map.to_original(p))
        .collect();
    // The targets as given (not mapped there and back).
    out.new_points = out
        .final_handles
        .iter()
        .zip(points.chunks_exact(2))
        .flat_map(|(h, pair)| [*h, pair[1]])
        .collect();
    out.timings.push(PhaseTiming {
        phase: "composite".into(),
        millis: resize_millis + now_ms() - started,
    });
    Ok(out)
}

/// An edit's inputs at the working size.
struct WorkingInput<'a> {
    image: &'a RgbImage,
    mask: Option<&'a [u8]>,
    points: &'a [[f64; 2]],
    config: DragConfig,
    lora_choice: LoraChoice,
}

/// Phases 1–6 at the working size (points in working pixels). The returned `full`, `size` and
/// `new_points` are placeholders its caller fills (at the photo's size).
async fn edit_at_working_size(
    models: &mut Models,
    input: WorkingInput<'_>,
    cache: &mut EditCache,
    progress: &mut dyn FnMut(Progress),
    cancel: &Cancel,
) -> Result<EditOutput> {
    cache.last_hits.clear();
    let WorkingInput {
        image,
        mask,
        points,
        config,
        lora_choice,
    } = input;
    let device = models.device.clone();
    let mut timings = Vec::new();
    let mut phase = |name: &str, started: f64| {
        timings.push(PhaseTiming {
            phase: name.into(),
            millis: now_ms() - started,
        })
    };

    // 1. Inputs.
    let started = now_ms();
    let frame = Frame::new(image.width, image.height, config.feature_scale)?;
    let pairs = PointPairs::from_image_points(points, &frame)?;
    let pixels = image_to_tensor(&image.rgb, image.width, image.height, &device)?;
    let latent_hw = (image.width / 8, image.height / 8);
    let mask = LatentMask::new(
        mask,
        image.width,
        image.height,
        (frame.feat_width, frame.feat_height),
        latent_hw,
        &device,
    )?;
    let ehs = models.embed_prompt(&config.prompt)?.detach();
    phase("text", started);

    // 2. LoRA.
    let started = now_ms();
    let mut lora_losses = Vec::new();
    let dims = [image.width as u64, image.height as u64]
        .map(u64::to_le_bytes)
        .concat();
    let lora_json = serde_json::to_string(&config.lora).unwrap_or_default();
    let lora_key = fnv1a(&[
        &image.rgb,
        &dims,
        config.prompt.as_bytes(),
        lora_json.as_bytes(),
    ]);
    let trained_here = matches!(lora_choice, LoraChoice::Train) && config.use_lora;
    let cached_lora = match (&lora_choice, &cache.lora) {
        (LoraChoice::Train, Some((key, set))) if config.use_lora && *key == lora_key => {
            Some(set.clone())
        }
        _ => None,
    };
    let lora_used = match lora_choice {
        LoraChoice::Train if cached_lora.is_some() => {
            let set = cached_lora.expect("checked");
            set.attach(&mut models.unet, false, "the cached LoRA", &device)?;
            cache.last_hits.push("lora");
            Some(set)
        }
        LoraChoice::Train if config.use_lora => {
            let scheduler = DdimScheduler::new(models.scheduler.clone(), config.n_inference_steps)?;
            lora_losses = train_lora(
                &mut models.unet,
                &models.vae,
                &scheduler,
                pixels.clone(),
                &ehs,
                &config.lora,
                progress,
                cancel,
            )
            .await?;
            let set = LoraSet::read_from(&mut models.unet).await?;
            cache.lora = Some((lora_key, set.clone()));
            Some(set)
        }
        LoraChoice::Use(set) => {
            set.attach(&mut models.unet, false, "the given LoRA", &device)?;
            Some(set)
        }
        LoraChoice::Train | LoraChoice::None => {
            lora::detach(&mut models.unet);
            None
        }
    };
    phase("lora", started);

    // 3. Encode and invert (or reuse both for the same image, LoRA and settings).
    cancel.check()?;
    let scheduler = DdimScheduler::new(models.scheduler.clone(), config.n_inference_steps)?;
    let timesteps = scheduler
        .strength_timesteps(config.inversion_strength)?
        .to_vec();
    let lora_tag = match &lora_used {
        None => 0u64,
        // A LoRA trained here (or reused from the cache) is a seeded function of what
        // `lora_key` hashes: no need to hash its 3 M weights on every edit.
        Some(_) if trained_here => lora_key,
        Some(set) => {
            let bytes: Vec<u8> = set
                .layers
                .iter()
                .flat_map(|(k, p)| {
                    k.bytes()
                        .chain(p.down.iter().chain(&p.up).flat_map(|v| v.to_le_bytes()))
                })
                .collect();
            fnv1a(&[&bytes])
        }
    };
    let inversion_key = fnv1a(&[
        &image.rgb,
        &dims,
        config.prompt.as_bytes(),
        &lora_tag.to_le_bytes(),
        &(config.n_inference_steps as u64).to_le_bytes(),
        &config.inversion_strength.to_le_bytes(),
    ]);
    let (z0, z_t) = match &cache.inversion {
        Some((key, z0, z_t)) if *key == inversion_key => {
            cache.last_hits.push("inversion");
            (z0.clone(), z_t.clone())
        }
        _ => {
            let started = now_ms();
            let z0 = encode(&models.vae, pixels).detach();
            phase("encode", started);
            let started = now_ms();
            // PARITY: the official inversion runs before accelerate's autocast wrap: in f32.
            let precision = std::mem::replace(&mut models.unet.precision, Precision::F32);
            let z_t = invert(
                &models.unet,
                &scheduler,
                z0.clone(),
                &timesteps,
                &ehs,
                progress,
                cancel,
            )
            .await;
            models.unet.precision = precision;
            let z_t = z_t?;
            phase("invert", started);
            cache.inversion = Some((inversion_key, z0.clone(), z_t.clone()));
            (z0, z_t)
        }
    };

    // 4. Drag.
    let started = now_ms();
    let mut session = DragSession::new(
        config,
        scheduler,
        frame,
        pairs.clone(),
        mask,
        z_t.clone(),
        timesteps,
        ehs,
    )?;
    session.run(&mut models.unet, progress, cancel).await?;
    phase("drag", started);

    // 5. Decode.
    let started = now_ms();
    let z_final = session.latent().clone();
    let decoded = resize_bilinear(
        decode(&models.vae, z_final.clone()),
        image.height,
        image.width,
    );
    let (rgb, width, height) = tensor_to_rgb8(decoded).await?;
    progress(Progress::Decode);
    phase("decode", started);

    let final_handles = session.handles_image();
    if width != image.width || height != image.height {
        return Err(Error::Readback(format!(
            "decoded image is {width}×{height}, expected {}×{}",
            image.width, image.height
        )));
    }
    let image = RgbImage { width, height, rgb };
    Ok(EditOutput {
        full: image.clone(),
        size: SizeMap {
            original: (width, height),
            working: (width, height),
        },
        image,
        final_handles,
        new_points: Vec::new(),
        timings,
        record: session.record().clone(),
        z0,
        z_t,
        z_final,
        lora: lora_used,
        lora_losses,
        frame,
        backward_plan: models.unet.backward_plan,
        precision: models.unet.precision,
    })
}
