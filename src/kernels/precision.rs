//! The UNet's compute precision (docs/ARCHITECTURE.md §3, "Precision"): f32 everywhere, or f16
//! activations and matrix/convolution inputs with f32 where precision needs it — what PyTorch's
//! `autocast(fp16)` does in the official code's drag and LoRA phases (docs/ALGORITHM.md §2).
//!
//! In f16 the UNet casts its input, the time embedding and the text embedding to f16 at its
//! entry; linear and convolution layers then run on the f16 weights as loaded (no widened copy);
//! GroupNorm and LayerNorm compute their statistics and normalise in f32
//! ([`super::statistics`], [`super::layers::layer_norm`]); attention
//! probabilities are a softmax in f32 ([`crate::models::attention`]); LoRA deltas run in f32 on
//! f32 master weights (the official `LoRALinearLayer` casts its input to f32 and back); the noise
//! prediction and the tapped features leave the UNet as f32, so losses, the optimised latent,
//! Adam's moments and the schedulers stay f32. Gradients through the f16 layers are scaled so
//! they neither underflow nor overflow ([`crate::exec::recompute`]).
//!
//! The VAE and the text encoder always run in f32 (they run once per image or prompt).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Tensor};

use crate::device::AdapterReport;

/// The dtype the UNet's activations are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (weights held in f16 are widened per layer).
    #[default]
    F32,
    /// f16 activations and matmul/convolution inputs, f32 statistics, softmax, LoRA and losses.
    F16,
}

impl Precision {
    /// The name (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// The activations' dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which precision an edit asks for: `auto` (f16 where the adapter is a GPU with shader-f16),
/// or one fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    /// f16 on a hardware adapter with `shader-f16`, else f32.
    #[default]
    Auto,
    /// This precision wherever it can run; f16 on an adapter without shader-f16 is an error.
    Fixed(Precision),
}

impl FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" => Ok(Self::Fixed(Precision::F32)),
            "f16" | "fp16" => Ok(Self::Fixed(Precision::F16)),
            _ => Err(format!("`{s}`: expected auto, f32 or f16")),
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(p) => f.write_str(p.name()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PrecisionChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl PrecisionChoice {
    /// The precision to run with on `adapter`. `auto` takes f16 only on hardware adapters:
    /// software adapters (lavapipe, SwiftShader) and the CPU device emulate f16 arithmetic and
    /// gain nothing from it, so they keep the f32 path, which is also what the parity tests
    /// compare against the reference code.
    pub fn resolve(self, adapter: &AdapterReport) -> crate::Result<Precision> {
        match self {
            Self::Auto => Ok(if adapter.shader_f16 && !adapter.is_software() {
                Precision::F16
            } else {
                Precision::F32
            }),
            Self::Fixed(Precision::F16) if !adapter.shader_f16 => {
                Err(crate::Error::InvalidInput(format!(
                    "f16 compute needs an adapter with shader-f16; {} has none (use f32 or auto)",
                    if adapter.name.is_empty() {
                        "this one"
                    } else {
                        &adapter.name
                    }
                )))
            }
            Self::Fixed(p) => Ok(p),
        }
    }
}

/// `t` in `dtype` (a no-op when it already is).
pub fn to_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `t` in f32 (a no-op when it already is).
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    to_dtype(t, DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(device_type: &str, shader_f16: bool) -> AdapterReport {
        AdapterReport {
            name: "test".into(),
            backend: "Vulkan".into(),
            device_type: device_type.into(),
            shader_f16,
            max_buffer_size: 1 << 30,
            max_storage_buffer_binding_size: 1 << 27,
        }
    }

    #[test]
    fn auto_takes_f16_only_on_hardware_with_shader_f16() {
        let auto = PrecisionChoice::Auto;
        let f16 = |t, f| auto.resolve(&adapter(t, f)).unwrap();
        assert_eq!(f16("DiscreteGpu", true), Precision::F16);
        assert_eq!(f16("IntegratedGpu", true), Precision::F16);
        assert_eq!(f16("DiscreteGpu", false), Precision::F32);
        assert_eq!(f16("Cpu", true), Precision::F32);
        // A browser reports no type: SwiftShader is known by its name.
        let swiftshader = AdapterReport {
            name: "SwiftShader Device (Subzero)".into(),
            ..adapter("Other", true)
        };
        assert_eq!(auto.resolve(&swiftshader).unwrap(), Precision::F32);
        let forced: PrecisionChoice = "f16".parse().unwrap();
        assert_eq!(
            forced.resolve(&adapter("Cpu", true)).unwrap(),
            Precision::F16
        );
        assert!(forced.resolve(&adapter("DiscreteGpu", false)).is_err());
        assert!("f8".parse::<PrecisionChoice>().is_err());
        assert_eq!("FP32".parse(), Ok(PrecisionChoice::Fixed(Precision::F32)));
    }
}
