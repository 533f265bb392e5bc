//! Per-image LoRA (GoodDrag §3.1 follows DragDiffusion: fine-tune the UNet on the one input
//! image before inverting it; docs/ALGORITHM.md §1.9). Rank-r adapters `W·x + scale·up(down(x))` on `to_q`,
//! `to_k`, `to_v` and `to_out.0` of every attention module of the UNet (32 for SD 1.5).
//!
//! * this file: the adapter set as host data ([`LoraSet`], PyTorch layout), attaching it to a
//!   UNet, reading it back, and GoodDrag's initialisation;
//! * [`file`]: LoRA files — diffusers/PEFT (written), older diffusers attention processors
//!   (what the official GoodDrag code writes) and kohya-ss (read);
//! * [`train`]: the fine-tuning loop.

pub mod file;
pub mod train;

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::models::attention::{Attention, AttentionLora, LoraLinear};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::rng::Rng;
use crate::tensor_io::read_f32;

pub use file::{parse_lora, write_lora};
pub use train::{LoraConfig, LoraTrainer, TrainSample, train_lora};

/// The adapted projections of an attention module, in diffusers' key spelling.
pub const PROJECTIONS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// One adapted projection, PyTorch layout: `down` `[rank, in]`, `up` `[out, rank]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// `lora_A` / `lora_down`, row-major `[rank, in_features]`.
    pub down: Vec<f32>,
    /// `lora_B` / `lora_up`, row-major `[out_features, rank]`.
    pub up: Vec<f32>,
    /// Rank r.
    pub rank: usize,
    /// Input width of the adapted projection.
    pub in_features: usize,
    /// Output width of the adapted projection.
    pub out_features: usize,
    /// `alpha / rank` (1 when the file stores no alpha).
    pub scale: f64,
}

/// A whole LoRA: adapted projection path (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`)
/// → its pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoraSet {
    /// Sorted by path.
    pub layers: BTreeMap<String, LoraPair>,
}

/// Every attention module of the UNet with its key path (`….attn1`, `….attn2`), forward order.
pub fn attention_modules_mut(unet: &mut UNet2DConditionModel) -> Vec<(String, &mut Attention)> {
    let mut out = Vec::new();
    for (path, block) in unet.transformer_blocks_mut() {
        out.push((format!("{path}.attn1"), &mut block.attn1));
        out.push((format!("{path}.attn2"), &mut block.attn2));
    }
    out
}

/// `(in, out)` of a burn Linear (weights stored `[in, out]`).
fn linear_dims(linear: &Linear) -> (usize, usize) {
    let dims = linear.weight.lazy_shape().dims::<2>();
    (dims[0], dims[1])
}

