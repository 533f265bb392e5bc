//! UNet parity: the tiny fixture's `unet/` loaded through the real weight loader reproduces
//! diffusers' noise prediction and block outputs (GoodDrag's feature map is `up_blocks[2]`) for
//! an 8×8 latent at t=741, a non-square 8×6 latent (explicit up-sampling sizes) and 16×16
//! (f32: relative error ≤ 1e-4); one forward returns the prediction and the tapped features.

mod parity_support;

use burn::tensor::Device;
use gooddrag::device;
use parity_support::*;

const CASES: [&str; 3] = ["", "_ns", "_16"];

fn run_cases(device: &Device, fp16: bool, tol: impl Into<Tolerance> + Copy, all_blocks: bool) {
    let unet = load_unet(device, fp16);
    let exp = expected("unet");
    let ehs = exp["encoder_hidden_states"].tensor::<3>(device);
    for suffix in CASES {
        let e = |n: &str| &exp[&format!("{n}{suffix}")];
        let sample = e("sample").tensor::<4>(device);
        let t = e("timestep").f32.clone();
        if all_blocks {
            let out = unet.forward_intermediates(sample.clone(), &t, ehs.clone());
            check(
                &format!("time_emb{suffix}"),
                out.time_emb,
                e("time_emb"),
                tol,
            );
            for (i, d) in out.down_blocks.into_iter().enumerate() {
                check(
                    &format!("down_block_{i}{suffix}"),
                    d,
                    e(&format!("down_block_{i}")),
                    tol,
                );
            }
            check(
                &format!("mid_block{suffix}"),
                out.mid_block,
                e("mid_block"),
                tol,
            );
            for (i, u) in out.up_blocks.into_iter().enumerate() {
                check(
                    &format!("up_block_{i}{suffix}"),
                    u,
                    e(&format!("up_block_{i}")),
                    tol,
                );
            }
        }
        let out = unet.forward(sample, &t, ehs.clone(), &[2]);
        assert_eq!(out.up_block_features.len(), 1);
        check(
            &format!("noise_pred{suffix}"),
            out.noise_pred.clone(),
            e("noise_pred"),
            tol,
        );
        check(
            &format!("up_block_2{suffix}"),
            out.up_block(2).unwrap().clone(),
            e("up_block_2"),
            tol,
        );
    }
}

#[test]
fn unet_matches_diffusers_on_cpu() {
    run_cases(&device::cpu().0, false, F32_TOL, true);
}

#[test]
fn unet_fp16_weights_match_within_fp16_tolerance_on_cpu() {
    run_cases(&device::cpu().0, true, F16_TOLERANCE, false);
}

#[test]
fn unet_matches_diffusers_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    run_cases(&device, false, F32_TOL, false);
}

#[test]
fn unet_taps_return_requested_up_blocks_in_order() {
    let device = device::cpu().0;
    let unet = load_unet(&device, false);
    let exp = expected("unet");
    let out = unet.forward(
        exp["sample"].tensor::<4>(&device),
        &exp["timestep"].f32,
        exp["encoder_hidden_states"].tensor::<3>(&device),
        &[3, 1],
    );
    let order: Vec<usize> = out.up_block_features.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [3, 1]);
    check(
        "up_block_1 via tap",
        out.up_block(1).unwrap().clone(),
        &exp["up_block_1"],
        F32_TOL,
    );
    assert!(out.up_block(2).is_none());
}

