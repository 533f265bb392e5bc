//! The GoodDrag editing core on the tiny SD 1.5-shaped model (tests/fixtures/tiny-sd): the AlDD
//! schedule and its stop rules, the mask term, presets, determinism, odd image sizes, and the
//! motion-supervision gradient against finite differences.

mod parity_support;

use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::drag::features::FeatureGeometry;
use gooddrag::drag::motion::{MotionInputs, MotionSettings, motion_supervision_loss};
use gooddrag::drag::{DragConfig, PRESETS, PatchWeight, StopReason};
use gooddrag::edit::{EditCache, EditInput, EditOutput, LoraChoice, run_edit, run_edit_cached};
use gooddrag::image::RgbImage;
use gooddrag::image::working::WorkingSize;
use gooddrag::model_set::Models;
use gooddrag::models::unet_2d_condition::BackwardPlan;
use gooddrag::progress::{Cancel, Progress};
use gooddrag::rng::deterministic_values;
use gooddrag::tensor_io::{read_f32, relative_error};
use parity_support::{disc_photo as photo, fixture_dir, small_lora_config};

fn models(device: &Device) -> Models {
    Models::load_dir(&fixture_dir(), None, device, u64::MAX).expect("tiny model loads")
}

fn full_mask(width: usize, height: usize) -> Vec<u8> {
    let mut m = vec![0u8; width * height];
    for y in height / 4..3 * height / 4 {
        for x in width / 8..7 * width / 8 {
            m[y * width + x] = 255;
        }
    }
    m
}

fn edit(
    models: &mut Models,
    config: DragConfig,
    image: RgbImage,
    mask: Option<Vec<u8>>,
    points: Vec<[f64; 2]>,
) -> (EditOutput, Vec<Progress>) {
    let mut events = Vec::new();
    let out = pollster::block_on(run_edit(
        models,
        EditInput {
            image,
            mask,
            points,
            config,
            lora: LoraChoice::None,
            size: WorkingSize::Native,
        },
        &mut |p| events.push(p),
        &Cancel::new(),
    ))
    .expect("edit runs");
    (out, events)
}

fn no_lora(mut c: DragConfig) -> DragConfig {
    c.use_lora = false;
    c
}

#[test]
fn aldd_visits_timesteps_741_to_621_with_the_stated_counts() {
    let device = device::cpu().0;
    let mut m = models(&device);
    // Neither stop rule can fire: no reach distance, no idle-tracking limit.
    let config = DragConfig {
        max_track_no_change: 1000,
        reach_distance: 0.0,
        ..no_lora(DragConfig::default())
    };
    let (out, events) = edit(
        &mut m,
        config,
        photo(64, 64),
        Some(full_mask(64, 64)),
        vec![[20.0, 30.0], [56.0, 30.0]],
    );
    let r = &out.record;
    // 7 drag timesteps (741, 721, …, 621) × 10 operations × 3 supervision steps, except that an
    // operation ends early when every handle sits on its target (drag loss 0 ≤ the threshold
    // 0): whether a handle lands exactly there depends on the last bits of the gradients.
    assert_eq!(
        r.drag_timesteps,
        (0..7).collect::<Vec<_>>(),
        "stop: {:?}",
        r.stop
    );
    let (mut operations, mut steps) = (0, 0);
    for &drag in &r.drag_losses {
        steps += 1;
        if steps == 3 || drag <= 0.0 {
            operations += 1;
            steps = 0;
        }
    }
    assert_eq!((operations, steps), (70, 0), "{:?}", r.drag_losses);
    // One tracking at the start of each timestep plus one per operation, after the initial entry.
    assert_eq!(r.handle_history.len(), 1 + 7 * 11);
    assert_eq!(r.stop, Some(StopReason::Completed));
    let count = |f: fn(&Progress) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Progress::Reference { .. })), 7);
    assert_eq!(count(|e| matches!(e, Progress::Invert { .. })), 38);
    assert_eq!(count(|e| matches!(e, Progress::Denoise { .. })), 38);
    assert_eq!(count(|e| matches!(e, Progress::Preview { .. })), 7);
    assert_eq!(
        count(|e| matches!(e, Progress::Drag { .. })),
        r.losses.len()
    );
    assert!(r.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn reaching_every_target_stops_the_drag_before_any_supervision() {
    let device = device::cpu().0;
    let mut m = models(&device);
    // Handle 1 px from its target (feature resolution): reached at the first check.
    let (out, events) = edit(
        &mut m,
        no_lora(DragConfig::default()),
        photo(64, 64),
        None,
        vec![[20.0, 30.0], [22.0, 30.0]],
    );
    assert_eq!(out.record.stop, Some(StopReason::Reached));
    assert_eq!(out.record.drag_timesteps, vec![0]);
    assert!(out.record.losses.is_empty());
    assert!(
        events.iter().any(
            |e| matches!(e, Progress::DragStopped { reason } if *reason == StopReason::Reached)
        )
    );
    // Still denoised through all 38 steps.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::Denoise { .. }))
            .count(),
        38
    );
}

