//! The conditional UNet (diffusers `models/unets/unet_2d_condition.py`), built from its
//! `config.json`, with a feature tap: one forward returns the noise prediction and the outputs
//! of the requested up blocks (GoodDrag reads `up_blocks[2]`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::attention::BasicTransformerBlock;
use super::embeddings::{TimestepEmbedding, timestep_embedding};
use super::resnet::conv;
use super::unet_2d_blocks::{
    DownBlock2D, Transformer2DModel, UNetBlockConfig, UNetMidBlock2DCrossAttn, UpBlock2D,
};
use crate::kernels::layers;
use crate::kernels::precision::{self, Precision};
use crate::perf::profiler;
use crate::{Error, Result};

/// A config value that diffusers allows either once for all blocks or once per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// One value for every block.
    One(T),
    /// One value per block.
    Many(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// The value for each of `n` blocks.
    pub fn per_block(&self, n: usize, name: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Many(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Many(v) => Err(Error::InvalidInput(format!(
                "UNet config: `{name}` has {} entries ({v:?}) but there are {n} down blocks",
                v.len()
            ))),
        }
    }
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`); defaults are SD 1.5's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Latent size the model was trained at (64 for 512 px).
    pub sample_size: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// `2·x − 1` on the input (false in SD).
    pub center_input_sample: bool,
    /// `[cos, sin]` instead of `[sin, cos]` in the timestep embedding.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn`.
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Must be false.
    pub only_cross_attention: PerBlock<bool>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// ResNets per down block (up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the down-sampling convolutions.
    pub downsample_padding: usize,
    /// Output scale of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// Must be `silu`.
    pub act_fn: String,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// ResNet GroupNorm epsilon.
    pub norm_eps: f64,
    /// Text embedding channels.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention.
    pub transformer_layers_per_block: PerBlock<usize>,
    /// The number of HEADS when `num_attention_heads` is absent (diffusers' naming quirk,
    /// SD 1.5: 8; SD 2.x: `[5, 10, 20, 20]`).
    pub attention_head_dim: PerBlock<usize>,
    /// Heads per block (newer configs).
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Linear `proj_in`/`proj_out` (SD 2.x).
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 when running in f16 (SD 2.1).
    pub upcast_attention: bool,
    /// Must be `default`.
    pub resnet_time_scale_shift: String,
    /// Must be `positional`.
    pub time_embedding_type: String,
    /// Kernel of `conv_in`.
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out`.
    pub conv_out_kernel: usize,
    /// Must be null.
    pub class_embed_type: Option<String>,
    /// Must be null.
    pub addition_embed_type: Option<String>,
    /// Must be null.
    pub encoder_hid_dim_type: Option<String>,
    /// Must be null.
    pub num_class_embeds: Option<usize>,
    /// Must be null.
    pub time_cond_proj_dim: Option<usize>,
    /// Must be false.
    pub dual_cross_attention: bool,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self {
            sample_size: 64,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(768),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            class_embed_type: None,
            addition_embed_type: None,
            encoder_hid_dim_type: None,
            num_class_embeds: None,
            time_cond_proj_dim: None,
            dual_cross_attention: false,
        }
    }
}

impl UNet2DConditionConfig {
    /// Parses `config.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("UNet config.json: {e}")))
    }

    /// Builds the UNet (weights uninitialised until loaded). `max_attention_bytes` bounds every
    /// attention score chunk (see [`super::attention::attention_budget`]).
    pub fn init(
        &self,
        max_attention_bytes: usize,
        device: &Device,
    ) -> Result<UNet2DConditionModel> {
        let bad = |what: String| {
            Err(Error::InvalidInput(format!(
                "UNet config: {what} is not supported"
            )))
        };
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "{} down blocks / {} up blocks for {} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len(),
                n
            ));
        }
        if self.act_fn != "silu" {
            return bad(format!("act_fn `{}`", self.act_fn));
        }
        if self.resnet_time_scale_shift != "default" {
            return bad(format!(
                "resnet_time_scale_shift `{}`",
                self.resnet_time_scale_shift
            ));
        }
        if self.time_embedding_type != "positional" {
            return bad(format!(
                "time_embedding_type `{}`",
                self.time_embedding_type
            ));
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return bad("class embeddings".into());
        }
        if self.addition_embed_type.is_some()
            || self.encoder_hid_dim_type.is_some()
            || self.time_cond_proj_dim.is_some()
        {
            return bad("addition/encoder-hidden/time-cond embeddings".into());
        }
        if self.dual_cross_attention
            || self
                .only_cross_attention
                .per_block(n, "only_cross_attention")?
                .contains(&true)
        {
            return bad("dual or only cross-attention".into());
        }
        if self
            .mid_block_type
            .as_deref()
            .is_some_and(|t| t != "UNetMidBlock2DCrossAttn")
        {
            return bad(format!("mid_block_type `{:?}`", self.mid_block_type));
        }
        if self.center_input_sample {
            return bad("center_input_sample".into());
        }
        let layers = self.layers_per_block.per_block(n, "layers_per_block")?;
        let cross = self
            .cross_attention_dim
            .per_block(n, "cross_attention_dim")?;
        let tlayers = self
            .transformer_layers_per_block
            .per_block(n, "transformer_layers_per_block")?;
        // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
        let heads = match &self.num_attention_heads {
            Some(h) => h.per_block(n, "num_attention_heads")?,
            None => self.attention_head_dim.per_block(n, "attention_head_dim")?,
        };
        let boc = &self.block_out_channels;
        for (i, (&c, &h)) in boc.iter().zip(&heads).enumerate() {
            if h == 0 || c % h != 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "block {i}: {c} channels with {h} heads and {} groups",
                    self.norm_num_groups
                ));
            }
        }
        let time_embed_dim = boc[0] * 4;
        let block = |i: usize, cross_attention: bool| UNetBlockConfig {
            temb_channels: time_embed_dim,
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            transformer_layers: if cross_attention { tlayers[i] } else { 0 },
            heads: heads[i],
            cross_attention_dim: cross[i],
            use_linear_projection: self.use_linear_projection,
            max_bytes: max_attention_bytes,
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channel = boc[0];
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = boc[i];
            let cross_attention = match kind.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => return bad(format!("down block type `{other}`")),
            };
            down_blocks.push(block(i, cross_attention).down_block(
                input_channel,
                output_channel,
                layers[i],
                cross_attention,
                i + 1 < n,
                self.downsample_padding,
                device,
            ));
        }
        let mid_block =
            block(n - 1, true).mid_block(boc[n - 1], self.mid_block_scale_factor, device);

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = layers.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channel = rev[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = rev[i];
            let input_channel = rev[(i + 1).min(n - 1)];
            let cross_attention = match kind.as_str() {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                other => return bad(format!("up block type `{other}`")),
            };
            up_blocks.push(block(n - 1 - i, cross_attention).up_block(
                input_channel,
                prev_output_channel,
                output_channel,
                rev_layers[i] + 1,
                cross_attention,
                i + 1 < n,
                device,
            ));
        }

        Ok(UNet2DConditionModel {
            conv_in: conv(self.in_channels, boc[0], self.conv_in_kernel, device),
            time_embedding: TimestepEmbedding::new(boc[0], time_embed_dim, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, boc[0])
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv(boc[0], self.out_channels, self.conv_out_kernel, device),
            time_proj_channels: boc[0],
            backward_plan: BackwardPlan::default(),
            precision: Precision::default(),
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
        })
    }
}

