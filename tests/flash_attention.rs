//! The fused attention kernels (`kernels::flash_attention`) on native wgpu (lavapipe without a
//! GPU) against the chunked attention they replace, on odd sizes (several heads, odd head
//! sizes, n ≠ m, causal): outputs and every input gradient equal to ≤ 1e-5 relative in f32
//! (max |diff| / max |reference|); f16 inputs within f16 rounding of the chunked f32 result
//! on the same f16 values; gradients only for the inputs that are tracked; and the cases the
//! fused path declines (CPU device, heads wider than `MAX_HEAD_DIM`).

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use gooddrag::device;
use gooddrag::kernels::flash_attention::{self, MAX_HEAD_DIM};
use gooddrag::models::attention::{DEFAULT_ATTENTION_BYTES, scaled_dot_product_attention};
use gooddrag::tensor_io::{read_f32, relative_error};

fn wgpu() -> Device {
    device::wgpu()
        .expect("wgpu device (lavapipe without a GPU)")
        .0
}

/// Deterministic values in about [−2, 2] (a different sequence per seed).
fn data(shape: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
    let n: usize = shape.iter().product();
    let mut rng = gooddrag::rng::Rng::new(seed);
    Tensor::from_data(TensorData::new(rng.normal_vec(n, 1.0), shape), device)
}

fn read(t: Tensor<3>) -> Vec<f32> {
    pollster::block_on(read_f32(t)).expect("readback")
}

/// The chunked path's result (the fused kernels switched off on this thread).
fn chunked(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    let _chunked = flash_attention::chunked_only();
    scaled_dot_product_attention(q, k, v, heads, causal, DEFAULT_ATTENTION_BYTES)
}

fn fused(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    let d = q.dims()[2] / heads;
    flash_attention::attention(q, k, v, heads, 1.0 / (d as f64).sqrt(), causal)
        .expect("the fused kernels take wgpu tensors")
}

/// (batch, n, m, heads, d, d_v, causal): odd sizes, several heads, n ≠ m, a value head size
/// different from the key's, CLIP-like causal self-attention, a single query row.
const CASES: [(usize, usize, usize, usize, usize, usize, bool); 5] = [
    (2, 37, 53, 3, 5, 7, false),
    (1, 29, 29, 2, 8, 8, true),
    (1, 64, 77, 8, 40, 40, false),
    (3, 1, 9, 1, 13, 3, false),
    (1, 17, 17, 1, 160, 160, false),
];

#[test]
fn fused_forward_equals_chunked_attention_on_odd_sizes() {
    let device = wgpu();
    for (i, &(b, n, m, heads, d, dv, causal)) in CASES.iter().enumerate() {
        let seed = 10 * i as u64;
        let q = data([b, n, heads * d], seed, &device);
        let k = data([b, m, heads * d], seed + 1, &device);
        let v = data([b, m, heads * dv], seed + 2, &device);
        let want = read(chunked(q.clone(), k.clone(), v.clone(), heads, causal));
        // Through the models' entry point (which takes the fused kernels on wgpu) and directly.
        let via_entry = read(scaled_dot_product_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            heads,
            causal,
            DEFAULT_ATTENTION_BYTES,
        ));
        let got = read(fused(q, k, v, heads, causal));
        assert_eq!(
            got, via_entry,
            "case {i}: the entry point takes the fused kernels"
        );
        let err = relative_error(&got, &want);
        eprintln!("case {i} {:?}: forward {err:.1e}", CASES[i]);
        assert!(err <= 1e-5, "case {i} {:?}: {err}", CASES[i]);
    }
}

/// Input gradients of `Σ out ⊙ w` (w fixed, so every output element has its own weight).
fn gradients(
    attend: &dyn Fn(Tensor<3>, Tensor<3>, Tensor<3>) -> Tensor<3>,
    inputs: [&Tensor<3>; 3],
    tracked: [bool; 3],
    weight: &Tensor<3>,
) -> Vec<Option<Vec<f32>>> {
    let [q, k, v] = inputs.map(|t| t.clone());
    let track = |t: Tensor<3>, on: bool| if on { t.require_grad() } else { t };
    let (q, k, v) = (
        track(q, tracked[0]),
        track(k, tracked[1]),
        track(v, tracked[2]),
    );
    let out = attend(q.clone(), k.clone(), v.clone());
    let grads = (out * weight.clone()).sum().backward();
    [q, k, v].iter().map(|t| t.grad(&grads).map(read)).collect()
}

