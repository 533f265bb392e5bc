//! LoRA against diffusers + PEFT (fixtures from scripts/make_fixtures.py: expected/lora*.safetensors,
//! lora/*.safetensors): gradients and two AdamW steps of GoodDrag's fine-tuning on fixed latents,
//! noise and timesteps; UNet outputs with a LoRA applied; files in the diffusers, old
//! attention-processor and kohya layouts; save → load; a fresh LoRA changes nothing; training
//! lowers the loss; incompatible files are refused by name.

mod parity_support;

use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::lora::{
    self, LoraConfig, LoraSet, LoraTrainer, TrainSample, lora_param_names, lora_params_mut,
    parse_lora, train_lora, write_lora,
};
use gooddrag::models::unet_2d_condition::UNet2DConditionModel;
use gooddrag::progress::{Cancel, Progress};
use gooddrag::rng::Rng;
use gooddrag::schedulers::{DdimScheduler, DdimSchedulerConfig};
use gooddrag::tensor_io::read_f32;
use parity_support::*;

fn scheduler() -> DdimScheduler {
    let json =
        std::fs::read_to_string(fixture_dir().join("scheduler/scheduler_config.json")).unwrap();
    DdimScheduler::new(DdimSchedulerConfig::from_json(&json).unwrap(), 50).unwrap()
}

fn lora_file(name: &str) -> LoraSet {
    let path = fixture_dir()
        .join("lora")
        .join(format!("{name}.safetensors"));
    parse_lora(name, &std::fs::read(path).unwrap()).expect("LoRA file parses")
}

/// The tiny UNet on an autodiff device, base weights frozen.
fn frozen_unet(device: &Device) -> UNet2DConditionModel {
    use burn::module::Module;
    load_unet(device, false).no_grad()
}

/// Batch element `i` of a `[4, c, h, w]` fixture tensor.
fn item(e: &Expected, i: usize, device: &Device) -> Tensor<4> {
    let per = e.f32.len() / e.shape[0];
    Tensor::from_data(
        TensorData::new(
            e.f32[i * per..(i + 1) * per].to_vec(),
            [1, e.shape[1], e.shape[2], e.shape[3]],
        ),
        device,
    )
}

fn samples(
    e: &std::collections::HashMap<String, Expected>,
    k: usize,
    device: &Device,
) -> Vec<TrainSample> {
    (0..4)
        .map(|i| TrainSample {
            latents: item(&e[&format!("latents_{k}")], i, device),
            noise: item(&e[&format!("noise_{k}")], i, device),
            timestep: e[&format!("timesteps_{k}")].f32[i] as usize,
        })
        .collect()
}

/// Weight deltas of f32 weights carry the weights' own rounding: ulp(|w| < 1) ≤ 1.2e-7 is
/// 2.4e-4 of the step size lr = 5e-4, so the deltas agree to 3e-4 (measured 1.2e-4).
const ADAM_DELTA: Tolerance = Tolerance {
    max_norm: 3e-4,
    atol_rms: 3e-4,
    rtol: 3e-4,
};

/// lavapipe's gradients: ≤ 1e-4 in max-norm like the CPU's, but its f32 reductions leave an
/// absolute error of up to ~1.2e-3·rms in entries far below the largest (measured 4.1e-5
/// max-norm, 1.3e-3 relative on an entry of 0.7·rms); the CPU device meets F32_TOL there.
const LAVAPIPE_GRADIENTS: Tolerance = Tolerance {
    max_norm: F32_TOL,
    atol_rms: 2e-3,
    rtol: F32_TOL,
};

/// Step 1 runs on our own step-1 gradients (the fixture has no reference gradients for it),
/// so its update inherits their f32 noise through Adam's `g/√v`: for a weight whose gradient
/// is near zero the step is not determined by f32 precision. Measured: 9.4e-4 (CPU), 9.9e-3
/// (lavapipe, whose gradients are ~70× noisier, see `LAVAPIPE_GRADIENTS`).
const ADAM_CHAINED: Tolerance = Tolerance {
    max_norm: 2e-2,
    atol_rms: 2e-2,
    rtol: 2e-2,
};

