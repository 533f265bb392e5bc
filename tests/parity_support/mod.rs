//! Shared helpers of the network parity tests: the tiny SD 1.5 fixture model, its expected
//! outputs (tests/fixtures/tiny-sd/expected/*.safetensors, made by diffusers/transformers) and
//! the relative-error check.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::models::attention::DEFAULT_ATTENTION_BYTES;
use gooddrag::models::clip::{ClipTextConfig, ClipTextModel};
use gooddrag::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use gooddrag::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use gooddrag::tensor_io::{elementwise_mismatch, read_f32, relative_error};
use gooddrag::weights::load::{Component, load_safetensors_file};
use gooddrag::weights::{Dtype, Header, RawTensor, tensor_bytes, tensor_to_f32};

/// f32 parity tolerance (max abs diff / max abs of the reference), docs/ARCHITECTURE.md §6.
pub const F32_TOL: f32 = 1e-4;
/// fp16 weights widened to f32 vs the fp32 reference: weights carry ~5e-4 relative rounding,
/// which a few layers amplify; 1e-2 still catches any mis-loaded tensor (those give O(1)).
pub const F16_TOL: f32 = 1e-2;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd")
}

/// A tensor from an expected-outputs file.
pub struct Expected {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

/// Reads tests/fixtures/tiny-sd/expected/{name}.safetensors.
pub fn expected(name: &str) -> HashMap<String, Expected> {
    expected_file(
        &fixture_dir()
            .join("expected")
            .join(format!("{name}.safetensors")),
    )
}

/// Reads an expected-outputs safetensors file (f32 and i64 tensors; u8 images are read by
/// [`fixture_rgb`]) by tensor name.
pub fn expected_file(path: &std::path::Path) -> HashMap<String, Expected> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header =
        Header::parse_named(&name, &bytes, Some(bytes.len() as u64)).expect("expected file parses");
    let mut out = HashMap::new();
    for info in header.tensors() {
        if info.dtype == Dtype::U8 {
            continue; // images: `fixture_rgb`
        }
        let data = tensor_bytes(&header, info, 0, &bytes).expect("tensor bytes");
        let (f, i) = if info.dtype == Dtype::I64 {
            (
                Vec::new(),
                data.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        } else {
            (tensor_to_f32(info, data).expect("f32 data"), Vec::new())
        };
        out.insert(
            info.name.clone(),
            Expected {
                shape: info.shape.clone(),
                f32: f,
                i64: i,
            },
        );
    }
    // A fixture that lost its tensors would make every comparison over it vacuous.
    assert!(!out.is_empty(), "{}: no tensors", path.display());
    for (name, e) in &out {
        assert!(
            !e.f32.is_empty() || !e.i64.is_empty(),
            "{}: tensor `{name}` is empty",
            path.display()
        );
    }
    out
}

impl Expected {
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(self.f32.clone(), self.shape.clone()),
            device,
        )
    }
}

/// The bounds of one comparison (see [`check_values`]).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// `max|Δ| ≤ max_norm · max|ref|`.
    pub max_norm: f32,
    /// Element-wise absolute floor, in units of `rms(ref)`.
    pub atol_rms: f32,
    /// Element-wise relative part.
    pub rtol: f32,
}

impl From<f32> for Tolerance {
    /// The same `tol` for all three bounds (f32 comparisons).
    fn from(tol: f32) -> Self {
        Self {
            max_norm: tol,
            atol_rms: tol,
            rtol: tol,
        }
    }
}

/// fp16 weights against the fp32 reference: the weights differ (they are not a rounding of one
/// sum), so the output deviates everywhere by a few times the rounding of each layer; measured
/// up to 1.7·F16_TOL·rms element-wise (VAE decode). The element floor is 4·F16_TOL·rms, still
/// ~2.5× tighter than the max-norm bound on the decoded image (max ≈ 10·rms).
pub const F16_TOLERANCE: Tolerance = Tolerance {
    max_norm: F16_TOL,
    atol_rms: 4.0 * F16_TOL,
    rtol: F16_TOL,
};

/// Reads `t` back and checks it against `reference` (see [`check_values`]); returns the
/// max-norm relative error.
pub fn check<const D: usize>(
    what: &str,
    t: Tensor<D>,
    reference: &Expected,
    tol: impl Into<Tolerance>,
) -> f32 {
    assert_eq!(t.dims().to_vec(), reference.shape, "{what}: shape");
    let actual = pollster::block_on(read_f32(t)).expect("readback");
    check_values(what, &actual, &reference.f32, tol)
}

