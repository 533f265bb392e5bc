//! The SD 2.x architecture and DragBench's MD against diffusers on a tiny SD 2.x-shaped model
//! (tests/fixtures/tiny-sd2, from scripts/make_dift_fixtures.py), loaded from its fp16 files as
//! a user's folder: the text encoder (exact GELU, pad id 0), the whole UNet (linear projections,
//! per-block head counts, upcast attention; odd latent, batch 2), the DIFT featurizer with the
//! reference's noise injected, and the point matching and MD over the upsampled maps.
//!
//! Tolerances: networks within 1e-4·rms + 1e-4·|ref| element-wise (f32 sums in another order);
//! cosine at the reference's match within 2e-5; the match itself equal wherever the
//! reference's best and second-best cosines differ by more than 1e-4 (closer ties may flip on
//! float noise, and then the cosine check still holds). Seen: networks and features ≤ 3.1e-6 of
//! rms, MD equal to 1e-7. With our own seeded noise, features are as close to the reference's
//! as two of our seeds are to each other (cosines within 0.03; seen 0.957/0.961 vs 0.948) and MD
//! within 3 px (seen 4.10 vs 5.10 on this random tiny model).

mod parity_support;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use gooddrag::eval::dift::{DiftNoise, DiftSettings, FeatureMap, dift_features};
use gooddrag::eval::md::match_points;
use gooddrag::image::RgbImage;
use gooddrag::model_set::Models;
use gooddrag::rng::Rng;
use gooddrag::tensor_io::read_f32;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd2")
}

/// The fixture's expected outputs (f32/i64 tensors), images and JSON.
struct Expected {
    tensors: std::collections::HashMap<String, parity_support::Expected>,
    json: serde_json::Value,
}

impl Expected {
    fn load() -> Self {
        Self {
            tensors: parity_support::expected_file(&dir().join("expected/dift.safetensors")),
            json: serde_json::from_str(
                &std::fs::read_to_string(dir().join("expected/dift.json")).unwrap(),
            )
            .unwrap(),
        }
    }
    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = &self.tensors[name];
        (t.shape.clone(), t.f32.clone())
    }
    fn image(&self, name: &str) -> RgbImage {
        parity_support::fixture_rgb(&dir().join("expected/dift.safetensors"), name)
    }
}

fn models() -> Models {
    let (device, report) = gooddrag::device::cpu();
    Models::load_dir(
        &dir(),
        None,
        &device,
        report.max_storage_buffer_binding_size,
    )
    .unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - *w as f64).abs();
        let allowed = 1e-4 * rms + 1e-4 * (*w as f64).abs();
        assert!(err <= allowed, "{what}[{i}]: {g} vs {w} (rms {rms:.3e})");
        worst = worst.max(err / rms.max(1e-12));
    }
    eprintln!("{what}: worst error {worst:.2e} of rms");
}

#[test]
fn sd2_text_encoder_and_unet_equal_diffusers() {
    let m = models();
    let exp = Expected::load();
    let ids = exp.tensors["prompt_ids"].i64.clone();
    let prompt = exp.json["prompt"].as_str().unwrap();
    let ours = m.tokenizer.encode_padded(prompt, 77);
    assert_eq!(
        ours.iter().map(|&i| i as i64).collect::<Vec<_>>(),
        ids,
        "token ids (SD 2.x pads with id 0)"
    );
    let emb = pollster::block_on(read_f32(m.embed_prompt(prompt).unwrap())).unwrap();
    assert_close(&emb, &exp.f32("prompt_embedding").1, "text embedding");

    let (shape, sample) = exp.f32("unet_sample");
    let (tshape, text) = exp.f32("unet_encoder_hidden_states");
    let device = &m.device;
    let sample = Tensor::<4>::from_data(
        TensorData::new(sample, [shape[0], shape[1], shape[2], shape[3]]),
        device,
    );
    let text = Tensor::<3>::from_data(
        TensorData::new(text, [tshape[0], tshape[1], tshape[2]]),
        device,
    );
    let t = exp.json["timestep"].as_u64().unwrap() as f32;
    let out = m.unet.forward(sample, &[t], text, &[]);
    let got = pollster::block_on(read_f32(out.noise_pred)).unwrap();
    assert_close(
        &got,
        &exp.f32("unet_noise_pred").1,
        "SD 2.x UNet noise_pred",
    );
}

