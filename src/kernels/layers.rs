//! Weights kept in f16 on the device while every computation runs in the activations' dtype:
//! the UNet's fp16 files are uploaded as they are, halving its 3.2 GiB. With f32 activations
//! each Linear / Conv2d widens its weight to f32 just before use (exact: every f16 is an f32), so
//! results are bit-for-bit those of weights widened on the host; only the transient copy of the
//! layer in use costs f32 memory (≤ 59 MB for the largest SD 1.5 convolution). With f16
//! activations ([`crate::exec::precision`]) the f16 weights are used as they are and the f32
//! biases are narrowed; the normalisations compute in f32 and return the input's dtype.
//!
//! Modules whose weights are already in the activations' dtype take the plain path.
//!
//! These are the networks' layer entry points (linear, convolution, normalisations), so each also
//! reports its time to [`crate::perf::profiler`] when a profile is being taken.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear, PaddingConfig2d};
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use super::{conv_gemm, precision, statistics};
use crate::perf::{profiler, work};

/// `t` in `dtype` (a no-op when it already is). The widened copy is an ordinary intermediate:
/// it never requires grad and is freed after the layer.
pub(crate) fn widen<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype {
        t
    } else {
        profiler::op("weight dtype cast (f16 ↔ f32)", &t.device(), || {
            precision::to_dtype(t, dtype)
        })
    }
}

/// `linear.forward(x)` with the weight (and bias) widened to `x`'s dtype when they differ.
pub fn linear<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = linear.weight.val();
    let [d_in, d_out] = weight.dims();
    work::add(work::matmul_flops(
        x.shape().num_elements() / d_in.max(1),
        d_in,
        d_out,
    ));
    let dtype = x.dtype();
    let device = weight.device();
    let bias_matches = linear
        .bias
        .as_ref()
        .is_none_or(|b| b.val().dtype() == dtype);
    if weight.dtype() == dtype && bias_matches {
        return profiler::op("linear", &device, || linear.forward(x));
    }
    let bias = linear.bias.as_ref().map(|b| widen(b.val(), dtype));
    let wide = widen(weight, dtype);
    profiler::op("linear", &device, || module::linear(x, wide, bias))
}

/// `conv.forward(x)` with the weight (and bias) widened to `x`'s dtype when they differ,
/// computed by [`conv_gemm`](crate::kernels::conv_gemm) (matrix multiplications) where it applies.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    let kind = match conv.kernel_size {
        [1, 1] => "conv 1×1",
        [3, 3] => "conv 3×3",
        _ => "conv (other kernel)",
    };
    let [kh, kw] = conv.kernel_size;
    let same = |k: usize, d: usize| {
        let total = (k - 1) * d;
        (total / 2, total - total / 2)
    };
    let ((top, bottom), (left, right)) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => ((t, b), (l, r)),
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (same(kh, conv.dilation[0]), same(kw, conv.dilation[1])),
    };
    let options = ConvOptions::new_with_padding(
        conv.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        conv.groups,
    );
    let weight = widen(conv.weight.val(), dtype);
    let bias = conv.bias.as_ref().map(|b| widen(b.val(), dtype));
    let [c_out, c_in_per_group, _, _] = weight.dims();
    let y = profiler::op(kind, &weight.device(), || {
        conv_gemm::conv2d(x, weight, bias, options)
    });
    let [b, _, h, w] = y.dims();
    work::add(work::matmul_flops(
        b * h * w,
        c_in_per_group * kh * kw,
        c_out,
    ));
    y
}

/// `norm.forward(x)` with statistics exact at any group size ([`statistics`]), reported to the
/// profiler as `group norm`.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    profiler::op("group norm", &x.device(), || {
        statistics::group_norm(norm, x)
    })
}

/// `norm.forward(x)` computed in f32 (as PyTorch's autocast does) and returned in `x`'s dtype,
/// reported to the profiler as `layer norm`.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    profiler::op("layer norm", &x.device(), || {
        precision::to_dtype(norm.forward(precision::to_f32(x)), dtype)
    })
}

/// Stores every matrix and kernel (float parameters of rank ≥ 2, except embedding tables) of
/// `module` in f16, as loading an fp16 file does; vectors (biases, norms) stay f32. For
/// benchmarks that build a model with random weights and must hold it as the editor would.
pub fn store_f16<M: burn::module::Module>(module: M) -> M {
    #[derive(Default)]
    struct ToF16 {
        path: Vec<String>,
    }
    impl burn::module::ModuleMapper for ToF16 {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }

        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D < 2 || self.path.iter().any(|p| p.contains("embedding")) {
                return param;
            }
            // `map` keeps the parameter's id and whether it requires grad.
            param.map(|t| t.cast(burn::tensor::FloatDType::F16))
        }
    }
    module.map(&mut ToF16::default())
}
