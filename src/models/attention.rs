//! Attention for the SD 1.5 networks (diffusers `models/attention.py`, `attention_processor.py`):
//! one chunked scaled-dot-product attention used everywhere (UNet self/cross attention, the VAE
//! mid-block attention, CLIP's causal self-attention), the diffusers `Attention` module, the
//! GEGLU feed-forward and `BasicTransformerBlock`.
//!
//! Memory: at 512×512 the UNet's first self-attention has 8 heads over 4096 tokens, so the full
//! score tensor `[8, 4096, 4096]` is 512 MiB in f32 — above WebGPU's default 128 MiB binding
//! limit, and under autodiff burn would save all of it for backward. [`scaled_dot_product_attention`]
//! therefore splits the work into chunks of whole heads (or, when one head is too big, blocks of
//! query rows) so that no score/probability tensor exceeds a byte budget, in the forward pass and
//! in what autodiff keeps for the backward pass.

use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::kernels::{flash_attention, layers, precision};
use crate::perf::{profiler, work};

/// Default byte budget for one attention score chunk: WebGPU's default
/// `maxStorageBufferBindingSize` (128 MiB).
pub const DEFAULT_ATTENTION_BYTES: usize = 128 << 20;

/// Largest attention score chunk (bytes) allowed on a device whose largest storage binding is
/// `max_storage_buffer_binding_size`: the binding limit, capped at [`DEFAULT_ATTENTION_BYTES`]
/// (a bigger chunk saves little time and costs memory in backward).
pub fn attention_budget(max_storage_buffer_binding_size: u64) -> usize {
    let limit = usize::try_from(max_storage_buffer_binding_size).unwrap_or(usize::MAX);
    limit.clamp(1 << 20, DEFAULT_ATTENTION_BYTES)
}

/// How [`scaled_dot_product_attention`] splits `groups` (= batch·heads) score matrices of
/// `n × m` into chunks that fit `max_bytes` with `elem_bytes`-byte elements.
///
/// Returns `(groups_per_chunk, query_rows_per_chunk)`: either several whole groups per chunk
/// (`query_rows_per_chunk == n`) or one group per chunk split into query blocks.
pub fn attention_chunks(
    groups: usize,
    n: usize,
    m: usize,
    elem_bytes: usize,
    max_bytes: usize,
) -> (usize, usize) {
    let row_bytes = m.max(1) * elem_bytes.max(1);
    let rows = (max_bytes / row_bytes).max(1);
    if rows >= n {
        ((rows / n.max(1)).clamp(1, groups.max(1)), n)
    } else {
        (1, rows)
    }
}

/// Multi-head scaled dot-product attention, `softmax(q·kᵀ/√d [+ causal mask])·v`: by the fused
/// kernels on the wgpu device ([`flash_attention`]: no score tensor at all), else in chunks so
/// that no score tensor exceeds `max_bytes`.
///
/// q: `[b, n, heads·d]`, k: `[b, m, heads·d]`, v: `[b, m, heads·d_v]` → `[b, n, heads·d_v]`.
/// `causal` masks key `j > i` for query `i` (CLIP's text transformer).
pub fn scaled_dot_product_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    causal: bool,
    max_bytes: usize,
) -> Tensor<3> {
    // QKᵀ: 2·b·n·m·(heads·d); ·V: 2·b·n·m·(heads·d_v).
    let ([b, n, inner], [_, m, _], [_, _, inner_v]) = (q.dims(), k.dims(), v.dims());
    work::add(work::matmul_flops(b * n, m, inner + inner_v));
    let scale = 1.0 / ((inner / heads.max(1)) as f64).sqrt();
    profiler::op("attention core (QKᵀ, softmax, ·V)", &q.device(), || {
        flash_attention::attention(q.clone(), k.clone(), v.clone(), heads, scale, causal)
            .unwrap_or_else(|| chunked_attention(q, k, v, heads, causal, max_bytes))
    })
}

