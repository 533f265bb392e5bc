//! DDIM scheduler, DDIM inversion and denoising against diffusers (fixtures from
//! scripts/make_fixtures.py: expected/scheduler.json and expected/inversion.safetensors, the
//! latter computed with GoodDrag's `inv_step` and diffusers' `DDIMScheduler.step`).

mod parity_support;

use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::pipeline::{self, decode, encode};
use gooddrag::progress::{Cancel, Progress};
use gooddrag::schedulers::{DdimScheduler, DdimSchedulerConfig};
use gooddrag::tensor_io::relative_error;
use parity_support::*;
use serde_json::Value;

/// The reconstruction chains 76 UNet passes (38 inversion + 38 denoising steps), and the f32
/// rounding of each pass (summation orders differ from PyTorch's) grows along the chain: measured
/// 2.5e-5 (CPU) and 3.0e-5 (lavapipe) max-norm, the worst lavapipe element 1.2× the 1e-4·rms
/// floor (3.3e-5 on an entry of 2.7e-3, rms 0.28) since GroupNorm sums in blocks. Max-norm and
/// relative bounds stay at `F32_TOL`; the element floor is 2e-4·rms.
const CHAINED_76_PASSES: Tolerance = Tolerance {
    max_norm: F32_TOL,
    atol_rms: 2.0 * F32_TOL,
    rtol: F32_TOL,
};

fn fixture_scheduler() -> DdimScheduler {
    let json =
        std::fs::read_to_string(fixture_dir().join("scheduler/scheduler_config.json")).unwrap();
    DdimScheduler::new(DdimSchedulerConfig::from_json(&json).unwrap(), 50).unwrap()
}

fn expected_json() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected/scheduler.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn timesteps_betas_and_alphas_equal_diffusers() {
    let s = fixture_scheduler();
    let e = expected_json();
    let timesteps: Vec<usize> = e["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(s.timesteps(), &timesteps[..]);
    let betas_err = relative_error(s.betas(), &floats(&e["betas"]));
    let alphas_err = relative_error(s.alphas_cumprod(), &floats(&e["alphas_cumprod"]));
    eprintln!("betas {betas_err:e}, alphas_cumprod {alphas_err:e}");
    assert!(betas_err <= 1e-6 && alphas_err <= 1e-6);
    // Each ᾱ, including the smallest (≈ 4.7e-3 at t = 999), to 1e-5 of its own value.
    for (a, b) in s.alphas_cumprod().iter().zip(floats(&e["alphas_cumprod"])) {
        assert!((a - b).abs() <= 1e-5 * b, "{a} vs {b}");
    }
    assert_eq!(
        s.final_alpha_cumprod(),
        e["final_alpha_cumprod"].as_f64().unwrap() as f32
    );
}

#[test]
fn one_ddim_step_equals_diffusers_step() {
    let s = fixture_scheduler();
    let device = device::cpu().0;
    let cases = expected_json()["step_eta0"].as_array().unwrap().clone();
    assert!(!cases.is_empty(), "fixture has no cases");
    for case in &cases {
        let t = case["timestep"].as_u64().unwrap() as usize;
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let tensor = |k: &str| {
            Tensor::<4>::from_data(TensorData::new(floats(&case[k]), shape.clone()), &device)
        };
        let prev = s.step(tensor("model_output"), t, tensor("sample"));
        let got: Vec<f32> = prev.into_data().try_into_vec::<f32>().unwrap();
        let err = relative_error(&got, &floats(&case["prev_sample"]));
        eprintln!("t={t}: {err:e}");
        assert!(err <= 1e-6, "t={t}: {err:e}");
    }
}

#[test]
fn one_inversion_step_equals_gooddrag_inv_step() {
    // From the fixture's trajectory: step k takes latent k−1 (z0 for k = 0) and the UNet's
    // prediction at timestep 1 + 20k to latent k — checked for every k with the stored ε, so
    // this is the scheduler arithmetic alone.
    let s = fixture_scheduler();
    let device = device::cpu().0;
    let e = expected("inversion");
    let lat = &e["inversion_latents"];
    let eps = &e["inversion_noise_pred"];
    let n = lat.shape[0];
    let per = lat.f32.len() / n;
    let shape = [1, 4, lat.shape[2], lat.shape[3]];
    let slice = |v: &[f32], k: usize| v[k * per..(k + 1) * per].to_vec();
    let valid = s.strength_timesteps(0.75).unwrap();
    assert_eq!(valid.len(), n);
    for k in 0..n {
        let t = valid[n - 1 - k];
        let z = if k == 0 {
            e["z0"].f32.clone()
        } else {
            slice(&lat.f32, k - 1)
        };
        let z = Tensor::<4>::from_data(TensorData::new(z, shape), &device);
        let ek = Tensor::<4>::from_data(TensorData::new(slice(&eps.f32, k), shape), &device);
        let got: Vec<f32> = s
            .inversion_step(ek, t, z)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let err = relative_error(&got, &slice(&lat.f32, k));
        assert!(err <= 1e-5, "step {k} (t = {t}): {err:e}");
    }
}

fn inversion_matches(device: &Device) {
    let s = fixture_scheduler();
    let e = expected("inversion");
    let unet = load_unet(device, false);
    let vae = load_vae(device, false);
    // Stage 1: the latent GoodDrag inverts (posterior mean × 0.18215).
    let z0 = encode(&vae, e["image"].tensor::<4>(device));
    check("z0 = encode(image)", z0.clone(), &e["z0"], F32_TOL);
    // Stage 2: inversion from the fixture's z0 to t = 741, with progress per step.
    let ehs = e["encoder_hidden_states"].tensor::<3>(device);
    let valid = s.strength_timesteps(0.75).unwrap().to_vec();
    let mut events = Vec::new();
    let z_t = pollster::block_on(pipeline::invert(
        &unet,
        &s,
        e["z0"].tensor::<4>(device),
        &valid,
        &ehs,
        &mut |p| events.push(p),
        &Cancel::new(),
    ))
    .unwrap();
    assert_eq!(events.len(), 38);
    assert_eq!(events[37], Progress::Invert { step: 38, of: 38 });
    check("z_T (38 inversion steps)", z_t.clone(), &e["z_T"], F32_TOL);
    // Stage 3: DDIM denoising back from the fixture's z_T.
    let z = pollster::block_on(pipeline::denoise(
        &unet,
        &s,
        e["z_T"].tensor::<4>(device),
        &valid,
        &ehs,
        &mut |_| {},
        &Cancel::new(),
    ))
    .unwrap();
    let d = &e["denoised_latents"];
    let per = d.f32.len() / d.shape[0];
    let last = Expected {
        shape: vec![1, 4, d.shape[2], d.shape[3]],
        f32: d.f32[(d.shape[0] - 1) * per..].to_vec(),
        i64: vec![],
    };
    check(
        "denoised z_0 (38 DDIM steps)",
        z.clone(),
        &last,
        CHAINED_76_PASSES,
    );
    // Decoding gives an image in [0, 1] of 8× the latent size.
    let img = decode(&vae, z);
    assert_eq!(img.dims(), [1, 3, 8 * d.shape[2], 8 * d.shape[3]]);
}

#[test]
fn inversion_and_denoising_match_diffusers_on_cpu() {
    inversion_matches(&device::cpu().0);
}

#[test]
fn inversion_and_denoising_match_diffusers_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    inversion_matches(&device);
}

