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
use gooddrag::probe::{read_f32, relative_error};
use gooddrag::weights::load::{Component, load_safetensors_file};
use gooddrag::weights::{Dtype, Header, tensor_bytes, tensor_to_f32};

/// f32 parity tolerance (max abs diff / max abs of the reference), DESIGN.md.
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
    let path = fixture_dir()
        .join("expected")
        .join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header =
        Header::parse_named(name, &bytes, Some(bytes.len() as u64)).expect("expected file parses");
    let mut out = HashMap::new();
    for info in header.tensors() {
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

/// Reads `t` back and checks it against `reference` within `tol`; returns the relative error.
pub fn check<const D: usize>(what: &str, t: Tensor<D>, reference: &Expected, tol: f32) -> f32 {
    assert_eq!(t.dims().to_vec(), reference.shape, "{what}: shape");
    let actual = pollster::block_on(read_f32(t)).expect("readback");
    let err = relative_error(&actual, &reference.f32);
    eprintln!("{what}: relative error {err:.3e}");
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
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

/// A minimal safetensors writer (F32/I64 tensors) for tests that need modified files.
pub fn write_safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut json = String::from("{");
    let mut offset = 0usize;
    for (i, (name, dtype, shape, data)) in tensors.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
            offset + data.len()
        ));
        offset += data.len();
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
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