#[test]
fn fused_gradients_equal_chunked_gradients_for_every_input() {
    // The autodiff twin every gradient pass runs on (balanced checkpointing).
    let device = device::training(&wgpu());
    for (i, &(b, n, m, heads, d, dv, causal)) in CASES.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let q = data([b, n, heads * d], seed, &device);
        let k = data([b, m, heads * d], seed + 1, &device);
        let v = data([b, m, heads * dv], seed + 2, &device);
        let w = data([b, n, heads * dv], seed + 3, &device);
        let fused_fn = |q, k, v| fused(q, k, v, heads, causal);
        let chunked_fn = |q, k, v| chunked(q, k, v, heads, causal);
        // All three tracked (LoRA on to_q/to_k/to_v), only the queries (the drag's
        // cross-attention: keys and values come from the prompt), only keys and values.
        for tracked in [
            [true, true, true],
            [true, false, false],
            [false, true, true],
        ] {
            let got = gradients(&fused_fn, [&q, &k, &v], tracked, &w);
            let want = gradients(&chunked_fn, [&q, &k, &v], tracked, &w);
            for (input, (g, r)) in ["q", "k", "v"].iter().zip(got.iter().zip(&want)) {
                match (g, r) {
                    (Some(g), Some(r)) => {
                        let err = relative_error(g, r);
                        eprintln!("case {i}, tracked {tracked:?}, d{input}: {err:.1e}");
                        assert!(
                            err <= 1e-5,
                            "case {i}, tracked {tracked:?}, d{input}: {err}"
                        );
                    }
                    (None, None) => {}
                    _ => panic!("case {i}, tracked {tracked:?}: d{input} present in one path only"),
                }
            }
        }
    }
}

#[test]
fn fused_attention_in_f16_matches_the_chunked_f32_result_on_the_same_values() {
    // f16 compute: inputs in f16, sums and softmax in f32 inside the kernel, output in f16.
    // The reference is the chunked f32 attention of exactly those f16 values.
    let device = wgpu();
    if !device::wgpu().expect("wgpu").1.shader_f16 {
        eprintln!("SKIPPED: this adapter has no shader-f16");
        return;
    }
    let (b, n, m, heads, d) = (1, 45, 45, 8, 40);
    let half = |t: Tensor<3>| t.cast(FloatDType::F16);
    let q = half(data([b, n, heads * d], 7, &device));
    let k = half(data([b, m, heads * d], 8, &device));
    let v = half(data([b, m, heads * d], 9, &device));
    let wide = |t: &Tensor<3>| t.clone().cast(FloatDType::F32);
    let want = read(chunked(wide(&q), wide(&k), wide(&v), heads, false));
    let out = fused(q, k, v, heads, false);
    assert_eq!(out.dtype(), DType::F16, "output in the inputs' dtype");
    let err = relative_error(&read(out.cast(FloatDType::F32)), &want);
    eprintln!("f16 fused vs f32 chunked: {err:.1e}");
    // One f16 rounding of the output (2⁻¹¹ ≈ 4.9e-4 relative) and nothing else.
    assert!(err <= 1e-3, "f16 fused vs f32 chunked: {err}");
}

#[test]
fn fused_attention_declines_where_it_does_not_apply() {
    let cpu = Device::flex();
    let (q, k, v) = (
        data([1, 4, 8], 1, &cpu),
        data([1, 4, 8], 2, &cpu),
        data([1, 4, 8], 3, &cpu),
    );
    assert!(
        flash_attention::attention(q, k, v, 2, 0.5, false).is_none(),
        "CPU device"
    );
    let device = wgpu();
    let wide = MAX_HEAD_DIM + 8;
    let (q, k, v) = (
        data([1, 4, wide], 1, &device),
        data([1, 4, wide], 2, &device),
        data([1, 4, wide], 3, &device),
    );
    assert!(
        flash_attention::attention(q.clone(), k.clone(), v.clone(), 1, 0.1, false).is_none(),
        "a head wider than MAX_HEAD_DIM"
    );
    // …and the entry point still answers, by chunks.
    let out = scaled_dot_product_attention(q, k, v, 1, false, DEFAULT_ATTENTION_BYTES);
    assert_eq!(out.dims(), [1, 4, wide]);
    let _guard = flash_attention::chunked_only();
    let (q, k, v) = (
        data([1, 4, 8], 1, &device),
        data([1, 4, 8], 2, &device),
        data([1, 4, 8], 3, &device),
    );
    assert!(
        flash_attention::attention(q, k, v, 2, 0.5, false).is_none(),
        "inside chunked_only"
    );
}