/// What one UNet forward returns.
#[derive(Debug, Clone)]
pub struct UNetOutput {
    /// The noise prediction, `[b, out_channels, h, w]`.
    pub noise_pred: Tensor<4>,
    /// `(i, output of up_blocks[i])` for each requested tap, in the order requested.
    pub up_block_features: Vec<(usize, Tensor<4>)>,
}

impl UNetOutput {
    /// The output of `up_blocks[i]`, if it was requested.
    pub fn up_block(&self, i: usize) -> Option<&Tensor<4>> {
        self.up_block_features
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, t)| t)
    }
}

/// Every intermediate of one forward (parity tests and debugging).
#[derive(Debug, Clone)]
pub struct UNetIntermediates {
    /// `TimestepEmbedding` output, `[b, 4·c0]`.
    pub time_emb: Tensor<2>,
    /// Output of each down block (after its down-sampler).
    pub down_blocks: Vec<Tensor<4>>,
    /// Mid block output.
    pub mid_block: Tensor<4>,
    /// Output of each up block (after its up-sampler).
    pub up_blocks: Vec<Tensor<4>>,
    /// The noise prediction.
    pub noise_pred: Tensor<4>,
}

/// diffusers `UNet2DConditionModel` (SD 1.x / 2.x). Fields follow the weight keys.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Timestep MLP.
    pub time_embedding: TimestepEmbedding,
    /// Down path.
    pub down_blocks: Vec<DownBlock2D>,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2DCrossAttn,
    /// Up path.
    pub up_blocks: Vec<UpBlock2D>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// Output convolution.
    pub conv_out: Conv2d,
    /// Width of the sinusoidal timestep embedding (`block_out_channels[0]`).
    pub time_proj_channels: usize,
    /// `[cos, sin]` order.
    pub flip_sin_to_cos: bool,
    /// Frequency shift.
    pub freq_shift: f64,
    /// Which layers keep their autodiff graph from a recorded forward to its backward
    /// (`exec::recompute`); the rest are recomputed. Not a weight: set by whoever knows the
    /// device's memory.
    #[module(skip)]
    pub backward_plan: BackwardPlan,
    /// The activations' dtype ([`Precision`]): inputs are cast to it at the entry, the noise
    /// prediction and tapped features leave as f32. Not a weight: set by whoever knows the
    /// adapter.
    #[module(skip)]
    pub precision: Precision,
}

