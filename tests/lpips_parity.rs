//! LPIPS (AlexNet, v0.1) against the `lpips` package, and the PyTorch checkpoint reader against
//! files `torch.save` wrote (tests/fixtures/lpips, from scripts/make_lpips_fixtures.py).
//!
//! Tolerances: LPIPS and each tap's term to 1e-6 absolute and 2e-5 relative (f32 convolutions
//! summed in another order than PyTorch's; seen: ≤ 1.2e-8 absolute, ≤ 3.2e-6 relative);
//! identical images give exactly 0; the 224×224 IF input to 1e-7 per sampled element and its sum
//! to 1e-9 per element. Checkpoint values are compared exactly.

mod parity_support;

use std::path::PathBuf;

use gooddrag::eval::lpips::{AlexLpips, if_input};
use gooddrag::image::RgbImage;
use gooddrag::tensor_io::read_f32;
use gooddrag::weights::{F32Tensor, read_tensor_file};
use parity_support::{alexnet_trunk_file, fixture_rgb, lpips_dir};
use serde_json::Value;

fn dir() -> PathBuf {
    lpips_dir()
}

fn tensors(name: &str) -> Vec<F32Tensor> {
    let bytes = std::fs::read(dir().join(name)).unwrap();
    read_tensor_file(name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn alexnet_trunk() -> Vec<F32Tensor> {
    read_tensor_file("alexnet.safetensors", &alexnet_trunk_file()).unwrap()
}

fn image(name: &str) -> RgbImage {
    fixture_rgb(&dir().join("images.safetensors"), name)
}

fn close(got: f32, want: f64, what: &str) {
    let err = (got as f64 - want).abs();
    eprintln!(
        "{what}: error {err:.2e} ({:.2e} relative)",
        err / want.abs().max(1e-12)
    );
    assert!(
        err <= 1e-6 && err <= 2e-5 * want.abs().max(1e-4),
        "{what}: {got} vs {want} (error {err:.2e})"
    );
}

#[test]
fn heads_read_the_same_from_legacy_zip_and_safetensors_files() {
    let legacy = tensors("alex.pth");
    let zip = tensors("heads_zip.pth");
    let st = tensors("heads.safetensors");
    let names: Vec<&str> = legacy.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        (0..5)
            .map(|k| format!("lin{k}.model.1.weight"))
            .collect::<Vec<_>>()
    );
    for t in &legacy {
        let z = zip.iter().find(|z| z.name == t.name).unwrap();
        let s = st.iter().find(|s| s.name == t.name).unwrap();
        assert_eq!(t, z);
        assert_eq!(t, s);
    }
    // The checksums docs/EVALUATION.md gives for the real heads (and the package agrees).
    let exp = expected();
    for (t, (sum, max)) in legacy.iter().zip([
        (2.349532, 0.492139),
        (16.143027, 1.047155),
        (39.268439, 1.323567),
        (27.197178, 0.747736),
        (20.317177, 0.413070),
    ]) {
        let got: f64 = t.data.iter().map(|&v| v as f64).sum();
        let top = t.data.iter().cloned().fold(f32::MIN, f32::max) as f64;
        assert!((got - sum).abs() < 1e-5, "{}: Σ {got}", t.name);
        assert!((top - max).abs() < 1e-6, "{}: max {top}", t.name);
        assert!((got - exp["heads"][&t.name]["sum"].as_f64().unwrap()).abs() < 1e-9);
    }
}

#[test]
fn strided_views_and_every_storage_type_read_exactly_in_both_formats() {
    let want: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("views.json")).unwrap()).unwrap();
    for file in ["views.pth", "views_legacy.pth"] {
        let got = tensors(file);
        let mut names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            want.keys().map(String::as_str).collect::<Vec<_>>(),
            "{file}"
        );
        for t in &got {
            let w = &want[&t.name];
            let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
            let values: Vec<f32> = serde_json::from_value(w["values"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{file} {}", t.name);
            assert_eq!(t.data, values, "{file} {}", t.name);
        }
    }
}

