//! UNet and VAE blocks (diffusers `models/unets/unet_2d_blocks.py`,
//! `models/transformers/transformer_2d.py`).
//!
//! The cross-attention and plain variants of a block type share one struct whose `attentions`
//! list is empty for the plain kind, so weight keys stay exactly diffusers' (`resnets.N`,
//! `attentions.N`, `downsamplers.0`, `upsamplers.0`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::attention::{
    Attention, AttentionConfig, BasicTransformerBlock, BasicTransformerBlockConfig,
};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};
use crate::kernels::layers;
use crate::kernels::row_bands::Bands;

/// `proj_in`/`proj_out` of a [`Transformer2DModel`]: a 1×1 convolution (SD 1.5) or a Linear
/// (`use_linear_projection`, SD 2.x). Both keep the key `proj_in.weight`: the weight loader
/// leaves enum variant names out of paths.
#[derive(Module, Debug)]
pub enum Projection {
    /// A 1×1 convolution (SD 1.5).
    Conv(Conv2d),
    /// A Linear (SD 2.x).
    Linear(Linear),
}

/// Options of a [`Transformer2DModel`].
#[derive(Debug, Clone)]
pub struct Transformer2DConfig {
    /// Channels in and out.
    pub in_channels: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub dim_head: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Text embedding channels.
    pub cross_attention_dim: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Linear instead of 1×1 convolution projections.
    pub use_linear_projection: bool,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl Transformer2DConfig {
    /// Builds the model.
    pub fn init(&self, device: &Device) -> Transformer2DModel {
        let inner = self.heads * self.dim_head;
        let proj = |i: usize, o: usize| {
            if self.use_linear_projection {
                Projection::Linear(LinearConfig::new(i, o).init(device))
            } else {
                Projection::Conv(Conv2dConfig::new([i, o], [1, 1]).init(device))
            }
        };
        let block = BasicTransformerBlockConfig {
            dim: inner,
            heads: self.heads,
            dim_head: self.dim_head,
            cross_attention_dim: self.cross_attention_dim,
            attention_bias: false,
            max_bytes: self.max_bytes,
        };
        Transformer2DModel {
            // diffusers hard-codes eps=1e-6 here.
            norm: GroupNormConfig::new(self.norm_num_groups, self.in_channels)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: proj(self.in_channels, inner),
            transformer_blocks: (0..self.layers).map(|_| block.init(device)).collect(),
            proj_out: proj(inner, self.in_channels),
        }
    }
}

/// diffusers `Transformer2DModel` (continuous input): GroupNorm, `proj_in`, transformer blocks,
/// `proj_out`, plus the residual.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// GroupNorm on the input (eps 1e-6).
    pub norm: GroupNorm,
    /// Into the transformer width.
    pub proj_in: Projection,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Back to the input width.
    pub proj_out: Projection,
}

