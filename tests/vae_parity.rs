//! VAE parity: the tiny fixture's `vae/` loaded through the real weight loader reproduces
//! diffusers' latent distribution (mean, std) and decoder output, for a 64×64 image and an
//! odd 60×44 one (f32: relative error ≤ 1e-4). Also: key renames and loader errors.

mod parity_support;

use burn::tensor::Device;
use gooddrag::device;
use gooddrag::models::attention::DEFAULT_ATTENTION_BYTES;
use gooddrag::models::vae::AutoencoderKLConfig;
use gooddrag::tensor_io::{read_f32, relative_error};
use gooddrag::weights::load::{Component, load_safetensors};
use parity_support::*;

fn run_cases(device: &Device, fp16: bool, tol: impl Into<Tolerance> + Copy) {
    let vae = load_vae(device, fp16);
    let exp = expected("vae");
    for suffix in ["", "_odd"] {
        let e = |n: &str| &exp[&format!("{n}{suffix}")];
        let dist = vae.encode(e("image").tensor::<4>(device));
        check(
            &format!("latent_mean{suffix}"),
            dist.mean.clone(),
            e("latent_mean"),
            tol,
        );
        check(
            &format!("latent_std{suffix}"),
            dist.std(),
            e("latent_std"),
            tol,
        );
        let decoded = vae.decode(e("z").tensor::<4>(device));
        check(&format!("decoded{suffix}"), decoded, e("decoded"), tol);
    }
}

#[test]
fn vae_matches_diffusers_on_cpu() {
    run_cases(&device::cpu().0, false, F32_TOL);
}

#[test]
fn vae_fp16_weights_match_within_fp16_tolerance_on_cpu() {
    run_cases(&device::cpu().0, true, F16_TOLERANCE);
}

#[test]
fn vae_matches_diffusers_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    run_cases(&device, false, F32_TOL);
}

/// Row bands (the decoder's path when an activation would exceed one band: 32 MiB, e.g. the
/// large levels at 512×512) give the same image as whole tensors: forced here with small buffer
/// limits, down to uneven one- and two-row bands, on both devices. The banded decoder
/// normalises and upsamples each band just before its convolution, so this also checks those
/// prologues' halo rows at every band edge.
fn banded_decode_matches(device: &Device) {
    // fp16 files keep the kernels in f16 where the device has f16 (see `kernels::layers`): the
    // banded convolutions widen them as the whole-tensor ones do.
    for (fp16, tol) in [(false, Tolerance::from(F32_TOL)), (true, F16_TOLERANCE)] {
        let mut vae = load_vae(device, fp16);
        let exp = expected("vae");
        for suffix in ["", "_odd"] {
            let e = |n: &str| &exp[&format!("{n}{suffix}")];
            let z = e("z").tensor::<4>(device);
            vae.decoder.max_buffer_bytes = DEFAULT_ATTENTION_BYTES;
            let (whole, whole_flops) = gooddrag::perf::work::count(|| vae.decode(z.clone()));
            for limit in [64 << 10, 4 << 10] {
                vae.decoder.max_buffer_bytes = limit;
                let (banded, flops) = gooddrag::perf::work::count(|| vae.decode(z.clone()));
                let name = format!("banded decode{suffix}, {limit} B, fp16 {fp16}");
                // The work counter sees the banded convolutions too (halo rows are not output
                // rows: the counts are equal).
                assert_eq!(flops, whole_flops, "{name}: counted FLOPs");
                check(&name, banded.clone(), e("decoded"), tol);
                let read = |t| pollster::block_on(read_f32(t)).expect("readback");
                // Same maths; only GroupNorm's statistics are summed in another order
                // (measured ≤ 4.5e-6 on both devices).
                let err = relative_error(&read(banded), &read(whole.clone()));
                assert!(
                    err <= 1e-5,
                    "{name}: {err} relative to the whole-tensor decode"
                );
            }
        }
    }
}

#[test]
fn banded_decode_equals_the_whole_tensor_decode_on_cpu() {
    banded_decode_matches(&device::cpu().0);
}

#[test]
fn banded_decode_equals_the_whole_tensor_decode_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    banded_decode_matches(&device);
}

#[test]
fn band_counts_keep_every_band_under_the_limit() {
    use gooddrag::kernels::row_bands::bands_needed;
    // SD 1.5 at 512×512: up_blocks[2] peaks at 256 channels × 512² (f32: 256 MiB), input rows 256.
    let elements = 256 * 512 * 512;
    let n = bands_needed(elements, 256, 128 << 20);
    let rows = 256usize.div_ceil(n);
    assert!(
        n >= 3 && (rows + 2) * (elements * 4 / 256) <= 128 << 20,
        "{n} bands"
    );
    assert_eq!(bands_needed(elements, 256, 1 << 30), 1);
    assert_eq!(bands_needed(100, 0, 16), 1);
}

