//! f16 compute (`kernels::precision`) against the f32 path on the tiny SD 1.5-shaped model
//! (tests/fixtures/tiny-sd, its fp16 weight files, so both paths use the same f16 weights): the
//! UNet's noise prediction and tapped features, the latent's gradient of a drag-style loss
//! (every backward plan on the CPU, the recomputing one on lavapipe), the LoRA gradients of a
//! training step (scaled inside the UNet, unscaled by the trainer) — on the CPU device and on
//! lavapipe, which both offer f16 — and a whole tiny edit on the CPU. Tolerances are stated per
//! check; the f16 rounding unit is 4.9e-4.

mod parity_support;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::edit::{EditInput, EditOutput, LoraChoice, run_edit};
use gooddrag::image::working::WorkingSize;
use gooddrag::kernels::precision::Precision;
use gooddrag::lora::{LoraSet, LoraTrainer, TrainSample, parse_lora};
use gooddrag::model_set::Models;
use gooddrag::models::unet_2d_condition::{BackwardPlan, UNet2DConditionModel};
use gooddrag::progress::Cancel;
use gooddrag::rng::deterministic_values;
use gooddrag::schedulers::{DdimScheduler, DdimSchedulerConfig};
use gooddrag::tensor_io::{read_f32, relative_error};
use parity_support::*;

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    pollster::block_on(read_f32(t)).expect("readback")
}

fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    let err = relative_error(a, b);
    eprintln!("{what}: relative error {err:.3e} (tolerance {tol:.0e})");
    assert!(a.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    assert!(err <= tol, "{what}: {err:e} > {tol:e}");
}

/// The tiny UNet from its fp16 files (weights held in f16, as the editor holds SD 1.5).
fn unet(device: &Device, lora: bool) -> UNet2DConditionModel {
    let mut unet = load_unet(device, true).no_grad();
    if lora {
        let path = fixture_dir().join("lora/init_diffusers.safetensors");
        let set: LoraSet = parse_lora("init", &std::fs::read(path).unwrap()).unwrap();
        set.attach(&mut unet, true, "init", device).unwrap();
    }
    unet
}

/// A reproducible standard-normal-like latent.
fn latent(shape: [usize; 4], seed: f64, device: &Device) -> Tensor<4> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(deterministic_values(n, seed, 1.5), shape),
        device,
    )
}

fn devices() -> Vec<(&'static str, Device)> {
    vec![
        ("cpu", device::cpu().0),
        ("lavapipe", device::wgpu().expect("wgpu device").0),
    ]
}

// Tolerances, from measurement (worst of CPU and lavapipe over several inputs, with margin): a
// forward through the tiny UNet's ~40 layers in f16 keeps the noise prediction within 4e-3 of
// f32 (measured ≤ 2.1e-3) and the features within 6e-3 (≤ 3.1e-3); gradients come back through
// the same layers in f16 within 2e-2 (latent ≤ 5.9e-3, LoRA ≤ 4.1e-3); losses within 2e-3
// (≤ 9e-5).

#[test]
fn unet_forward_in_f16_matches_f32() {
    for (name, device) in devices() {
        let mut unet = unet(&device, false);
        let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&device);
        for (h, w) in [(8, 8), (6, 10)] {
            let z = latent([2, 4, h, w], 0.3, &device);
            let run = |unet: &UNet2DConditionModel| {
                let out = unet.forward(z.clone(), &[741.0], ehs.clone().repeat_dim(0, 2), &[2]);
                let f = out.up_block(2).unwrap().clone();
                assert_eq!(out.noise_pred.dtype(), burn::tensor::DType::F32);
                assert_eq!(f.dtype(), burn::tensor::DType::F32);
                (read(out.noise_pred), read(f))
            };
            unet.precision = Precision::F32;
            let (eps32, f32_) = run(&unet);
            unet.precision = Precision::F16;
            let (eps16, f16_) = run(&unet);
            close(&format!("{name} {h}×{w} noise_pred"), &eps16, &eps32, 4e-3);
            close(&format!("{name} {h}×{w} up_blocks[2]"), &f16_, &f32_, 6e-3);
        }
    }
}