/// Every LoRA value of a set, layer by layer (down, then up), in one vector.
fn flat(s: &LoraSet) -> Vec<f32> {
    s.layers
        .values()
        .flat_map(|p| p.down.iter().chain(&p.up).copied())
        .collect()
}

/// `after − before`, value by value, of two sets with the same layers.
fn delta(after: &LoraSet, before: &LoraSet) -> Vec<f32> {
    assert_eq!(
        after.layers.keys().collect::<Vec<_>>(),
        before.layers.keys().collect::<Vec<_>>()
    );
    flat(after)
        .iter()
        .zip(flat(before))
        .map(|(a, b)| a - b)
        .collect()
}

fn training_steps_match(device: &Device, gradient_tol: Tolerance) {
    let ad = device::training(device);
    let e = expected("lora");
    let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&ad);
    let sched = scheduler();
    let mut unet = frozen_unet(&ad);
    lora_file("init_diffusers")
        .attach(&mut unet, true, "init", &ad)
        .unwrap();
    let mut trainer = LoraTrainer::new(&LoraConfig {
        rank: 4,
        ..LoraConfig::default()
    });
    for k in 0..2 {
        let (loss, grads) =
            LoraTrainer::gradients(&mut unet, &sched, &samples(&e, k, &ad), &ehs).unwrap();
        let loss = pollster::block_on(read_f32(loss)).unwrap()[0];
        let want = e[&format!("loss_{k}")].f32[0];
        eprintln!("step {k}: loss {loss} vs {want}");
        assert!(
            (loss - want).abs() <= 1e-5 * want.abs(),
            "loss {loss} vs {want}"
        );
        // Stage: the gradient of every LoRA weight (PEFT names, PyTorch layout), step 0 only
        // (the fixture keeps the reference gradients of the first step).
        let grads = if k == 0 {
            let reference = {
                let path = fixture_dir().join("lora/grads_step0.safetensors");
                let bytes = std::fs::read(path).unwrap();
                read_all(&bytes)
            };
            let names = lora_param_names(&mut unet);
            let (mut got, mut want) = (Vec::new(), Vec::new());
            let mut reference_grads = Vec::new();
            for (name, g) in names.iter().zip(&grads) {
                let peft = name.replace(".weight", ".default.weight");
                let (_, _, shape, bytes) = reference
                    .iter()
                    .find(|(n, ..)| *n == peft)
                    .unwrap_or_else(|| panic!("{peft}"));
                let g = g.clone().expect("every LoRA weight gets a gradient");
                // burn [in, out] → PyTorch [out, in].
                let g: Vec<f32> = pollster::block_on(read_f32(g.transpose())).unwrap();
                assert_eq!(g.len(), shape.iter().product::<usize>());
                let theirs: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                got.extend(g);
                want.extend(&theirs);
                let t = Tensor::<2>::from_data(TensorData::new(theirs, [shape[0], shape[1]]), &ad);
                reference_grads.push(Some(t.transpose()));
            }
            check_values("LoRA gradients, step 0", &got, &want, gradient_tol);
            // The optimizer is then checked on its own, fed the reference's gradients: an
            // early Adam step is ≈ lr·sign(g) per weight, so a gradient that is ~0 in both
            // codes (within f32 noise) could flip its weight's step and hide or fake an error.
            reference_grads
        } else {
            grads
        };
        // Stage: the AdamW update. Compared as weight deltas, not weights: the update is small
        // next to the weights, and comparing the weights after the step would hide a wrong
        // update behind the unchanged part.
        let before = pollster::block_on(LoraSet::read_from(&mut unet)).unwrap();
        trainer.step(&mut unet, grads);
        let after = pollster::block_on(LoraSet::read_from(&mut unet)).unwrap();
        let reference_before = lora_file(
            if k == 0 {
                "init_diffusers".to_string()
            } else {
                format!("after_step{}_diffusers", k - 1)
            }
            .as_str(),
        );
        let reference_after = lora_file(&format!("after_step{k}_diffusers"));
        if k == 0 {
            assert_eq!(
                flat(&before),
                flat(&reference_before),
                "training starts from the reference"
            );
        }
        let ours = delta(&after, &before);
        let theirs = delta(&reference_after, &reference_before);
        assert!(
            theirs.iter().any(|d| *d != 0.0),
            "the reference step moved the weights"
        );
        let what = format!("AdamW step {k}: weight deltas");
        if k == 0 {
            check_values(&what, &ours, &theirs, ADAM_DELTA);
        } else {
            check_values(&what, &ours, &theirs, ADAM_CHAINED);
        }
    }
}