/// [`scaled_dot_product_attention`] in chunks of whole heads or query rows (the CPU device, the
/// VAE's wide head, and wherever the fused kernels decline).
fn chunked_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    causal: bool,
    max_bytes: usize,
) -> Tensor<3> {
    let [b, n, inner] = q.dims();
    let [_, m, _] = k.dims();
    let [_, _, inner_v] = v.dims();
    let d = inner / heads;
    let dv = inner_v / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let device = q.device();
    let dtype = q.dtype();
    // Scores are formed in the activations' dtype, the softmax runs in f32 (f16 compute, as
    // PyTorch's autocast and fused kernels accumulate it): size chunks by the f32 copy.
    let elem_bytes = DType::F32.size().max(dtype.size());

    // [b, len, heads·d] → [b·heads, len, d]
    let split = |t: Tensor<3>, len: usize, dim: usize| {
        t.reshape([b, len, heads, dim])
            .swap_dims(1, 2)
            .reshape([b * heads, len, dim])
    };
    let q = split(q, n, d) * scale;
    let k_t = split(k, m, d).swap_dims(1, 2); // [g, d, m]
    let v = split(v, m, dv);
    let groups = b * heads;

    let (groups_per_chunk, rows_per_chunk) = attention_chunks(groups, n, m, elem_bytes, max_bytes);
    let bias = causal.then(|| causal_bias(n, m, &device));

    let attend = |q: Tensor<3>, k_t: Tensor<3>, v: Tensor<3>, row0: usize| {
        let scores = precision::to_f32(q.matmul(k_t)); // [g', r, m]
        let scores = match &bias {
            Some(bias) => {
                let [_, r, _] = scores.dims();
                scores + bias.clone().narrow(0, row0, r).unsqueeze::<3>()
            }
            None => scores,
        };
        precision::to_dtype(softmax(scores, 2), dtype).matmul(v)
    };

    let out = if groups_per_chunk >= groups && rows_per_chunk >= n {
        attend(q, k_t, v, 0)
    } else if rows_per_chunk >= n {
        let mut parts = Vec::with_capacity(groups.div_ceil(groups_per_chunk));
        let mut g0 = 0;
        while g0 < groups {
            let g = groups_per_chunk.min(groups - g0);
            parts.push(attend(
                q.clone().narrow(0, g0, g),
                k_t.clone().narrow(0, g0, g),
                v.clone().narrow(0, g0, g),
                0,
            ));
            g0 += g;
        }
        Tensor::cat(parts, 0)
    } else {
        let mut per_group = Vec::with_capacity(groups);
        for g in 0..groups {
            let (qg, kg, vg) = (
                q.clone().narrow(0, g, 1),
                k_t.clone().narrow(0, g, 1),
                v.clone().narrow(0, g, 1),
            );
            let mut blocks = Vec::with_capacity(n.div_ceil(rows_per_chunk));
            let mut r0 = 0;
            while r0 < n {
                let r = rows_per_chunk.min(n - r0);
                blocks.push(attend(
                    qg.clone().narrow(1, r0, r),
                    kg.clone(),
                    vg.clone(),
                    r0,
                ));
                r0 += r;
            }
            per_group.push(Tensor::cat(blocks, 1));
        }
        Tensor::cat(per_group, 0)
    };

    // [b·heads, n, dv] → [b, n, heads·dv]
    out.reshape([b, heads, n, dv])
        .swap_dims(1, 2)
        .reshape([b, n, heads * dv])
}