/// How a gradient pass through the UNet trades memory for work (docs/ARCHITECTURE.md §4): the
/// layers whose graphs a recorded forward keeps until the backward; every other layer is run
/// again from its saved input during the backward (one more forward of that layer). Results are
/// the same on every plan up to f32 summation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackwardPlan {
    /// Keep no graph: the backward recomputes every layer — the least memory (≈ 4 GiB for a
    /// 512×512 edit with f16 weights), one more UNet forward per backward.
    #[default]
    Recompute,
    /// Keep the graphs of the layers below the latent's full resolution; recompute only the
    /// full-resolution level, whose self-attention over h·w tokens holds most of the memory.
    RecomputeTop,
    /// Keep every graph: plain autodiff — the most memory, no extra forward.
    Autodiff,
}

impl BackwardPlan {
    /// Every plan, least memory first.
    pub const ALL: [BackwardPlan; 3] = [Self::Recompute, Self::RecomputeTop, Self::Autodiff];

    /// The plan's name (`recompute`, `recompute-top`, `autodiff`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Recompute => "recompute",
            Self::RecomputeTop => "recompute-top",
            Self::Autodiff => "autodiff",
        }
    }

    /// Whether a layer whose input is `input_height` rows high, in a UNet pass over a latent
    /// `latent_height` rows high, keeps its graph.
    pub fn keeps(self, input_height: usize, latent_height: usize) -> bool {
        match self {
            Self::Recompute => false,
            Self::RecomputeTop => input_height < latent_height,
            Self::Autodiff => true,
        }
    }
}

impl std::str::FromStr for BackwardPlan {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("`{s}`: expected recompute, recompute-top or autodiff"))
    }
}

/// How [`UNet2DConditionModel::walk_with`] computes one layer: `(index, step, x, skip,
/// upsample_size) → output`.
pub type LayerApply<'a> = dyn FnMut(usize, &LayerStep, Tensor<4>, Option<Tensor<4>>, Option<[usize; 2]>) -> Tensor<4>
    + 'a;

