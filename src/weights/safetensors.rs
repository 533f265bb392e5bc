//! The safetensors header: tensor names, dtypes, shapes and byte ranges of a weights file.
//!
//! Format (huggingface/safetensors, `docs/source/index.mdx` and `safetensors/src/tensor.rs`):
//! an 8-byte little-endian `u64` N, then N bytes of UTF-8 JSON, then the tensor data. The JSON maps
//! each tensor name to `{"dtype": "F16", "shape": [320, 4, 3, 3], "data_offsets": [begin, end]}`
//! (offsets relative to the start of the data, i.e. byte `8 + N`), plus an optional
//! `"__metadata__"` map of strings. Writers pad the JSON with spaces to a multiple of 8 bytes.
//!
//! Validation follows the reference reader: the header is at most 100 MB and starts with `{`,
//! every tensor's byte length is `product(shape) * dtype size`, and the tensors, sorted by offset,
//! cover the data exactly once — no gap, no overlap — up to the end of the file. The order of the
//! keys in the JSON does not matter (a JSON object has none).
//!
//! Only the header is parsed here; tensor data is read chunk by chunk (see `plan.rs`, `reader.rs`),
//! so a 1.7 GB UNet never has to sit in memory at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Bytes of the little-endian `u64` that precedes the JSON header.
pub const PREFIX_BYTES: u64 = 8;

/// Largest JSON header accepted, as in the reference reader (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Key of the free-form string map in the header; never a tensor name.
pub const METADATA_KEY: &str = "__metadata__";

/// Element type of a tensor, as spelled in the header (`"F16"`, `"BF16"`, …).
///
/// The sub-byte and exotic types of newer safetensors versions (`F4`, `F6_*`, `F8_E8M0`, `C64`)
/// are not supported and are reported as unknown dtypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// Boolean, one byte per element.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits and 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits and 3 mantissa bits.
    F8E4M3,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE 754 single precision.
    F32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE 754 double precision.
    F64,
}

impl Dtype {
    /// Every supported dtype, for messages and tests.
    pub const ALL: [Dtype; 15] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::I64,
        Dtype::U64,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// The header spelling, e.g. `"BF16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::F64 => "F64",
        }
    }

    /// Parses the header spelling; `None` for dtypes this reader does not know.
    pub fn from_header_str(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tensor of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Weight key, e.g. `down_blocks.0.resnets.0.conv1.weight`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first (row-major data); `[]` is a scalar.
    pub shape: Vec<usize>,
    /// First byte of the data, absolute in the file (`8 + json_len + data_offsets[0]`).
    pub start: u64,
    /// One past the last byte of the data, absolute in the file.
    pub end: u64,
}

impl TensorInfo {
    /// Number of elements (`product(shape)`; 1 for a scalar).
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of data (`end - start`).
    pub fn len_bytes(&self) -> u64 {
        self.end - self.start
    }

    /// Absolute byte range in the file.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// A parsed and validated safetensors header.
///
/// Tensors are sorted by offset and cover `data_start()..data_end()` exactly once.
#[derive(Clone, Debug)]
pub struct Header {
    file: String,
    json_len: u64,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

/// One tensor entry of the header JSON, before validation.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl Header {
    /// Length N of the JSON header, read from the first 8 bytes of the file.
    ///
    /// `first8` may be longer than 8 bytes (only the first 8 are read). Fails when fewer than 8
    /// bytes are given or N exceeds [`MAX_HEADER_BYTES`].
    pub fn json_len(first8: &[u8]) -> Result<u64> {
        json_len_of("", first8)
    }

    /// Parses and validates the header of an unnamed file; see [`Header::parse_named`].
    pub fn parse(bytes: &[u8], file_len: Option<u64>) -> Result<Header> {
        Header::parse_named("", bytes, file_len)
    }

    /// Parses and validates the header.
    ///
    /// * `file` — name shown in error messages (e.g. `unet/diffusion_pytorch_model.fp16.safetensors`);
    ///   `""` for "the weights file".
    /// * `bytes` — the start of the file: at least `8 + json_len` bytes (more is fine and ignored,
    ///   so a fixed-size first Range request can be passed as is).
    /// * `file_len` — total file size in bytes when known (HTTP `Content-Range`, `File.size`);
    ///   then a truncated file, or trailing bytes after the last tensor, is an error.
    pub fn parse_named(file: &str, bytes: &[u8], file_len: Option<u64>) -> Result<Header> {
        let json_len = json_len_of(file, bytes)?;
        let json = header_json(file, bytes, json_len, file_len)?;
        let (mut tensors, metadata) = parse_entries(file, json, PREFIX_BYTES + json_len)?;
        tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
        let data_start = PREFIX_BYTES + json_len;
        check_coverage(file, &tensors, data_start)?;
        if let Some(len) = file_len {
            check_file_len(file, &tensors, data_start, len)?;
        }
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Header {
            file: file.to_string(),
            json_len,
            tensors,
            by_name,
            metadata,
        })
    }

