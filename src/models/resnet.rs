//! ResNet block and resampling layers (diffusers `models/resnet.py`, `downsampling.py`,
//! `upsampling.py`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use crate::kernels::layers;
use crate::kernels::row_bands::{Bands, band_convolution};
use crate::kernels::upsample::{upsample_nearest, upsample_nearest2x};

/// A `k×k` convolution with `same` padding for odd `k` (stride 1).
pub fn conv(in_ch: usize, out_ch: usize, k: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([in_ch, out_ch], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// Options of a [`ResnetBlock2D`].
#[derive(Debug, Clone)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Time embedding channels (`None`: no time conditioning, as in the VAE).
    pub temb_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Output is divided by this.
    pub output_scale_factor: f64,
}

impl ResnetBlock2DConfig {
    /// Builds the block.
    pub fn init(&self, device: &Device) -> ResnetBlock2D {
        let norm = |c| {
            GroupNormConfig::new(self.groups, c)
                .with_epsilon(self.eps)
                .init(device)
        };
        ResnetBlock2D {
            norm1: norm(self.in_channels),
            conv1: conv(self.in_channels, self.out_channels, 3, device),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, self.out_channels).init(device)),
            norm2: norm(self.out_channels),
            conv2: conv(self.out_channels, self.out_channels, 3, device),
            conv_shortcut: (self.in_channels != self.out_channels).then(|| {
                Conv2dConfig::new([self.in_channels, self.out_channels], [1, 1]).init(device)
            }),
            output_scale_factor: self.output_scale_factor,
        }
    }
}

/// diffusers `ResnetBlock2D` (`time_embedding_norm="default"`, SiLU).
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// GroupNorm on the input.
    pub norm1: GroupNorm,
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Projection of the time embedding, added after `conv1`.
    pub time_emb_proj: Option<Linear>,
    /// GroupNorm after `conv1`.
    pub norm2: GroupNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// 1×1 convolution on the skip path when channels change.
    pub conv_shortcut: Option<Conv2d>,
    /// Output is divided by this.
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// x: `[b, c_in, h, w]`, temb: `[b, temb_channels]` → `[b, c_out, h, w]`.
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let h = layers::conv2d(
            &self.conv1,
            silu(layers::group_norm(&self.norm1, x.clone())),
        );
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                let t = layers::linear(proj, silu(temb.clone()));
                let [b, c] = t.dims();
                h + t.reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = layers::conv2d(&self.conv2, silu(layers::group_norm(&self.norm2, h)));
        let skip = match &self.conv_shortcut {
            Some(shortcut) => layers::conv2d(shortcut, x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor != 1.0 {
            out / self.output_scale_factor
        } else {
            out
        }
    }
}

/// diffusers `Downsample2D` with a convolution: 3×3, stride 2. `padding` 1 (UNet) pads
/// symmetrically; `padding` 0 (VAE) pads right and bottom by one first, as diffusers does.
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The strided convolution.
    pub conv: Conv2d,
    /// Pad (0, 1, 0, 1) before the convolution (diffusers `padding=0`).
    pub pad_right_bottom: bool,
}

impl Downsample2D {
    /// Builds the layer (`padding` as diffusers' `downsample_padding`).
    pub fn new(channels: usize, out_channels: usize, padding: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels, out_channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .init(device),
            pad_right_bottom: padding == 0,
        }
    }

    /// x: `[b, c, h, w]` → `[b, c_out, ⌈h/2⌉, ⌈w/2⌉]` (padding 1) or `[…, ⌊(h+1−3)/2⌋+1, …]` (padding 0).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0))
        } else {
            x
        };
        layers::conv2d(&self.conv, x)
    }
}

/// diffusers `Upsample2D` with a convolution: nearest-neighbour upsampling (×2, or to an explicit
/// size) followed by a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The 3×3 convolution after upsampling.
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Builds the layer.
    pub fn new(channels: usize, out_channels: usize, device: &Device) -> Self {
        Self {
            conv: conv(channels, out_channels, 3, device),
        }
    }

    /// x: `[b, c, h, w]` → `[b, c_out, 2h, 2w]`, or `[b, c_out, size[0], size[1]]` if `size` is given.
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let x = match size {
            Some(size) => upsample_nearest(x, size),
            None => upsample_nearest2x(x, [h * 2, w * 2]),
        };
        layers::conv2d(&self.conv, x)
    }
}

impl ResnetBlock2D {
    /// [`forward`](Self::forward) (without time embedding, as in the VAE) on bands, in two
    /// streaming passes: the first takes each band's shortcut beside its first convolution, the
    /// second adds it to the band's second convolution. Each pass drops its input bands as it
    /// goes (`Bands::norm_silu_conv_then`), so at 512×512 this block holds about two
    /// activations' worth at any time instead of four.
    pub fn forward_bands(&self, x: Bands) -> Bands {
        let dtype = x.dtype();
        let shortcut = self
            .conv_shortcut
            .as_ref()
            .map(|c| band_convolution(c, dtype));
        let mut skip = Vec::new();
        let h = x.norm_silu_conv_then(&self.norm1, &self.conv1, &mut |x, h| {
            skip.push(match &shortcut {
                Some(shortcut) => shortcut(x),
                None => x,
            });
            h
        });
        let mut skip = skip.into_iter();
        let s = self.output_scale_factor;
        h.norm_silu_conv_then(&self.norm2, &self.conv2, &mut |_, h| {
            // diffusers: `(input_tensor + hidden_states) / output_scale_factor`.
            let out = skip.next().expect("one shortcut band per band") + h;
            if s != 1.0 { out / s } else { out }
        })
    }
}

impl Upsample2D {
    /// Nearest ×2 + convolution on bands, each band upsampled just before its convolution.
    pub fn forward_bands(&self, x: Bands) -> Bands {
        x.upsample_conv(&self.conv)
    }
}