/// An edit whose handles never move (a learning rate too small to change anything, so every
/// tracking finds the same handles), idle limit 2, with `track_per_denoise` operations per
/// drag timestep.
fn idle_edit(track_per_denoise: usize) -> (EditOutput, Vec<Progress>) {
    let device = device::cpu().0;
    let mut m = models(&device);
    let config = DragConfig {
        latent_lr: 1e-12,
        track_per_denoise,
        max_track_no_change: 2,
        reach_distance: 0.0,
        ..no_lora(DragConfig::default())
    };
    edit(
        &mut m,
        config,
        photo(64, 64),
        None,
        vec![[20.0, 30.0], [50.0, 30.0]],
    )
}

#[test]
fn idle_trackings_trigger_the_early_stop() {
    let (out, _) = idle_edit(DragConfig::default().track_per_denoise);
    assert_eq!(out.record.stop, Some(StopReason::EarlyStop));
    // Two operations of J = 3 steps, two idle trackings, then the stop at the next forward.
    assert_eq!(out.record.losses.len(), 6);
    assert_eq!(out.record.drag_timesteps, vec![0]);
}

/// The idle limit reached at a timestep's last tracking (B = 2 operations, limit 2): the next
/// timestep is not dragged, and the record and the events say it was an early stop, not a
/// completed schedule.
#[test]
fn idle_limit_at_a_timesteps_last_tracking_is_an_early_stop() {
    let (out, events) = idle_edit(2);
    assert_eq!(out.record.drag_timesteps, vec![0]);
    assert_eq!(out.record.losses.len(), 6);
    assert_eq!(out.record.stop, Some(StopReason::EarlyStop));
    assert!(events.iter().any(|e| matches!(
        e,
        Progress::DragStopped {
            reason: StopReason::EarlyStop
        }
    )));
}

#[test]
fn empty_mask_means_no_mask_term_and_a_painted_mask_adds_one() {
    let device = device::cpu().0;
    let mut m = models(&device);
    let config = DragConfig {
        drag_end_step: 2,
        reach_distance: 0.0,
        ..no_lora(DragConfig::default())
    };
    let points = vec![[20.0, 30.0], [50.0, 30.0]];
    let (none, _) = edit(&mut m, config.clone(), photo(64, 64), None, points.clone());
    let (empty, _) = edit(
        &mut m,
        config.clone(),
        photo(64, 64),
        Some(vec![0u8; 64 * 64]),
        points.clone(),
    );
    assert_eq!(none.image, empty.image, "an all-zero mask is no mask");
    assert_eq!(
        none.record.losses, none.record.drag_losses,
        "no mask term without a mask"
    );
    let (masked, _) = edit(
        &mut m,
        config,
        photo(64, 64),
        Some(full_mask(64, 64)),
        points,
    );
    let extra: Vec<f32> = masked
        .record
        .losses
        .iter()
        .zip(&masked.record.drag_losses)
        .map(|(l, d)| l - d)
        .collect();
    assert_eq!(
        extra[0], 0.0,
        "the latent is still the reference's at the first step"
    );
    assert!(
        extra.iter().any(|&e| e > 0.0),
        "the mask term grows once the latent moves: {extra:?}"
    );
}