#[test]
fn lora_gradients_and_adamw_steps_match_peft_on_cpu() {
    training_steps_match(&device::cpu().0, F32_TOL.into());
}

#[test]
fn lora_gradients_and_adamw_steps_match_peft_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    training_steps_match(&device, LAVAPIPE_GRADIENTS);
}

fn forward(unet: &UNet2DConditionModel, device: &Device) -> Tensor<4> {
    let e = expected("unet");
    unet.forward(
        e["sample"].tensor::<4>(device),
        &[741.0],
        e["encoder_hidden_states"].tensor::<3>(device),
        &[],
    )
    .noise_pred
}

#[test]
fn unet_with_lora_matches_diffusers_for_every_file_layout() {
    let device = device::cpu().0;
    let mut unet = load_unet(&device, false);
    lora_file("after_step1_diffusers")
        .attach(&mut unet, false, "trained", &device)
        .unwrap();
    check(
        "noise_pred with trained LoRA",
        forward(&unet, &device),
        &expected("lora")["noise_pred_lora"],
        F32_TOL,
    );
    let loaded = expected("lora_loaded");
    for name in ["small_diffusers", "small_attn_procs", "small_kohya"] {
        let set = lora_file(name);
        assert_eq!(
            set.layers.len(),
            128,
            "{name}: 32 attention modules × 4 projections"
        );
        set.attach(&mut unet, false, name, &device).unwrap();
        check(
            name,
            forward(&unet, &device),
            &loaded[&format!("noise_pred_{name}")],
            F32_TOL,
        );
    }
    // The kohya file's alpha (rank/2) halves the delta; the others have scale 1.
    assert!(
        lora_file("small_kohya")
            .layers
            .values()
            .all(|p| p.scale == 0.5)
    );
    assert_eq!(
        lora_file("small_diffusers").layers,
        lora_file("small_attn_procs").layers
    );
}