impl UNet2DConditionModel {
    /// Noise prediction plus the outputs of the up blocks listed in `taps`, in one pass.
    ///
    /// sample: `[b, in_channels, h, w]`; timesteps: 1 or `b` host values;
    /// encoder_hidden_states: `[b, 77, cross_attention_dim]` →
    /// noise_pred `[b, out_channels, h, w]`, `up_blocks[i]` `[b, c_i, h_i, w_i]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
        taps: &[usize],
    ) -> UNetOutput {
        let mut features: Vec<Option<Tensor<4>>> = vec![None; self.up_blocks.len()];
        let (noise_pred, _) = self.run(
            sample,
            timesteps,
            encoder_hidden_states,
            &mut |stage, i, t| {
                if stage == Stage::Up && taps.contains(&i) {
                    features[i] = Some(precision::to_f32(t.clone()));
                }
            },
        );
        let up_block_features = taps
            .iter()
            .filter_map(|&i| features.get(i).and_then(Clone::clone).map(|f| (i, f)))
            .collect();
        UNetOutput {
            noise_pred,
            up_block_features,
        }
    }

    /// Forward that records every block output (parity tests, debugging); same shapes as
    /// [`forward`](Self::forward).
    pub fn forward_intermediates(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
    ) -> UNetIntermediates {
        let (mut down_blocks, mut mid, mut up_blocks) = (Vec::new(), None, Vec::new());
        let (noise_pred, time_emb) = self.run(
            sample,
            timesteps,
            encoder_hidden_states,
            &mut |stage, _, t| {
                let t = precision::to_f32(t.clone());
                match stage {
                    Stage::Down => down_blocks.push(t),
                    Stage::Mid => mid = Some(t),
                    Stage::Up => up_blocks.push(t),
                }
            },
        );
        UNetIntermediates {
            time_emb: precision::to_f32(time_emb),
            down_blocks,
            mid_block: mid.expect("mid block ran"),
            up_blocks,
            noise_pred,
        }
    }

    /// Every `BasicTransformerBlock` in forward order (down, mid, up) with its weight-key path
    /// (`down_blocks.0.attentions.0.transformer_blocks.0`). This order is MasaCtrl's layer
    /// count (docs/ALGORITHM.md §1.16): for SD 1.5, blocks 0–5 are down, 6 mid, 7–15 up.
    pub fn transformer_blocks_mut(&mut self) -> Vec<(String, &mut BasicTransformerBlock)> {
        fn push<'a>(
            out: &mut Vec<(String, &'a mut BasicTransformerBlock)>,
            prefix: String,
            attentions: &'a mut [Transformer2DModel],
        ) {
            for (j, t) in attentions.iter_mut().enumerate() {
                for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
                    out.push((
                        format!("{prefix}.attentions.{j}.transformer_blocks.{k}"),
                        block,
                    ));
                }
            }
        }
        let mut out = Vec::new();
        for (i, b) in self.down_blocks.iter_mut().enumerate() {
            push(&mut out, format!("down_blocks.{i}"), &mut b.attentions);
        }
        push(&mut out, "mid_block".into(), &mut self.mid_block.attentions);
        for (i, b) in self.up_blocks.iter_mut().enumerate() {
            push(&mut out, format!("up_blocks.{i}"), &mut b.attentions);
        }
        out
    }

    /// Turns MasaCtrl's mutual self-attention on for transformer blocks `from_block..` (GoodDrag:
    /// 10, i.e. `up_blocks[2]` and `up_blocks[3]` of SD 1.5) and off for the others; `None`
    /// turns it off everywhere. Returns how many blocks it is on for.
    pub fn set_mutual_self_attention(&mut self, from_block: Option<usize>) -> usize {
        let mut on = 0;
        for (i, (_, block)) in self.transformer_blocks_mut().into_iter().enumerate() {
            let enable = from_block.is_some_and(|start| i >= start);
            block.attn1.mutual_self_attention = enable;
            on += usize::from(enable);
        }
        on
    }

    /// The forward pass; `tap` sees each block's output. Returns (noise_pred, time embedding).
    fn run(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        ehs: Tensor<3>,
        tap: &mut dyn FnMut(Stage, usize, &Tensor<4>),
    ) -> (Tensor<4>, Tensor<2>) {
        let [b, _, _, _] = sample.dims();
        let emb = self.time_emb(timesteps, b, &sample.device());
        let (sample, ehs) = (self.in_compute_dtype(sample), self.in_compute_dtype(ehs));
        let noise_pred = self.walk(sample, &emb, &ehs, &mut |visit| {
            if let Some((stage, i)) = visit.step.ends_block {
                tap(stage, i, visit.output);
            }
        });
        (precision::to_f32(noise_pred), emb)
    }

    /// The layers of one forward, in order, for a latent of `h`×`w`: the single description
    /// of the UNet's traversal that [`forward`](Self::forward) and the recomputing backward
    /// (`exec::recompute`) both walk. SD 1.5: conv_in, 3 down levels of (resnet, transformer)
    /// ×2 + downsampler, a last down level of 2 resnets, mid (resnet, transformer, resnet),
    /// 4 up levels of (resnet on the concatenated skip [, transformer]) ×3 [+ upsampler], out.
    pub fn layer_sequence(&self, h: usize, w: usize) -> Vec<LayerStep> {
        let explicit_sizes = self.needs_explicit_upsample_sizes(h, w);
        let mut steps = vec![LayerStep::new(UNetLayer::ConvIn, true)];
        for (i, block) in self.down_blocks.iter().enumerate() {
            for j in 0..block.resnets.len() {
                let has_attention = j < block.attentions.len();
                steps.push(LayerStep::new(UNetLayer::DownResnet(i, j), !has_attention));
                if has_attention {
                    steps.push(LayerStep::new(UNetLayer::DownAttention(i, j), true));
                }
            }
            if !block.downsamplers.is_empty() {
                steps.push(LayerStep::new(UNetLayer::Downsample(i), true));
            }
            end_block(&mut steps, Stage::Down, i);
        }
        steps.push(LayerStep::new(UNetLayer::MidResnet(0), false));
        for j in 0..self.mid_block.attentions.len() {
            steps.push(LayerStep::new(UNetLayer::MidAttention(j), false));
            steps.push(LayerStep::new(UNetLayer::MidResnet(j + 1), false));
        }
        end_block(&mut steps, Stage::Mid, 0);
        let n = self.up_blocks.len();
        for (i, block) in self.up_blocks.iter().enumerate() {
            for j in 0..block.resnets.len() {
                steps.push(LayerStep::new(UNetLayer::UpResnet(i, j), false));
                if j < block.attentions.len() {
                    steps.push(LayerStep::new(UNetLayer::UpAttention(i, j), false));
                }
            }
            if !block.upsamplers.is_empty() {
                let explicit = i + 1 < n && explicit_sizes;
                steps.push(LayerStep::new(UNetLayer::Upsample(i, explicit), false));
            }
            end_block(&mut steps, Stage::Up, i);
        }
        steps.push(LayerStep::new(UNetLayer::Out, false));
        steps
    }

    /// Runs [`layer_sequence`](Self::layer_sequence) from `sample`: each layer reports its
    /// time to the profiler as a layer, up resnets consume the skip on top of the stack, and
    /// `visit` sees every layer as it ran. Returns the last layer's output (the noise
    /// prediction).
    pub fn walk(
        &self,
        sample: Tensor<4>,
        emb: &Tensor<2>,
        ehs: &Tensor<3>,
        visit: &mut dyn FnMut(LayerVisit<'_>),
    ) -> Tensor<4> {
        let [_, _, h, w] = sample.dims();
        let steps = self.layer_sequence(h, w);
        self.walk_steps(sample, emb, ehs, &steps, None, visit)
    }

    /// [`walk`](Self::walk) with each layer computed by `apply` instead of
    /// [`apply_layer`](Self::apply_layer) on `self` (the recorded forward runs some layers on
    /// the autodiff twin and keeps their graphs).
    pub fn walk_with(
        &self,
        sample: Tensor<4>,
        emb: &Tensor<2>,
        ehs: &Tensor<3>,
        apply: &mut LayerApply<'_>,
        visit: &mut dyn FnMut(LayerVisit<'_>),
    ) -> Tensor<4> {
        let [_, _, h, w] = sample.dims();
        let steps = self.layer_sequence(h, w);
        self.walk_steps(sample, emb, ehs, &steps, Some(apply), visit)
    }

    /// The output of `up_blocks[index]` (after its upsampler) without running the layers after
    /// it: what DIFT features need (`eval::dift`), at the cost of the layers up to there only.
    pub fn forward_to_up_block(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
        index: usize,
    ) -> Option<Tensor<4>> {
        let [b, _, h, w] = sample.dims();
        let emb = self.time_emb(timesteps, b, &sample.device());
        let mut steps = self.layer_sequence(h, w);
        let end = steps
            .iter()
            .position(|s| s.ends_block == Some((Stage::Up, index)))?;
        steps.truncate(end + 1);
        let features = self.walk_steps(
            self.in_compute_dtype(sample),
            &emb,
            &self.in_compute_dtype(encoder_hidden_states),
            &steps,
            None,
            &mut |_| {},
        );
        Some(precision::to_f32(features))
    }

    /// [`walk`](Self::walk) over `steps`, a prefix of the layer sequence (or all of it).
    fn walk_steps(
        &self,
        sample: Tensor<4>,
        emb: &Tensor<2>,
        ehs: &Tensor<3>,
        steps: &[LayerStep],
        mut apply: Option<&mut LayerApply<'_>>,
        visit: &mut dyn FnMut(LayerVisit<'_>),
    ) -> Tensor<4> {
        let mut skips: Vec<(usize, Tensor<4>)> = Vec::new(); // (producing layer, value)
        let mut x = sample;
        for (index, step) in steps.iter().enumerate() {
            let consumed = matches!(step.layer, UNetLayer::UpResnet(..))
                .then(|| skips.pop().expect("UNet skip connections exhausted"));
            let upsample_size = match step.layer {
                UNetLayer::Upsample(_, true) => {
                    let [_, _, sh, sw] = skips.last().expect("skip before up block").1.dims();
                    Some([sh, sw])
                }
                _ => None,
            };
            let skip = consumed.as_ref().map(|(_, s)| s.clone());
            let out = profiler::layer(step.layer.kind(), &x.device(), || match apply.as_mut() {
                Some(apply) => apply(index, step, x.clone(), skip, upsample_size),
                None => self.apply_layer(step.layer, x.clone(), skip, upsample_size, emb, ehs),
            });
            if step.pushes_skip {
                skips.push((index, out.clone()));
            }
            visit(LayerVisit {
                index,
                step,
                input: x,
                consumed_skip: consumed.map(|(i, _)| i),
                upsample_size,
                output: &out,
            });
            x = out;
        }
        x
    }

    /// One layer of [`layer_sequence`](Self::layer_sequence) on its input `x` (and, for an up
    /// resnet, the `skip` it consumes; for an upsampler, its explicit output size).
    pub fn apply_layer(
        &self,
        layer: UNetLayer,
        x: Tensor<4>,
        skip: Option<Tensor<4>>,
        upsample_size: Option<[usize; 2]>,
        emb: &Tensor<2>,
        ehs: &Tensor<3>,
    ) -> Tensor<4> {
        match layer {
            UNetLayer::ConvIn => layers::conv2d(&self.conv_in, x),
            UNetLayer::DownResnet(i, j) => self.down_blocks[i].resnets[j].forward(x, Some(emb)),
            UNetLayer::DownAttention(i, j) => self.down_blocks[i].attentions[j].forward(x, ehs),
            UNetLayer::Downsample(i) => self.down_blocks[i].downsamplers[0].forward(x),
            UNetLayer::MidResnet(j) => self.mid_block.resnets[j].forward(x, Some(emb)),
            UNetLayer::MidAttention(j) => self.mid_block.attentions[j].forward(x, ehs),
            UNetLayer::UpResnet(i, j) => {
                let skip = skip.expect("an up resnet consumes a skip");
                self.up_blocks[i].resnets[j].forward(Tensor::cat(vec![x, skip], 1), Some(emb))
            }
            UNetLayer::UpAttention(i, j) => self.up_blocks[i].attentions[j].forward(x, ehs),
            UNetLayer::Upsample(i, _) => self.up_blocks[i].upsamplers[0].forward(x, upsample_size),
            UNetLayer::Out => layers::conv2d(
                &self.conv_out,
                silu(layers::group_norm(&self.conv_norm_out, x)),
            ),
        }
    }

    /// The transformer a layer of the sequence is, if it is one.
    pub fn transformer(&self, layer: UNetLayer) -> Option<&Transformer2DModel> {
        match layer {
            UNetLayer::DownAttention(i, j) => self.down_blocks[i].attentions.get(j),
            UNetLayer::MidAttention(j) => self.mid_block.attentions.get(j),
            UNetLayer::UpAttention(i, j) => self.up_blocks[i].attentions.get(j),
            _ => None,
        }
    }

    /// Whether the up-samplers need explicit output sizes: when `h` or `w` is not a multiple
    /// of 2^(up-samplers).
    pub(crate) fn needs_explicit_upsample_sizes(&self, h: usize, w: usize) -> bool {
        let factor = 1usize
            << self
                .up_blocks
                .iter()
                .filter(|u| !u.upsamplers.is_empty())
                .count();
        !h.is_multiple_of(factor) || !w.is_multiple_of(factor)
    }

    /// `t` in the activations' dtype ([`Self::precision`]).
    pub(crate) fn in_compute_dtype<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        precision::to_dtype(t, self.precision.dtype())
    }

    /// The time embedding `[b, 4·c0]` in the activations' dtype, a single timestep broadcast
    /// over the batch (the sinusoids are formed in f32, as diffusers does under autocast).
    pub(crate) fn time_emb(&self, timesteps: &[f32], b: usize, device: &Device) -> Tensor<2> {
        assert!(
            timesteps.len() == 1 || timesteps.len() == b,
            "UNet: {} timesteps for a batch of {b}",
            timesteps.len()
        );
        let ts: Vec<f32> = if timesteps.len() == b {
            timesteps.to_vec()
        } else {
            vec![timesteps[0]; b]
        };
        let t_emb = timestep_embedding(
            &ts,
            self.time_proj_channels,
            self.flip_sin_to_cos,
            self.freq_shift,
            device,
        );
        self.time_embedding.forward(self.in_compute_dtype(t_emb))
    }
}

/// A part of the UNet whose output a forward can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A down block (`down_blocks[i]`, after its downsampler).
    Down,
    /// The mid block.
    Mid,
    /// An up block (`up_blocks[i]`, after its upsampler).
    Up,
}

