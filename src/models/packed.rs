//! Weights kept in f16 on the device while every computation runs in the activations' dtype
//! (f32): the UNet's fp16 files are uploaded as they are, halving its 3.2 GiB, and each Linear /
//! Conv2d widens its weight to f32 just before use (exact: every f16 is an f32), so results are
//! bit-for-bit those of weights widened on the host. Only the transient copy of the layer in use
//! costs f32 memory (≤ 59 MB for the largest SD 1.5 convolution).
//!
//! Modules whose weights are already f32 take the plain path with no extra work.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

/// `t` in `dtype` (a no-op when it already is). The widened copy is an ordinary intermediate:
/// it never requires grad and is freed after the layer.
pub(crate) fn widen<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `linear.forward(x)` with the weight (and bias) widened to `x`'s dtype when they differ.
pub fn linear<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = linear.weight.val();
    let dtype = x.dtype();
    if weight.dtype() == dtype {
        return linear.forward(x);
    }
    let bias = linear.bias.as_ref().map(|b| widen(b.val(), dtype));
    module::linear(x, widen(weight, dtype), bias)
}

/// `conv.forward(x)` with the weight (and bias) widened to `x`'s dtype when they differ.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let weight = conv.weight.val();
    let dtype = x.dtype();
    if weight.dtype() == dtype {
        return conv.forward(x);
    }
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
    let bias = conv.bias.as_ref().map(|b| widen(b.val(), dtype));
    module::conv2d(x, widen(weight, dtype), bias, options)
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