/// Two bounds: the max-norm `max|Δ| ≤ max_norm·max|ref|`, and element by element
/// `|Δ| ≤ atol_rms·rms(ref) + rtol·|ref|` (`numpy.allclose`); for f32, all three are `tol`.
/// The second is the stricter one wherever the reference has entries far below its largest:
/// a wrong small channel, bias or masked region passes the max-norm bound but not this one.
/// Its absolute floor is the reference's RMS, not zero, because f32 (and f16) rounding errors
/// are absolute in scale: an entry that is zero by cancellation has no relative accuracy.
pub fn check_values(
    what: &str,
    actual: &[f32],
    reference: &[f32],
    tol: impl Into<Tolerance>,
) -> f32 {
    let Tolerance {
        max_norm,
        atol_rms,
        rtol,
    } = tol.into();
    assert!(!reference.is_empty(), "{what}: empty reference");
    let err = relative_error(actual, reference);
    let rms = (reference.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
        / reference.len() as f64)
        .sqrt() as f32;
    let atol = atol_rms * rms;
    let mismatch = elementwise_mismatch(actual, reference, atol, rtol);
    eprintln!(
        "{what}: relative error {err:.3e}; element-wise (atol {atol:.2e}, rtol {rtol:.0e}): {}",
        mismatch.map_or("all within".to_string(), |m| format!("{} outside", m.count))
    );
    assert!(
        err <= max_norm,
        "{what}: relative error {err:e} > {max_norm:e}"
    );
    if let Some(m) = mismatch {
        panic!(
            "{what}: {} element(s) outside |Δ| ≤ {atol:.3e} + {rtol:.1e}·|ref|; worst at {}: {} vs {}",
            m.count, m.index, m.actual, m.reference
        );
    }
    err
}

fn weights_file(dir: &str, base: &str, fp16: bool) -> PathBuf {
    let name = if fp16 {
        format!("{base}.fp16.safetensors")
    } else {
        format!("{base}.safetensors")
    };
    fixture_dir().join(dir).join(name)
}

fn config(dir: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(dir).join("config.json")).expect("config.json")
}

pub fn load_unet(device: &Device, fp16: bool) -> UNet2DConditionModel {
    let cfg = UNet2DConditionConfig::from_json(&config("unet")).expect("unet config");
    let model = cfg
        .init(DEFAULT_ATTENTION_BYTES, device)
        .expect("unet builds");
    load_safetensors_file(
        model,
        Component::Unet,
        &weights_file("unet", "diffusion_pytorch_model", fp16),
    )
    .expect("unet weights load")
}

pub fn load_vae(device: &Device, fp16: bool) -> AutoencoderKL {
    let cfg = AutoencoderKLConfig::from_json(&config("vae")).expect("vae config");
    let model = cfg
        .init(DEFAULT_ATTENTION_BYTES, device)
        .expect("vae builds");
    load_safetensors_file(
        model,
        Component::Vae,
        &weights_file("vae", "diffusion_pytorch_model", fp16),
    )
    .expect("vae weights load")
}

pub fn load_clip(device: &Device, fp16: bool) -> ClipTextModel {
    let cfg = ClipTextConfig::from_json(&config("text_encoder")).expect("clip config");
    let model = cfg
        .init(DEFAULT_ATTENTION_BYTES, device)
        .expect("clip builds");
    load_safetensors_file(
        model,
        Component::TextEncoder,
        &weights_file("text_encoder", "model", fp16),
    )
    .expect("clip weights load")
}

/// A safetensors file of `(name, dtype, shape, bytes)` tensors, by the library's writer.
pub fn write_safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let raw: Vec<RawTensor<'_>> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| RawTensor {
            name: name.clone(),
            dtype: *Dtype::ALL
                .iter()
                .find(|d| d.as_str() == *dtype)
                .unwrap_or_else(|| panic!("dtype {dtype}")),
            shape: shape.clone(),
            data: std::borrow::Cow::Borrowed(data),
        })
        .collect();
    gooddrag::weights::write_safetensors(&raw, &Default::default()).expect("writes")
}

/// Every tensor of a safetensors file: (name, dtype string, shape, bytes).
pub fn read_all(bytes: &[u8]) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    let header = Header::parse(bytes, Some(bytes.len() as u64)).expect("parses");
    header
        .tensors()
        .iter()
        .map(|info| {
            let data = tensor_bytes(&header, info, 0, bytes)
                .expect("bytes")
                .to_vec();
            (
                info.name.clone(),
                info.dtype.as_str(),
                info.shape.clone(),
                data,
            )
        })
        .collect()
}

