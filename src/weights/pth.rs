//! PyTorch checkpoints (`torch.save` files: `.pth`, `.pt`, `.bin`) read without Python, for the
//! evaluation networks whose weights users have only in that form: the LPIPS v0.1 linear heads
//! (shipped inside the `lpips` package as a legacy-format file) and torchvision's AlexNet
//! (docs/EVALUATION.md §2.3).
//!
//! Both formats `torch.load` reads are supported:
//! - **zip** (torch ≥ 1.6): an uncompressed zip holding `<archive>/data.pkl` (the pickled object,
//!   storages as persistent ids) and one `<archive>/data/<key>` entry per storage;
//! - **legacy**: five pickles in a row (magic number, protocol version, system info, the object,
//!   the sorted storage keys) followed by each storage as an 8-byte element count and its bytes.
//!
//! The object is read by the restricted [`crate::pickle`] reader, which accepts tensors, parameters
//! and (ordered) dicts and refuses every other global by name: loading a checkpoint never runs
//! code. Nested dicts are flattened with `.` (`{"state_dict": {"w": …}}` → `state_dict.w`); values
//! that are not tensors are skipped. Tensors may be strided views sharing a storage (as
//! `torch.save` keeps them); each is gathered into row-major f32 (f16, bf16, f64 and integer
//! storages converted exactly where f32 can hold the value).
//! Reference: PyTorch `torch/serialization.py` (`_save`, `_legacy_save`, `_load`,
//! `_legacy_load`), PKWARE APPNOTE 6.3 (zip, zip64).

use half::{bf16, f16};

use super::F32Tensor;
use crate::error::{Error, Result};
use crate::pickle::{StorageRef, TorchTensor, Value, parse_pickle_prefix};

/// The legacy format's first pickle: `0x1950a86a20f9469cfc6c`, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn bad(label: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "`{label}` is not a readable PyTorch checkpoint: {problem}"
    ))
}

/// Every tensor of the checkpoint `bytes` (named `label` in errors), in the pickle's order.
pub fn read_pth(label: &str, bytes: &[u8]) -> Result<Vec<F32Tensor>> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip_checkpoint(label, bytes)
    } else {
        read_legacy_checkpoint(label, bytes)
    }
}

fn read_zip_checkpoint(label: &str, bytes: &[u8]) -> Result<Vec<F32Tensor>> {
    let entries = zip_entries(bytes).map_err(|e| bad(label, e))?;
    let pickle_name = entries
        .iter()
        .map(|e| e.name.as_str())
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| bad(label, "the zip has no data.pkl"))?;
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    let entry = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.data(bytes))
            .transpose()
            .map_err(|e| bad(label, e))
    };
    if let Some(order) = entry(&format!("{prefix}byteorder"))?
        && order != b"little"
    {
        return Err(bad(label, "its storages are big-endian"));
    }
    let (object, _) =
        parse_pickle_prefix(entry(pickle_name)?.unwrap_or_default()).map_err(|e| bad(label, e))?;
    gather(label, &object, |storage| {
        entry(&format!("{prefix}data/{}", storage.key))?
            .ok_or_else(|| bad(label, format!("storage `{}` is missing", storage.key)))
    })
}

