//! Convolutions as matrix multiplications (im2col), the way every stride-1 convolution of the
//! UNet and the VAE runs (issue 9, speed).
//!
//! burn 0.22 without its `autotune` feature (ours: tuning takes tens of minutes on a software
//! adapter, and on WebGPU its fast convolution kernels — implicit GEMM on cooperative-matrix
//! units — are unavailable anyway) runs every convolution with cubecl's direct kernel: one
//! thread per output value looping over the window and all input channels, with no reuse of
//! what it loads. A tiled matrix multiplication reuses each load across a tile. Measured on
//! lavapipe at SD 1.5's 512×512 sizes (`gooddrag bench-conv --latent 64`, README "Speed"), a
//! 3×3 convolution as column matrix × weight matrix takes a quarter to a third of the direct
//! kernel's time. The CPU device keeps burn-flex's convolution (see [`conv2d`]).
//!
//! The column matrix of a k×k convolution holds k² shifted copies of the input, so output rows
//! are computed in bands whose columns stay under [`COLUMN_BYTES`] (a 512×512 VAE decoder layer
//! would otherwise need 1.1 GiB). Results equal the direct kernel's up to summation order
//! (bit-identical on lavapipe and burn-flex in the tests below). Everything is ordinary tensor
//! algebra, so autodiff differentiates it as it is.

use burn::tensor::Tensor;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, PadMode};

/// Largest column matrix built at once, in bytes. Transient (freed after its band's
/// multiplication); small enough to leave the editor's memory peaks unchanged, large enough
/// that a UNet layer at 64×64 takes at most two bands.
pub const COLUMN_BYTES: usize = 32 << 20;

/// `module::conv2d(x, weight, bias, options)`: on GPU devices computed as matrix
/// multiplications ([`conv2d_by_matmul`]), on the CPU device by burn (burn-flex convolves by
/// im2col and its own GEMM already: measured equal, and 2.2× faster than banded columns at
/// 320 channels × 64×64). `weight` must be in `x`'s dtype (see `kernels::layers`).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if crate::device::is_cpu_device(&x.device()) {
        module::conv2d(x, weight, bias, options)
    } else {
        conv2d_by_matmul(x, weight, bias, options, COLUMN_BYTES)
    }
}

