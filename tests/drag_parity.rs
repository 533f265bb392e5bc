//! One motion-supervision step and one point tracking against the official GoodDrag code
//! (`interpolate_feature_patch`, `cal_motion_supervision_loss`, `point_tracking`, run verbatim
//! by scripts/make_fixtures.py on the tiny UNet; expected/drag.safetensors): the shifted patch,
//! the loss, its gradient with respect to the latent and the tracked handles.

mod parity_support;

use burn::tensor::{Device, Tensor};
use gooddrag::device;
use gooddrag::drag::PatchWeight;
use gooddrag::drag::features::FeatureGeometry;
use gooddrag::drag::motion::{MotionInputs, MotionSettings, motion_supervision_loss, shift};
use gooddrag::drag::tracking::track;
use gooddrag::schedulers::{DdimScheduler, DdimSchedulerConfig};
use parity_support::*;

fn points(e: &Expected) -> Vec<[f64; 2]> {
    e.f32
        .chunks_exact(2)
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect()
}

/// `grad_tol`: the L1 term's gradient is sign(f₀ − f₁); where |f₀ − f₁| is at f32 rounding
/// level a backend's different summation order can flip a sign, moving the latent gradient by
/// a few 1e-5 relative (lavapipe: 8.8e-5 measured vs 2.6e-6 on the CPU).
fn drag_step_matches(device: &Device, grad_tol: f32) {
    let ad = device::training(device);
    let e = expected("drag");
    let json =
        std::fs::read_to_string(fixture_dir().join("scheduler/scheduler_config.json")).unwrap();
    let sched = DdimScheduler::new(DdimSchedulerConfig::from_json(&json).unwrap(), 50).unwrap();
    let unet = {
        use burn::module::Module;
        load_unet(&ad, false).no_grad()
    };
    let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&ad);
    let z_t = expected("inversion")["z_T"].tensor::<4>(&ad);
    let t = 741usize;
    let (p0, p, q) = (
        points(&e["handles_init"]),
        points(&e["handles"]),
        points(&e["targets"]),
    );
    let geometry = FeatureGeometry {
        map_height: 8,
        map_width: 8,
        feat_height: 32,
        feat_width: 32,
    };

    // Reference branch at t: features and z⁰ₜ₋₁.
    let out0 = unet.forward(z_t.clone(), &[t as f32], ehs.clone(), &[2]);
    let f0_map = out0.up_block(2).unwrap().clone().detach();
    check(
        "z_prev0",
        sched.step(out0.noise_pred.detach(), t, z_t),
        &e["z_prev0"],
        F32_TOL,
    );
    let patches: Vec<Tensor<3>> = p0
        .iter()
        .map(|&h| geometry.integer_patch(&f0_map, h, 4))
        .collect();
    let vectors: Vec<Tensor<1>> = p0.iter().map(|&h| geometry.vector(&f0_map, h)).collect();

    // Edited branch, with gradient to the latent.
    let z = e["z"].tensor::<4>(&ad).require_grad();
    let out = unet.forward(z.clone(), &[t as f32], ehs, &[2]);
    let f1_map = out.up_block(2).unwrap().clone();
    let z_prev = sched.step(out.noise_pred, t, z.clone());
    let d = shift(p[0], q[0], 4.0, 2.0).unwrap();
    let patch = geometry.bilinear_patch(
        &f1_map.clone().detach(),
        [p[0][0] + d[0], p[0][1] + d[1]],
        4,
    );
    check(
        "shifted bilinear patch of handle 0",
        patch.unsqueeze::<4>(),
        &e["f1_patch_0"],
        F32_TOL,
    );
    let keep = (e["mask"].tensor::<4>(&ad).neg() + 1.0).detach();
    let z_prev0 = e["z_prev0"].tensor::<4>(&ad);
    let loss = motion_supervision_loss(
        &MotionInputs {
            features: &f1_map,
            geometry,
            z_prev,
            reference_prev: &z_prev0,
            keep: Some(&keep),
            reference_patches: Some(&patches),
            handles: &p,
            targets: &q,
        },
        &MotionSettings {
            r1: 4,
            beta: 4.0,
            reach_distance: 2.0,
            lambda: 0.2,
            patch_weight: PatchWeight::TwoR,
        },
    );
    check(
        "drag loss",
        loss.drag.clone().unwrap(),
        &e["drag_loss"],
        F32_TOL,
    );
    check("loss", loss.total.clone(), &e["loss"], F32_TOL);
    let grads = loss.total.backward();
    check(
        "d loss / d z",
        z.grad(&grads).unwrap(),
        &e["grad_z"],
        grad_tol,
    );

    // Tracking on this forward's features.
    let tracked = pollster::block_on(track(&f1_map.detach(), geometry, &vectors, &p, 12)).unwrap();
    assert_eq!(tracked, points(&e["tracked"]), "tracked handles");
}

#[test]
fn motion_supervision_and_tracking_match_the_official_code_on_cpu() {
    drag_step_matches(&device::cpu().0, F32_TOL);
}

#[test]
fn motion_supervision_and_tracking_match_the_official_code_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    drag_step_matches(&device, 5e-4);
}

#[test]
fn masactrl_batch_matches_mutual_self_attention_in_diffusers() {
    let device = device::cpu().0;
    let e = expected("masactrl");
    let mut unet = load_unet(&device, false);
    // GoodDrag: start_layer 10 → transformer blocks 10..16, every attn1 of up_blocks[2], [3].
    assert_eq!(unet.set_mutual_self_attention(Some(10)), 6);
    let ehs = expected("clip")["last_hidden_state_empty"].tensor::<3>(&device);
    let ehs = Tensor::cat(vec![ehs.clone(), ehs], 0);
    let out = unet.forward(e["sample"].tensor::<4>(&device), &[621.0], ehs.clone(), &[]);
    check(
        "MasaCtrl batch noise_pred",
        out.noise_pred,
        &e["noise_pred"],
        F32_TOL,
    );
    // Off again: the batch elements are independent (the edited branch's output changes).
    assert_eq!(unet.set_mutual_self_attention(None), 0);
    let plain = unet
        .forward(e["sample"].tensor::<4>(&device), &[621.0], ehs, &[])
        .noise_pred;
    let plain: Vec<f32> = pollster::block_on(gooddrag::tensor_io::read_f32(plain)).unwrap();
    let n = plain.len() / 2;
    assert!(
        gooddrag::tensor_io::relative_error(&plain[..n], &e["noise_pred"].f32[..n]) < 1e-4,
        "reference branch unchanged"
    );
    assert!(
        gooddrag::tensor_io::relative_error(&plain[n..], &e["noise_pred"].f32[n..]) > 1e-3,
        "edited branch differs"
    );
}