/// An RGB8 image stored as a U8 `[H, W, 3]` tensor `name` of a fixture file.
pub fn fixture_rgb(path: &std::path::Path, name: &str) -> gooddrag::image::RgbImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = Header::parse(&bytes, Some(bytes.len() as u64)).expect("fixture parses");
    let info = header.tensor(name).expect("image in fixture");
    assert_eq!(
        (info.dtype, info.shape.len(), info.shape[2]),
        (Dtype::U8, 3, 3)
    );
    gooddrag::image::RgbImage {
        height: info.shape[0],
        width: info.shape[1],
        rgb: tensor_bytes(&header, info, 0, &bytes).unwrap().to_vec(),
    }
}

/// tests/fixtures/lpips (scripts/make_lpips_fixtures.py).
pub fn lpips_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lpips")
}

/// The AlexNet trunk scripts/make_lpips_fixtures.py gave the `lpips` package: torchvision's
/// `features.N.weight/bias` with the closed-form deterministic values, written to a
/// safetensors file and read back (the path a user's converted file takes).
pub fn alexnet_trunk_file() -> Vec<u8> {
    let mut tensors = Vec::new();
    for (i, shape) in [
        (0, [64, 3, 11, 11]),
        (3, [192, 64, 5, 5]),
        (6, [384, 192, 3, 3]),
        (8, [256, 384, 3, 3]),
        (10, [256, 256, 3, 3]),
    ] {
        for (kind, s) in [("weight", shape.to_vec()), ("bias", vec![shape[0]])] {
            let name = format!("features.{i}.{kind}");
            tensors.push(gooddrag::weights::F32Tensor {
                data: gooddrag::weights::deterministic::deterministic_tensor(&name, &s),
                name,
                shape: s,
            });
        }
    }
    gooddrag::weights::write_f32_safetensors(&tensors, &Default::default()).unwrap()
}

/// The rows of a bench/eval `report.jsonl` in `dir`.
pub fn report_rows(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("report.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks a `gooddrag bench-synthetic --json` report of the tiny architecture at latent 8 (the
/// output `out` of one run on `device`, with `checkpointing` and backward `plan`): every phase
/// of the default edit, run as often as the official schedule says, memory reported on wgpu,
/// the extrapolation covering its largest phase, and the counted work in UNet forwards.
pub fn check_edit_bench(out: &serde_json::Value, device: &str, checkpointing: bool, plan: &str) {
    let report = &out["report"];
    assert_eq!(report["latentSize"], 8);
    assert_eq!(report["checkpointing"], checkpointing);
    assert_eq!(report["backwardPlan"], plan);
    assert!(report["model"].as_str().unwrap().contains("tiny-sd"));
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "CLIP text encoder",
        "VAE encode",
        "LoRA step",
        "inversion",
        "reference",
        "motion-supervision",
        "tracking",
        "MasaCtrl",
        "VAE decode",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} in {names:?}"
        );
    }
    // How often the default 512×512 edit runs each phase, from the official schedule
    // (docs/ALGORITHM.md §1.18), written here independently of the benchmark's code.
    let schedule = [
        ("CLIP text encoder", 1),
        ("VAE encode", 1 + 4),
        ("LoRA step", 4 * 70),
        ("inversion", 38),
        ("reference", 7),
        ("motion-supervision", 210),
        ("tracking", 77),
        ("MasaCtrl", 31),
        ("VAE decode", 1),
    ];
    let mut largest_term: f64 = 0.0;
    for p in phases {
        let name = p["name"].as_str().unwrap();
        let millis = p["millis"].as_f64().unwrap();
        assert!(millis > 0.0, "{p}");
        let count = p["countInEdit"].as_u64().unwrap();
        let (_, want) = schedule
            .iter()
            .find(|(key, _)| name.contains(key))
            .unwrap_or_else(|| panic!("unexpected phase {name}"));
        assert_eq!(count, *want, "{name}: runs per edit");
        largest_term = largest_term.max(millis * count as f64);
        if device == "wgpu" {
            let largest = p["memory"]["largestSlicedAllocBytes"].as_u64().unwrap();
            let limit = out["adapter"]["maxStorageBufferBindingSize"]
                .as_u64()
                .unwrap();
            assert!(largest > 0 && largest <= limit, "{p}");
            assert!(p["memory"]["reservedBytes"].as_u64().unwrap() > 0);
        } else {
            assert!(
                p["memory"].is_null(),
                "the CPU device keeps no allocator report"
            );
        }
    }
    // The extrapolation covers at least its largest phase.
    let reported = report["extrapolatedTotalMillis"].as_f64().unwrap();
    assert!(reported >= largest_term, "{reported} < {largest_term}");
    // Counted work in UNet forward passes: an inversion or reference step is one; a batch-2
    // denoising step two (mutual self-attention costs what two self-attentions do); a
    // gradient step is its recorded forward plus the recomputed one (the time embedding is
    // not recomputed: just under two); tracking runs no UNet.
    let fwd = |key: &str| {
        let p = phases
            .iter()
            .find(|p| p["name"].as_str().unwrap().contains(key))
            .unwrap();
        assert!(p["flops"].as_u64().unwrap() > 0 || key == "tracking", "{p}");
        p["unetForwardEquivalents"].as_f64().unwrap()
    };
    assert_eq!(fwd("inversion"), 1.0);
    assert_eq!(fwd("reference"), 1.0);
    assert_eq!(fwd("MasaCtrl"), 2.0);
    assert_eq!(fwd("tracking"), 0.0);
    for key in ["motion-supervision", "LoRA step"] {
        let f = fwd(key);
        match plan {
            "autodiff" => assert_eq!(f, 1.0, "{key}: nothing recomputed"),
            "recompute" => assert!((1.9..2.0).contains(&f), "{key}: {f}"),
            _ => assert!(f > 1.0 && f < 2.0, "{key}: {f}"),
        }
    }
    let total: f64 = phases
        .iter()
        .map(|p| p["unetForwardEquivalents"].as_f64().unwrap() * p["countInEdit"].as_f64().unwrap())
        .sum();
    let reported = report["totalUnetForwardEquivalents"].as_f64().unwrap();
    assert!(
        (reported - total).abs() < 1e-9 * total,
        "{reported} vs {total}"
    );
}