fn read_legacy_checkpoint(label: &str, bytes: &[u8]) -> Result<Vec<F32Tensor>> {
    let mut pos = 0;
    let mut next = || -> Result<Value> {
        let (v, used) = parse_pickle_prefix(&bytes[pos..]).map_err(|e| bad(label, e))?;
        pos += used;
        Ok(v)
    };
    match next()? {
        Value::BigInt(b) if b == LEGACY_MAGIC => {}
        _ => {
            return Err(bad(
                label,
                "neither a zip checkpoint nor the legacy format (wrong magic number)",
            ));
        }
    }
    if next()?.as_f64() != Some(1001.0) {
        return Err(bad(label, "unknown legacy protocol version"));
    }
    let _system_info = next()?;
    let object = next()?;
    let keys: Vec<String> = match next()? {
        Value::List(k) => k
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                other => Err(bad(label, format!("storage key {other:?}"))),
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad(label, "no storage key list")),
    };
    // Storages follow in key order; each starts with its element count (i64, little-endian).
    let sizes = storage_sizes(&object);
    let mut storages = std::collections::HashMap::new();
    for key in keys {
        let count_bytes = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| bad(label, "truncated storage data"))?;
        let count = u64::from_le_bytes(count_bytes.try_into().expect("8 bytes"));
        let size = *sizes
            .get(&key)
            .ok_or_else(|| bad(label, format!("storage `{key}` is not used by any tensor")))?;
        let len = count
            .checked_mul(size)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| bad(label, "storage too large"))?;
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or_else(|| bad(label, format!("storage `{key}` is truncated")))?;
        storages.insert(key, data);
        pos += 8 + len;
    }
    gather(label, &object, |storage| {
        storages
            .get(&storage.key)
            .copied()
            .ok_or_else(|| bad(label, format!("storage `{}` is missing", storage.key)))
    })
}

/// Bytes per element of each storage key the object uses.
fn storage_sizes(object: &Value) -> std::collections::HashMap<String, u64> {
    let mut tensors = Vec::new();
    collect_tensors("", object, &mut tensors);
    tensors
        .into_iter()
        .filter_map(|(_, t)| Some((t.storage.key.clone(), element_size(&t.storage.kind)?)))
        .collect()
}

fn element_size(kind: &str) -> Option<u64> {
    Some(match kind {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        _ => return None,
    })
}

/// `(name, tensor)` of every tensor in `value`, nested dicts flattened with `.`.
fn collect_tensors<'v>(prefix: &str, value: &'v Value, out: &mut Vec<(String, &'v TorchTensor)>) {
    match value {
        Value::Tensor(t) => out.push((prefix.to_string(), t)),
        Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                collect_tensors(&name, v, out);
            }
        }
        _ => {}
    }
}

/// The object's tensors as row-major f32, reading each storage's bytes through `storage`.
fn gather<'b>(
    label: &str,
    object: &Value,
    storage: impl Fn(&StorageRef) -> Result<&'b [u8]>,
) -> Result<Vec<F32Tensor>> {
    let mut tensors = Vec::new();
    collect_tensors("", object, &mut tensors);
    if tensors.is_empty() {
        return Err(bad(label, "it holds no tensors"));
    }
    tensors
        .into_iter()
        .map(|(name, t)| {
            let data = strided_values(t, storage(&t.storage)?)
                .map_err(|e| bad(label, format!("tensor `{name}`: {e}")))?;
            Ok(F32Tensor {
                name,
                shape: t.shape.clone(),
                data,
            })
        })
        .collect()
}

/// `storage[offset + Σ index_d · stride_d]` over the shape in row-major order, as f32.
fn strided_values(t: &TorchTensor, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let kind = t.storage.kind.as_str();
    let size = element_size(kind).ok_or_else(|| format!("unsupported storage type {kind}"))?;
    if bytes.len() as u64 != t.storage.numel * size {
        return Err(format!(
            "its storage has {} bytes, {} expected",
            bytes.len(),
            t.storage.numel * size
        ));
    }
    if t.shape.len() != t.stride.len() {
        return Err("shape and stride differ in rank".into());
    }
    let n: usize = t.shape.iter().product();
    if n > 0 {
        let last: u64 = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(&d, &s)| (d as u64 - 1) * s as u64)
                .sum::<u64>();
        if last >= t.storage.numel {
            return Err("it reaches past the end of its storage".into());
        }
    }
    let size = size as usize;
    let read = |i: usize| -> f32 {
        let b = &bytes[i * size..(i + 1) * size];
        match kind {
            "FloatStorage" => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            "HalfStorage" => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BFloat16Storage" => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            "DoubleStorage" => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            "LongStorage" => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            "IntStorage" => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
            "ShortStorage" => i16::from_le_bytes([b[0], b[1]]) as f32,
            "CharStorage" => b[0] as i8 as f32,
            _ => b[0] as f32,
        }
    };
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..n {
        let at = t.offset as usize
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.push(read(at));
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

/// One file of a zip archive.
struct ZipEntry {
    name: String,
    method: u16,
    size: u64,
    local_header: u64,
}

impl ZipEntry {
    /// The entry's bytes (stored entries only: `torch.save` never compresses).
    fn data<'b>(&self, zip: &'b [u8]) -> std::result::Result<&'b [u8], String> {
        if self.method != 0 {
            return Err(format!(
                "entry `{}` is compressed (method {}); PyTorch writes stored entries",
                self.name, self.method
            ));
        }
        let h = self.local_header as usize;
        if read_u32(zip, h)? != 0x0403_4b50 {
            return Err(format!("entry `{}` has no local header", self.name));
        }
        let start = h + 30 + read_u16(zip, h + 26)? as usize + read_u16(zip, h + 28)? as usize;
        zip.get(start..start + self.size as usize)
            .ok_or_else(|| format!("entry `{}` is truncated", self.name))
    }
}

