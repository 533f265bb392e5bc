//! Device probe: a small GroupNorm → SiLU → Conv2d 3×3 → multi-head self-attention block (the
//! shape of one SD 1.5 UNet resnet + attention pair), run forward and backward to its input.
//!
//! It proves a device computes what the CPU computes — the same numbers natively (lavapipe),
//! in the browser (WebGPU in a Web Worker) and on the flex CPU device — before any model code
//! relies on it. Parameters are generated deterministically (no RNG), so every device sees
//! bit-identical inputs. All readback is `into_data_async`, the only readback that works in wasm.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::deterministic_values;
use crate::tensor_io::read_f32;
use crate::{Error, Result};

/// Sizes of the probe block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Channels (multiple of `groups` and `heads`).
    pub channels: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Height and width of the feature map.
    pub size: usize,
    /// Attention heads.
    pub heads: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            channels: 32,
            groups: 8,
            size: 8,
            heads: 4,
        }
    }
}

/// What the probe computed: the block output, the loss `mean(out²)` and its gradient with
/// respect to the input, all read back to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The configuration the numbers belong to.
    pub config: ProbeConfig,
    /// Block output, `[1, size², channels]` flattened.
    pub output: Vec<f32>,
    /// `mean(output²)`.
    pub loss: f32,
    /// ∂loss/∂input, `[1, channels, size, size]` flattened.
    pub input_grad: Vec<f32>,
}

fn param<const D: usize>(shape: [usize; D], seed: f64, scale: f64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(deterministic_values(n, seed, scale), shape),
        device,
    )
}

/// GroupNorm with affine parameters (population variance, as PyTorch): x `[b, c, h, w]`.
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let grouped = x.reshape([b, groups, (c / groups) * h * w]);
    let (var, mean) = grouped.clone().var_mean_bias(2);
    let normed = (grouped - mean) / (var + eps).sqrt();
    let normed = normed.reshape([b, c, h, w]);
    normed * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1])
}

/// Multi-head scaled dot-product attention: q, k, v `[b, n, heads·d]` → `[b, n, heads·d]`.
pub fn multi_head_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n, inner] = q.dims();
    let d = inner / heads;
    let split = |t: Tensor<3>| {
        let [_, len, _] = t.dims();
        t.reshape([b, len, heads, d]).swap_dims(1, 2)
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
    softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([b, n, inner])
}

/// Runs the probe block forward and backward on `device` and reads everything back.
pub async fn run(device: &Device, config: ProbeConfig) -> Result<ProbeResult> {
    run_with_input_offset(device, config, 0, 0.0).await
}

/// [`run`] with `delta` added to input element `index` (flattened `[1, c, h, w]`): the hook for
/// finite-difference checks of the gradient.
pub async fn run_with_input_offset(
    device: &Device,
    config: ProbeConfig,
    index: usize,
    delta: f32,
) -> Result<ProbeResult> {
    let ProbeConfig {
        channels: c,
        groups,
        size,
        heads,
    } = config;
    if c == 0 || groups == 0 || heads == 0 || size == 0 || c % groups != 0 || c % heads != 0 {
        return Err(Error::InvalidInput(format!(
            "probe config {config:?}: channels must be a positive multiple of groups and heads"
        )));
    }
    let device = device.clone().autodiff();
    let n = size * size;

    let mut input = deterministic_values(c * n, 0.11, 2.0);
    let element = input.get_mut(index).ok_or_else(|| {
        Error::InvalidInput(format!(
            "input element {index} is outside the {} inputs",
            c * n
        ))
    })?;
    *element += delta;
    let x =
        Tensor::<4>::from_data(TensorData::new(input, [1, c, size, size]), &device).require_grad();
    let gamma = param([c], 0.23, 0.5, &device) + 1.0;
    let beta = param([c], 0.37, 0.2, &device);
    let conv_w = param(
        [c, c, 3, 3],
        0.41,
        (1.0 / (9.0 * c as f64)).sqrt() * 1.7,
        &device,
    );
    let conv_b = param([c], 0.53, 0.1, &device);
    let lin_scale = (1.0 / c as f64).sqrt() * 1.7;
    let [wq, wk, wv, wo] =
        [0.61, 0.67, 0.73, 0.79].map(|s| param([1, c, c], s, lin_scale, &device));

    let h = silu(group_norm(x.clone(), groups, gamma, beta, 1e-5));
    let h = conv2d(
        h,
        conv_w,
        Some(conv_b),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let tokens = h.reshape([1, c, n]).swap_dims(1, 2); // [1, n, c]
    let attn = multi_head_attention(
        tokens.clone().matmul(wq),
        tokens.clone().matmul(wk),
        tokens.clone().matmul(wv),
        heads,
    );
    let output = attn.matmul(wo) + tokens;
    let loss = output.clone().powi_scalar(2).mean();

    let grads = loss.backward();
    let input_grad = x
        .grad(&grads)
        .ok_or_else(|| Error::Readback("the input received no gradient".into()))?;

    Ok(ProbeResult {
        config,
        output: read_f32(output).await?,
        loss: read_f32(loss).await?[0],
        input_grad: read_f32(input_grad).await?,
    })
}
