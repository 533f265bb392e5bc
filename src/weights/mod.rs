//! Weights in safetensors files (diffusers layout), read without holding a whole file in memory.
//!
//! The browser reads a file's header with one HTTP Range request ([`Header::json_len`] on the
//! first 8 bytes, then [`Header::parse_named`]), plans tensor-aligned chunks of ≤ 64 MiB
//! ([`plan_chunks`]), fetches and caches each chunk, and hands chunks one at a time to
//! [`chunk_tensors`], which yields each tensor's info and bytes; [`tensor_to_f32`] widens F16 /
//! BF16 data when the device computes in f32. Natively, a file read whole goes through the same
//! header and [`tensor_bytes`].
//!
//! The evaluation networks' files (LPIPS, AlexNet) are read whole by [`read_tensor_file`],
//! safetensors or PyTorch checkpoints ([`pth`]).
//!
//! Format reference: huggingface/safetensors (`docs/source/index.mdx`, `safetensors/src/tensor.rs`).

pub mod convert;
pub mod deterministic;
pub mod host;
pub mod load;
pub mod plan;
pub mod pth;
pub mod reader;
pub mod safetensors;
pub mod tensor_file;
pub mod write;

pub use convert::{tensor_to_f32, to_f32};
pub use host::HostModule;
pub use load::{Component, WeightLoader, load_safetensors};
pub use plan::{Chunk, MAX_CHUNK_BYTES, plan_chunks};
pub use reader::{ChunkTensors, chunk_tensors, tensor_bytes};
pub use safetensors::{Dtype, Header, MAX_HEADER_BYTES, TensorInfo};
pub use tensor_file::read_tensor_file;
pub use write::{F32Tensor, RawTensor, write_f32_safetensors, write_safetensors};
