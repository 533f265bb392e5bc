//! Writing safetensors files (LoRA weights, edit dumps, test fixtures) with the `safetensors`
//! crate itself (the reference implementation, already in burn's dependency tree): an 8-byte
//! little-endian header length, the JSON header padded with spaces to 8-byte alignment, then
//! each tensor's bytes. The crate orders tensors by dtype alignment, then name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use ::safetensors::tensor::{Dtype as StDtype, TensorView};

use super::Dtype;
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

/// One tensor of any dtype to write, as its little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor<'a> {
    /// Key in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Little-endian element bytes: `shape.product() × dtype size`.
    pub data: Cow<'a, [u8]>,
}

fn crate_dtype(dtype: Dtype) -> StDtype {
    match dtype {
        Dtype::Bool => StDtype::BOOL,
        Dtype::U8 => StDtype::U8,
        Dtype::I8 => StDtype::I8,
        Dtype::F8E5M2 => StDtype::F8_E5M2,
        Dtype::F8E4M3 => StDtype::F8_E4M3,
        Dtype::I16 => StDtype::I16,
        Dtype::U16 => StDtype::U16,
        Dtype::F16 => StDtype::F16,
        Dtype::BF16 => StDtype::BF16,
        Dtype::I32 => StDtype::I32,
        Dtype::U32 => StDtype::U32,
        Dtype::F32 => StDtype::F32,
        Dtype::I64 => StDtype::I64,
        Dtype::U64 => StDtype::U64,
        Dtype::F64 => StDtype::F64,
    }
}

/// Serialises `tensors` with string `metadata`. Names must be unique and sizes must match
/// their shapes; the error names the offending tensor.
pub fn write_safetensors(
    tensors: &[RawTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let bad = |name: &str, why: String| Error::InvalidInput(format!("tensor `{name}`: {why}"));
    let mut views = Vec::with_capacity(tensors.len());
    let mut names = std::collections::BTreeSet::new();
    for t in tensors {
        if !names.insert(t.name.as_str()) || t.name == "__metadata__" {
            return Err(bad(&t.name, "the name is used twice or reserved".into()));
        }
        let view =
            TensorView::new(crate_dtype(t.dtype), t.shape.clone(), &t.data).map_err(|e| {
                bad(
                    &t.name,
                    format!("shape {:?} does not fit its data: {e}", t.shape),
                )
            })?;
        views.push((t.name.as_str(), view));
    }
    let metadata: Option<HashMap<String, String>> = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    ::safetensors::serialize(views, metadata)
        .map_err(|e| Error::InvalidInput(format!("safetensors: {e}")))
}

/// Serialises f32 `tensors` (little-endian) with string `metadata`; see [`write_safetensors`].
pub fn write_f32_safetensors(
    tensors: &[F32Tensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let raw: Vec<RawTensor<'_>> = tensors
        .iter()
        .map(|t| RawTensor {
            name: t.name.clone(),
            dtype: Dtype::F32,
            shape: t.shape.clone(),
            data: Cow::Owned(t.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        })
        .collect();
    write_safetensors(&raw, metadata)
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
