//! LPIPS v0.1 with AlexNet (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features
//! as a Perceptual Metric"), exactly as the `lpips` package computes it, and DragBench's image
//! fidelity IF = 1 − LPIPS between each original and its edit (docs/EVALUATION.md §2.3).
//!
//! Per image pair, both in [−1, 1]:
//! 1. the scaling layer `(x − shift) / scale` per channel (ImageNet statistics mapped to [−1, 1]);
//! 2. torchvision AlexNet's `features`, tapped after each of its five ReLUs;
//! 3. per tap, each pixel's feature vector divided by `‖f‖₂ + 1e-10` (eps added to the norm);
//! 4. the squared difference weighted by the tap's linear head (a bias-free 1×1 convolution),
//!    averaged over the tap's pixels; LPIPS is the sum over the five taps.
//!
//! DragBench's IF resizes both images to 224×224 with `F.interpolate(mode="bilinear")` first
//! (align_corners = False, no antialiasing, aspect ratio not kept) — [`if_input`].
//!
//! Weights are the user's files: torchvision's `alexnet-owt-7be5be79.pth` (or any file with the
//! `features.{0,3,6,8,10}.{weight,bias}` tensors) and the package's `weights/v0.1/alex.pth`
//! (`lin{0..4}.model.1.weight`), as PyTorch checkpoints or safetensors
//! ([`crate::weights::read_tensor_file`]).
//! Reference: richzhang/PerceptualSimilarity `lpips/lpips.py` (`LPIPS.forward`, `ScalingLayer`,
//! `NetLinLayer`), `lpips/__init__.py` (`normalize_tensor`), `lpips/pretrained_networks.py`.

use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::image::resample::torch_bilinear;
use crate::image::{RgbImage, planar_rgb};
use crate::tensor_io::read_f32;
use crate::weights::F32Tensor;

/// The scaling layer's per-channel shift (v0.1).
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// The scaling layer's per-channel scale (v0.1).
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// `normalize_tensor`'s eps, added to the norm.
const NORM_EPS: f32 = 1e-10;
/// The side DragBench's IF resizes both images to.
pub const IF_SIDE: usize = 224;

/// One AlexNet convolution: torchvision index in `features`, channels, kernel, stride, padding,
/// and whether a 3×3/2 max-pool precedes it.
struct ConvSpec {
    index: usize,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    pool_before: bool,
}

/// torchvision's AlexNet `features`, up to the fifth ReLU (the last max-pool is not used).
const ALEXNET: [ConvSpec; 5] = [
    ConvSpec {
        index: 0,
        in_channels: 3,
        out_channels: 64,
        kernel: 11,
        stride: 4,
        padding: 2,
        pool_before: false,
    },
    ConvSpec {
        index: 3,
        in_channels: 64,
        out_channels: 192,
        kernel: 5,
        stride: 1,
        padding: 2,
        pool_before: true,
    },
    ConvSpec {
        index: 6,
        in_channels: 192,
        out_channels: 384,
        kernel: 3,
        stride: 1,
        padding: 1,
        pool_before: true,
    },
    ConvSpec {
        index: 8,
        in_channels: 384,
        out_channels: 256,
        kernel: 3,
        stride: 1,
        padding: 1,
        pool_before: false,
    },
    ConvSpec {
        index: 10,
        in_channels: 256,
        out_channels: 256,
        kernel: 3,
        stride: 1,
        padding: 1,
        pool_before: false,
    },
];

/// LPIPS of one pair: the total and each tap's share (`r_k`, summed in tap order as the package
/// does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LpipsDistance {
    /// LPIPS (lower is closer).
    pub total: f32,
    /// The spatially averaged weighted distance of each of the five taps.
    pub per_layer: [f32; 5],
}

/// AlexNet-LPIPS v0.1 with its weights on a device.
pub struct AlexLpips {
    convs: Vec<(Tensor<4>, Tensor<1>)>,
    /// Each linear head as `[1, C, 1, 1]`.
    heads: Vec<Tensor<4>>,
    shift: Tensor<4>,
    scale: Tensor<4>,
    device: Device,
}

/// The tensor `name` of `tensors` with `shape`, or an error naming the file's role.
fn take<'t>(
    tensors: &'t [F32Tensor],
    role: &str,
    name: &str,
    shape: &[usize],
) -> Result<&'t F32Tensor> {
    let t = tensors.iter().find(|t| t.name == name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the {role} weights have no tensor `{name}` (is this the right file?)"
        ))
    })?;
    if t.shape != shape {
        return Err(Error::InvalidInput(format!(
            "the {role} tensor `{name}` has shape {:?}, LPIPS (AlexNet) needs {shape:?}",
            t.shape
        )));
    }
    Ok(t)
}