#[test]
fn saved_lora_loads_back_exactly_in_the_diffusers_layout() {
    let device = device::cpu().0;
    let mut unet = load_unet(&device, false);
    let trained = lora_file("after_step1_diffusers");
    trained
        .attach(&mut unet, false, "trained", &device)
        .unwrap();
    let read = pollster::block_on(LoraSet::read_from(&mut unet)).unwrap();
    assert_eq!(read, trained, "device round trip is exact");
    let bytes = write_lora(&read).unwrap();
    assert_eq!(
        parse_lora("saved", &bytes).unwrap(),
        trained,
        "file round trip is exact"
    );
    // Same keys, shapes and dtype as the file diffusers itself wrote.
    let ours: Vec<_> = read_all(&bytes)
        .into_iter()
        .map(|(n, d, s, _)| (n, d, s))
        .collect();
    let theirs: Vec<_> = read_all(
        &std::fs::read(fixture_dir().join("lora/after_step1_diffusers.safetensors")).unwrap(),
    )
    .into_iter()
    .map(|(n, d, s, _)| (n, d, s))
    .collect();
    let (mut ours, mut theirs) = (ours, theirs);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

/// The file this project writes, committed under tests/fixtures/gooddrag-lora/, loaded by
/// diffusers in `scripts/make_fixtures.py` (`expected_gooddrag_lora`): its output there equals
/// ours with the same file. `GOODDRAG_UPDATE_FIXTURES=1` rewrites the committed file after a
/// deliberate change of the writer (then rerun the script with `--gooddrag-lora`).
#[test]
fn lora_file_written_here_loads_in_diffusers_with_the_same_output() {
    let device = device::cpu().0;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gooddrag-lora");
    let committed = dir.join("pytorch_lora_weights.safetensors");
    let mut unet = load_unet(&device, false);
    lora_file("after_step1_diffusers")
        .attach(&mut unet, false, "trained", &device)
        .unwrap();
    let bytes = write_lora(&pollster::block_on(LoraSet::read_from(&mut unet)).unwrap()).unwrap();
    if std::env::var_os("GOODDRAG_UPDATE_FIXTURES").is_some() {
        std::fs::write(&committed, &bytes).unwrap();
    }
    assert!(
        std::fs::read(&committed).unwrap() == bytes,
        "write_lora no longer writes the committed {}: if deliberate, rerun with \
         GOODDRAG_UPDATE_FIXTURES=1 and then scripts/make_fixtures.py --gooddrag-lora",
        committed.display()
    );
    // Ours with the committed file, against diffusers with the committed file.
    let mut ours = load_unet(&device, false);
    parse_lora("committed", &bytes)
        .unwrap()
        .attach(&mut ours, false, "committed", &device)
        .unwrap();
    let theirs = {
        let file = std::fs::read(dir.join("diffusers_output.safetensors")).unwrap();
        let all = read_all(&file);
        let (_, _, shape, data) = all
            .into_iter()
            .find(|(n, ..)| n == "noise_pred")
            .expect("noise_pred in diffusers_output.safetensors");
        Expected {
            shape,
            f32: data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            i64: Vec::new(),
        }
    };
    check(
        "diffusers with our LoRA file vs ours",
        forward(&ours, &device),
        &theirs,
        F32_TOL,
    );
}

#[test]
fn fresh_lora_leaves_the_unet_output_unchanged() {
    let device = device::cpu().0;
    let mut unet = load_unet(&device, false);
    let base: Vec<f32> = pollster::block_on(read_f32(forward(&unet, &device))).unwrap();
    let set = LoraSet::init_for(&mut unet, 16, &mut Rng::new(0)).unwrap();
    assert_eq!(set.layers.len(), 128);
    assert!(set.layers.values().all(|p| p.up.iter().all(|&v| v == 0.0)));
    assert!(
        set.layers
            .values()
            .any(|p| p.down.iter().any(|&v| v != 0.0))
    );
    set.attach(&mut unet, false, "fresh", &device).unwrap();
    let with: Vec<f32> = pollster::block_on(read_f32(forward(&unet, &device))).unwrap();
    assert_eq!(base, with);
    lora::detach(&mut unet);
    assert!(lora_params_mut(&mut unet).is_empty());
}

#[test]
fn training_lowers_the_loss_and_touches_only_lora_weights() {
    let device = device::training(&device::cpu().0);
    let e = expected("lora");
    let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&device);
    let sched = scheduler();
    let mut unet = frozen_unet(&device);
    let base_before: Vec<f32> = pollster::block_on(read_f32(unet.conv_in.weight.val())).unwrap();
    LoraSet::init_for(&mut unet, 4, &mut Rng::new(1))
        .unwrap()
        .attach(&mut unet, true, "fresh", &device)
        .unwrap();
    let batch = samples(&e, 0, &device);
    let mut trainer = LoraTrainer::new(&LoraConfig {
        learning_rate: 5e-3,
        ..LoraConfig::default()
    });
    let mut losses = Vec::new();
    for _ in 0..8 {
        let (loss, grads) = LoraTrainer::gradients(&mut unet, &sched, &batch, &ehs).unwrap();
        losses.push(pollster::block_on(read_f32(loss)).unwrap()[0]);
        trainer.step(&mut unet, grads);
    }
    eprintln!("losses on a fixed batch: {losses:?}");
    // Every step lowers the loss on this fixed batch, by 7 % over 8 steps (a sign or scale
    // error in the gradient or the update would stall or raise it).
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    assert!(losses[7] < 0.95 * losses[0], "{losses:?}");
    let base_after: Vec<f32> = pollster::block_on(read_f32(unet.conv_in.weight.val())).unwrap();
    assert_eq!(base_before, base_after, "base weights must not change");
}