/// A smooth test photo: a bright disc on a gradient (the editing-core tests' input).
pub fn disc_photo(width: usize, height: usize) -> gooddrag::image::RgbImage {
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let (cx, cy) = (width as f64 * 0.4, height as f64 * 0.5);
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let disc = if d < width.min(height) as f64 * 0.2 {
                200.0
            } else {
                0.0
            };
            rgb.push((40.0 + disc + 50.0 * x as f64 / width as f64) as u8);
            rgb.push((60.0 + disc * 0.5) as u8);
            rgb.push((90.0 + 80.0 * y as f64 / height as f64) as u8);
        }
    }
    gooddrag::image::RgbImage { width, height, rgb }
}

/// A drag-style loss on a UNet pass: an L1 term on the features, an L1 term on the noise
/// prediction and a quadratic one on the latent (GoodDrag's loss reads all three,
/// docs/ALGORITHM.md §1.12).
pub fn drag_style_loss(sample: &Tensor<4>, eps: &Tensor<4>, features: &Tensor<4>) -> Tensor<1> {
    let f = (features.clone() - 0.1).abs().mean();
    let e = (eps.clone() * 0.5).abs().sum() * 0.01;
    let z = sample.clone().powi_scalar(2).mean();
    f + e + z
}

/// `unet.forward_backward` of [`drag_style_loss`] with the features of `up_blocks[2]`.
pub fn drag_style_forward_backward(
    unet: &UNet2DConditionModel,
    z: Tensor<4>,
    timestep: f32,
    ehs: Tensor<3>,
) -> gooddrag::exec::recompute::ForwardBackward {
    unet.forward_backward(
        z,
        &[timestep],
        ehs,
        Some(2),
        &mut |x| {
            Ok(drag_style_loss(
                &x.sample,
                &x.noise_pred,
                x.features.as_ref().unwrap(),
            ))
        },
        &mut |_| {},
    )
    .unwrap()
}

/// The default `DragConfig` with a small LoRA for 64-px edits (rank 4, 4 steps, 64 px).
pub fn small_lora_config() -> gooddrag::drag::DragConfig {
    gooddrag::drag::DragConfig {
        lora: gooddrag::lora::LoraConfig {
            rank: 4,
            steps: 4,
            resolution: 64,
            ..Default::default()
        },
        ..Default::default()
    }
}
