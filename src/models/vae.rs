//! The KL autoencoder (diffusers `models/autoencoders/autoencoder_kl.py`, `vae.py`): encoder to
//! the latent distribution (mean, std, sample), decoder back to pixels, scaling factor from
//! `config.json`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::resnet::conv;
use super::unet_2d_blocks::{DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D};
use crate::kernels::layers;
use crate::kernels::row_bands::{BAND_BYTES, Bands, bands_needed};
use crate::{Error, Result};

/// `vae/config.json` (diffusers `AutoencoderKL`); defaults are SD 1.5's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Must be `silu`.
    pub act_fn: String,
    /// Latent channels.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Image size the model was trained at.
    pub sample_size: usize,
    /// Latents are multiplied by this before the UNet (SD 1.5: 0.18215).
    pub scaling_factor: f64,
    /// Subtracted before scaling (null in SD 1.5).
    pub shift_factor: Option<f64>,
    /// `quant_conv` present.
    pub use_quant_conv: bool,
    /// `post_quant_conv` present.
    pub use_post_quant_conv: bool,
    /// Self-attention in the mid blocks.
    pub mid_block_add_attention: bool,
    /// Run in f32 even when the rest runs in f16 (informational here).
    pub force_upcast: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 512,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            force_upcast: true,
        }
    }
}

/// GroupNorm/ResNet epsilon of the VAE (hard-coded 1e-6 in diffusers).
const VAE_EPS: f64 = 1e-6;

impl AutoencoderKLConfig {
    /// Parses `config.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::InvalidInput(format!("VAE config.json: {e}")))
    }

    /// Builds the autoencoder (weights uninitialised until loaded).
    pub fn init(&self, max_attention_bytes: usize, device: &Device) -> Result<AutoencoderKL> {
        let bad = |what: String| {
            Err(Error::InvalidInput(format!(
                "VAE config: {what} is not supported"
            )))
        };
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "{n} block_out_channels with {} down / {} up blocks",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return bad(format!("down block type `{t}`"));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return bad(format!("up block type `{t}`"));
        }
        if self.act_fn != "silu" {
            return bad(format!("act_fn `{}`", self.act_fn));
        }
        let boc = &self.block_out_channels;
        let g = self.norm_num_groups;
        if let Some(c) = boc.iter().find(|&&c| c % g != 0) {
            return bad(format!("{c} channels with {g} groups"));
        }

        // Encoder.
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, &ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            down_blocks.push(DownEncoderBlock2D::new(
                in_ch,
                out_ch,
                self.layers_per_block,
                g,
                VAE_EPS,
                i + 1 < n,
                device,
            ));
        }
        let last = boc[n - 1];
        // Encoder and decoder share the mid block's shape and the output norm's settings.
        let mid_block = || {
            UNetMidBlock2D::new(
                last,
                g,
                VAE_EPS,
                self.mid_block_add_attention,
                max_attention_bytes,
                device,
            )
        };
        let norm_out = |c| {
            GroupNormConfig::new(g, c)
                .with_epsilon(VAE_EPS)
                .init(device)
        };
        let encoder = Encoder {
            conv_in: conv(self.in_channels, boc[0], 3, device),
            down_blocks,
            mid_block: mid_block(),
            conv_norm_out: norm_out(last),
            conv_out: conv(last, 2 * self.latent_channels, 3, device),
        };

        // Decoder.
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate() {
            let prev = out_ch;
            out_ch = ch;
            up_blocks.push(UpDecoderBlock2D::new(
                prev,
                out_ch,
                self.layers_per_block + 1,
                g,
                VAE_EPS,
                i + 1 < n,
                device,
            ));
        }
        let decoder = Decoder {
            conv_in: conv(self.latent_channels, last, 3, device),
            mid_block: mid_block(),
            up_blocks,
            conv_norm_out: norm_out(boc[0]),
            conv_out: conv(boc[0], self.out_channels, 3, device),
            max_buffer_bytes: max_attention_bytes,
        };

        let c2 = 2 * self.latent_channels;
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv: self
                .use_quant_conv
                .then(|| Conv2dConfig::new([c2, c2], [1, 1]).init(device)),
            post_quant_conv: self.use_post_quant_conv.then(|| {
                Conv2dConfig::new([self.latent_channels, self.latent_channels], [1, 1]).init(device)
            }),
            scaling_factor: self.scaling_factor,
            shift_factor: self.shift_factor.unwrap_or(0.0),
        })
    }
}

/// diffusers `Encoder`.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Down path.
    pub down_blocks: Vec<DownEncoderBlock2D>,
    /// Bottleneck with self-attention.
    pub mid_block: UNetMidBlock2D,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// To `2·latent_channels` (mean and log-variance).
    pub conv_out: Conv2d,
}

impl Encoder {
    /// x: `[b, 3, H, W]` → `[b, 2·latent, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Whole tensors (the largest, 128 channels × 512² in f32, fits WebGPU's default
        // binding). Banding the encoder's ResNets was measured twice and kept neither time:
        // plain bands needed more memory (2.79 vs 2.67 GiB at 512×512), streamed bands
        // (`Bands::norm_silu_conv_then`) the same (2.49 GiB reserved either way: the
        // allocator's 128 MiB pages, not the tensors alive, set this phase's peak).
        let mut x = layers::conv2d(&self.conv_in, x);
        for block in &self.down_blocks {
            x = block.forward(x);
        }
        x = self.mid_block.forward(x);
        layers::conv2d(
            &self.conv_out,
            silu(layers::group_norm(&self.conv_norm_out, x)),
        )
    }
}

