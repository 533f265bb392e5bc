//! A whole weights file of either format → its tensors as named f32 arrays, for the small
//! evaluation networks (LPIPS, AlexNet) that are read once and whole. The networks of the edit
//! stream their safetensors files instead ([`super::reader`]).

use super::pth::read_pth;
use super::{F32Tensor, Header, tensor_bytes, tensor_to_f32};
use crate::error::Result;

/// Every tensor of `bytes`, a safetensors file (its first 8 bytes are the header length and the
/// header starts with `{`) or a PyTorch checkpoint; `label` names the file in errors.
pub fn read_tensor_file(label: &str, bytes: &[u8]) -> Result<Vec<F32Tensor>> {
    if bytes.len() > 8 && bytes[8] == b'{' {
        let header = Header::parse_named(label, bytes, Some(bytes.len() as u64))?;
        header
            .tensors()
            .iter()
            .map(|info| {
                Ok(F32Tensor {
                    name: info.name.clone(),
                    shape: info.shape.clone(),
                    data: tensor_to_f32(info, tensor_bytes(&header, info, 0, bytes)?)?,
                })
            })
            .collect()
    } else {
        read_pth(label, bytes)
    }
}