/// One layer of the UNet forward (indices: block, layer in block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UNetLayer {
    /// `conv_in`.
    ConvIn,
    /// `down_blocks[i].resnets[j]`.
    DownResnet(usize, usize),
    /// `down_blocks[i].attentions[j]`.
    DownAttention(usize, usize),
    /// `down_blocks[i].downsamplers[0]`.
    Downsample(usize),
    /// `mid_block.resnets[j]`.
    MidResnet(usize),
    /// `mid_block.attentions[j]`.
    MidAttention(usize),
    /// `up_blocks[i].resnets[j]` on `cat(x, skip)`: consumes the skip on top of the stack.
    UpResnet(usize, usize),
    /// `up_blocks[i].attentions[j]`.
    UpAttention(usize, usize),
    /// `up_blocks[i].upsamplers[0]`; `true` when its output size is the next skip's (a latent
    /// side not divisible by 2^levels), else ×2.
    Upsample(usize, bool),
    /// `conv_norm_out`, SiLU, `conv_out`.
    Out,
}

impl UNetLayer {
    /// What kind of layer it is, as the profiler reports it.
    pub fn kind(self) -> &'static str {
        match self {
            UNetLayer::ConvIn => "conv_in",
            UNetLayer::DownResnet(..) | UNetLayer::MidResnet(_) | UNetLayer::UpResnet(..) => {
                "resnet"
            }
            UNetLayer::DownAttention(..)
            | UNetLayer::MidAttention(_)
            | UNetLayer::UpAttention(..) => "transformer",
            UNetLayer::Downsample(_) => "downsampler",
            UNetLayer::Upsample(..) => "upsampler",
            UNetLayer::Out => "conv_norm_out, SiLU, conv_out",
        }
    }
}