fn features(m: &Models, exp: &Expected, tag: &str, image: &RgbImage) -> FeatureMap {
    let prompt = exp.json["prompt"].as_str().unwrap();
    pollster::block_on(dift_features(
        m,
        image,
        prompt,
        DiftSettings::default(),
        DiftNoise::Given {
            posterior: exp.f32(&format!("{tag}_eps_posterior")).1,
            forward: exp.f32(&format!("{tag}_eps_noise")).1,
        },
    ))
    .unwrap()
}

fn points(exp: &Expected) -> (Vec<[usize; 2]>, Vec<[f64; 2]>) {
    let pairs = exp.json["pairs"].as_array().unwrap();
    let handles = pairs
        .iter()
        .map(|p| {
            let h: Vec<usize> = serde_json::from_value(p["handle"].clone()).unwrap();
            [h[0], h[1]]
        })
        .collect();
    let targets = pairs
        .iter()
        .map(|p| {
            let t: Vec<f64> = serde_json::from_value(p["target"].clone()).unwrap();
            [t[0], t[1]]
        })
        .collect();
    (handles, targets)
}

#[test]
fn dift_features_and_md_equal_the_reference_with_its_noise() {
    let m = models();
    let exp = Expected::load();
    let (src, dragged) = (exp.image("source_image"), exp.image("dragged_image"));
    let fs = features(&m, &exp, "source", &src);
    let fd = features(&m, &exp, "dragged", &dragged);
    let (shape, want) = exp.f32("source_features");
    assert_eq!(
        [fs.channels, fs.height, fs.width],
        [shape[1], shape[2], shape[3]]
    );
    assert_close(&fs.data, &want, "source DIFT features");
    assert_close(
        &fd.data,
        &exp.f32("dragged_features").1,
        "dragged DIFT features",
    );

    // Matching on the reference's own features isolates the matcher: every match equal.
    let reference = |name: &str| {
        let (s, data) = exp.f32(name);
        FeatureMap {
            channels: s[1],
            height: s[2],
            width: s[3],
            data,
        }
    };
    let (handles, targets) = points(&exp);
    let size = (src.width, src.height);
    let pairs = exp.json["pairs"].as_array().unwrap();
    let on_reference = match_points(
        &reference("source_features"),
        &reference("dragged_features"),
        size,
        &handles,
        &targets,
    )
    .unwrap();
    for (got, want) in on_reference.iter().zip(pairs) {
        let found: Vec<usize> = serde_json::from_value(want["match"].clone()).unwrap();
        assert_eq!(
            got.found.to_vec(),
            found,
            "match on the reference's features"
        );
        assert!((got.cosine as f64 - want["cos_max"].as_f64().unwrap()).abs() < 2e-6);
        assert!((got.distance - want["distance"].as_f64().unwrap()).abs() < 1e-5);
    }
    // On our features: equal matches where the reference's choice is clear.
    let ours = match_points(&fs, &fd, size, &handles, &targets).unwrap();
    for (got, want) in ours.iter().zip(pairs) {
        assert!(
            (got.cosine as f64 - want["cos_max"].as_f64().unwrap()).abs() < 2e-5,
            "{got:?}"
        );
        if want["margin"].as_f64().unwrap() > 1e-4 {
            let found: Vec<usize> = serde_json::from_value(want["match"].clone()).unwrap();
            assert_eq!(got.found.to_vec(), found);
        }
    }
    let md = ours.iter().map(|p| p.distance).sum::<f64>() / ours.len() as f64;
    eprintln!("MD {md} (reference {})", exp.json["md"]);
}