#[test]
fn vae_scaling_factor_comes_from_config() {
    let vae = load_vae(&device::cpu().0, false);
    assert_eq!(vae.scaling_factor, 0.18215);
}

fn vae_file() -> Vec<u8> {
    std::fs::read(fixture_dir().join("vae/diffusion_pytorch_model.safetensors")).unwrap()
}

fn load_modified(
    tensors: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
) -> gooddrag::Result<gooddrag::models::vae::AutoencoderKL> {
    let device = device::cpu().0;
    let cfg = AutoencoderKLConfig::from_json(
        &std::fs::read_to_string(fixture_dir().join("vae/config.json")).unwrap(),
    )
    .unwrap();
    let model = cfg.init(DEFAULT_ATTENTION_BYTES, &device).unwrap();
    load_safetensors(
        model,
        Component::Vae,
        "diffusion_pytorch_model.safetensors",
        &write_safetensors(&tensors),
    )
}

#[test]
fn vae_loads_legacy_attention_key_names() {
    let renamed = read_all(&vae_file())
        .into_iter()
        .map(|(n, d, s, b)| {
            let n = n
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
            (n, d, s, b)
        })
        .collect::<Vec<_>>();
    assert!(
        renamed
            .iter()
            .any(|(n, ..)| n.ends_with("proj_attn.weight"))
    );
    let vae = load_modified(renamed).expect("legacy names load");
    let exp = expected("vae");
    let device = device::cpu().0;
    check(
        "decoded (legacy keys)",
        vae.decode(exp["z"].tensor::<4>(&device)),
        &exp["decoded"],
        F32_TOL,
    );
}

#[test]
fn vae_shape_mismatch_is_an_error_naming_tensor_and_shapes() {
    let tensors = read_all(&vae_file())
        .into_iter()
        .map(|(n, d, s, b)| {
            if n == "decoder.conv_in.weight" {
                (n, d, vec![16, 4, 9, 1], b)
            } else {
                (n, d, s, b)
            }
        })
        .collect();
    let err = load_modified(tensors).unwrap_err().to_string();
    assert!(
        err.contains("decoder.conv_in.weight")
            && err.contains("[16, 4, 9, 1]")
            && err.contains("[16, 4, 3, 3]"),
        "{err}"
    );
}

#[test]
fn vae_missing_tensor_is_an_error_naming_it() {
    let tensors = read_all(&vae_file())
        .into_iter()
        .filter(|(n, ..)| n != "encoder.conv_norm_out.weight")
        .collect();
    let err = load_modified(tensors).unwrap_err().to_string();
    assert!(
        err.contains("encoder.conv_norm_out.weight") && err.contains("1 tensor"),
        "{err}"
    );
}

#[test]
fn vae_unexpected_tensor_is_an_error_naming_it() {
    let mut tensors = read_all(&vae_file());
    tensors.push((
        "decoder.extra.weight".into(),
        "F32",
        vec![1],
        vec![0, 0, 0, 0],
    ));
    let err = load_modified(tensors).unwrap_err().to_string();
    assert!(err.contains("decoder.extra.weight"), "{err}");
}

#[test]
fn vae_integer_tensor_where_float_expected_is_an_error_naming_it() {
    let tensors = read_all(&vae_file())
        .into_iter()
        .map(|(n, d, s, b)| {
            if n == "quant_conv.bias" {
                (n, "I32", s, b)
            } else {
                (n, d, s, b)
            }
        })
        .collect();
    let err = load_modified(tensors).unwrap_err().to_string();
    assert!(
        err.contains("quant_conv.bias") && err.contains("I32"),
        "{err}"
    );
}

#[test]
fn sd15_vae_from_default_config_has_the_published_shape() {
    use gooddrag::weights::load::WeightLoader;
    let vae = AutoencoderKLConfig::default()
        .init(DEFAULT_ATTENTION_BYTES, &device::cpu().0)
        .unwrap();
    let expected = WeightLoader::new(vae, Component::Vae, "vae").expected();
    let params: usize = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    eprintln!("SD 1.5 VAE: {} tensors, {params} params", expected.len());
    assert_eq!(expected.len(), 248);
    assert_eq!(params, 83_653_863);
}