/// Additive causal mask `[n, m]`: 0 where key `j ≤ i`, −∞ above the diagonal.
fn causal_bias(n: usize, m: usize, device: &Device) -> Tensor<2> {
    let mut data = vec![0f32; n * m];
    for i in 0..n {
        for j in (i + 1)..m {
            data[i * m + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_data(TensorData::new(data, [n, m]), device)
}

/// Options of a diffusers `Attention` module that are not weights.
#[derive(Debug, Clone)]
pub struct AttentionConfig {
    /// Query (and output) channels.
    pub query_dim: usize,
    /// Key/value input channels (`cross_attention_dim`; `None` = self-attention).
    pub cross_attention_dim: Option<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Channels per head.
    pub dim_head: usize,
    /// Whether `to_q/to_k/to_v` have a bias (`attention_bias`; UNet: false, VAE: true).
    pub bias: bool,
    /// GroupNorm before the projections (VAE mid-block attention): `(groups, eps)`.
    pub group_norm: Option<(usize, f64)>,
    /// Add the input back (VAE mid-block attention).
    pub residual_connection: bool,
    /// Output is divided by this (diffusers `rescale_output_factor`).
    pub rescale_output_factor: f64,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl AttentionConfig {
    /// Builds the module (weights uninitialised until loaded).
    pub fn init(&self, device: &Device) -> Attention {
        let inner = self.heads * self.dim_head;
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        Attention {
            group_norm: self.group_norm.map(|(groups, eps)| {
                GroupNormConfig::new(groups, self.query_dim)
                    .with_epsilon(eps)
                    .init(device)
            }),
            to_q: LinearConfig::new(self.query_dim, inner)
                .with_bias(self.bias)
                .init(device),
            to_k: LinearConfig::new(kv_dim, inner)
                .with_bias(self.bias)
                .init(device),
            to_v: LinearConfig::new(kv_dim, inner)
                .with_bias(self.bias)
                .init(device),
            to_out: vec![LinearConfig::new(inner, self.query_dim).init(device)],
            lora: None,
            mutual_self_attention: false,
            heads: self.heads,
            residual_connection: self.residual_connection,
            rescale_output_factor: self.rescale_output_factor,
            max_bytes: self.max_bytes,
        }
    }
}

/// diffusers `Attention` with `AttnProcessor2_0` semantics. Weight keys: `to_q`, `to_k`, `to_v`,
/// `to_out.0`, and `group_norm` in the VAE.
#[derive(Module, Debug)]
pub struct Attention {
    /// Optional GroupNorm over channels before attention (VAE).
    pub group_norm: Option<GroupNorm>,
    /// Query projection.
    pub to_q: Linear,
    /// Key projection.
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// `to_out.0`: output projection (`to_out.1` is dropout).
    pub to_out: Vec<Linear>,
    /// LoRA deltas on the projections (GoodDrag §3.1; docs/ALGORITHM.md §1.9); absent when loading the
    /// base weights, attached afterwards by [`crate::lora`].
    pub lora: Option<AttentionLora>,
    /// MasaCtrl (docs/ALGORITHM.md §1.16): in a self-attention over a batch `[reference, edited, …]`, every
    /// sample's queries attend to the reference sample's keys and values.
    pub mutual_self_attention: bool,
    /// Number of heads.
    pub heads: usize,
    /// Add the input back after the output projection.
    pub residual_connection: bool,
    /// Divide the output by this.
    pub rescale_output_factor: f64,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl Attention {
    /// Token attention. x: `[b, n, query_dim]`, context: `[b, m, cross_dim]` (None = self) →
    /// `[b, n, query_dim]`.
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let residual = self.residual_connection.then(|| x.clone());
        let x = match &self.group_norm {
            // GroupNorm runs over channels: [b, n, c] → [b, c, n] and back.
            Some(norm) => layers::group_norm(norm, x.swap_dims(1, 2)).swap_dims(1, 2),
            None => x,
        };
        let mutual = self.mutual_self_attention && context.is_none();
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.queries(x);
        let (k, v) = self.keys_values(context);
        let h = if mutual {
            mutual_attention(q, k, v, self.heads, self.max_bytes)
        } else {
            scaled_dot_product_attention(q, k, v, self.heads, false, self.max_bytes)
        };
        self.output(h, residual)
    }

    /// `to_q` (with its LoRA delta) of `x`.
    fn queries(&self, x: Tensor<3>) -> Tensor<3> {
        let lora = self.lora.as_ref().and_then(|l| l.to_q.as_ref());
        project(&self.to_q, lora, x)
    }

    /// `to_out.0` (with its LoRA delta) of the attended values, the residual added back and
    /// the output rescaled.
    fn output(&self, h: Tensor<3>, residual: Option<Tensor<3>>) -> Tensor<3> {
        let lora = self.lora.as_ref().and_then(|l| l.to_out.as_ref());
        let mut h = project(&self.to_out[0], lora, h);
        if let Some(residual) = residual {
            h = h + residual;
        }
        if self.rescale_output_factor != 1.0 {
            h = h / self.rescale_output_factor;
        }
        h
    }

    /// The keys and values of a self-attention over `x` (`[b, n, c]` → `[b, n, heads·d]` each),
    /// LoRA deltas included.
    pub fn keys_values(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let lora = self.lora.as_ref();
        let k = project(&self.to_k, lora.and_then(|l| l.to_k.as_ref()), x.clone());
        let v = project(&self.to_v, lora.and_then(|l| l.to_v.as_ref()), x);
        (k, v)
    }

    /// [`forward`](Self::forward) of the query tokens `x` (`[b, r, c]`) against given keys and
    /// values ([`keys_values`](Self::keys_values) of all tokens): a band of a self-attention's
    /// output rows. Not for MasaCtrl's mutual attention or a VAE attention (GroupNorm over all
    /// tokens).
    pub fn forward_with_kv(&self, x: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        debug_assert!(!self.mutual_self_attention && self.group_norm.is_none());
        let residual = self.residual_connection.then(|| x.clone());
        let h =
            scaled_dot_product_attention(self.queries(x), k, v, self.heads, false, self.max_bytes);
        self.output(h, residual)
    }

    /// Spatial self-attention (VAE mid block). x: `[b, c, h, w]` → `[b, c, h, w]`.
    pub fn forward_spatial(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = x.reshape([b, c, h * w]).swap_dims(1, 2);
        self.forward(tokens, None)
            .swap_dims(1, 2)
            .reshape([b, c, h, w])
    }
}

/// `linear(x) [+ lora(x)]`.
fn project(linear: &Linear, lora: Option<&LoraLinear>, x: Tensor<3>) -> Tensor<3> {
    match lora {
        Some(delta) => layers::linear(linear, x.clone()) + delta.forward(x),
        None => layers::linear(linear, x),
    }
}

/// MasaCtrl's mutual self-attention (docs/ALGORITHM.md §1.16, `MutualSelfAttentionControl.attn_batch`):
/// the queries of all `b` samples, concatenated along the token axis, attend to the keys and
/// values of sample 0 (the reference branch). q, k, v: `[b, n, heads·d]` → `[b, n, heads·d]`.
fn mutual_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    max_bytes: usize,
) -> Tensor<3> {
    let [b, n, inner] = q.dims();
    let [_, _, inner_v] = v.dims();
    let q = q.reshape([1, b * n, inner]);
    let out = scaled_dot_product_attention(
        q,
        k.narrow(0, 0, 1),
        v.narrow(0, 0, 1),
        heads,
        false,
        max_bytes,
    );
    out.reshape([b, n, inner_v])
}

/// A LoRA delta beside a frozen `Linear`: `scale · up(down(x))` (diffusers/PEFT `lora_A` =
/// `down` `[in, r]`, `lora_B` = `up` `[r, out]`, both stored burn-style `[in, out]`).
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// `[in] → [rank]`, no bias.
    pub down: Linear,
    /// `[rank] → [out]`, no bias.
    pub up: Linear,
    /// `alpha / rank` (1 for GoodDrag's and diffusers-saved LoRAs).
    pub scale: f64,
}

impl LoraLinear {
    /// x: `[b, n, in]` → `[b, n, out]`, computed in the factors' dtype (f32 master weights) and
    /// returned in `x`'s: with f16 compute the delta runs in f32, as the official
    /// `LoRALinearLayer` casts its input to the LoRA weights' dtype and the result back.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let dtype = x.dtype();
        let x = precision::to_dtype(x, self.down.weight.val().dtype());
        let h = layers::linear(&self.up, layers::linear(&self.down, x));
        let h = if self.scale == 1.0 {
            h
        } else {
            h.mul_scalar(self.scale)
        };
        precision::to_dtype(h, dtype)
    }
}

/// The LoRA deltas of one attention module; a LoRA file may adapt only some projections.
#[derive(Module, Debug)]
pub struct AttentionLora {
    /// Delta on `to_q`.
    pub to_q: Option<LoraLinear>,
    /// Delta on `to_k`.
    pub to_k: Option<LoraLinear>,
    /// Delta on `to_v`.
    pub to_v: Option<LoraLinear>,
    /// Delta on `to_out.0`.
    pub to_out: Option<LoraLinear>,
}

/// GEGLU (diffusers `activations.GEGLU`): `proj` to twice the width, `hidden · gelu(gate)`.
#[derive(Module, Debug)]
pub struct GeGlu {
    /// `[dim] → [2·inner]`.
    pub proj: Linear,
}

impl GeGlu {
    /// x: `[b, n, dim]` → `[b, n, inner]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = layers::linear(&self.proj, x);
        let [_, _, two_inner] = h.dims();
        let inner = two_inner / 2;
        let hidden = h.clone().narrow(2, 0, inner);
        let gate = h.narrow(2, inner, inner);
        profiler::op("GEGLU (hidden · gelu(gate))", &hidden.device(), || {
            hidden * gelu(gate)
        })
    }
}

