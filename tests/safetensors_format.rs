//! Compatibility with the reference safetensors writer: `tests/fixtures/safetensors/small.safetensors`
//! was written by `safetensors==0.8.0` (`safetensors.numpy.save_file`, see `make_fixture.py` next to
//! it), with its header padding and its data order (by dtype alignment, not by name);
//! `expected.json` holds what Python read back.

use std::collections::BTreeMap;

use gooddrag::weights::{
    Dtype, Header, MAX_CHUNK_BYTES, chunk_tensors, plan_chunks, tensor_bytes, tensor_to_f32,
};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/safetensors");

fn fixture() -> (Vec<u8>, Value) {
    let bytes = std::fs::read(format!("{DIR}/small.safetensors")).expect("fixture file");
    let expected = std::fs::read_to_string(format!("{DIR}/expected.json")).expect("expected.json");
    (
        bytes,
        serde_json::from_str(&expected).expect("expected.json is JSON"),
    )
}

/// Expected float value: a number, or "nan" / "inf" / "-inf".
fn expected_f32(v: &Value) -> f32 {
    match v {
        Value::String(s) if s == "nan" => f32::NAN,
        Value::String(s) if s == "inf" => f32::INFINITY,
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        other => other.as_f64().expect("number") as f32,
    }
}

fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Decodes little-endian i64 data.
fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

#[test]
fn reference_writer_header_parses_with_its_padding_and_offsets() {
    let (bytes, expected) = fixture();
    let first8 = &bytes[..8];
    let json_len = Header::json_len(first8).unwrap();
    assert_eq!(json_len, expected["json_len"].as_u64().unwrap());
    assert_eq!(
        json_len % 8,
        0,
        "the reference writer pads the header to 8 bytes"
    );
    let header_bytes = &bytes[..(8 + json_len) as usize];
    let h =
        Header::parse_named("small.safetensors", header_bytes, Some(bytes.len() as u64)).unwrap();
    assert_eq!(h.data_end(), expected["file_len"].as_u64().unwrap());
    let meta: BTreeMap<String, String> =
        serde_json::from_value(expected["metadata"].clone()).unwrap();
    assert_eq!(h.metadata(), &meta);
    let tensors = expected["tensors"].as_object().unwrap();
    assert_eq!(h.tensors().len(), tensors.len());
    for (name, e) in tensors {
        let t = h.tensor(name).unwrap();
        assert_eq!(t.dtype.as_str(), e["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{name}");
        let offsets: [u64; 2] = serde_json::from_value(e["data_offsets"].clone()).unwrap();
        assert_eq!(
            [t.start, t.end],
            offsets.map(|o| o + 8 + json_len),
            "{name}"
        );
    }
}

#[test]
fn reference_writer_values_read_back_exactly_through_chunks() {
    let (bytes, expected) = fixture();
    let h = Header::parse(&bytes, Some(bytes.len() as u64)).unwrap();
    for limit in [1, 64, MAX_CHUNK_BYTES] {
        let mut seen = 0;
        for chunk in plan_chunks(&h, limit) {
            let data = &bytes[chunk.start as usize..chunk.end as usize];
            for (t, b) in chunk_tensors(&h, &chunk, data).unwrap() {
                check_values(t, b, &expected["tensors"][&t.name]);
                seen += 1;
            }
        }
        assert_eq!(seen, h.tensors().len(), "limit {limit}");
    }
}

fn check_values(t: &gooddrag::weights::TensorInfo, bytes: &[u8], e: &Value) {
    let want = e["values"].as_array().unwrap();
    match t.dtype {
        Dtype::I64 => {
            let want: Vec<i64> = want.iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(i64s(bytes), want, "{}", t.name);
        }
        _ => {
            let got = tensor_to_f32(t, bytes).unwrap();
            assert_eq!(got.len(), want.len(), "{}", t.name);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(same(*g, expected_f32(w)), "{}[{i}]: {g} vs {w}", t.name);
            }
        }
    }
}

#[test]
fn f16_special_values_from_numpy_convert_exactly() {
    let (bytes, _) = fixture();
    let h = Header::parse(&bytes, None).unwrap();
    let t = h.tensor("special_values").unwrap();
    let v = tensor_to_f32(t, tensor_bytes(&h, t, 0, &bytes).unwrap()).unwrap();
    assert_eq!(
        &v[..6],
        &[
            1.0,
            -2.0,
            65504.0,
            2f32.powi(-24),
            f32::INFINITY,
            f32::NEG_INFINITY
        ]
    );
    assert!(v[6].is_nan() && v[7] == 0.0 && v[7].is_sign_negative());
}

#[test]
fn truncated_reference_file_is_reported_naming_the_last_tensor() {
    let (bytes, _) = fixture();
    let short = &bytes[..bytes.len() - 10];
    let msg = Header::parse_named("small.safetensors", short, Some(short.len() as u64))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`small.safetensors`") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(msg.contains("tensor `unet.conv_in.weight`"), "{msg}");
}