impl AlexLpips {
    /// The network from torchvision AlexNet tensors (`features.N.weight/bias`; other tensors
    /// such as the classifier are ignored) and the LPIPS v0.1 heads (`lin{k}.model.1.weight`).
    pub fn new(alexnet: &[F32Tensor], heads: &[F32Tensor], device: &Device) -> Result<Self> {
        let upload = |t: &F32Tensor| -> Tensor<1> {
            Tensor::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
        };
        let mut convs = Vec::new();
        let mut lin = Vec::new();
        for (k, c) in ALEXNET.iter().enumerate() {
            let shape = [c.out_channels, c.in_channels, c.kernel, c.kernel];
            let w = take(
                alexnet,
                "AlexNet",
                &format!("features.{}.weight", c.index),
                &shape,
            )?;
            let b = take(
                alexnet,
                "AlexNet",
                &format!("features.{}.bias", c.index),
                &[c.out_channels],
            )?;
            convs.push((upload(w).reshape(shape), upload(b)));
            let h = take(
                heads,
                "LPIPS head",
                &format!("lin{k}.model.1.weight"),
                &[1, c.out_channels, 1, 1],
            )?;
            lin.push(upload(h).reshape([1, c.out_channels, 1, 1]));
        }
        let channel = |v: [f32; 3]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), device).reshape([1, 3, 1, 1])
        };
        Ok(Self {
            convs,
            heads: lin,
            shift: channel(SHIFT),
            scale: channel(SCALE),
            device: device.clone(),
        })
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The five normalised taps of a batch `[n, 3, h, w]` in [−1, 1].
    fn taps(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = (x - self.shift.clone()) / self.scale.clone();
        let mut taps = Vec::with_capacity(5);
        for (spec, (w, b)) in ALEXNET.iter().zip(&self.convs) {
            if spec.pool_before {
                x = max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]));
            }
            let options = ConvOptions::new([spec.stride; 2], [spec.padding; 2], [1, 1], 1);
            x = burn::tensor::activation::relu(conv2d(x, w.clone(), Some(b.clone()), options));
            let norm = x
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .add_scalar(NORM_EPS);
            taps.push(x.clone() / norm);
        }
        taps
    }

    /// LPIPS between two images given as `[1, 3, h, w]` tensors in [−1, 1] (the package's
    /// `forward(in0, in1)` with `normalize=False`). Each image must be at least 32 px on each
    /// side so every tap has a pixel.
    pub async fn distance(&self, a: Tensor<4>, b: Tensor<4>) -> Result<LpipsDistance> {
        let [n, c, h, w] = a.dims();
        if a.dims() != b.dims() || n != 1 || c != 3 {
            return Err(Error::InvalidInput(format!(
                "LPIPS compares two [1, 3, h, w] images of one size, got {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        if h.min(w) < 32 {
            return Err(Error::InvalidInput(format!(
                "LPIPS (AlexNet) needs images of at least 32×32 pixels, got {w}×{h}"
            )));
        }
        // One trunk pass for both images.
        let taps = self.taps(Tensor::cat(vec![a, b], 0));
        let mut per_layer = [0f32; 5];
        let mut total = 0f32;
        for (k, (f, head)) in taps.into_iter().zip(&self.heads).enumerate() {
            let [_, ch, th, tw] = f.dims();
            let f0 = f.clone().slice([0..1, 0..ch, 0..th, 0..tw]);
            let f1 = f.slice([1..2, 0..ch, 0..th, 0..tw]);
            let weighted = ((f0 - f1).powi_scalar(2) * head.clone()).sum_dim(1);
            let r = read_f32(weighted.mean()).await?[0];
            per_layer[k] = r;
            total += r;
        }
        Ok(LpipsDistance { total, per_layer })
    }

    /// LPIPS between an original and an edited image as DragBench's IF computes it: both
    /// mapped to [−1, 1] and squashed to 224×224 ([`if_input`]).
    pub async fn dragbench_lpips(
        &self,
        original: &RgbImage,
        edited: &RgbImage,
    ) -> Result<LpipsDistance> {
        self.distance(
            if_input(original, &self.device),
            if_input(edited, &self.device),
        )
        .await
    }
}

/// An RGB8 image as planar `[3, h, w]` values in [−1, 1] (`x / 127.5 − 1`, the DragBench
/// scripts' mapping).
fn signed_unit_planar(image: &RgbImage) -> Vec<f32> {
    planar_rgb(&image.rgb, |v| v as f32 / 127.5 - 1.0)
}

/// An RGB8 image as `[1, 3, h, w]` in [−1, 1] (`x / 127.5 − 1`).
pub fn signed_unit(image: &RgbImage, device: &Device) -> Tensor<4> {
    let shape = [1, 3, image.height, image.width];
    Tensor::from_data(TensorData::new(signed_unit_planar(image), shape), device)
}

/// DragBench's IF input: [`signed_unit`], then bilinear to 224×224 ([`torch_bilinear`]:
/// PARITY: `F.interpolate(..., (224, 224), mode="bilinear")` aliases when shrinking and does not
/// keep the aspect ratio; reproduced, not fixed).
pub fn if_input(image: &RgbImage, device: &Device) -> Tensor<4> {
    let planar = signed_unit_planar(image);
    let (w, h) = (image.width, image.height);
    let resized = torch_bilinear(&planar, 3, h, w, IF_SIDE, IF_SIDE);
    Tensor::from_data(TensorData::new(resized, [1, 3, IF_SIDE, IF_SIDE]), device)
}