/// A parameterless placeholder that keeps diffusers' list indices (`ff.net.1` is dropout).
#[derive(Module, Debug)]
pub struct Placeholder {}

/// diffusers `FeedForward` with GEGLU: `net.0` = GEGLU, `net.1` = dropout, `net.2` = Linear.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `(GEGLU, dropout, Linear)`: weight keys `net.0.proj`, `net.2`.
    pub net: (GeGlu, Placeholder, Linear),
}

impl FeedForward {
    /// x: `[b, n, dim]` → `[b, n, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        layers::linear(&self.net.2, self.net.0.forward(x))
    }
}

/// diffusers `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// LayerNorm before self-attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn1: Attention,
    /// LayerNorm before cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention to the text embedding.
    pub attn2: Attention,
    /// LayerNorm before the feed-forward.
    pub norm3: LayerNorm,
    /// GEGLU feed-forward.
    pub ff: FeedForward,
}

/// Options of a [`BasicTransformerBlock`].
#[derive(Debug, Clone)]
pub struct BasicTransformerBlockConfig {
    /// Channels.
    pub dim: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub dim_head: usize,
    /// Text embedding channels.
    pub cross_attention_dim: usize,
    /// `attention_bias` (false in SD).
    pub attention_bias: bool,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl BasicTransformerBlockConfig {
    /// Builds the block.
    pub fn init(&self, device: &Device) -> BasicTransformerBlock {
        let attn = |cross: Option<usize>| AttentionConfig {
            query_dim: self.dim,
            cross_attention_dim: cross,
            heads: self.heads,
            dim_head: self.dim_head,
            bias: self.attention_bias,
            group_norm: None,
            residual_connection: false,
            rescale_output_factor: 1.0,
            max_bytes: self.max_bytes,
        };
        let inner = self.dim * 4;
        let norm = || {
            LayerNormConfig::new(self.dim)
                .with_epsilon(1e-5)
                .init(device)
        };
        BasicTransformerBlock {
            norm1: norm(),
            attn1: attn(None).init(device),
            norm2: norm(),
            attn2: attn(Some(self.cross_attention_dim)).init(device),
            norm3: norm(),
            ff: FeedForward {
                net: (
                    GeGlu {
                        proj: LinearConfig::new(self.dim, inner * 2).init(device),
                    },
                    Placeholder {},
                    LinearConfig::new(inner, self.dim).init(device),
                ),
            },
        }
    }
}

impl BasicTransformerBlock {
    /// [`forward`](Self::forward) of the tokens `x` (`[b, r, dim]`, a band of rows) given the
    /// self-attention's keys and values over all tokens: every other part is token-wise.
    pub fn forward_rows(
        &self,
        x: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        context: Tensor<3>,
    ) -> Tensor<3> {
        let normed = layers::layer_norm(&self.norm1, x.clone());
        let x = self.attn1.forward_with_kv(normed, k, v) + x;
        self.after_self_attention(x, context)
    }