/// A layer in the sequence with its place in the UNet's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerStep {
    /// The layer.
    pub layer: UNetLayer,
    /// Whether its output is pushed onto the skip stack (for an up resnet to consume).
    pub pushes_skip: bool,
    /// The block whose output this layer's output is, when it is a block's last layer.
    pub ends_block: Option<(Stage, usize)>,
}

impl LayerStep {
    fn new(layer: UNetLayer, pushes_skip: bool) -> Self {
        Self {
            layer,
            pushes_skip,
            ends_block: None,
        }
    }
}

/// Marks the last layer pushed so far as the end of `(stage, i)`.
fn end_block(steps: &mut [LayerStep], stage: Stage, i: usize) {
    if let Some(last) = steps.last_mut() {
        last.ends_block = Some((stage, i));
    }
}

/// One layer as [`UNet2DConditionModel::walk`] ran it.
pub struct LayerVisit<'a> {
    /// Position in the layer sequence.
    pub index: usize,
    /// The layer and its bookkeeping.
    pub step: &'a LayerStep,
    /// Its input.
    pub input: Tensor<4>,
    /// The position of the layer whose output it consumed as a skip (up resnets).
    pub consumed_skip: Option<usize>,
    /// The explicit output size it was given (upsamplers of odd-sized latents).
    pub upsample_size: Option<[usize; 2]>,
    /// Its output.
    pub output: &'a Tensor<4>,
}
