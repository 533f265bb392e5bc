//! Tensor bytes → `f32` values: little-endian F16, BF16 and F32, converted exactly.
//!
//! Every f16 and bf16 value is exactly representable as an f32, so the widening is lossless,
//! subnormals, infinities, signed zeros and NaN included. The bit-level conversion is the `half`
//! crate's (already in burn's dependency tree).

use half::{bf16, f16};

use super::safetensors::{Dtype, TensorInfo};
use crate::error::{Error, Result};

/// Converts little-endian tensor data of `dtype` to f32 values, one per element.
///
/// `bytes` may start at any alignment. Fails for dtypes other than F16, BF16 and F32, and when
/// `bytes` is not a whole number of elements. Errors name no tensor; prefer [`tensor_to_f32`].
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    convert("tensor data", dtype, bytes)
}

/// Converts the data of tensor `info` (exactly `info.len_bytes()` bytes) to `num_elements` f32
/// values in row-major order of `info.shape`; errors name the tensor.
pub fn tensor_to_f32(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>> {
    let label = format!("tensor `{}`", info.name);
    if bytes.len() as u64 != info.len_bytes() {
        return Err(Error::TensorData {
            tensor: label,
            problem: format!(
                "{} bytes were given but it has {}",
                bytes.len(),
                info.len_bytes()
            ),
        });
    }
    convert(&label, info.dtype, bytes)
}

fn convert(label: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let size = dtype.size_bytes() as usize;
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::TensorData {
            tensor: label.to_string(),
            problem: format!(
                "{} bytes is not a whole number of {dtype} values",
                bytes.len()
            ),
        });
    }
    match dtype {
        Dtype::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        other => Err(Error::TensorData {
            tensor: label.to_string(),
            problem: format!("its dtype is {other}, not a float type"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bits(bits: &[u16]) -> Vec<f32> {
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        to_f32(Dtype::F16, &bytes).unwrap()
    }

    fn bf16_bits(bits: &[u16]) -> Vec<f32> {
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        to_f32(Dtype::BF16, &bytes).unwrap()
    }

    /// Reference decoding of an IEEE binary16 bit pattern, from the definition.
    fn f16_reference(bits: u16) -> f64 {
        let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((bits >> 10) & 0x1F);
        let man = f64::from(bits & 0x3FF);
        match exp {
            0 => sign * man * 2f64.powi(-24),
            31 if man == 0.0 => sign * f64::INFINITY,
            31 => f64::NAN,
            _ => sign * (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
        }
    }

    #[test]
    fn f16_known_bit_patterns() {
        let v = f16_bits(&[
            0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0xFC00, 0x0000, 0x8000, 0x03FF, 0x0400, 0x3555,
        ]);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], -2.0);
        assert_eq!(v[2], 65504.0);
        assert_eq!(v[3], 5.960_464_5e-8);
        assert_eq!(v[3], 2f32.powi(-24));
        assert_eq!((v[4], v[5]), (f32::INFINITY, f32::NEG_INFINITY));
        assert!(v[6] == 0.0 && v[6].is_sign_positive() && v[7] == 0.0 && v[7].is_sign_negative());
        assert_eq!(v[8], 2f32.powi(-14) - 2f32.powi(-24));
        assert_eq!(v[9], 2f32.powi(-14));
        assert_eq!(v[10], 0.333_251_95);
    }

    #[test]
    fn f16_nan_stays_nan() {
        for bits in [0x7E00, 0x7C01, 0xFE00, 0x7FFF] {
            assert!(f16_bits(&[bits])[0].is_nan(), "{bits:#06x}");
        }
    }

    #[test]
    fn f16_every_bit_pattern_matches_the_definition() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for (bits, v) in all.iter().zip(f16_bits(&all)) {
            let r = f16_reference(*bits);
            assert!(
                if r.is_nan() {
                    v.is_nan()
                } else {
                    f64::from(v) == r
                },
                "{bits:#06x}: {v} vs {r}"
            );
        }
    }

    #[test]
    fn bf16_known_bit_patterns() {
        let v = bf16_bits(&[
            0x3F80, 0xC000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x8000, 0x3EAB,
        ]);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], -2.0);
        assert_eq!(v[2], f32::from_bits(0x7F7F_0000));
        assert_eq!(v[2], 3.389_531_4e38);
        assert_eq!(v[3], f32::from_bits(0x0001_0000));
        assert_eq!(v[3], 9.183_55e-41);
        assert_eq!((v[4], v[5]), (f32::INFINITY, f32::NEG_INFINITY));
        assert!(v[6] == 0.0 && v[6].is_sign_negative());
        assert_eq!(v[7], 0.333_984_38);
        assert!(bf16_bits(&[0x7FC0])[0].is_nan() && bf16_bits(&[0xFF81])[0].is_nan());
    }

    #[test]
    fn bf16_every_bit_pattern_is_the_upper_half_of_an_f32() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for (bits, v) in all.iter().zip(bf16_bits(&all)) {
            let r = f32::from_bits(u32::from(*bits) << 16);
            assert!(
                if r.is_nan() {
                    v.is_nan()
                } else {
                    v.to_bits() == r.to_bits()
                },
                "{bits:#06x}"
            );
        }
    }

    #[test]
    fn f32_is_read_little_endian_from_unaligned_bytes() {
        let mut bytes = vec![0xAA];
        bytes.extend(1.5f32.to_le_bytes());
        bytes.extend((-0.25f32).to_le_bytes());
        assert_eq!(to_f32(Dtype::F32, &bytes[1..]).unwrap(), [1.5, -0.25]);
    }

    #[test]
    fn partial_values_and_integer_dtypes_are_rejected() {
        let msg = to_f32(Dtype::F16, &[0, 0, 0]).unwrap_err().to_string();
        assert!(
            msg.contains("3 bytes is not a whole number of F16 values"),
            "{msg}"
        );
        let msg = to_f32(Dtype::I64, &[0; 8]).unwrap_err().to_string();
        assert!(msg.contains("I64, not a float type"), "{msg}");
    }

    #[test]
    fn tensor_errors_name_the_tensor() {
        let info = TensorInfo {
            name: "conv_in.weight".into(),
            dtype: Dtype::F16,
            shape: vec![2],
            start: 8,
            end: 12,
        };
        let msg = tensor_to_f32(&info, &[0; 2]).unwrap_err().to_string();
        assert!(
            msg.contains("tensor `conv_in.weight`")
                && msg.contains("2 bytes were given but it has 4"),
            "{msg}"
        );
        assert_eq!(
            tensor_to_f32(&info, &[0x00, 0x3C, 0x00, 0xC0]).unwrap(),
            [1.0, -2.0]
        );
        let ints = TensorInfo {
            dtype: Dtype::I32,
            ..info
        };
        assert!(
            tensor_to_f32(&ints, &[0; 4])
                .unwrap_err()
                .to_string()
                .contains("tensor `conv_in.weight`")
        );
    }
}