fn projections_of(attn: &Attention) -> [(&'static str, &Linear); 4] {
    [
        ("to_q", &attn.to_q),
        ("to_k", &attn.to_k),
        ("to_v", &attn.to_v),
        ("to_out.0", &attn.to_out[0]),
    ]
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn lora_linear(pair: &LoraPair, trainable: bool, device: &Device) -> LoraLinear {
    let param = |data: Vec<f32>, shape: [usize; 2]| {
        Param::from_data(TensorData::new(data, shape), device).set_require_grad(trainable)
    };
    let (r, i, o) = (pair.rank, pair.in_features, pair.out_features);
    LoraLinear {
        down: Linear {
            weight: param(transpose(&pair.down, r, i), [i, r]),
            bias: None,
        },
        up: Linear {
            weight: param(transpose(&pair.up, o, r), [r, o]),
            bias: None,
        },
        scale: pair.scale,
    }
}

impl LoraSet {
    /// GoodDrag's fresh LoRA for `unet` (docs/ALGORITHM.md §1.9): every projection of every attention
    /// module, `down ~ N(0, 1/rank²)`, `up = 0` — so the adapted UNet starts equal to the base.
    pub fn init_for(unet: &mut UNet2DConditionModel, rank: usize, rng: &mut Rng) -> Result<Self> {
        if rank == 0 {
            return Err(Error::InvalidInput("LoRA rank must be at least 1".into()));
        }
        let mut layers = BTreeMap::new();
        for (path, attn) in attention_modules_mut(unet) {
            for (name, linear) in projections_of(attn) {
                let (i, o) = linear_dims(linear);
                layers.insert(
                    format!("{path}.{name}"),
                    LoraPair {
                        down: rng.normal_vec(rank * i, 1.0 / rank as f64),
                        up: vec![0.0; o * rank],
                        rank,
                        in_features: i,
                        out_features: o,
                        scale: 1.0,
                    },
                );
            }
        }
        Ok(Self { layers })
    }

    /// Replaces the UNet's LoRA with this set (modules the set does not name get none).
    /// `trainable` makes the adapter weights require gradients. Every path must exist in the
    /// UNet and every shape must match its projection; otherwise nothing is changed and the
    /// error names the first offending layer. `file` names the source in errors.
    pub fn attach(
        &self,
        unet: &mut UNet2DConditionModel,
        trainable: bool,
        file: &str,
        device: &Device,
    ) -> Result<()> {
        let bad = |problem: String| Error::Lora {
            file: file.to_string(),
            problem,
        };
        // 1. Validate everything first, so a bad file leaves the UNet as it was.
        let mut seen = 0usize;
        {
            let mut modules = attention_modules_mut(unet);
            for (path, attn) in modules.iter_mut() {
                for (name, linear) in projections_of(attn) {
                    let key = format!("{path}.{name}");
                    let Some(pair) = self.layers.get(&key) else {
                        continue;
                    };
                    seen += 1;
                    let (i, o) = linear_dims(linear);
                    if (pair.in_features, pair.out_features) != (i, o) {
                        return Err(bad(format!(
                            "layer `{key}` maps {} → {} features but this UNet's maps {i} → {o} \
                             (a LoRA for another model, e.g. SDXL or SD 2.x?)",
                            pair.in_features, pair.out_features
                        )));
                    }
                    if pair.down.len() != pair.rank * i || pair.up.len() != o * pair.rank {
                        return Err(bad(format!(
                            "layer `{key}` has inconsistent rank {}",
                            pair.rank
                        )));
                    }
                }
            }
        }
        if seen != self.layers.len() {
            let known: Vec<String> = attention_modules_mut(unet)
                .into_iter()
                .flat_map(|(p, _)| PROJECTIONS.map(|n| format!("{p}.{n}")))
                .collect();
            let unknown = self
                .layers
                .keys()
                .find(|k| !known.contains(k))
                .cloned()
                .unwrap_or_default();
            return Err(bad(format!(
                "it adapts `{unknown}`, which this UNet does not have"
            )));
        }
        if self.layers.is_empty() {
            return Err(bad("it contains no UNet attention layers".into()));
        }
        // 2. Attach.
        for (path, attn) in attention_modules_mut(unet) {
            let get = |name: &str| {
                self.layers
                    .get(&format!("{path}.{name}"))
                    .map(|p| lora_linear(p, trainable, device))
            };
            let lora = AttentionLora {
                to_q: get("to_q"),
                to_k: get("to_k"),
                to_v: get("to_v"),
                to_out: get("to_out.0"),
            };
            let any = lora.to_q.is_some()
                || lora.to_k.is_some()
                || lora.to_v.is_some()
                || lora.to_out.is_some();
            attn.lora = any.then_some(lora);
        }
        Ok(())
    }

    /// Reads the UNet's current LoRA back to the host (e.g. after training, to save it).
    pub async fn read_from(unet: &mut UNet2DConditionModel) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for (path, attn) in attention_modules_mut(unet) {
            let Some(lora) = &attn.lora else { continue };
            for (name, delta) in [
                ("to_q", &lora.to_q),
                ("to_k", &lora.to_k),
                ("to_v", &lora.to_v),
                ("to_out.0", &lora.to_out),
            ] {
                let Some(delta) = delta else { continue };
                let (i, r) = linear_dims(&delta.down);
                let (_, o) = linear_dims(&delta.up);
                let down: Tensor<2> = delta.down.weight.val();
                let up: Tensor<2> = delta.up.weight.val();
                layers.insert(
                    format!("{path}.{name}"),
                    LoraPair {
                        down: transpose(&read_f32(down).await?, i, r),
                        up: transpose(&read_f32(up).await?, r, o),
                        rank: r,
                        in_features: i,
                        out_features: o,
                        scale: delta.scale,
                    },
                );
            }
        }
        Ok(Self { layers })
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        self.layers
            .values()
            .map(|p| p.down.len() + p.up.len())
            .sum()
    }
}

/// Every LoRA weight of the UNet in a fixed order (module, then q/k/v/out, then down/up).
pub fn lora_params_mut(unet: &mut UNet2DConditionModel) -> Vec<&mut Param<Tensor<2>>> {
    let mut out = Vec::new();
    for (_, attn) in attention_modules_mut(unet) {
        let Some(lora) = attn.lora.as_mut() else {
            continue;
        };
        for delta in [
            &mut lora.to_q,
            &mut lora.to_k,
            &mut lora.to_v,
            &mut lora.to_out,
        ]
        .into_iter()
        .flatten()
        {
            out.push(&mut delta.down.weight);
            out.push(&mut delta.up.weight);
        }
    }
    out
}

/// Names of [`lora_params_mut`]'s weights, same order, in the diffusers/PEFT spelling
/// (`….attn1.to_q.lora_A.weight` = down, `lora_B` = up).
pub fn lora_param_names(unet: &mut UNet2DConditionModel) -> Vec<String> {
    let mut out = Vec::new();
    for (path, attn) in attention_modules_mut(unet) {
        let Some(lora) = attn.lora.as_ref() else {
            continue;
        };
        for (name, delta) in [
            ("to_q", &lora.to_q),
            ("to_k", &lora.to_k),
            ("to_v", &lora.to_v),
            ("to_out.0", &lora.to_out),
        ] {
            if delta.is_some() {
                out.push(format!("{path}.{name}.lora_A.weight"));
                out.push(format!("{path}.{name}.lora_B.weight"));
            }
        }
    }
    out
}

/// Removes every LoRA from the UNet (back to the base weights).
pub fn detach(unet: &mut UNet2DConditionModel) {
    for (_, attn) in attention_modules_mut(unet) {
        attn.lora = None;
    }
}
