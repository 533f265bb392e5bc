//! CLIP text encoder (transformers `CLIPTextModel`): token + position embeddings, pre-LN
//! transformer with causal self-attention, final LayerNorm. Output is `last_hidden_state`, the
//! conditioning SD 1.5 feeds to the UNet's cross-attention.
//!
//! SD 1.5's token embedding is 49408×768 = 151 MB in f32, above WebGPU's 128 MiB binding
//! limit, so [`SplitEmbedding`] stores it as several row blocks (weight keys `…weight.0`,
//! `…weight.1`, …; the loader splits the file's single tensor) and looks tokens up block by block.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::scaled_dot_product_attention;
use crate::kernels::layers;
use crate::{Error, Result};

/// Largest row block of the token embedding (bytes, f32).
pub const EMBEDDING_BLOCK_BYTES: usize = 64 << 20;

/// `text_encoder/config.json` (transformers `CLIPTextConfig`); defaults are SD 1.5's ViT-L/14.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Sequence length (77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.5) or `gelu` (SD 2.x).
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// `<|startoftext|>`.
    pub bos_token_id: Option<u32>,
    /// `<|endoftext|>`.
    pub eos_token_id: Option<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
            pad_token_id: Some(49407),
        }
    }
}

/// Hidden activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x·σ(1.702x)`.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl ClipTextConfig {
    /// Parses `config.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("text encoder config.json: {e}")))
    }

    /// Builds the model (weights uninitialised until loaded).
    pub fn init(&self, max_attention_bytes: usize, device: &Device) -> Result<ClipTextModel> {
        let act = match self.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                return Err(Error::InvalidInput(format!(
                    "text encoder config: hidden_act `{other}` is not supported"
                )));
            }
        };
        let (d, heads) = (self.hidden_size, self.num_attention_heads);
        if heads == 0 || d % heads != 0 {
            return Err(Error::InvalidInput(format!(
                "text encoder config: {d} channels with {heads} heads"
            )));
        }
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: norm(),
                self_attn: ClipAttention {
                    q_proj: LinearConfig::new(d, d).init(device),
                    k_proj: LinearConfig::new(d, d).init(device),
                    v_proj: LinearConfig::new(d, d).init(device),
                    out_proj: LinearConfig::new(d, d).init(device),
                    heads,
                    max_bytes: max_attention_bytes,
                },
                layer_norm2: norm(),
                mlp: ClipMlp {
                    fc1: LinearConfig::new(d, self.intermediate_size).init(device),
                    fc2: LinearConfig::new(self.intermediate_size, d).init(device),
                    quick_gelu: act == ClipActivation::QuickGelu,
                },
            })
            .collect();
        Ok(ClipTextModel {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: SplitEmbedding::new(
                        self.vocab_size,
                        d,
                        EMBEDDING_BLOCK_BYTES,
                        device,
                    ),
                    position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                        .init(device),
                },
                encoder: ClipEncoder { layers },
                final_layer_norm: norm(),
            },
        })
    }
}

/// An embedding table stored as row blocks (`weight.0`, `weight.1`, …) so no block exceeds a
/// byte budget; the loader fills the blocks from the file's single `weight` tensor.
#[derive(Module, Debug)]
pub struct SplitEmbedding {
    /// Row blocks `[rows_i, d]`, in order.
    pub weight: Vec<Param<Tensor<2>>>,
}

impl SplitEmbedding {
    /// `n` rows of `d`, split so each block is at most `max_bytes` in f32.
    pub fn new(n: usize, d: usize, max_bytes: usize, device: &Device) -> Self {
        let rows = (max_bytes / (d.max(1) * 4)).max(1);
        let mut weight = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let r = rows.min(n - r0);
            weight.push(EmbeddingConfig::new(r, d).init(device).weight);
            r0 += r;
        }
        Self { weight }
    }

    /// ids (host, flattened `[b·s]`, each < vocab) → `[b·s, d]`.
    pub fn lookup(&self, ids: &[u32]) -> Tensor<2> {
        let device = self.weight[0].lazy_device();
        let mut starts = Vec::with_capacity(self.weight.len());
        let mut total = 0usize;
        for block in &self.weight {
            starts.push(total);
            total += block.lazy_shape()[0];
        }
        let mut parts = Vec::new();
        let mut order = Vec::with_capacity(ids.len());
        for (bi, block) in self.weight.iter().enumerate() {
            let rows = block.lazy_shape()[0];
            let (lo, hi) = (starts[bi], starts[bi] + rows);
            let mut local = Vec::new();
            for (pos, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= lo && id < hi {
                    local.push((id - lo) as i64);
                    order.push(pos);
                }
            }
            if !local.is_empty() {
                let n = local.len();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(local, [n]), &device);
                parts.push(block.val().select(0, idx));
            }
        }
        assert_eq!(
            order.len(),
            ids.len(),
            "token id out of the vocabulary (checked by the caller)"
        );
        let gathered = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 0)
        };
        if order.iter().enumerate().all(|(i, &p)| i == p) {
            return gathered;
        }
        let mut inverse = vec![0i64; ids.len()];
        for (row, &pos) in order.iter().enumerate() {
            inverse[pos] = row as i64;
        }
        let n = inverse.len();
        gathered.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(inverse, [n]), &device),
        )
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.iter().map(|w| w.lazy_shape()[0]).sum()
    }
}