    /// The file name given to [`Header::parse_named`] (`""` if none).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The file as shown in error messages.
    pub fn file_label(&self) -> String {
        file_label(&self.file)
    }

    /// Length N of the JSON header in bytes (padding included).
    pub fn json_byte_len(&self) -> u64 {
        self.json_len
    }

    /// Absolute offset of the first data byte (`8 + N`).
    pub fn data_start(&self) -> u64 {
        PREFIX_BYTES + self.json_len
    }

    /// Absolute offset one past the last data byte: the size a complete file has.
    pub fn data_end(&self) -> u64 {
        self.tensors.last().map_or(self.data_start(), |t| t.end)
    }

    /// All tensors, sorted by offset.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor called `name`, or [`Error::MissingTensor`] naming file and tensor.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.get(name).ok_or_else(|| Error::MissingTensor {
            file: self.file_label(),
            tensor: name.to_string(),
        })
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

/// How a file is named in messages: "`name`", or "the weights file" when unnamed.
pub(crate) fn file_label(file: &str) -> String {
    if file.is_empty() {
        "the weights file".to_string()
    } else {
        format!("`{file}`")
    }
}

fn invalid(file: &str, problem: impl Into<String>) -> Error {
    Error::Safetensors {
        file: file_label(file),
        problem: problem.into(),
    }
}