#[test]
fn every_preset_runs_end_to_end() {
    let device = device::cpu().0;
    let mut m = models(&device);
    for name in PRESETS {
        let config = no_lora(DragConfig::preset(name).unwrap());
        let (out, _) = edit(
            &mut m,
            config,
            photo(64, 48),
            Some(full_mask(64, 48)),
            vec![[20.0, 24.0], [44.0, 24.0]],
        );
        assert_eq!((out.image.width, out.image.height), (64, 48), "{name}");
        assert!(out.record.stop.is_some(), "{name}");
        eprintln!(
            "{name}: {} supervision steps, stop {:?}, handles {:?}",
            out.record.losses.len(),
            out.record.stop,
            out.final_handles
        );
    }
}

#[test]
fn edit_moves_handles_toward_targets_and_is_deterministic() {
    let device = device::cpu().0;
    let mut m = models(&device);
    let config = small_lora_config();
    let points = vec![[18.0, 32.0], [46.0, 32.0]];
    let run = |m: &mut Models| {
        let mut events = Vec::new();
        let out = pollster::block_on(run_edit(
            m,
            EditInput {
                image: photo(64, 64),
                mask: Some(full_mask(64, 64)),
                points: points.clone(),
                config: config.clone(),
                lora: LoraChoice::Train,
                size: WorkingSize::Native,
            },
            &mut |p| events.push(p),
            &Cancel::new(),
        ))
        .unwrap();
        (out, events)
    };
    let (a, events) = run(&mut m);
    let (b, _) = run(&mut m);
    assert_eq!(a.image, b.image, "same seed, same device: same pixels");
    assert_eq!(a.final_handles, b.final_handles);
    // A budget that affords plain autodiff keeps every graph instead of recomputing: each
    // gradient pass equals the recomputing one to ~1e-6 (tests/recompute.rs), the LoRA losses
    // and the first supervision loss to 1e-5; over the drag's Adam steps on the latent (which
    // normalise away the gradient's scale) the last bits drift, as between devices, so the
    // final latent agrees to 5e-3 and the handles exactly.
    m.memory_budget = "64GiB".parse().unwrap();
    let (c, _) = run(&mut m);
    m.memory_budget = Default::default();
    assert_eq!(
        (a.backward_plan, c.backward_plan),
        (BackwardPlan::Recompute, BackwardPlan::Autodiff)
    );
    let losses = relative_error(&c.lora_losses, &a.lora_losses);
    let read = |t: Tensor<4>| pollster::block_on(read_f32(t)).unwrap();
    let z = relative_error(&read(c.z_final.clone()), &read(a.z_final.clone()));
    eprintln!(
        "autodiff vs recompute plan: LoRA losses {losses:.2e}, final latent {z:.2e}, handles {:?} vs {:?}",
        c.final_handles, a.final_handles
    );
    let first = |o: &EditOutput| o.record.losses[0];
    let first_err = ((first(&c) - first(&a)) / first(&a)).abs();
    eprintln!(
        "first supervision loss {} vs {} ({first_err:.2e})",
        first(&c),
        first(&a)
    );
    assert!(
        losses <= 1e-5 && first_err <= 1e-5 && z <= 5e-3,
        "losses {losses:e}, first {first_err:e}, z_final {z:e}"
    );
    assert_eq!(c.final_handles, a.final_handles);
    assert_eq!(a.lora_losses.len(), 4);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Lora { step: 4, of: 4, .. }))
    );
    let dist = |h: [f64; 2]| ((h[0] - 46.0).powi(2) + (h[1] - 32.0).powi(2)).sqrt();
    eprintln!(
        "handle {:?} → {:?}, stop {:?}",
        points[0], a.final_handles[0], a.record.stop
    );
    assert!(
        dist(a.final_handles[0]) < dist(points[0]) * 0.5,
        "handle ended at {:?}",
        a.final_handles[0]
    );
    // The edit changed the image inside the mask.
    assert_ne!(a.image.rgb, photo(64, 64).rgb);
}

