//! Download plan: the tensor data of a safetensors file cut into tensor-aligned chunks.
//!
//! The browser fetches each chunk with one HTTP Range request and stores it in IndexedDB keyed by
//! (file identity, chunk index); loading then walks the chunks one at a time, so memory holds at
//! most one chunk (≤ [`MAX_CHUNK_BYTES`], or one oversize tensor) of a 1.7 GB UNet. Chunk
//! boundaries fall on tensor boundaries, so every tensor lies inside exactly one chunk.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::safetensors::Header;

/// Default upper bound on a chunk's size: 64 MiB.
pub const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// One contiguous, tensor-aligned byte range of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position in the plan, from 0.
    pub index: usize,
    /// First byte, absolute in the file (the `start` of its first tensor).
    pub start: u64,
    /// One past the last byte, absolute in the file (the `end` of its last tensor).
    pub end: u64,
    /// Names of the tensors in the chunk, in file order.
    pub tensors: Vec<String>,
}

impl Chunk {
    /// Size in bytes (`end - start`).
    pub fn len_bytes(&self) -> u64 {
        self.end - self.start
    }

    /// Absolute byte range in the file, e.g. for an HTTP `Range: bytes=start-(end-1)` header.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// Cuts the tensor data of `header` into chunks of at most `max_chunk_bytes` bytes.
///
/// Consecutive tensors are packed greedily in file order; a chunk is closed when the next tensor
/// would take it past the limit. A tensor larger than the limit gets a chunk of its own (which is
/// then larger than the limit: a tensor is never split). Zero-byte tensors join the chunk at their
/// offset, so no chunk is empty unless the file has no data bytes at all (then there is one
/// zero-byte chunk, which needs no fetching). The chunks cover
/// `header.data_start()..header.data_end()` exactly once, in order; a header without tensors gives
/// no chunks. A limit of 0 puts every non-empty tensor in its own chunk.
pub fn plan_chunks(header: &Header, max_chunk_bytes: u64) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    for t in header.tensors() {
        match chunks.last_mut() {
            Some(c) if fits(c, t.start, t.end, max_chunk_bytes) => {
                c.end = t.end;
                c.tensors.push(t.name.clone());
            }
            _ => chunks.push(Chunk {
                index: chunks.len(),
                start: t.start,
                end: t.end,
                tensors: vec![t.name.clone()],
            }),
        }
    }
    chunks
}

/// Whether tensor bytes `start..end` (starting at `chunk.end`) join `chunk`.
fn fits(chunk: &Chunk, start: u64, end: u64, max_chunk_bytes: u64) -> bool {
    chunk.len_bytes() == 0 || start == end || end - chunk.start <= max_chunk_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::safetensors::tests::{T, serialize};

    /// A header with tensors of the given byte sizes (U8, shape [size]).
    fn header_with_sizes(sizes: &[usize]) -> Header {
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("t{i:03}")).collect();
        let tensors: Vec<T> = sizes
            .iter()
            .zip(&names)
            .map(|(&n, name)| T(name, "U8", vec![n], vec![0; n]))
            .collect();
        let bytes = serialize(&tensors, None);
        Header::parse(&bytes, Some(bytes.len() as u64)).unwrap()
    }

    /// Every plan invariant: order, alignment, limit, exact coverage.
    fn check_plan(h: &Header, plan: &[Chunk], limit: u64) {
        let mut cursor = h.data_start();
        let mut names = Vec::new();
        for (i, c) in plan.iter().enumerate() {
            assert_eq!(
                (c.index, c.start),
                (i, cursor),
                "chunks are contiguous and numbered"
            );
            let first = h.get(&c.tensors[0]).unwrap();
            let last = h.get(c.tensors.last().unwrap()).unwrap();
            assert_eq!(
                (first.start, last.end),
                (c.start, c.end),
                "chunk edges are tensor edges"
            );
            let nonempty = c
                .tensors
                .iter()
                .filter(|n| h.get(n).unwrap().len_bytes() > 0)
                .count();
            assert!(
                c.len_bytes() <= limit || nonempty == 1,
                "chunk {i} is over the limit"
            );
            assert!(
                c.len_bytes() > 0 || h.data_end() == h.data_start(),
                "chunk {i} is empty"
            );
            names.extend(c.tensors.iter().cloned());
            cursor = c.end;
        }
        assert_eq!(cursor, h.data_end(), "the plan covers all data");
        let all: Vec<_> = h.tensors().iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, all, "every tensor exactly once, in file order");
    }

    #[test]
    fn chunks_respect_the_limit_and_cover_every_byte_once() {
        let sizes = [10, 20, 30, 5, 0, 64, 1, 63, 40, 40, 40, 7];
        let h = header_with_sizes(&sizes);
        for limit in [1, 10, 50, 64, 100, 1000] {
            check_plan(&h, &plan_chunks(&h, limit), limit);
        }
    }

    #[test]
    fn tensors_are_packed_greedily() {
        let h = header_with_sizes(&[30, 30, 30, 10, 50]);
        let plan = plan_chunks(&h, 60);
        let groups: Vec<_> = plan.iter().map(|c| c.tensors.join(",")).collect();
        assert_eq!(groups, ["t000,t001", "t002,t003", "t004"]);
    }

    #[test]
    fn oversize_tensor_gets_a_chunk_of_its_own() {
        let h = header_with_sizes(&[10, 500, 10]);
        let plan = plan_chunks(&h, 100);
        let groups: Vec<_> = plan
            .iter()
            .map(|c| (c.tensors.join(","), c.len_bytes()))
            .collect();
        assert_eq!(
            groups,
            [
                ("t000".into(), 10),
                ("t001".into(), 500),
                ("t002".into(), 10)
            ]
        );
        check_plan(&h, &plan, 100);
    }

    #[test]
    fn zero_limit_puts_every_tensor_alone() {
        let h = header_with_sizes(&[3, 4, 5]);
        assert_eq!(plan_chunks(&h, 0).len(), 3);
    }

    #[test]
    fn zero_byte_tensors_never_make_an_empty_chunk() {
        let h = header_with_sizes(&[0, 500, 0, 0, 20, 0]);
        let plan = plan_chunks(&h, 100);
        let groups: Vec<_> = plan.iter().map(|c| c.tensors.join(",")).collect();
        assert_eq!(groups, ["t000,t001,t002,t003", "t004,t005"]);
        check_plan(&h, &plan, 100);
        let h = header_with_sizes(&[0, 0]);
        let plan = plan_chunks(&h, 100);
        assert_eq!((plan.len(), plan[0].len_bytes()), (1, 0));
    }

    #[test]
    fn empty_header_has_no_chunks() {
        assert!(plan_chunks(&header_with_sizes(&[]), MAX_CHUNK_BYTES).is_empty());
    }

    #[test]
    fn whole_file_fits_one_default_chunk() {
        let h = header_with_sizes(&[100, 200, 300]);
        let plan = plan_chunks(&h, MAX_CHUNK_BYTES);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].range(), h.data_start()..h.data_end());
    }
}