#[test]
fn inversion_stops_between_steps_when_cancelled() {
    let device = device::cpu().0;
    let s = fixture_scheduler();
    let e = expected("inversion");
    let unet = load_unet(&device, false);
    let cancel = Cancel::new();
    let mut steps = 0;
    let c2 = cancel.clone();
    let result = pollster::block_on(pipeline::invert(
        &unet,
        &s,
        e["z0"].tensor::<4>(&device),
        s.strength_timesteps(0.75).unwrap(),
        &e["encoder_hidden_states"].tensor::<3>(&device),
        &mut |_| {
            steps += 1;
            if steps == 3 {
                c2.cancel();
            }
        },
        &cancel,
    ));
    assert!(matches!(result, Err(gooddrag::Error::Cancelled)));
    assert_eq!(steps, 3);
}

#[test]
fn image_bytes_round_trip_through_tensors() {
    let device = device::cpu().0;
    let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 17 % 256) as u8).collect();
    let t = pipeline::image_to_tensor(&rgb, 5, 3, &device).unwrap();
    assert_eq!(t.dims(), [1, 3, 3, 5]);
    // [−1, 1] → [0, 1] and back to bytes: exact for 8-bit values up to f32 rounding, which the
    // reference's truncation can lower by one.
    let (back, w, h) = pollster::block_on(pipeline::tensor_to_rgb8(t / 2.0 + 0.5)).unwrap();
    assert_eq!((w, h), (5, 3));
    for (a, b) in back.iter().zip(&rgb) {
        assert!(*b as i32 - *a as i32 <= 1 && *a <= *b, "{a} vs {b}");
    }
    assert!(pipeline::image_to_tensor(&rgb, 4, 3, &device).is_err());
}