/// diffusers `Decoder`.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Input convolution.
    pub conv_in: Conv2d,
    /// Bottleneck with self-attention.
    pub mid_block: UNetMidBlock2D,
    /// Up path.
    pub up_blocks: Vec<UpDecoderBlock2D>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// To image channels.
    pub conv_out: Conv2d,
    /// The largest buffer one activation may take (the device's binding limit, as the
    /// attention budget); up blocks whose activations would not fit it, or
    /// [`BAND_BYTES`], run on row bands ([`crate::kernels::row_bands`]), with identical
    /// results.
    pub max_buffer_bytes: usize,
}

impl Decoder {
    /// z: `[b, latent, h, w]` → `[b, 3, 2^(n−1)·h, 2^(n−1)·w]`.
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let x = layers::conv2d(&self.conv_in, z);
        // Whole tensors while every activation fits one band; row bands from the first up
        // block whose activations would not (at 512×512 in f32: the last three), to the end.
        // The whole tensor is moved into its bands, so it goes as they are consumed.
        let mut x = Activation::Whole(Box::new(self.mid_block.forward(x)));
        let limit = self.max_buffer_bytes.min(BAND_BYTES);
        for block in &self.up_blocks {
            x = match x {
                Activation::Banded(b) => {
                    let dims = b.largest_dims();
                    let n = bands_needed(block.peak_elements(dims), dims[2], limit);
                    Activation::Banded(block.forward_bands(b.refine(n)))
                }
                Activation::Whole(x) => {
                    let dims = x.dims();
                    match bands_needed(block.peak_elements(dims), dims[2], limit) {
                        1 => Activation::Whole(Box::new(block.forward(*x))),
                        n => Activation::Banded(block.forward_bands(Bands::split(*x, n))),
                    }
                }
            };
        }
        match x {
            Activation::Banded(b) => b
                .norm_silu_conv(&self.conv_norm_out, &self.conv_out)
                .merge(),
            Activation::Whole(x) => layers::conv2d(
                &self.conv_out,
                silu(layers::group_norm(&self.conv_norm_out, *x)),
            ),
        }
    }
}

/// A decoder activation: one tensor, or row bands once it no longer fits one band.
enum Activation {
    Whole(Box<Tensor<4>>),
    Banded(Bands),
}

/// The diagonal Gaussian the encoder predicts (diffusers `DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    /// Mean, `[b, latent, h, w]`.
    pub mean: Tensor<4>,
    /// Log-variance clamped to [−30, 20], `[b, latent, h, w]`.
    pub logvar: Tensor<4>,
}

impl LatentDistribution {
    /// Standard deviation `exp(logvar / 2)`.
    pub fn std(&self) -> Tensor<4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// `mean + std · noise` with caller-supplied standard normal noise of the same shape.
    pub fn sample_with(&self, noise: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + self.std() * noise
    }

    /// The mode (= mean).
    pub fn mode(&self) -> Tensor<4> {
        self.mean.clone()
    }
}

/// diffusers `AutoencoderKL`. Fields follow the weight keys.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// Image → moments.
    pub encoder: Encoder,
    /// Latent → image.
    pub decoder: Decoder,
    /// 1×1 convolution on the moments.
    pub quant_conv: Option<Conv2d>,
    /// 1×1 convolution on the latent before decoding.
    pub post_quant_conv: Option<Conv2d>,
    /// `config.scaling_factor`.
    pub scaling_factor: f64,
    /// `config.shift_factor` (0 when absent).
    pub shift_factor: f64,
}

impl AutoencoderKL {
    /// image: `[b, 3, H, W]` in [−1, 1] → latent distribution `[b, latent, ⌈H/8⌉, ⌈W/8⌉]`
    /// (unscaled, as diffusers' `latent_dist`).
    pub fn encode(&self, image: Tensor<4>) -> LatentDistribution {
        let h = self.encoder.forward(image);
        let moments = match &self.quant_conv {
            Some(q) => layers::conv2d(q, h),
            None => h,
        };
        let [_, c2, _, _] = moments.dims();
        let c = c2 / 2;
        let mean = moments.clone().narrow(1, 0, c);
        let logvar = moments.narrow(1, c, c).clamp(-30.0, 20.0);
        LatentDistribution { mean, logvar }
    }

    /// z: `[b, latent, h, w]` (unscaled) → image `[b, 3, 8h, 8w]` in ≈[−1, 1].
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(p) => layers::conv2d(p, z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// Unscaled latent → UNet latent: `(z − shift) · scaling_factor`.
    pub fn scale_latent(&self, z: Tensor<4>) -> Tensor<4> {
        (z - self.shift_factor) * self.scaling_factor
    }

    /// UNet latent → unscaled latent: `z / scaling_factor + shift`.
    pub fn unscale_latent(&self, z: Tensor<4>) -> Tensor<4> {
        z / self.scaling_factor + self.shift_factor
    }
}
