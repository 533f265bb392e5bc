//! Timestep embeddings (diffusers `models/embeddings.py`: `get_timestep_embedding`,
//! `Timesteps`, `TimestepEmbedding`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::layers;

/// Sinusoidal timestep embedding, computed on the host in f32 exactly as diffusers does
/// (`exponent = -ln(10000)·i / (half − shift)`, `arg = t·exp(exponent)` rounded to f32, then
/// `sin`/`cos` of that f32 argument). Timesteps are host values (from the scheduler), and a
/// GPU's `sin` of arguments near 1000 is far less accurate than the host's.
///
/// timesteps: `b` values → `[b, dim]` (`[cos, sin]` halves when `flip_sin_to_cos`).
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Tensor<2> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((ln * i as f32) / denom).exp()).collect();
    let mut data = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|&f| t * f).collect();
        let sin = args.iter().map(|&a| (a as f64).sin() as f32);
        let cos = args.iter().map(|&a| (a as f64).cos() as f32);
        let mut row: Vec<f32> = if flip_sin_to_cos {
            cos.chain(sin).collect()
        } else {
            sin.chain(cos).collect()
        };
        row.resize(dim, 0.0); // odd dim: zero pad, as diffusers
        data.extend(row);
    }
    Tensor::from_data(TensorData::new(data, [timesteps.len(), dim]), device)
}

/// diffusers `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// `[in] → [time_embed_dim]`.
    pub linear_1: Linear,
    /// `[time_embed_dim] → [time_embed_dim]`.
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    /// Builds the module.
    pub fn new(in_channels: usize, time_embed_dim: usize, device: &Device) -> Self {
        Self {
            linear_1: LinearConfig::new(in_channels, time_embed_dim).init(device),
            linear_2: LinearConfig::new(time_embed_dim, time_embed_dim).init(device),
        }
    }

    /// x: `[b, in]` → `[b, time_embed_dim]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        layers::linear(&self.linear_2, silu(layers::linear(&self.linear_1, x)))
    }
}
