//! Writing safetensors files (LoRA weights, edit dumps): an 8-byte little-endian header
//! length, the JSON header padded with spaces to 8-byte alignment, then the f32 data of each
//! tensor in the order given. Format: huggingface/safetensors `docs/source/index.mdx`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// One f32 tensor to write: name, shape (row-major), values.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    /// Key in the file.
    pub name: String,
    /// Shape; the product must equal `data.len()`.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Serialises `tensors` (f32, little-endian) with string `metadata`. Names must be unique.
pub fn write_f32_safetensors(
    tensors: &[F32Tensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return Err(Error::InvalidInput(format!(
                "tensor `{}`: shape {:?} holds {n} values but {} were given",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        let entry = serde_json::json!({
            "dtype": "F32",
            "shape": t.shape,
            "data_offsets": [offset, offset + 4 * n],
        });
        if header.insert(t.name.clone(), entry).is_some() || t.name == "__metadata__" {
            return Err(Error::InvalidInput(format!(
                "tensor name `{}` is used twice or reserved",
                t.name
            )));
        }
        offset += 4 * n;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::InvalidInput(format!("safetensors header: {e}")))?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors {
        for v in &t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{Header, tensor_bytes, tensor_to_f32};

    #[test]
    fn written_file_parses_and_round_trips() {
        let tensors = vec![
            F32Tensor {
                name: "b".into(),
                shape: vec![2, 3],
                data: vec![1.0, -2.0, 3.5, 0.0, f32::MIN_POSITIVE, 7.25],
            },
            F32Tensor {
                name: "a.scalar".into(),
                shape: vec![],
                data: vec![0.5],
            },
        ];
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = write_f32_safetensors(&tensors, &meta).unwrap();
        let header = Header::parse(&bytes, Some(bytes.len() as u64)).unwrap();
        assert_eq!(
            header.metadata().get("format").map(String::as_str),
            Some("pt")
        );
        for t in &tensors {
            let info = header.tensor(&t.name).unwrap();
            assert_eq!(info.shape, t.shape);
            let data =
                tensor_to_f32(info, tensor_bytes(&header, info, 0, &bytes).unwrap()).unwrap();
            assert_eq!(data, t.data);
        }
    }

    #[test]
    fn shape_mismatch_and_duplicates_are_errors() {
        let bad = F32Tensor {
            name: "x".into(),
            shape: vec![3],
            data: vec![1.0],
        };
        assert!(write_f32_safetensors(&[bad], &BTreeMap::new()).is_err());
        let t = F32Tensor {
            name: "x".into(),
            shape: vec![1],
            data: vec![1.0],
        };
        assert!(write_f32_safetensors(&[t.clone(), t], &BTreeMap::new()).is_err());
    }
}