#[test]
fn a_large_photo_is_edited_at_the_working_size_and_composited_back_at_its_own() {
    let device = device::cpu().0;
    let mut m = models(&device);
    let (w, h) = (1200, 900);
    let image = photo(w, h);
    // Editable: x in 150..1050, y in 225..675.
    let mask = full_mask(w, h);
    let mut events = Vec::new();
    let out = pollster::block_on(run_edit(
        &mut m,
        EditInput {
            image: image.clone(),
            mask: Some(mask.clone()),
            points: vec![[450.0, 450.0], [600.0, 450.0]],
            // A short schedule: the sizes and the composite are what is tested here.
            config: DragConfig {
                n_inference_steps: 8,
                drag_end_step: 1,
                ..no_lora(DragConfig::default())
            },
            lora: LoraChoice::None,
            size: WorkingSize::LongSide(256),
        },
        &mut |p| events.push(p),
        &Cancel::new(),
    ))
    .expect("edit runs");
    assert_eq!((out.image.width, out.image.height), (256, 192));
    assert_eq!((out.full.width, out.full.height), (w, h));
    assert_eq!(out.size.working, (256, 192));
    assert_eq!(out.z0.dims(), [1, 4, 24, 32]);
    // Far outside the mask (more than the 8-working-pixel feather, 37.5 photo pixels, plus a
    // margin) the full result is the photo byte for byte; inside, the edit shows.
    let (mut copied, mut changed) = (0, 0);
    for y in 0..h {
        for x in 0..w {
            let i = 3 * (y * w + x);
            let outside = !(100..1100).contains(&x) || !(175..725).contains(&y);
            if outside {
                assert_eq!(out.full.rgb[i..i + 3], image.rgb[i..i + 3], "({x}, {y})");
                copied += 1;
            } else if mask[y * w + x] > 0 && out.full.rgb[i..i + 3] != image.rgb[i..i + 3] {
                changed += 1;
            }
        }
    }
    assert!(copied > 500_000 && changed > 100_000, "{copied} {changed}");
    // Points come back in photo pixels: the target stays exactly, the handle starts at x 450.
    assert_eq!(out.new_points[1], [600.0, 450.0]);
    let fh = out.final_handles[0];
    assert!(
        (440.0..=610.0).contains(&fh[0]) && (fh[1] - 450.0).abs() < 40.0,
        "{fh:?}"
    );
    assert!(out.timings.iter().any(|t| t.phase == "composite"));
}

#[test]
fn odd_sized_image_runs_and_comes_back_the_same_size() {
    let device = device::cpu().0;
    let mut m = models(&device);
    let config = DragConfig {
        drag_end_step: 2,
        ..no_lora(DragConfig::default())
    };
    let (out, _) = edit(
        &mut m,
        config,
        photo(300, 212),
        Some(full_mask(300, 212)),
        vec![[100.0, 100.0], [160.0, 110.0]],
    );
    assert_eq!((out.image.width, out.image.height), (300, 212));
    assert_eq!(out.image.rgb.len(), 300 * 212 * 3);
    assert_eq!(out.z0.dims(), [1, 4, 26, 37]);
    // Points on the border are accepted (windows are clamped, not crashed into).
    let config = DragConfig {
        drag_end_step: 1,
        ..no_lora(DragConfig::default())
    };
    let (out, _) = edit(
        &mut m,
        config,
        photo(300, 212),
        None,
        vec![[0.0, 0.0], [299.0, 211.0]],
    );
    assert_eq!(out.new_points[1], [299.0, 211.0]);
}