impl Transformer2DModel {
    /// x: `[b, c, h, w]`, context: `[b, m, cross_dim]` → `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let residual = x.clone();
        let x = layers::group_norm(&self.norm, x);
        let tokens = |t: Tensor<4>| {
            let [_, ci, _, _] = t.dims();
            t.reshape([b, ci, h * w]).swap_dims(1, 2)
        };
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => tokens(layers::conv2d(conv, x)),
            Projection::Linear(linear) => layers::linear(linear, tokens(x)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(t, context.clone());
        }
        self.project_out(t, [b, h, w]) + residual
    }

    /// Tokens `[b, rows·w, c]` back to `[b, c, rows, w]` through `proj_out`.
    fn project_out(&self, t: Tensor<3>, [b, rows, w]: [usize; 3]) -> Tensor<4> {
        let spatial = |t: Tensor<3>| {
            let [_, _, ci] = t.dims();
            t.swap_dims(1, 2).reshape([b, ci, rows, w])
        };
        match &self.proj_out {
            Projection::Conv(conv) => layers::conv2d(conv, spatial(t)),
            Projection::Linear(linear) => spatial(layers::linear(linear, t)),
        }
    }

    /// The single transformer block, when this transformer can be computed band by band:
    /// `None` with more than one block (the second attends to all of the first's output) or
    /// with MasaCtrl's mutual attention (keys from another sample).
    pub fn bandable_block(&self) -> Option<&BasicTransformerBlock> {
        match &self.transformer_blocks[..] {
            [block] if !block.attn1.mutual_self_attention => Some(block),
            _ => None,
        }
    }

    /// The tokens `[b, rows·w, c]` of image rows `y0..y0 + rows` after GroupNorm (statistics
    /// over the whole input, as in [`forward`](Self::forward)) and `proj_in` (token-wise).
    fn band_tokens(&self, x: Tensor<4>, y0: usize, rows: usize) -> Tensor<3> {
        let [b, _, _, w] = x.dims();
        let x = layers::group_norm(&self.norm, x).narrow(2, y0, rows);
        let tokens = |t: Tensor<4>| {
            let [_, ci, th, _] = t.dims();
            t.reshape([b, ci, th * w]).swap_dims(1, 2)
        };
        match &self.proj_in {
            Projection::Conv(conv) => tokens(layers::conv2d(conv, x)),
            Projection::Linear(linear) => layers::linear(linear, tokens(x)),
        }
    }

    /// The self-attention's keys and values over all tokens of `x` (`[b, h·w, heads·d]` each),
    /// for [`forward_rows`](Self::forward_rows); `None` where the transformer cannot be banded.
    pub fn self_attention_kv(&self, x: Tensor<4>) -> Option<(Tensor<3>, Tensor<3>)> {
        let block = self.bandable_block()?;
        let [_, _, h, _] = x.dims();
        let t = self.band_tokens(x, 0, h);
        Some(block.attn1.keys_values(layers::layer_norm(&block.norm1, t)))
    }

    /// Output rows `y0..y0 + rows` of [`forward`](Self::forward), `[b, c, rows, w]`, given the
    /// self-attention's keys and values over all tokens ([`self_attention_kv`](Self::self_attention_kv)):
    /// everything else in the layer works token by token (GroupNorm's statistics come from the
    /// whole input). The recomputing backward (`exec::recompute`) pulls gradients through a
    /// large transformer band by band, so only one band's attention scores are alive at a time.
    /// `None` where the transformer cannot be banded.
    pub fn forward_rows(
        &self,
        x: Tensor<4>,
        context: &Tensor<3>,
        (y0, rows): (usize, usize),
        (k, v): (Tensor<3>, Tensor<3>),
    ) -> Option<Tensor<4>> {
        let block = self.bandable_block()?;
        let [b, _, _, w] = x.dims();
        let residual = x.clone().narrow(2, y0, rows);
        let t = block.forward_rows(self.band_tokens(x, y0, rows), k, v, context.clone());
        Some(self.project_out(t, [b, rows, w]) + residual)
    }
}

/// Options shared by the UNet's down/mid/up blocks.
#[derive(Debug, Clone)]
pub struct UNetBlockConfig {
    /// Time embedding channels.
    pub temb_channels: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// ResNet GroupNorm epsilon.
    pub eps: f64,
    /// Transformer blocks per attention (0 = plain block without attention).
    pub transformer_layers: usize,
    /// Heads.
    pub heads: usize,
    /// Text embedding channels.
    pub cross_attention_dim: usize,
    /// Linear projections in the transformers.
    pub use_linear_projection: bool,
    /// Byte budget of one attention score chunk.
    pub max_bytes: usize,
}

impl UNetBlockConfig {
    fn resnet(&self, i: usize, o: usize, scale: f64, device: &Device) -> ResnetBlock2D {
        ResnetBlock2DConfig {
            in_channels: i,
            out_channels: o,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            output_scale_factor: scale,
        }
        .init(device)
    }

    fn transformer(&self, channels: usize, device: &Device) -> Transformer2DModel {
        Transformer2DConfig {
            in_channels: channels,
            heads: self.heads,
            dim_head: channels / self.heads,
            layers: self.transformer_layers,
            cross_attention_dim: self.cross_attention_dim,
            norm_num_groups: self.groups,
            use_linear_projection: self.use_linear_projection,
            max_bytes: self.max_bytes,
        }
        .init(device)
    }