#[test]
fn checkpoints_that_carry_code_or_are_damaged_are_refused() {
    let evil = std::fs::read(dir().join("evil.pth")).unwrap();
    let e = read_tensor_file("evil.pth", &evil).unwrap_err().to_string();
    assert!(
        e.contains("refusing to call") && e.contains("system"),
        "{e}"
    );
    let good = std::fs::read(dir().join("heads_zip.pth")).unwrap();
    for cut in [good.len() / 2, good.len() - 30] {
        let e = read_tensor_file("cut.pth", &good[..cut])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.pth"), "{e}");
    }
    let legacy = std::fs::read(dir().join("alex.pth")).unwrap();
    let e = read_tensor_file("cut.pth", &legacy[..legacy.len() - 100])
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    assert!(read_tensor_file("text.pth", b"not a checkpoint at all").is_err());
}

#[test]
fn lpips_equals_the_lpips_package() {
    let (device, _) = gooddrag::device::cpu();
    let lpips = AlexLpips::new(&alexnet_trunk(), &tensors("alex.pth"), &device).unwrap();
    let exp = expected();
    let cases = exp["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (name, case) in cases {
        let a = image(&format!("{name}_a"));
        let b = image(&format!("{name}_b"));
        assert_eq!(
            (a.width, a.height),
            (
                case["width"].as_u64().unwrap() as usize,
                case["height"].as_u64().unwrap() as usize
            )
        );
        let (ta, tb) = if case["dragbench_if"] == true {
            let ta = if_input(&a, &device);
            let values = pollster::block_on(read_f32(ta.clone())).unwrap();
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            let want_sum = case["input_a_sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() < 1e-9 * values.len() as f64,
                "{name}: Σ {sum} vs {want_sum}"
            );
            for (i, w) in case["input_a_samples"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                let got = values[i * 9973];
                assert!(
                    (got as f64 - w.as_f64().unwrap()).abs() < 1e-7,
                    "{name} input [{}]: {got} vs {w}",
                    i * 9973
                );
            }
            (ta, if_input(&b, &device))
        } else {
            (
                gooddrag::eval::lpips::signed_unit(&a, &device),
                gooddrag::eval::lpips::signed_unit(&b, &device),
            )
        };
        let d = pollster::block_on(lpips.distance(ta.clone(), tb)).unwrap();
        close(
            d.total,
            case["lpips"].as_f64().unwrap(),
            &format!("{name} LPIPS"),
        );
        for (k, w) in case["per_layer"].as_array().unwrap().iter().enumerate() {
            close(
                d.per_layer[k],
                w.as_f64().unwrap(),
                &format!("{name} tap {k}"),
            );
        }
        let same = pollster::block_on(lpips.distance(ta.clone(), ta)).unwrap();
        assert_eq!(same.total, 0.0, "{name}: identical images");
    }
}

#[test]
fn lpips_refuses_images_it_cannot_compare() {
    let (device, _) = gooddrag::device::cpu();
    let lpips = AlexLpips::new(&alexnet_trunk(), &tensors("alex.pth"), &device).unwrap();
    let img = |w: usize, h: usize| RgbImage {
        width: w,
        height: h,
        rgb: vec![128; 3 * w * h],
    };
    let unit = |i: &RgbImage| gooddrag::eval::lpips::signed_unit(i, &device);
    let e = pollster::block_on(lpips.distance(unit(&img(64, 64)), unit(&img(64, 48)))).unwrap_err();
    assert!(e.to_string().contains("one size"), "{e}");
    let e = pollster::block_on(lpips.distance(unit(&img(31, 64)), unit(&img(31, 64)))).unwrap_err();
    assert!(e.to_string().contains("32×32"), "{e}");
    // A heads file given as the trunk: named, not a panic.
    match AlexLpips::new(&tensors("alex.pth"), &tensors("alex.pth"), &device) {
        Err(e) => assert!(e.to_string().contains("features.0.weight"), "{e}"),
        Ok(_) => panic!("a heads file was accepted as AlexNet"),
    }
}