#[test]
fn gradients_in_f16_match_f32_on_every_plan() {
    for (name, device) in devices() {
        let ad = device::training(&device);
        let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&ad);
        let z = latent([1, 4, 6, 10], 0.4, &ad);
        let mut unet = unet(&ad, false);
        let latent_grad = |unet: &UNet2DConditionModel| {
            let fb = drag_style_forward_backward(unet, z.clone(), 741.0, ehs.clone());
            assert_eq!(fb.sample_grad.dtype(), burn::tensor::DType::F32);
            (read(fb.loss), read(fb.sample_grad))
        };
        unet.precision = Precision::F32;
        let (loss32, grad32) = latent_grad(&unet);
        // Every plan on the CPU; lavapipe runs the same operations (its plans agree bit for
        // bit), so the least-memory plan the browser uses is enough there.
        let plans: &[BackwardPlan] = if name == "cpu" {
            &BackwardPlan::ALL
        } else {
            &[BackwardPlan::Recompute]
        };
        for &plan in plans {
            unet.backward_plan = plan;
            unet.precision = Precision::F16;
            let (loss16, grad16) = latent_grad(&unet);
            close(
                &format!("{name} loss, {}", plan.name()),
                &loss16,
                &loss32,
                2e-3,
            );
            close(
                &format!("{name} ∂loss/∂z, {}", plan.name()),
                &grad16,
                &grad32,
                2e-2,
            );
        }

        // A LoRA step's gradients through the trainer, which unscales them.
        let mut unet = self::unet(&ad, true);
        let scheduler = DdimScheduler::new(DdimSchedulerConfig::default(), 50).unwrap();
        let sample = TrainSample {
            latents: latent([1, 4, 8, 8], 0.5, &ad),
            noise: latent([1, 4, 8, 8], 0.6, &ad),
            timestep: 500,
        };
        let lora_grads = |unet: &mut UNet2DConditionModel| {
            let (loss, grads) =
                LoraTrainer::gradients(unet, &scheduler, std::slice::from_ref(&sample), &ehs)
                    .unwrap();
            let flat: Vec<f32> = grads
                .into_iter()
                .flat_map(|g| read(g.expect("every LoRA weight gets a gradient")))
                .collect();
            (read(loss), flat)
        };
        unet.precision = Precision::F32;
        let (loss32, grads32) = lora_grads(&mut unet);
        unet.precision = Precision::F16;
        let (loss16, grads16) = lora_grads(&mut unet);
        close(&format!("{name} LoRA loss"), &loss16, &loss32, 2e-3);
        close(&format!("{name} LoRA gradients"), &grads16, &grads32, 2e-2);
    }
}

#[test]
fn whole_tiny_edit_in_f16_matches_f32() {
    let device = device::cpu().0;
    let mut m = Models::load_dir(&fixture_dir(), None, &device, u64::MAX).expect("tiny model");
    let config = small_lora_config();
    let run = |m: &mut Models, precision: Precision| -> EditOutput {
        m.precision = precision;
        pollster::block_on(run_edit(
            m,
            EditInput {
                image: disc_photo(64, 64),
                mask: None,
                points: vec![[18.0, 32.0], [46.0, 32.0]],
                config: config.clone(),
                lora: LoraChoice::Train,
                size: WorkingSize::Native,
            },
            &mut |_| {},
            &Cancel::new(),
        ))
        .expect("edit runs")
    };
    let a = run(&mut m, Precision::F32);
    let b = run(&mut m, Precision::F16);
    assert_eq!((a.precision, b.precision), (Precision::F32, Precision::F16));
    close("LoRA losses", &b.lora_losses, &a.lora_losses, 5e-3);
    // Inversion runs in f32 on both (as the official code), with the LoRA each trained.
    close(
        "inverted latent",
        &read(b.z_t.clone()),
        &read(a.z_t.clone()),
        5e-3,
    );
    close(
        "first supervision loss",
        &b.record.losses[..1],
        &a.record.losses[..1],
        5e-3,
    );
    eprintln!(
        "handles f32 {:?}, f16 {:?}; supervision steps {} vs {}",
        a.final_handles,
        b.final_handles,
        a.record.losses.len(),
        b.record.losses.len()
    );
    // Tracking moves handles in whole feature pixels (2 image px here): the f16 edit's
    // handles end within one of the f32 edit's.
    for (p, q) in a.final_handles.iter().zip(&b.final_handles) {
        let d = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
        assert!(d <= 2.0 * 2f64.sqrt(), "handles {p:?} vs {q:?}");
    }
    let za = read(a.z_final.clone());
    let zb = read(b.z_final.clone());
    eprintln!(
        "final latent: relative error {:.3e}",
        relative_error(&zb, &za)
    );
}