    /// The cross-attention and feed-forward halves (token-wise), each with its residual.
    fn after_self_attention(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let x = self
            .attn2
            .forward(layers::layer_norm(&self.norm2, x.clone()), Some(context))
            + x;
        self.ff.forward(layers::layer_norm(&self.norm3, x.clone())) + x
    }

    /// x: `[b, n, dim]`, context: `[b, m, cross_dim]` → `[b, n, dim]`.
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let x = self
            .attn1
            .forward(layers::layer_norm(&self.norm1, x.clone()), None)
            + x;
        self.after_self_attention(x, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::deterministic_values;
    use crate::tensor_io::relative_error;

    #[test]
    fn sd15_first_self_attention_chunks_fit_128_mib() {
        // 512×512: 4096 tokens, 8 heads, f32.
        let (g, r) = attention_chunks(8, 4096, 4096, 4, DEFAULT_ATTENTION_BYTES);
        assert_eq!(r, 4096);
        assert!(
            g * r * 4096 * 4 <= DEFAULT_ATTENTION_BYTES,
            "{g} heads per chunk"
        );
        // A 32 MiB budget splits one head into query blocks.
        let (g, r) = attention_chunks(8, 4096, 4096, 4, 32 << 20);
        assert_eq!((g, r), (1, 2048));
    }

    fn data(shape: [usize; 3], seed: f64, device: &Device) -> Tensor<3> {
        let n = shape.iter().product();
        Tensor::from_data(
            TensorData::new(deterministic_values(n, seed, 2.0), shape),
            device,
        )
    }

    fn naive(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Vec<f32> {
        let device = q.device();
        let [b, n, inner] = q.dims();
        let [_, m, _] = k.dims();
        let d = inner / heads;
        let split = |t: Tensor<3>, len| t.reshape([b, len, heads, d]).swap_dims(1, 2);
        let mut s = split(q, n).matmul(split(k, m).swap_dims(2, 3)) / (d as f64).sqrt();
        if causal {
            s = s + causal_bias(n, m, &device).unsqueeze::<4>();
        }
        let out = softmax(s, 3)
            .matmul(split(v, m))
            .swap_dims(1, 2)
            .reshape([b, n, inner]);
        out.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn chunked_attention_equals_unchunked_for_every_split() {
        let device = Device::flex();
        let (q, k, v) = (
            data([2, 10, 12], 0.1, &device),
            data([2, 7, 12], 0.2, &device),
            data([2, 7, 12], 0.3, &device),
        );
        let reference = naive(q.clone(), k.clone(), v.clone(), 3, false);
        // Budgets: everything at once, some heads per chunk, query blocks of 3 and 1 rows.
        for max_bytes in [1 << 20, 10 * 7 * 4 * 2, 3 * 7 * 4, 1] {
            let out =
                scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), 3, false, max_bytes);
            let out: Vec<f32> = out.into_data().try_into_vec_as::<f32>().unwrap();
            assert!(
                relative_error(&out, &reference) < 1e-6,
                "budget {max_bytes}"
            );
        }
    }

    #[test]
    fn chunked_causal_attention_equals_unchunked() {
        let device = Device::flex();
        let (q, k, v) = (
            data([1, 9, 8], 0.4, &device),
            data([1, 9, 8], 0.5, &device),
            data([1, 9, 8], 0.6, &device),
        );
        let reference = naive(q.clone(), k.clone(), v.clone(), 2, true);
        for max_bytes in [1 << 20, 4 * 9 * 4, 1] {
            let out =
                scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), 2, true, max_bytes);
            let out: Vec<f32> = out.into_data().try_into_vec_as::<f32>().unwrap();
            assert!(
                relative_error(&out, &reference) < 1e-6,
                "budget {max_bytes}"
            );
        }
    }

    #[test]
    fn chunked_attention_gradients_equal_unchunked() {
        // Backward through the chunks (narrow/cat) gives the same input gradients.
        let device = Device::flex().autodiff();
        let grads_for = |max_bytes: usize| -> Vec<Vec<f32>> {
            let q = data([1, 6, 8], 0.7, &device).require_grad();
            let k = data([1, 5, 8], 0.8, &device).require_grad();
            let v = data([1, 5, 8], 0.9, &device).require_grad();
            let out =
                scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), 2, false, max_bytes);
            let grads = (out.clone() * out).sum().backward();
            [q, k, v]
                .iter()
                .map(|t| {
                    t.grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .unwrap()
                })
                .collect()
        };
        let reference = grads_for(1 << 20);
        for max_bytes in [6 * 5 * 4, 2 * 5 * 4, 1] {
            for (g, r) in grads_for(max_bytes).iter().zip(&reference) {
                assert!(relative_error(g, r) < 1e-6, "budget {max_bytes}");
            }
        }
    }
}