    /// `CrossAttnDownBlock2D` (with `cross_attention`) or `DownBlock2D`.
    #[allow(clippy::too_many_arguments)]
    pub fn down_block(
        &self,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        cross_attention: bool,
        add_downsample: bool,
        downsample_padding: usize,
        device: &Device,
    ) -> DownBlock2D {
        DownBlock2D {
            resnets: (0..layers)
                .map(|i| {
                    self.resnet(
                        if i == 0 { in_channels } else { out_channels },
                        out_channels,
                        1.0,
                        device,
                    )
                })
                .collect(),
            attentions: if cross_attention {
                (0..layers)
                    .map(|_| self.transformer(out_channels, device))
                    .collect()
            } else {
                Vec::new()
            },
            downsamplers: if add_downsample {
                vec![Downsample2D::new(
                    out_channels,
                    out_channels,
                    downsample_padding,
                    device,
                )]
            } else {
                Vec::new()
            },
        }
    }

    /// `UNetMidBlock2DCrossAttn` (one attention between two resnets).
    pub fn mid_block(
        &self,
        channels: usize,
        output_scale_factor: f64,
        device: &Device,
    ) -> UNetMidBlock2DCrossAttn {
        UNetMidBlock2DCrossAttn {
            resnets: (0..2)
                .map(|_| self.resnet(channels, channels, output_scale_factor, device))
                .collect(),
            attentions: vec![self.transformer(channels, device)],
        }
    }

    /// `CrossAttnUpBlock2D` (with `cross_attention`) or `UpBlock2D`; `layers` resnets
    /// (`layers_per_block + 1`).
    #[allow(clippy::too_many_arguments)]
    pub fn up_block(
        &self,
        in_channels: usize,
        prev_output_channels: usize,
        out_channels: usize,
        layers: usize,
        cross_attention: bool,
        add_upsample: bool,
        device: &Device,
    ) -> UpBlock2D {
        UpBlock2D {
            resnets: (0..layers)
                .map(|i| {
                    let res_skip = if i == layers - 1 {
                        in_channels
                    } else {
                        out_channels
                    };
                    let resnet_in = if i == 0 {
                        prev_output_channels
                    } else {
                        out_channels
                    };
                    self.resnet(resnet_in + res_skip, out_channels, 1.0, device)
                })
                .collect(),
            attentions: if cross_attention {
                (0..layers)
                    .map(|_| self.transformer(out_channels, device))
                    .collect()
            } else {
                Vec::new()
            },
            upsamplers: if add_upsample {
                vec![Upsample2D::new(out_channels, out_channels, device)]
            } else {
                Vec::new()
            },
        }
    }
}

/// diffusers `CrossAttnDownBlock2D` / `DownBlock2D` (`attentions` empty).
#[derive(Module, Debug)]
pub struct DownBlock2D {
    /// ResNet blocks.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer after each resnet (cross-attention kind only).
    pub attentions: Vec<Transformer2DModel>,
    /// The strided convolution (all but the last block).
    pub downsamplers: Vec<Downsample2D>,
}

/// diffusers `UNetMidBlock2DCrossAttn`. The UNet blocks have no `forward` of their own: the
/// UNet walks their layers one by one (`UNet2DConditionModel::layer_sequence`), so the plain
/// forward and the recomputing backward share one traversal.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer between them.
    pub attentions: Vec<Transformer2DModel>,
}

/// diffusers `CrossAttnUpBlock2D` / `UpBlock2D` (`attentions` empty).
#[derive(Module, Debug)]
pub struct UpBlock2D {
    /// ResNet blocks (each takes the concatenated skip).
    pub resnets: Vec<ResnetBlock2D>,
    /// One transformer after each resnet (cross-attention kind only).
    pub attentions: Vec<Transformer2DModel>,
    /// Nearest upsampling + convolution (all but the last block).
    pub upsamplers: Vec<Upsample2D>,
}

// ------------------------------------------------------------------------------------------
// VAE blocks
// ------------------------------------------------------------------------------------------

/// `layers` VAE resnets (no time embedding, output scale 1): the first maps `in_channels` to
/// `out_channels`, the rest keep `out_channels`.
fn vae_resnets(
    in_channels: usize,
    out_channels: usize,
    layers: usize,
    groups: usize,
    eps: f64,
    device: &Device,
) -> Vec<ResnetBlock2D> {
    (0..layers)
        .map(|i| {
            ResnetBlock2DConfig {
                in_channels: if i == 0 { in_channels } else { out_channels },
                out_channels,
                temb_channels: None,
                groups,
                eps,
                output_scale_factor: 1.0,
            }
            .init(device)
        })
        .collect()
}

