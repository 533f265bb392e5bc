//! Tensors out of one downloaded chunk: the consumer side of the chunk plan (`plan.rs`).
//!
//! The loader takes a chunk's bytes (from IndexedDB, a Range response, or a slice of a file read
//! natively) and gets each tensor's name, dtype, shape and data slice, without copying.

use super::plan::Chunk;
use super::safetensors::{Header, TensorInfo};
use crate::error::{Error, Result};

/// The tensors of one chunk with their data, in file order: `(info, bytes)` where `bytes` holds
/// exactly `info.len_bytes()` little-endian bytes of `info.dtype`.
#[derive(Clone, Debug)]
pub struct ChunkTensors<'h, 'b> {
    tensors: std::vec::IntoIter<&'h TensorInfo>,
    chunk_start: u64,
    bytes: &'b [u8],
}

impl<'h, 'b> Iterator for ChunkTensors<'h, 'b> {
    type Item = (&'h TensorInfo, &'b [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.tensors.next()?;
        let from = (t.start - self.chunk_start) as usize;
        let to = (t.end - self.chunk_start) as usize;
        Some((t, &self.bytes[from..to]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.tensors.size_hint()
    }
}

impl ExactSizeIterator for ChunkTensors<'_, '_> {}

/// Splits `bytes` — the file's bytes `chunk.start..chunk.end` — into the chunk's tensors.
///
/// Everything is checked before the first item: the slice length must equal
/// `chunk.len_bytes()`, and every tensor named by the chunk must exist in `header` and lie
/// within the chunk. Errors ([`Error::WeightsChunk`]) name the file, the chunk and the tensor.
pub fn chunk_tensors<'h, 'b>(
    header: &'h Header,
    chunk: &Chunk,
    bytes: &'b [u8],
) -> Result<ChunkTensors<'h, 'b>> {
    let problem = |p: String| Error::WeightsChunk {
        file: header.file_label(),
        chunk: chunk.index,
        problem: p,
    };
    if bytes.len() as u64 != chunk.len_bytes() {
        return Err(problem(format!(
            "it has {} bytes but bytes {}..{} of the file are {} bytes",
            bytes.len(),
            chunk.start,
            chunk.end,
            chunk.len_bytes()
        )));
    }
    let mut tensors = Vec::with_capacity(chunk.tensors.len());
    for name in &chunk.tensors {
        let t = header
            .get(name)
            .ok_or_else(|| problem(format!("the file has no tensor `{name}`")))?;
        if t.start < chunk.start || t.end > chunk.end {
            return Err(problem(format!(
                "tensor `{name}` (bytes {}..{}) lies outside the chunk (bytes {}..{})",
                t.start, t.end, chunk.start, chunk.end
            )));
        }
        tensors.push(t);
    }
    Ok(ChunkTensors {
        tensors: tensors.into_iter(),
        chunk_start: chunk.start,
        bytes,
    })
}

/// The data of tensor `info` inside `buffer`, which holds the file's bytes from absolute offset
/// `buffer_start` on (0 for a whole file read into memory natively).
///
/// Fails ([`Error::Safetensors`], naming the tensor) when the buffer does not contain the tensor.
pub fn tensor_bytes<'b>(
    header: &Header,
    info: &TensorInfo,
    buffer_start: u64,
    buffer: &'b [u8],
) -> Result<&'b [u8]> {
    let buffer_end = buffer_start.saturating_add(buffer.len() as u64);
    if info.start < buffer_start || info.end > buffer_end {
        return Err(Error::Safetensors {
            file: header.file_label(),
            problem: format!(
                "tensor `{}` needs bytes {}..{} but only bytes {buffer_start}..{buffer_end} are available \
                 (is the file truncated?)",
                info.name, info.start, info.end
            ),
        });
    }
    Ok(&buffer[(info.start - buffer_start) as usize..(info.end - buffer_start) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::plan::plan_chunks;
    use crate::weights::safetensors::tests::{T, serialize};

    fn file() -> Vec<u8> {
        serialize(
            &[
                T("a", "U8", vec![3], vec![1, 2, 3]),
                T("b", "F16", vec![2], vec![0x00, 0x3C, 0x00, 0xC0]),
                T("c", "U8", vec![0], vec![]),
                T("d", "U8", vec![5], vec![9; 5]),
            ],
            None,
        )
    }

    #[test]
    fn every_tensor_comes_out_of_its_chunk_with_its_bytes() {
        let bytes = file();
        let h = Header::parse_named("f.safetensors", &bytes, Some(bytes.len() as u64)).unwrap();
        for limit in [0, 4, 7, 100] {
            let mut seen = Vec::new();
            for chunk in plan_chunks(&h, limit) {
                let data = &bytes[chunk.start as usize..chunk.end as usize];
                for (t, b) in chunk_tensors(&h, &chunk, data).unwrap() {
                    assert_eq!(b, &bytes[t.start as usize..t.end as usize]);
                    seen.push(t.name.clone());
                }
            }
            assert_eq!(seen, ["a", "b", "c", "d"], "limit {limit}");
        }
    }

    #[test]
    fn chunk_of_the_wrong_length_is_rejected_naming_file_and_chunk() {
        let bytes = file();
        let h = Header::parse_named("f.safetensors", &bytes, None).unwrap();
        let chunk = &plan_chunks(&h, 4)[1];
        let data = &bytes[chunk.start as usize..chunk.end as usize - 1];
        let msg = chunk_tensors(&h, chunk, data).unwrap_err().to_string();
        assert!(
            msg.contains("chunk 1 of `f.safetensors`") && msg.contains("it has 3 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn chunk_from_another_plan_is_rejected_naming_the_tensor() {
        let bytes = file();
        let h = Header::parse(&bytes, None).unwrap();
        let mut chunk = plan_chunks(&h, 4)[0].clone();
        chunk.tensors.push("zzz".into());
        let data = &bytes[chunk.start as usize..chunk.end as usize];
        assert!(
            chunk_tensors(&h, &chunk, data)
                .unwrap_err()
                .to_string()
                .contains("no tensor `zzz`")
        );
        chunk.tensors = vec!["d".into()];
        let msg = chunk_tensors(&h, &chunk, data).unwrap_err().to_string();
        assert!(
            msg.contains("tensor `d`") && msg.contains("outside the chunk"),
            "{msg}"
        );
    }

    #[test]
    fn tensor_bytes_reads_from_whole_files_and_partial_buffers() {
        let bytes = file();
        let h = Header::parse(&bytes, None).unwrap();
        let b = h.tensor("b").unwrap();
        assert_eq!(
            tensor_bytes(&h, b, 0, &bytes).unwrap(),
            [0x00, 0x3C, 0x00, 0xC0]
        );
        let tail = &bytes[b.start as usize..];
        assert_eq!(tensor_bytes(&h, b, b.start, tail).unwrap().len(), 4);
        let msg = tensor_bytes(&h, h.tensor("d").unwrap(), 0, &bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("tensor `d` needs bytes"), "{msg}");
    }
}