/// transformers `CLIPTextEmbeddings`.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    /// Token table (split into row blocks).
    pub token_embedding: SplitEmbedding,
    /// Position table `[77, d]`.
    pub position_embedding: Embedding,
}

/// transformers `CLIPAttention` (causal in the text model).
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Heads.
    pub heads: usize,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl ClipAttention {
    /// x: `[b, s, d]` → `[b, s, d]`, causal.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let q = layers::linear(&self.q_proj, x.clone());
        let k = layers::linear(&self.k_proj, x.clone());
        let v = layers::linear(&self.v_proj, x);
        layers::linear(
            &self.out_proj,
            scaled_dot_product_attention(q, k, v, self.heads, true, self.max_bytes),
        )
    }
}

/// transformers `CLIPMLP`.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `[d] → [intermediate]`.
    pub fc1: Linear,
    /// `[intermediate] → [d]`.
    pub fc2: Linear,
    /// quick_gelu (else exact GELU).
    pub quick_gelu: bool,
}

impl ClipMlp {
    /// x: `[b, s, d]` → `[b, s, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = layers::linear(&self.fc1, x);
        let h = if self.quick_gelu {
            h.clone() * sigmoid(h * 1.702)
        } else {
            gelu(h)
        };
        layers::linear(&self.fc2, h)
    }
}

/// transformers `CLIPEncoderLayer` (pre-LN).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// LayerNorm before attention.
    pub layer_norm1: LayerNorm,
    /// Causal self-attention.
    pub self_attn: ClipAttention,
    /// LayerNorm before the MLP.
    pub layer_norm2: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
}

impl ClipEncoderLayer {
    /// x: `[b, s, d]` → `[b, s, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.self_attn.forward(self.layer_norm1.forward(x.clone())) + x;
        self.mlp.forward(self.layer_norm2.forward(x.clone())) + x
    }
}

/// transformers `CLIPEncoder`.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// The layers.
    pub layers: Vec<ClipEncoderLayer>,
}

/// transformers `CLIPTextTransformer`.
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    /// Token and position embeddings.
    pub embeddings: ClipTextEmbeddings,
    /// Transformer layers.
    pub encoder: ClipEncoder,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm,
}

/// transformers `CLIPTextModel` (weight keys start with `text_model.`).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// The text transformer.
    pub text_model: ClipTextTransformer,
}

impl ClipTextModel {
    /// input_ids: `b` rows of `s ≤ 77` token ids (host) → last_hidden_state `[b, s, d]`.
    pub fn forward(&self, input_ids: &[Vec<u32>]) -> Result<Tensor<3>> {
        let tm = &self.text_model;
        let b = input_ids.len();
        let s = input_ids.first().map_or(0, Vec::len);
        let max_pos = tm.embeddings.position_embedding.weight.lazy_shape()[0];
        let vocab = tm.embeddings.token_embedding.num_embeddings();
        if b == 0 || s == 0 || s > max_pos || input_ids.iter().any(|r| r.len() != s) {
            return Err(Error::InvalidInput(format!(
                "text encoder input: need 1+ rows of equal length 1..={max_pos} token ids, got {b} rows of {:?}",
                input_ids.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        let flat: Vec<u32> = input_ids.iter().flatten().copied().collect();
        if let Some(bad) = flat.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let d = tm.final_layer_norm.gamma.lazy_shape()[0];
        let tokens = tm
            .embeddings
            .token_embedding
            .lookup(&flat)
            .reshape([b, s, d]);
        let positions = tm
            .embeddings
            .position_embedding
            .weight
            .val()
            .narrow(0, 0, s)
            .unsqueeze::<3>();
        let mut x = tokens + positions;
        for layer in &tm.encoder.layers {
            x = layer.forward(x);
        }
        Ok(tm.final_layer_norm.forward(x))
    }
}