/// diffusers `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    /// ResNet blocks (no time embedding).
    pub resnets: Vec<ResnetBlock2D>,
    /// Strided convolution with (0, 1, 0, 1) padding (all but the last block).
    pub downsamplers: Vec<Downsample2D>,
}

impl DownEncoderBlock2D {
    /// Builds the block (eps 1e-6 as the VAE).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        eps: f64,
        add_downsample: bool,
        device: &Device,
    ) -> Self {
        Self {
            resnets: vae_resnets(in_channels, out_channels, layers, groups, eps, device),
            downsamplers: if add_downsample {
                vec![Downsample2D::new(out_channels, out_channels, 0, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// x: `[b, c_in, h, w]` → `[b, c_out, h', w']`.
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for down in &self.downsamplers {
            x = down.forward(x);
        }
        x
    }
}

/// diffusers `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    /// ResNet blocks (no time embedding).
    pub resnets: Vec<ResnetBlock2D>,
    /// Nearest ×2 + convolution (all but the last block).
    pub upsamplers: Vec<Upsample2D>,
}

impl UpDecoderBlock2D {
    /// Builds the block.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        eps: f64,
        add_upsample: bool,
        device: &Device,
    ) -> Self {
        Self {
            resnets: vae_resnets(in_channels, out_channels, layers, groups, eps, device),
            upsamplers: if add_upsample {
                vec![Upsample2D::new(out_channels, out_channels, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// x: `[b, c_in, h, w]` → `[b, c_out, 2h, 2w]` (or same size for the last block).
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for up in &self.upsamplers {
            x = up.forward(x, None);
        }
        x
    }
}

/// diffusers `UNetMidBlock2D` as used by the VAE: resnet, (attention, resnet)*.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D {
    /// Two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One single-head spatial self-attention (empty if `mid_block_add_attention` is false).
    pub attentions: Vec<Attention>,
}

impl UNetMidBlock2D {
    /// Builds the block: `channels` wide, one head of `channels` (diffusers'
    /// `attention_head_dim = channels`).
    pub fn new(
        channels: usize,
        groups: usize,
        eps: f64,
        add_attention: bool,
        max_bytes: usize,
        device: &Device,
    ) -> Self {
        Self {
            resnets: vae_resnets(channels, channels, 2, groups, eps, device),
            attentions: if add_attention {
                vec![
                    AttentionConfig {
                        query_dim: channels,
                        cross_attention_dim: None,
                        heads: 1,
                        dim_head: channels,
                        bias: true,
                        group_norm: Some((groups, eps)),
                        residual_connection: true,
                        rescale_output_factor: 1.0,
                        max_bytes,
                    }
                    .init(device),
                ]
            } else {
                Vec::new()
            },
        }
    }

    /// x: `[b, c, h, w]` → `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, None);
        for (i, resnet) in self.resnets[1..].iter().enumerate() {
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward_spatial(x);
            }
            x = resnet.forward(x, None);
        }
        x
    }
}

impl UpDecoderBlock2D {
    /// [`forward`](Self::forward) on bands.
    pub fn forward_bands(&self, mut x: Bands) -> Bands {
        for resnet in &self.resnets {
            x = resnet.forward_bands(x);
        }
        for up in &self.upsamplers {
            x = up.forward_bands(x);
        }
        x
    }

    /// The largest activation this block holds at once for an input `[b, c_in, h, w]`, in
    /// f32 elements: the widest of its channel counts at its output resolution.
    pub fn peak_elements(&self, [b, c_in, h, w]: [usize; 4]) -> usize {
        let c_out = self
            .resnets
            .last()
            .map_or(c_in, |r| r.conv2.weight.dims()[0]);
        let scale = if self.upsamplers.is_empty() { 1 } else { 2 };
        let widest = c_in.max(c_out);
        // Inside the block, before the upsampler: input or output channels at input size;
        // after it: output channels at twice the size.
        (b * widest * h * w).max(b * c_out * h * scale * w * scale)
    }
}