/// Our own noise (the seeded host RNG, not PyTorch's generator) is one more realisation of the
/// same distribution: features from it are as close to the reference's as two of our seeds are
/// to each other, and MD stays near the reference's.
#[test]
fn dift_with_our_own_noise_agrees_statistically() {
    let m = models();
    let exp = Expected::load();
    let (src, dragged) = (exp.image("source_image"), exp.image("dragged_image"));
    let prompt = exp.json["prompt"].as_str().unwrap();
    let run = |seed: u64| {
        let mut rng = Rng::new(seed);
        let mut f = |img: &RgbImage| {
            pollster::block_on(dift_features(
                &m,
                img,
                prompt,
                DiftSettings::default(),
                DiftNoise::Seeded(&mut rng),
            ))
            .unwrap()
        };
        (f(&src), f(&dragged))
    };
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    };
    let reference = exp.f32("source_features").1;
    let (a, a_dragged) = run(42);
    let (b, _) = run(7);
    let (to_ref_a, to_ref_b, between) = (
        cosine(&a.data, &reference),
        cosine(&b.data, &reference),
        cosine(&a.data, &b.data),
    );
    eprintln!(
        "feature cosines: seed 42–ref {to_ref_a:.4}, seed 7–ref {to_ref_b:.4}, 42–7 {between:.4}"
    );
    for c in [to_ref_a, to_ref_b] {
        assert!(
            (c - between).abs() < 0.03,
            "{c} vs {between}: our noise is not like PyTorch's"
        );
    }
    assert_ne!(a.data, b.data, "the seed is used");
    let (handles, targets) = points(&exp);
    let ours = match_points(&a, &a_dragged, (src.width, src.height), &handles, &targets).unwrap();
    let md = ours.iter().map(|p| p.distance).sum::<f64>() / ours.len() as f64;
    let want = exp.json["md"].as_f64().unwrap();
    eprintln!("MD with our noise {md}, with the reference's {want}");
    assert!((md - want).abs() < 3.0, "MD {md} vs {want}");
}

#[test]
fn dift_refuses_noise_of_the_wrong_size() {
    let m = models();
    let exp = Expected::load();
    let e = pollster::block_on(dift_features(
        &m,
        &exp.image("source_image"),
        "",
        DiftSettings::default(),
        DiftNoise::Given {
            posterior: vec![0.0; 3],
            forward: vec![0.0; 3],
        },
    ))
    .unwrap_err();
    assert!(e.to_string().contains("needed"), "{e}");
}

/// DIFT's truncated UNet returns exactly the full forward's `up_blocks[1]` output while
/// running only the layers up to it (the work counter counts the multiply-adds run).
#[test]
fn the_truncated_unet_equals_the_full_forwards_tap_for_less_work() {
    let m = models();
    let exp = Expected::load();
    let (shape, sample) = exp.f32("unet_sample");
    let (tshape, text) = exp.f32("unet_encoder_hidden_states");
    let sample = Tensor::<4>::from_data(
        TensorData::new(sample, [shape[0], shape[1], shape[2], shape[3]]),
        &m.device,
    );
    let text = Tensor::<3>::from_data(
        TensorData::new(text, [tshape[0], tshape[1], tshape[2]]),
        &m.device,
    );
    let (full, full_flops) = gooddrag::perf::work::count(|| {
        m.unet
            .forward(sample.clone(), &[261.0], text.clone(), &[1])
            .up_block(1)
            .cloned()
            .unwrap()
    });
    let (cut, cut_flops) = gooddrag::perf::work::count(|| {
        m.unet
            .forward_to_up_block(sample.clone(), &[261.0], text.clone(), 1)
            .unwrap()
    });
    let read = |t: Tensor<4>| pollster::block_on(read_f32(t)).unwrap();
    assert_eq!(read(cut), read(full));
    eprintln!(
        "tiny SD 2.x UNet at latent 7×9: {cut_flops} of {full_flops} FLOPs up to up_blocks[1] ({:.0} %)",
        100.0 * cut_flops as f64 / full_flops as f64
    );
    assert!(cut_flops < full_flops);
    assert!(
        m.unet
            .forward_to_up_block(sample, &[261.0], text, 9)
            .is_none()
    );
}