#[test]
fn unet_attention_in_small_chunks_matches_unchunked() {
    // A tiny byte budget forces chunking over heads and query blocks in every attention.
    use gooddrag::models::unet_2d_condition::UNet2DConditionConfig;
    use gooddrag::weights::load::{Component, load_safetensors_file};
    let device = device::cpu().0;
    let cfg = UNet2DConditionConfig::from_json(
        &std::fs::read_to_string(fixture_dir().join("unet/config.json")).unwrap(),
    )
    .unwrap();
    let unet = load_safetensors_file(
        cfg.init(256, &device).unwrap(),
        Component::Unet,
        &fixture_dir().join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let exp = expected("unet");
    let out = unet.forward(
        exp["sample_16"].tensor::<4>(&device),
        &exp["timestep_16"].f32,
        exp["encoder_hidden_states"].tensor::<3>(&device),
        &[2],
    );
    check(
        "noise_pred_16 (chunked)",
        out.noise_pred,
        &exp["noise_pred_16"],
        F32_TOL,
    );
}

fn param_count(expected: Vec<(String, Vec<usize>)>) -> usize {
    expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

#[test]
fn sd15_unet_from_default_config_has_the_published_shape() {
    // Built lazily: no weights are allocated. SD 1.5's UNet has 686 tensors, 859,520,964 params.
    use gooddrag::models::unet_2d_condition::UNet2DConditionConfig;
    use gooddrag::weights::load::{Component, WeightLoader};
    let unet = UNet2DConditionConfig::default()
        .init(1 << 27, &device::cpu().0)
        .unwrap();
    let expected = WeightLoader::new(unet, Component::Unet, "unet").expected();
    assert_eq!(expected.len(), 686);
    assert_eq!(param_count(expected.clone()), 859_520_964);
    let shape = |k: &str| expected.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(
        shape("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
        [320, 768]
    );
    assert_eq!(
        shape("up_blocks.3.resnets.0.conv1.weight"),
        [320, 960, 3, 3]
    );
    assert_eq!(
        shape("mid_block.attentions.0.proj_in.weight"),
        [1280, 1280, 1, 1]
    );
}

#[test]
fn sd21_unet_config_builds_linear_projections_and_per_block_heads() {
    use gooddrag::models::unet_2d_condition::UNet2DConditionConfig;
    use gooddrag::weights::load::{Component, WeightLoader};
    let json = r#"{"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
                   "use_linear_projection": true, "upcast_attention": false, "sample_size": 64}"#;
    let cfg = UNet2DConditionConfig::from_json(json).unwrap();
    let unet = cfg.init(1 << 27, &device::cpu().0).unwrap();
    assert_eq!(
        unet.down_blocks[0].attentions[0].transformer_blocks[0]
            .attn1
            .heads,
        5
    );
    assert_eq!(
        unet.mid_block.attentions[0].transformer_blocks[0]
            .attn1
            .heads,
        20
    );
    let expected = WeightLoader::new(unet, Component::Unet, "unet").expected();
    let shape = |k: &str| expected.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(
        shape("down_blocks.0.attentions.0.proj_in.weight"),
        [320, 320]
    );
    assert_eq!(
        shape("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
        [320, 1024]
    );
    assert_eq!(param_count(expected), 865_910_724); // SD 2.x UNet
}

#[test]
fn unet_config_rejects_unsupported_features_with_a_clear_message() {
    use gooddrag::models::unet_2d_condition::UNet2DConditionConfig;
    let cfg = UNet2DConditionConfig::from_json(r#"{"class_embed_type": "timestep"}"#).unwrap();
    let err = cfg.init(1 << 27, &device::cpu().0).unwrap_err().to_string();
    assert!(err.contains("class embeddings"), "{err}");
}

/// fp16 files keep the UNet's matrices and kernels in f16 on a device with f16 support (half
/// the memory) and widen them exactly where they are used: the outputs equal, to the bit, those
/// of the same weights stored as f32. Checked on both devices (each must support f16).
fn fp16_storage_is_exact(device: &Device) {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::tensor::{DType, FloatDType, Tensor};
    use gooddrag::tensor_io::read_f32;

    struct Widen;
    impl ModuleMapper for Widen {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.cast(FloatDType::F32))
        }
    }
    // Not a skip: every device the suite runs on (burn-flex; lavapipe and real GPUs with
    // shader-f16) must hold f16, or the f16 path this test guards would go untested.
    assert!(
        device.supports_dtype(FloatDType::F16),
        "this device has no f16, so the fp16-storage path cannot be tested on it"
    );
    let packed = load_unet(device, true);
    assert_eq!(
        packed.conv_in.weight.val().dtype(),
        DType::F16,
        "kernels stay f16"
    );
    assert_eq!(
        packed.conv_in.bias.as_ref().unwrap().val().dtype(),
        DType::F32,
        "vectors are widened on the host"
    );
    let wide = packed.clone().map(&mut Widen);
    assert_eq!(wide.conv_in.weight.val().dtype(), DType::F32);
    let exp = expected("unet");
    let ehs = exp["encoder_hidden_states"].tensor::<3>(device);
    let sample = exp["sample"].tensor::<4>(device);
    let t = exp["timestep"].f32.clone();
    let run = |m: &gooddrag::models::unet_2d_condition::UNet2DConditionModel| {
        let out = m.forward(sample.clone(), &t, ehs.clone(), &[2]);
        let f = out.up_block(2).unwrap().clone();
        (
            pollster::block_on(read_f32(out.noise_pred)).unwrap(),
            pollster::block_on(read_f32(f)).unwrap(),
        )
    };
    let (a, fa) = run(&packed);
    let (b, fb) = run(&wide);
    assert_eq!(a, b, "noise prediction");
    assert_eq!(fa, fb, "features");
}

#[test]
fn fp16_storage_is_exact_on_cpu() {
    fp16_storage_is_exact(&device::cpu().0);
}

#[test]
fn fp16_storage_is_exact_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    fp16_storage_is_exact(&device);
}

/// The CPU device runs on every core (burn-flex with rayon): the same forward on one thread and
/// on a pool of four gives identical bits (matrix products split the output, never the sum).
#[test]
fn unet_on_cpu_is_identical_on_one_thread_and_on_four() {
    let device = device::cpu().0;
    let unet = load_unet(&device, false);
    let exp = expected("unet");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        pool.install(|| {
            let out = unet.forward(
                exp["sample"].tensor::<4>(&device),
                &exp["timestep"].f32,
                exp["encoder_hidden_states"].tensor::<3>(&device),
                &[2],
            );
            let features = out.up_block(2).unwrap().clone();
            let read = |t: burn::tensor::Tensor<4>| -> Vec<f32> {
                pollster::block_on(gooddrag::tensor_io::read_f32(t)).expect("readback")
            };
            (read(out.noise_pred), read(features))
        })
    };
    let (one, four) = (run(1), run(4));
    assert!(!one.0.is_empty() && !one.1.is_empty());
    assert_eq!(
        one, four,
        "noise prediction and features differ between 1 and 4 threads"
    );
}