/// Re-editing the same photo reuses what does not depend on the points (the browser's "edit
/// again" path): the LoRA trained for this image, prompt and LoRA settings, and the inverted
/// latent for those plus the inversion settings. The result is the same as the first edit's.
#[test]
fn re_edit_reuses_the_lora_and_the_inversion_with_the_same_result() {
    let device = device::cpu().0;
    let mut m = models(&device);
    // A short schedule (10 DDIM steps, one drag timestep, two LoRA steps of one 64² crop): the
    // cache, not the edit, is under test.
    let mut config = DragConfig {
        n_inference_steps: 10,
        drag_end_step: 1,
        track_per_denoise: 1,
        ..DragConfig::default()
    };
    config.lora.steps = 2;
    config.lora.resolution = 64;
    config.lora.batch_size = 1;
    let input = |config: &DragConfig| EditInput {
        image: photo(64, 64),
        mask: None,
        points: vec![[24.0, 32.0], [32.0, 32.0]],
        config: config.clone(),
        lora: LoraChoice::Train,
        size: WorkingSize::Native,
    };
    let mut cache = EditCache::default();
    let run = |m: &mut Models, cache: &mut EditCache, config: &DragConfig| {
        let out = pollster::block_on(run_edit_cached(
            m,
            input(config),
            cache,
            &mut |_| {},
            &Cancel::new(),
        ))
        .expect("edit runs");
        (out, cache.last_hits.clone())
    };
    let (first, hits) = run(&mut m, &mut cache, &config);
    assert!(hits.is_empty(), "{hits:?}");
    assert_eq!(first.lora_losses.len(), 2, "the LoRA was trained");
    let (again, hits) = run(&mut m, &mut cache, &config);
    assert_eq!(hits, ["lora", "inversion"]);
    assert!(again.lora_losses.is_empty(), "no training the second time");
    assert_eq!(
        again.image, first.image,
        "same result from the cached LoRA and latent"
    );
    // Other inversion settings: the LoRA is still valid, the inverted latent is not.
    config.inversion_strength = 0.7;
    let (_, hits) = run(&mut m, &mut cache, &config);
    assert_eq!(hits, ["lora"]);
    // Three edits with one prompt: the text encoder ran once.
    assert_eq!(m.prompts.encoder_runs(), 1);
}

#[test]
fn the_text_encoder_holds_no_device_memory_between_prompts() {
    let Ok((device, _)) = device::wgpu() else {
        eprintln!("SKIPPED: no wgpu adapter (lavapipe) on this machine");
        return;
    };
    let m = models(&device);
    let in_use = || {
        device
            .memory_pool_usage()
            .expect("the wgpu device reports its pools")
            .bytes_in_use
    };
    let host = m.text_encoder.host_bytes() as u64;
    assert!(host > 0, "the loaded text encoder waits in host memory");
    let before = in_use();
    let embedding = m.embed_prompt("a cat").unwrap();
    let values = pollster::block_on(read_f32(embedding.clone())).unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    // Only the cached embedding stays on the device; the weights went with the upload.
    let grown = in_use().saturating_sub(before);
    let embedding_bytes = 4 * values.len() as u64;
    assert!(
        grown <= embedding_bytes + 4096,
        "{grown} bytes stayed on the device after the prompt ({embedding_bytes} for the \
         embedding, {host} for CLIP's weights)"
    );
    // Later uploads give the same values (the host copy is not consumed): evict "a cat", then
    // encode it again.
    for i in 0..gooddrag::model_set::PromptCache::CAPACITY {
        m.embed_prompt(&format!("prompt {i}")).unwrap();
    }
    let runs = m.prompts.encoder_runs();
    let again = pollster::block_on(read_f32(m.embed_prompt("a cat").unwrap())).unwrap();
    assert_eq!(m.prompts.encoder_runs(), runs + 1, "encoded again");
    assert_eq!(again, values);
}