fn read_u16(b: &[u8], at: usize) -> std::result::Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "truncated zip".to_string())
}

fn read_u32(b: &[u8], at: usize) -> std::result::Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| "truncated zip".to_string())
}

fn read_u64(b: &[u8], at: usize) -> std::result::Result<u64, String> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| "truncated zip".to_string())
}

/// The central directory of a zip archive (zip64 included: checkpoints over 4 GiB use it).
fn zip_entries(zip: &[u8]) -> std::result::Result<Vec<ZipEntry>, String> {
    // The end-of-central-directory record: the last signature within 64 KiB + 22 of the end.
    let floor = zip.len().saturating_sub(65_557);
    let eocd = (floor..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("no end-of-central-directory record (truncated download?)")?;
    let mut count = read_u16(zip, eocd + 10)? as u64;
    let mut offset = read_u32(zip, eocd + 16)? as u64;
    if (count == 0xffff || offset == 0xffff_ffff) && eocd >= 20 {
        let locator = eocd - 20;
        if read_u32(zip, locator)? == 0x0706_4b50 {
            let z64 = read_u64(zip, locator + 8)? as usize;
            if read_u32(zip, z64)? != 0x0606_4b50 {
                return Err("broken zip64 end record".into());
            }
            count = read_u64(zip, z64 + 32)?;
            offset = read_u64(zip, z64 + 48)?;
        }
    }
    let mut entries = Vec::new();
    let mut at = offset as usize;
    for _ in 0..count {
        if read_u32(zip, at)? != 0x0201_4b50 {
            return Err("broken central directory".into());
        }
        let method = read_u16(zip, at + 10)?;
        let mut size = read_u32(zip, at + 24)? as u64;
        let name_len = read_u16(zip, at + 28)? as usize;
        let extra_len = read_u16(zip, at + 30)? as usize;
        let comment_len = read_u16(zip, at + 32)? as usize;
        let mut local_header = read_u32(zip, at + 42)? as u64;
        let name_bytes = zip
            .get(at + 46..at + 46 + name_len)
            .ok_or("truncated zip")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // zip64 extra field (id 1): the 64-bit values of the fields that read 0xffffffff, in
        // order uncompressed size, compressed size, local header offset.
        let mut extra = at + 46 + name_len;
        let extra_end = extra + extra_len;
        while extra + 4 <= extra_end {
            let (id, len) = (read_u16(zip, extra)?, read_u16(zip, extra + 2)? as usize);
            if id == 1 {
                let mut field = extra + 4;
                if size == 0xffff_ffff {
                    size = read_u64(zip, field)?;
                    field += 8;
                }
                if read_u32(zip, at + 20)? == 0xffff_ffff {
                    field += 8;
                }
                if local_header == 0xffff_ffff {
                    local_header = read_u64(zip, field)?;
                }
            }
            extra += 4 + len;
        }
        entries.push(ZipEntry {
            name,
            method,
            size,
            local_header,
        });
        at = extra_end + comment_len;
    }
    Ok(entries)
}