fn json_len_of(file: &str, bytes: &[u8]) -> Result<u64> {
    let Some(prefix) = bytes.get(..PREFIX_BYTES as usize) else {
        return Err(invalid(
            file,
            format!(
                "it has only {} bytes, fewer than the 8-byte header length",
                bytes.len()
            ),
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(prefix);
    let n = u64::from_le_bytes(le);
    if n > MAX_HEADER_BYTES {
        return Err(invalid(
            file,
            format!("its header claims {n} bytes, more than the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    Ok(n)
}

/// The JSON text of the header, checked for presence, UTF-8 and a leading `{`.
fn header_json<'b>(
    file: &str,
    bytes: &'b [u8],
    json_len: u64,
    file_len: Option<u64>,
) -> Result<&'b str> {
    let header_end = PREFIX_BYTES + json_len;
    if let Some(len) = file_len.filter(|&len| len < header_end) {
        return Err(invalid(
            file,
            format!(
                "the file is truncated: its header needs {header_end} bytes but the file has {len}"
            ),
        ));
    }
    let Some(raw) = bytes.get(PREFIX_BYTES as usize..header_end as usize) else {
        return Err(invalid(
            file,
            format!(
                "the header needs {header_end} bytes but only {} were read",
                bytes.len()
            ),
        ));
    };
    let json = std::str::from_utf8(raw)
        .map_err(|e| invalid(file, format!("the header is not UTF-8 text ({e})")))?;
    if !json.starts_with('{') {
        return Err(invalid(file, "the header does not start with `{`"));
    }
    Ok(json)
}

/// Tensor entries (unsorted, absolute offsets) and metadata from the header JSON.
fn parse_entries(
    file: &str,
    json: &str,
    data_start: u64,
) -> Result<(Vec<TensorInfo>, BTreeMap<String, String>)> {
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| invalid(file, format!("the header is not a valid JSON object ({e})")))?;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = BTreeMap::new();
    for (name, value) in entries {
        if name == METADATA_KEY {
            metadata = serde_json::from_value(value).map_err(|e| {
                invalid(
                    file,
                    format!("`{METADATA_KEY}` is not a map of strings ({e})"),
                )
            })?;
        } else {
            tensors.push(parse_tensor(file, name, value, data_start)?);
        }
    }
    Ok((tensors, metadata))
}

/// One tensor entry, with dtype and size checked and offsets made absolute.
fn parse_tensor(
    file: &str,
    name: String,
    value: serde_json::Value,
    data_start: u64,
) -> Result<TensorInfo> {
    let raw: RawTensor = serde_json::from_value(value)
        .map_err(|e| invalid(file, format!("tensor `{name}` has a malformed entry ({e})")))?;
    let Some(dtype) = Dtype::from_header_str(&raw.dtype) else {
        return Err(invalid(
            file,
            format!(
                "tensor `{name}` has dtype `{}`, which GoodDrag does not know (known: {})",
                raw.dtype,
                Dtype::ALL.map(Dtype::as_str).join(", ")
            ),
        ));
    };
    let (begin, end) = raw.data_offsets;
    if end < begin {
        return Err(invalid(
            file,
            format!("tensor `{name}` has data_offsets [{begin}, {end}] that end before they begin"),
        ));
    }
    let expected = expected_len(&raw.shape, dtype).ok_or_else(|| {
        invalid(
            file,
            format!(
                "tensor `{name}` has a shape {:?} too large to address",
                raw.shape
            ),
        )
    })?;
    if expected != end - begin {
        return Err(invalid(
            file,
            format!(
                "tensor `{name}` ({dtype}, shape {:?}) needs {expected} bytes but its data_offsets \
                 [{begin}, {end}] span {}",
                raw.shape,
                end - begin
            ),
        ));
    }
    let start = data_start.checked_add(begin);
    let end = data_start.checked_add(end);
    let (Some(start), Some(end)) = (start, end) else {
        return Err(invalid(
            file,
            format!("tensor `{name}` has data_offsets beyond 2^64 bytes"),
        ));
    };
    Ok(TensorInfo {
        name,
        dtype,
        shape: raw.shape,
        start,
        end,
    })
}

/// `product(shape) * dtype size`, `None` on overflow.
fn expected_len(shape: &[usize], dtype: Dtype) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?
        .checked_mul(dtype.size_bytes())
}

/// Sorted tensors must tile the data from `data_start` without gaps or overlaps.
fn check_coverage(file: &str, tensors: &[TensorInfo], data_start: u64) -> Result<()> {
    let mut cursor = data_start;
    let mut previous: Option<&TensorInfo> = None;
    for t in tensors {
        if t.start != cursor {
            return Err(invalid(
                file,
                coverage_problem(previous, t, cursor, data_start),
            ));
        }
        cursor = t.end;
        previous = Some(t);
    }
    Ok(())
}

fn coverage_problem(
    previous: Option<&TensorInfo>,
    t: &TensorInfo,
    cursor: u64,
    data_start: u64,
) -> String {
    let rel = |x: u64| x - data_start;
    match previous {
        None => format!(
            "the data does not start with a tensor: tensor `{}` begins at data offset {} instead of 0",
            t.name,
            rel(t.start)
        ),
        Some(p) if t.start > cursor => format!(
            "there are {} unused bytes between tensor `{}` (ends at data offset {}) and tensor `{}` \
             (begins at {})",
            t.start - cursor,
            p.name,
            rel(p.end),
            t.name,
            rel(t.start)
        ),
        Some(p) => format!(
            "tensor `{}` (data offsets [{}, {}]) overlaps tensor `{}` (data offsets [{}, {}])",
            t.name,
            rel(t.start),
            rel(t.end),
            p.name,
            rel(p.start),
            rel(p.end)
        ),
    }
}

/// The data must end exactly at the end of the file.
fn check_file_len(file: &str, tensors: &[TensorInfo], data_start: u64, len: u64) -> Result<()> {
    let end = tensors.last().map_or(data_start, |t| t.end);
    let last = tensors.last().map_or_else(
        || "the header".to_string(),
        |t| format!("tensor `{}`", t.name),
    );
    if len < end {
        return Err(invalid(
            file,
            format!(
                "the file is truncated: {last} ends at byte {end} but the file has only {len} bytes"
            ),
        ));
    }
    if len > end {
        return Err(invalid(
            file,
            format!(
                "the file has {} unexpected bytes after {last}, which ends at byte {end}",
                len - end
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One tensor for [`serialize`]: name, dtype spelling, shape, data.
    pub(crate) struct T<'a>(pub &'a str, pub &'a str, pub Vec<usize>, pub Vec<u8>);

    /// A minimal safetensors writer: tensors in the given order, header padded to 8 bytes
    /// like the reference writer.
    pub(crate) fn serialize(tensors: &[T], metadata: Option<&[(&str, &str)]>) -> Vec<u8> {
        let mut entries = serde_json::Map::new();
        if let Some(meta) = metadata {
            let m: serde_json::Map<_, _> = meta
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            entries.insert(METADATA_KEY.into(), m.into());
        }
        let mut offset = 0usize;
        let mut data = Vec::new();
        for T(name, dtype, shape, bytes) in tensors {
            let end = offset + bytes.len();
            entries.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
            );
            data.extend_from_slice(bytes);
            offset = end;
        }
        with_header(&serde_json::Value::Object(entries).to_string(), &data)
    }

    /// Prefix + JSON (space-padded to 8 bytes) + data.
    pub(crate) fn with_header(json: &str, data: &[u8]) -> Vec<u8> {
        let mut json = json.as_bytes().to_vec();
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(data);
        out
    }

    fn f16s(n: usize) -> Vec<u8> {
        (0..n as u16).flat_map(|i| i.to_le_bytes()).collect()
    }

    fn sample() -> Vec<u8> {
        serialize(
            &[
                T("b.weight", "F16", vec![2, 3], f16s(6)),
                T("a.bias", "F32", vec![3], vec![0; 12]),
                T("step", "I64", vec![], vec![7, 0, 0, 0, 0, 0, 0, 0]),
                T("empty", "BF16", vec![0, 4], vec![]),
                T("mask", "BOOL", vec![5], vec![1, 0, 1, 0, 1]),
            ],
            Some(&[("format", "pt")]),
        )
    }

    fn err_text(bytes: &[u8], file_len: Option<u64>) -> String {
        match Header::parse_named("unet.safetensors", bytes, file_len) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn header_round_trips_names_dtypes_shapes_and_offsets() {
        let bytes = sample();
        let h = Header::parse(&bytes, Some(bytes.len() as u64)).unwrap();
        assert_eq!(h.data_start() % 8, 0);
        assert_eq!(h.data_end(), bytes.len() as u64);
        let names: Vec<_> = h.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b.weight", "a.bias", "step", "empty", "mask"]);
        let w = h.tensor("b.weight").unwrap();
        assert_eq!(
            (w.dtype, w.shape.clone(), w.start, w.end),
            (Dtype::F16, vec![2, 3], h.data_start(), h.data_start() + 12)
        );
        assert_eq!(&bytes[w.start as usize..w.end as usize], &f16s(6)[..]);
        let step = h.get("step").unwrap();
        assert_eq!(
            (step.num_elements(), step.len_bytes(), step.dtype),
            (1, 8, Dtype::I64)
        );
        assert_eq!(h.get("empty").unwrap().len_bytes(), 0);
        assert_eq!(h.metadata().get("format").map(String::as_str), Some("pt"));
    }

    #[test]
    fn tensors_are_sorted_by_offset_not_by_json_key_order() {
        let h = Header::parse(&sample(), None).unwrap();
        assert!(h.tensors().windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn header_accepts_extra_bytes_after_the_header_when_file_len_is_unknown() {
        let bytes = sample();
        let h = Header::parse(&bytes, None).unwrap();
        let header_only = &bytes[..h.data_start() as usize];
        assert_eq!(
            Header::parse(header_only, Some(bytes.len() as u64))
                .unwrap()
                .tensors()
                .len(),
            5
        );
    }

    #[test]
    fn header_without_tensors_is_valid() {
        let bytes = with_header("{}", &[]);
        let h = Header::parse(&bytes, Some(bytes.len() as u64)).unwrap();
        assert!(h.tensors().is_empty());
        assert_eq!(h.data_end(), h.data_start());
    }

    #[test]
    fn json_len_rejects_short_input_and_huge_headers() {
        assert!(
            Header::json_len(&[1, 2, 3])
                .unwrap_err()
                .to_string()
                .contains("fewer than the 8-byte")
        );
        let huge = (MAX_HEADER_BYTES + 1).to_le_bytes();
        assert!(
            Header::json_len(&huge)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert_eq!(Header::json_len(&24u64.to_le_bytes()).unwrap(), 24);
    }

    #[test]
    fn missing_tensor_error_names_file_and_tensor() {
        let h = Header::parse_named("vae.safetensors", &sample(), None).unwrap();
        let msg = h.tensor("decoder.conv_in.weight").unwrap_err().to_string();
        assert!(
            msg.contains("`vae.safetensors`") && msg.contains("`decoder.conv_in.weight`"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_dtype_is_named_with_its_tensor() {
        let bytes = serialize(&[T("x.weight", "F4", vec![2], vec![0])], None);
        let msg = err_text(&bytes, None);
        assert!(
            msg.contains("`x.weight`") && msg.contains("`F4`") && msg.contains("unet.safetensors"),
            "{msg}"
        );
    }

    #[test]
    fn size_mismatch_is_named_with_its_tensor() {
        let bytes = serialize(&[T("conv.weight", "F16", vec![2, 3], vec![0; 10])], None);
        let msg = err_text(&bytes, None);
        assert!(
            msg.contains("`conv.weight`") && msg.contains("needs 12 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_data_is_named_with_both_tensors() {
        let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                       "b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        let msg = err_text(&with_header(json, &[0; 6]), None);
        assert!(
            msg.contains("tensor `b`") && msg.contains("overlaps tensor `a`"),
            "{msg}"
        );
    }

    #[test]
    fn reversed_offsets_are_named_with_their_tensor() {
        let json = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#;
        let msg = err_text(&with_header(json, &[0; 4]), None);
        assert!(
            msg.contains("tensor `a`") && msg.contains("end before they begin"),
            "{msg}"
        );
    }

    #[test]
    fn gaps_are_named_with_the_tensors_around_them() {
        let json = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                       "b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#;
        let msg = err_text(&with_header(json, &[0; 5]), None);
        assert!(
            msg.contains("1 unused bytes between tensor `a`") && msg.contains("tensor `b`"),
            "{msg}"
        );
        let json = r#"{"late":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        let msg = err_text(&with_header(json, &[0; 3]), None);
        assert!(
            msg.contains("tensor `late` begins at data offset 1"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_file_is_named_with_the_last_tensor() {
        let bytes = sample();
        let msg = err_text(&bytes, Some(bytes.len() as u64 - 1));
        assert!(
            msg.contains("truncated") && msg.contains("tensor `mask`"),
            "{msg}"
        );
        let msg = err_text(&bytes, Some(10));
        assert!(
            msg.contains("truncated") && msg.contains("header needs"),
            "{msg}"
        );
    }

    #[test]
    fn trailing_bytes_after_the_last_tensor_are_rejected() {
        let bytes = sample();
        let msg = err_text(&bytes, Some(bytes.len() as u64 + 3));
        assert!(
            msg.contains("3 unexpected bytes after tensor `mask`"),
            "{msg}"
        );
    }

    #[test]
    fn short_header_read_says_how_many_bytes_are_needed() {
        let bytes = sample();
        let msg = err_text(&bytes[..20], None);
        assert!(msg.contains("only 20 were read"), "{msg}");
    }

    #[test]
    fn malformed_json_and_entries_are_rejected() {
        let msg = err_text(&with_header("{\"a\": [", &[]), None);
        assert!(msg.contains("not a valid JSON object"), "{msg}");
        let msg = err_text(
            &with_header(
                r#"{"w":{"dtype":"F16","shape":[-1],"data_offsets":[0,0]}}"#,
                &[],
            ),
            None,
        );
        assert!(msg.contains("tensor `w` has a malformed entry"), "{msg}");
        let msg = err_text(&with_header(r#"{"__metadata__":{"n":1}}"#, &[]), None);
        assert!(
            msg.contains("`__metadata__` is not a map of strings"),
            "{msg}"
        );
        let msg = err_text(&with_header("  {}", &[]), None);
        assert!(msg.contains("does not start with `{`"), "{msg}");
    }

    #[test]
    fn non_utf8_header_is_rejected() {
        let mut bytes = with_header("{\"\u{e9}\":1}", &[]);
        bytes[10] = 0xFF;
        assert!(err_text(&bytes, None).contains("not UTF-8"));
    }

    #[test]
    fn overflowing_shapes_are_rejected() {
        let json = format!(
            r#"{{"w":{{"dtype":"F64","shape":[{},{}],"data_offsets":[0,0]}}}}"#,
            u32::MAX,
            u32::MAX
        );
        let msg = err_text(&with_header(&json, &[]), None);
        assert!(
            msg.contains("tensor `w`") && msg.contains("too large"),
            "{msg}"
        );
    }

    #[test]
    fn dtype_sizes_and_spellings_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_header_str(d.as_str()), Some(d));
        }
        assert_eq!(
            (
                Dtype::F16.size_bytes(),
                Dtype::BF16.size_bytes(),
                Dtype::F32.size_bytes()
            ),
            (2, 2, 4)
        );
        assert_eq!(
            (
                Dtype::F64.size_bytes(),
                Dtype::I64.size_bytes(),
                Dtype::Bool.size_bytes()
            ),
            (8, 8, 1)
        );
    }
}