#[test]
fn prompt_embeddings_are_encoded_once_and_the_least_recent_is_evicted() {
    let device = device::cpu().0;
    let m = models(&device);
    let empty = m.embed_prompt("").unwrap();
    let again = m.embed_prompt("").unwrap();
    assert_eq!(m.prompts.encoder_runs(), 1);
    assert_eq!(
        empty.into_data().try_to_vec::<f32>().unwrap(),
        again.into_data().try_to_vec::<f32>().unwrap()
    );
    let cat = m.embed_prompt("a cat").unwrap();
    assert_eq!(m.prompts.encoder_runs(), 2);
    assert_ne!(
        cat.into_data().try_to_vec::<f32>().unwrap(),
        m.embed_prompt("")
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    );
    // "" was used last; 7 more prompts fill the cache of 8, evicting "a cat" first.
    for i in 0..7 {
        m.embed_prompt(&format!("prompt {i}")).unwrap();
    }
    assert_eq!(m.prompts.encoder_runs(), 9);
    m.embed_prompt("").unwrap();
    assert_eq!(
        m.prompts.encoder_runs(),
        9,
        "the empty prompt is still cached"
    );
    m.embed_prompt("a cat").unwrap();
    assert_eq!(
        m.prompts.encoder_runs(),
        10,
        "the least recently used prompt was evicted"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let device = device::cpu().0;
    let mut m = models(&device);
    let run = |m: &mut Models, image: RgbImage, mask: Option<Vec<u8>>, points: Vec<[f64; 2]>| {
        pollster::block_on(run_edit(
            m,
            EditInput {
                image,
                mask,
                points,
                config: no_lora(DragConfig::default()),
                lora: LoraChoice::None,
                size: WorkingSize::Native,
            },
            &mut |_| {},
            &Cancel::new(),
        ))
        .err()
        .expect("must fail")
        .to_string()
    };
    assert!(run(&mut m, photo(64, 64), None, vec![[1.0, 1.0]]).contains("pairs"));
    assert!(run(&mut m, photo(64, 64), None, vec![[1.0, 1.0], [70.0, 1.0]]).contains("outside"));
    assert!(
        run(
            &mut m,
            photo(64, 64),
            Some(vec![1; 10]),
            vec![[1.0, 1.0], [9.0, 1.0]]
        )
        .contains("mask")
    );
    let mut broken = photo(64, 64);
    broken.rgb.truncate(100);
    assert!(run(&mut m, broken, None, vec![[1.0, 1.0], [9.0, 1.0]]).contains("bytes"));
}

#[test]
fn motion_supervision_gradient_matches_finite_differences() {
    let device = device::training(&device::cpu().0);
    let (c, h, w) = (3, 6, 6);
    let geometry = FeatureGeometry {
        map_height: h,
        map_width: w,
        feat_height: 12,
        feat_width: 12,
    };
    let values = deterministic_values(c * h * w, 0.7, 1.0);
    let refs: Vec<Tensor<3>> = vec![Tensor::from_data(
        TensorData::new(vec![5.0f32; c * 9], [c, 3, 3]),
        &device,
    )];
    let z_ref = Tensor::<4>::from_data(TensorData::new(vec![0.0f32; 8], [1, 2, 2, 2]), &device);
    let keep = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 1.0, 1.0], [1, 1, 2, 2]),
        &device,
    );
    let z_vals = vec![0.5f32, -0.7, 0.2, 0.9, -0.3, 0.4, -0.8, 0.6];
    let settings = MotionSettings {
        r1: 1,
        beta: 4.0,
        reach_distance: 2.0,
        lambda: 0.2,
        patch_weight: PatchWeight::TwoR,
    };
    let loss_of = |feat: Vec<f32>, z: Vec<f32>, grad: bool| {
        let f = Tensor::<4>::from_data(TensorData::new(feat, [1, c, h, w]), &device);
        let f = if grad { f.require_grad() } else { f };
        let zt = Tensor::<4>::from_data(TensorData::new(z, [1, 2, 2, 2]), &device);
        let zt = if grad { zt.require_grad() } else { zt };
        let loss = motion_supervision_loss(
            &MotionInputs {
                features: &f,
                geometry,
                z_prev: zt.clone(),
                reference_prev: &z_ref,
                keep: Some(&keep),
                reference_patches: Some(&refs),
                handles: &[[4.0, 5.0]],
                targets: &[[7.3, 9.1]],
            },
            &settings,
        );
        (loss.total, f, zt)
    };
    let (loss, f, zt) = loss_of(values.clone(), z_vals.clone(), true);
    let grads = loss.backward();
    let gf: Vec<f32> = pollster::block_on(read_f32(f.grad(&grads).unwrap())).unwrap();
    let gz: Vec<f32> = pollster::block_on(read_f32(zt.grad(&grads).unwrap())).unwrap();
    let value = |feat: Vec<f32>, z: Vec<f32>| {
        pollster::block_on(read_f32(loss_of(feat, z, false).0)).unwrap()[0] as f64
    };
    // The reference patch (5.0) is far from every feature (|v| ≤ 1), so |f₀ − f₁| has no kink
    // near these points and central differences are exact up to rounding.
    let eps = 1e-2f32;
    let mut checked = 0;
    for i in 0..values.len() {
        let (mut up, mut down) = (values.clone(), values.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (value(up, z_vals.clone()) - value(down, z_vals.clone())) / (2.0 * eps as f64);
        assert!(
            (fd - gf[i] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
            "feature {i}: fd {fd} vs {}",
            gf[i]
        );
        checked += usize::from(gf[i] != 0.0);
    }
    assert!(checked > 0, "the patch must depend on some features");
    for i in 0..z_vals.len() {
        let (mut up, mut down) = (z_vals.clone(), z_vals.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (value(values.clone(), up) - value(values.clone(), down)) / (2.0 * eps as f64);
        assert!(
            (fd - gz[i] as f64).abs() <= 1e-3,
            "latent {i}: fd {fd} vs {}",
            gz[i]
        );
    }
    // Masked-out latent elements (keep = 0) get no gradient; the others λ·sign.
    assert_eq!(gz[1], 0.0);
    assert!((gz[0] - 0.2).abs() < 1e-6 && (gz[2] - 0.2).abs() < 1e-6);
}

#[test]
fn tracking_finds_the_reference_feature_first_minimum_and_crops_at_borders() {
    use gooddrag::drag::tracking::track;
    let device = device::cpu().0;
    let (h, w) = (10, 12);
    let geometry = FeatureGeometry {
        map_height: h,
        map_width: w,
        feat_height: h,
        feat_width: w,
    };
    // Channel 0 = row·w + col (unique), channel 1 = 0: the reference vector [v, 0] is matched
    // exactly at the pixel whose index is v.
    let mut data = vec![0f32; 2 * h * w];
    for (i, v) in data[..h * w].iter_mut().enumerate() {
        *v = i as f32;
    }
    let feat = Tensor::<4>::from_data(TensorData::new(data, [1, 2, h, w]), &device);
    let vector = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v, 0.0], [2]), &device);
    let found = |target: f32, handle: [f64; 2], r2: usize| {
        pollster::block_on(track(&feat, geometry, &[vector(target)], &[handle], r2)).unwrap()[0]
    };
    assert_eq!(found((4 * w + 7) as f32, [5.0, 5.0], 3), [4.0, 7.0]);
    // Outside the window: the nearest value inside it (L1 on channel 0) — the window's corner.
    assert_eq!(found(0.0, [5.0, 5.0], 2), [3.0, 3.0]);
    // Handle at the top-left corner: the window is cropped to [0, 3) × [0, 3), no crash.
    assert_eq!(found((w + 2) as f32, [0.0, 0.0], 2), [1.0, 2.0]);
    // Bottom-right corner.
    assert_eq!(found((h * w - 1) as f32, [9.0, 11.0], 12), [9.0, 11.0]);
    // Ties: value 4.5 sits between pixels 4 and 5 (both at distance 0.5): the first wins.
    assert_eq!(found(4.5, [0.0, 4.0], 2), [0.0, 4.0]);
}