/// The convolution as matrix multiplications when it has stride 1, dilation 1 and one group
/// (all of SD's but the three downsamplers; otherwise burn's kernel), with column matrices of
/// at most `column_bytes` ([`COLUMN_BYTES`] in the networks; tests force many bands).
pub fn conv2d_by_matmul(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
    column_bytes: usize,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [co, ci, kh, kw] = weight.dims();
    let [(top, bottom), (left, right)] = options.padding;
    let (padded_h, padded_w) = (h + top + bottom, w + left + right);
    let plain = options.stride == [1, 1] && options.dilation == [1, 1] && options.groups == 1;
    // Every window must overlap the input (padding narrower than the kernel).
    let overlaps = top < kh && bottom < kh && left < kw && right < kw;
    if !plain || !overlaps || ci != c || padded_h < kh || padded_w < kw {
        return module::conv2d(x, weight, bias, options);
    }
    let (h_out, w_out) = (padded_h - kh + 1, padded_w - kw + 1);
    let taps = kh * kw;

    // [co, ci, kh, kw] → [1, co, (ky, kx, ci)]: the column order below.
    let weight = if taps == 1 {
        weight.reshape([1, co, ci])
    } else {
        weight.permute([0, 2, 3, 1]).reshape([1, co, taps * ci])
    };
    let row_bytes = b * taps * ci * w_out * x.dtype().size();
    let rows_per_band = (column_bytes / row_bytes.max(1)).clamp(1, h_out);
    let band = |r0: usize, rows: usize| -> Tensor<4> {
        // The input rows this band's windows read, zero-padded here rather than padding the
        // whole input (a full-size copy).
        let first = r0 as isize - top as isize;
        let end = first + (rows + kh - 1) as isize;
        let (from, to) = (first.max(0) as usize, end.min(h as isize) as usize);
        let pad_top = (from as isize - first) as usize;
        let pad_bottom = (end - to as isize) as usize;
        let mut window = x.clone().narrow(2, from, to - from);
        if pad_top + pad_bottom + left + right > 0 {
            window = window.pad((left, right, pad_top, pad_bottom), PadMode::Constant(0.0));
        }
        let columns = if taps == 1 {
            window.reshape([b, ci, rows * w_out])
        } else {
            let shifted = (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                .map(|(ky, kx)| window.clone().narrow(2, ky, rows).narrow(3, kx, w_out))
                .collect();
            Tensor::cat(shifted, 1).reshape([b, taps * ci, rows * w_out])
        };
        weight.clone().matmul(columns).reshape([b, co, rows, w_out])
    };
    // PERF: the bands are concatenated at the end, so a banded layer holds its output twice
    // for a moment (+128 MiB in the 512×512 VAE encoder; below the edit's peak). Writing each
    // band into a preallocated output with slice_assign measured worse under autodiff.
    let out = if rows_per_band >= h_out {
        band(0, h_out)
    } else {
        let bands = (0..h_out)
            .step_by(rows_per_band)
            .map(|r0| band(r0, rows_per_band.min(h_out - r0)))
            .collect();
        Tensor::cat(bands, 2)
    };
    match bias {
        Some(bias) => out + bias.reshape([1, co, 1, 1]),
        None => out,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let a = a.into_data().try_to_vec::<f32>().unwrap();
        let b = b.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn check(device: &Device) {
        // (batch, in, out, h, w, kernel, padding (top, bottom), (left, right), budget)
        let cases = [
            (1, 5, 7, 9, 6, 3, (1, 1), (1, 1), COLUMN_BYTES),
            (2, 4, 3, 8, 8, 3, (1, 1), (1, 1), 1), // one row per band, batch 2
            (2, 4, 3, 7, 5, 3, (1, 1), (1, 1), 4 * 9 * 4 * 5 * 3), // uneven bands
            (1, 6, 4, 5, 7, 1, (0, 0), (0, 0), COLUMN_BYTES),
            (2, 6, 4, 5, 7, 1, (0, 0), (0, 0), 1),
            (1, 3, 2, 6, 6, 3, (0, 0), (1, 1), COLUMN_BYTES), // rows unpadded (banded VAE)
            (1, 3, 2, 4, 4, 3, (2, 1), (0, 2), 64),           // asymmetric
        ];
        for (i, &(b, ci, co, h, w, k, rows, cols, budget)) in cases.iter().enumerate() {
            let x = Tensor::<4>::random([b, ci, h, w], Distribution::Normal(0.0, 1.0), device);
            let weight =
                Tensor::<4>::random([co, ci, k, k], Distribution::Normal(0.0, 0.3), device);
            let bias = Tensor::<1>::random([co], Distribution::Normal(0.0, 1.0), device);
            let options = ConvOptions::new_with_padding([1, 1], [rows, cols], [1, 1], 1);
            let want = module::conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            );
            let got = conv2d_by_matmul(x, weight, Some(bias), options, budget);
            assert_eq!(got.dims(), want.dims(), "case {i}");
            let d = max_diff(got, want);
            assert!(d < 1e-5, "case {i}: {d}");
        }
        // Strided convolutions take burn's kernel.
        let x = Tensor::<4>::random([1, 2, 6, 6], Distribution::Normal(0.0, 1.0), device);
        let weight = Tensor::<4>::random([3, 2, 3, 3], Distribution::Normal(0.0, 0.3), device);
        let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
        let want = module::conv2d(x.clone(), weight.clone(), None, options.clone());
        assert_eq!(max_diff(conv2d(x, weight, None, options), want), 0.0);
    }

    #[test]
    fn equals_burns_convolution_on_cpu() {
        check(&crate::device::cpu().0);
    }

    #[test]
    fn equals_burns_convolution_on_wgpu() {
        check(&crate::device::wgpu().expect("wgpu device").0);
    }

    #[test]
    fn gradients_equal_burns_convolution() {
        let device = crate::device::training(&crate::device::cpu().0);
        let x = Tensor::<4>::random([2, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<4>::from_data(
            TensorData::new(
                crate::rng::deterministic_values(4 * 3 * 9, 0.3, 0.5),
                [4, 3, 3, 3],
            ),
            &device,
        );
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let grad = |by_matmul: bool| {
            let x = x.clone().require_grad();
            let y = if by_matmul {
                conv2d_by_matmul(x.clone(), weight.clone(), None, options.clone(), 1)
            } else {
                module::conv2d(x.clone(), weight.clone(), None, options.clone())
            };
            let grads = (y.clone() * y).sum().backward();
            x.grad(&grads).expect("input gradient")
        };
        let d = max_diff(grad(true), grad(false));
        assert!(d < 1e-4, "{d}");
    }
}