#[test]
fn train_lora_runs_end_to_end_reports_progress_and_cancels() {
    let device = device::training(&device::cpu().0);
    let vae = load_vae(&device, false);
    let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&device);
    let image = expected("inversion")["image"].tensor::<4>(&device);
    let config = LoraConfig {
        rank: 4,
        steps: 3,
        batch_size: 2,
        resolution: 64,
        ..LoraConfig::default()
    };
    let mut events = Vec::new();
    let mut unet = frozen_unet(&device);
    let losses = pollster::block_on(train_lora(
        &mut unet,
        &vae,
        &scheduler(),
        image.clone(),
        &ehs,
        &config,
        &mut |p| events.push(p),
        &Cancel::new(),
    ))
    .unwrap();
    assert_eq!(losses.len(), 3);
    assert!(matches!(events[2], Progress::Lora { step: 3, of: 3, .. }));
    let set = pollster::block_on(LoraSet::read_from(&mut unet)).unwrap();
    assert_eq!(set.layers.len(), 128);
    assert!(set.layers.values().all(|p| p.rank == 4));
    // Same seed → same LoRA.
    let mut again = frozen_unet(&device);
    pollster::block_on(train_lora(
        &mut again,
        &vae,
        &scheduler(),
        image.clone(),
        &ehs,
        &config,
        &mut |_| {},
        &Cancel::new(),
    ))
    .unwrap();
    assert_eq!(
        pollster::block_on(LoraSet::read_from(&mut again)).unwrap(),
        set
    );
    // Cancelled before the first step: nothing runs.
    let cancel = Cancel::new();
    cancel.cancel();
    let mut cancelled = frozen_unet(&device);
    let r = pollster::block_on(train_lora(
        &mut cancelled,
        &vae,
        &scheduler(),
        image,
        &ehs,
        &config,
        &mut |_| {},
        &cancel,
    ));
    assert!(matches!(r, Err(gooddrag::Error::Cancelled)));
    assert!(
        lora_params_mut(&mut cancelled).is_empty(),
        "a cancelled run leaves no LoRA"
    );
}

#[test]
fn incompatible_lora_is_refused_and_leaves_the_unet_unchanged() {
    let device = device::cpu().0;
    let mut unet = load_unet(&device, false);
    // A layer with SD 1.5 widths (320 → 320) on the tiny UNet (16 → 16).
    let mut wrong = LoraSet::default();
    wrong.layers.insert(
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".into(),
        lora::LoraPair {
            down: vec![0.0; 320],
            up: vec![0.0; 320],
            rank: 1,
            in_features: 320,
            out_features: 320,
            scale: 1.0,
        },
    );
    let err = wrong
        .attach(&mut unet, false, "sd15.safetensors", &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
            && err.contains("320"),
        "{err}"
    );
    // A layer this UNet does not have (SDXL has transformer_blocks.1 in its attention blocks).
    let mut unknown = lora_file("small_diffusers");
    let pair = unknown.layers.values().next().unwrap().clone();
    unknown.layers.insert(
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q".into(),
        pair,
    );
    let err = unknown
        .attach(&mut unet, false, "sdxl.safetensors", &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("transformer_blocks.1.attn1.to_q"), "{err}");
    assert!(
        lora_params_mut(&mut unet).is_empty(),
        "a refused file attaches nothing"
    );
    // A truncated file is a safetensors error, not a panic.
    let bytes = std::fs::read(fixture_dir().join("lora/small_kohya.safetensors")).unwrap();
    assert!(parse_lora("cut", &bytes[..bytes.len() / 2]).is_err());
}