#[test]
fn cancelled_drag_resumes_to_the_same_result() {
    use gooddrag::drag::{DragSession, Frame, LatentMask, PointPairs};
    use gooddrag::pipeline::{encode, image_to_tensor, invert};
    use gooddrag::schedulers::DdimScheduler;
    let device = device::cpu().0;
    let mut m = models(&device);
    let config = DragConfig {
        drag_end_step: 2,
        ..no_lora(DragConfig::default())
    };
    let img = photo(64, 64);
    let frame = Frame::new(64, 64, 0.5).unwrap();
    let pairs = PointPairs::from_image_points(&[[20.0, 30.0], [50.0, 30.0]], &frame).unwrap();
    let ehs = m.embed_prompt("").unwrap();
    let sched = DdimScheduler::new(m.scheduler.clone(), 50).unwrap();
    let ts = sched.strength_timesteps(0.75).unwrap().to_vec();
    let z0 = encode(
        &m.vae,
        image_to_tensor(&img.rgb, 64, 64, &m.device).unwrap(),
    );
    let z_t = pollster::block_on(invert(
        &m.unet,
        &sched,
        z0,
        &ts,
        &ehs,
        &mut |_| {},
        &Cancel::new(),
    ))
    .unwrap();
    let session = || {
        DragSession::new(
            config.clone(),
            sched.clone(),
            frame,
            pairs.clone(),
            LatentMask::new(None, 64, 64, (32, 32), (8, 8), &m.device).unwrap(),
            z_t.clone(),
            ts.clone(),
            ehs.clone(),
        )
        .unwrap()
    };
    let mut whole = session();
    pollster::block_on(whole.run(&mut m.unet, &mut |_| {}, &Cancel::new())).unwrap();
    let mut parted = session();
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    let r = pollster::block_on(parted.run(
        &mut m.unet,
        &mut |p| {
            if matches!(p, Progress::Drag { step: 5, .. }) {
                c2.cancel()
            }
        },
        &cancel,
    ));
    assert!(matches!(r, Err(gooddrag::Error::Cancelled)));
    assert!(!parted.is_done());
    cancel.reset();
    pollster::block_on(parted.run(&mut m.unet, &mut |_| {}, &cancel)).unwrap();
    let a: Vec<f32> = pollster::block_on(read_f32(whole.latent().clone())).unwrap();
    let b: Vec<f32> = pollster::block_on(read_f32(parted.latent().clone())).unwrap();
    assert_eq!(a, b);
    assert_eq!(whole.record().losses, parted.record().losses);
}

#[test]
fn edit_runs_on_wgpu() {
    let (device, report) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    let mut m = Models::load_dir(
        &fixture_dir(),
        None,
        &device,
        report.max_storage_buffer_binding_size,
    )
    .unwrap();
    let config = DragConfig {
        drag_end_step: 2,
        ..no_lora(DragConfig::default())
    };
    let (out, _) = edit(
        &mut m,
        config,
        photo(64, 48),
        Some(full_mask(64, 48)),
        vec![[20.0, 24.0], [44.0, 24.0]],
    );
    assert_eq!((out.image.width, out.image.height), (64, 48));
    assert!(!out.record.losses.is_empty() || out.record.stop == Some(StopReason::Reached));
    assert!(out.record.losses.iter().all(|l| l.is_finite()));
}
