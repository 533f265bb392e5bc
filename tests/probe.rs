//! The device probe on the CPU (flex) device and on native wgpu (lavapipe without a GPU):
//! the block is numerically right on the CPU, and wgpu computes the same numbers.

use gooddrag::device;
use gooddrag::probe::{self, ProbeConfig, group_norm};
use gooddrag::rng::deterministic_values;
use gooddrag::tensor_io::{self, relative_error};

use burn::tensor::{Tensor, TensorData};

fn run_on(name: &str, config: ProbeConfig) -> probe::ProbeResult {
    let (device, _) = device::by_name(name).expect("device available");
    pollster::block_on(probe::run(&device, config)).expect("probe runs")
}

#[test]
fn probe_on_cpu_produces_finite_nontrivial_output_and_gradient() {
    let r = run_on("cpu", ProbeConfig::default());
    assert_eq!(r.output.len(), 64 * 32);
    assert_eq!(r.input_grad.len(), 32 * 64);
    assert!(r.output.iter().chain(&r.input_grad).all(|v| v.is_finite()));
    let mean_sq = r.output.iter().map(|v| v * v).sum::<f32>() / r.output.len() as f32;
    assert!(
        (mean_sq - r.loss).abs() <= 1e-5 * r.loss.abs(),
        "loss {} != mean(out²) {mean_sq}",
        r.loss
    );
    assert!(r.input_grad.iter().filter(|g| g.abs() > 1e-6).count() > r.input_grad.len() / 2);
}

#[test]
fn probe_gradient_matches_finite_differences_on_cpu() {
    // Central differences of the loss with respect to single input elements, through the
    // whole block (group norm, conv, attention), in f64 arithmetic over f32 evaluations.
    let (device, _) = device::cpu();
    let config = ProbeConfig::default();
    let base = run_on("cpu", config);
    let loss_with = |index: usize, delta: f32| -> f32 {
        let r = pollster::block_on(probe::run_with_input_offset(&device, config, index, delta))
            .unwrap();
        r.loss
    };
    // The elements with the largest gradients, plus fixed ones; the tolerance is relative to the
    // largest gradient, since f32 differencing cannot resolve tiny components on their own.
    let scale = base.input_grad.iter().fold(0f32, |m, g| m.max(g.abs())) as f64;
    let mut order: Vec<usize> = (0..base.input_grad.len()).collect();
    order.sort_by(|&a, &b| {
        base.input_grad[b]
            .abs()
            .total_cmp(&base.input_grad[a].abs())
    });
    for index in order.into_iter().take(3).chain([0usize, 17, 555, 2047]) {
        let h = 1e-2f32;
        let numeric = (loss_with(index, h) as f64 - loss_with(index, -h) as f64) / (2.0 * h as f64);
        let analytic = base.input_grad[index] as f64;
        assert!(
            (numeric - analytic).abs() <= 1e-2 * scale,
            "element {index}: finite difference {numeric:e} vs autodiff {analytic:e} (largest gradient {scale:e})"
        );
    }
}

#[test]
fn group_norm_normalises_each_group_then_applies_affine() {
    let (device, _) = device::cpu();
    let x = Tensor::<4>::from_data(
        TensorData::new(deterministic_values(2 * 8 * 3 * 3, 0.3, 5.0), [2, 8, 3, 3]),
        &device,
    );
    let ones = Tensor::<1>::ones([8], &device);
    let zeros = Tensor::<1>::zeros([8], &device);
    let y = group_norm(x, 4, ones.clone() * 2.0, zeros + 0.5, 1e-5);
    let groups = y.reshape([2, 4, 18]);
    let (var, mean) = groups.var_mean_bias(2);
    let mean = pollster::block_on(tensor_io::read_f32(mean)).unwrap();
    let var = pollster::block_on(tensor_io::read_f32(var)).unwrap();
    for m in mean {
        assert!((m - 0.5).abs() < 1e-5, "group mean {m}");
    }
    for v in var {
        assert!((v - 4.0).abs() < 1e-3, "group variance {v}");
    }
}

#[test]
fn probe_rejects_inconsistent_config() {
    let (device, _) = device::cpu();
    let bad = ProbeConfig {
        channels: 30,
        groups: 8,
        size: 4,
        heads: 4,
    };
    let err = pollster::block_on(probe::run(&device, bad)).unwrap_err();
    assert!(
        err.to_string().contains("multiple of groups and heads"),
        "{err}"
    );
}

#[test]
fn relative_error_flags_nan_and_difference() {
    assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    assert!((relative_error(&[1.0, 2.1], &[1.0, 2.0]) - 0.05).abs() < 1e-6);
    assert!(relative_error(&[f32::NAN, 2.0], &[1.0, 2.0]).is_nan());
}

#[test]
fn probe_on_native_wgpu_equals_cpu() {
    let (_, adapter) =
        device::wgpu().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)");
    eprintln!("wgpu adapter: {adapter:?}");
    assert!(adapter.max_storage_buffer_binding_size >= 128 << 20);
    let cpu = run_on("cpu", ProbeConfig::default());
    let gpu = run_on("wgpu", ProbeConfig::default());
    let out_err = relative_error(&gpu.output, &cpu.output);
    let grad_err = relative_error(&gpu.input_grad, &cpu.input_grad);
    eprintln!("wgpu vs cpu: output {out_err:e}, input gradient {grad_err:e}");
    assert!(out_err <= 1e-5, "output relative error {out_err:e}");
    assert!(grad_err <= 1e-5, "gradient relative error {grad_err:e}");
    assert!((gpu.loss - cpu.loss).abs() <= 1e-5 * cpu.loss.abs());
}

/// A buffer over the adapter's limit (lavapipe: 128 MiB) is refused when its kernel runs; the
/// readback reports it as running out of GPU memory with the size, not as a raw runtime error.
#[test]
fn a_refused_buffer_is_reported_as_out_of_memory() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    let (device, adapter) = gooddrag::device::wgpu().expect("wgpu device");
    // Whatever the adapter's limit (lavapipe 128 MiB, real GPUs up to 4 GiB), a tensor just
    // over it is refused before any memory is used: [1, c, 512, 512] f32 with c·1 MiB > limit.
    let limit = adapter
        .max_storage_buffer_binding_size
        .min(adapter.max_buffer_size);
    let c = (limit >> 20) as usize + 16;
    let x = Tensor::<4>::random([1, c, 512, 512], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([1, c, 3, 3], Distribution::Normal(0.0, 0.01), &device);
    let y = conv2d(x, w, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    let err = pollster::block_on(gooddrag::tensor_io::read_f32(y.sum())).expect_err("refused");
    assert!(matches!(err, gooddrag::Error::OutOfMemory(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{c} MiB was refused")),
        "{err}"
    );
}

/// `--device auto` (the CLI's default for edits): the wgpu adapter when it is real hardware,
/// else the CPU device, never a software rasteriser such as lavapipe (~30× slower on an edit).
#[test]
fn auto_device_is_a_hardware_adapter_or_else_the_cpu_device() {
    let (_, auto) = gooddrag::device::by_name("auto").expect("auto always finds a device");
    let (_, wgpu) = gooddrag::device::wgpu().expect("wgpu adapter");
    if gooddrag::device::is_hardware(&wgpu) {
        assert_eq!(auto, wgpu);
    } else {
        assert_eq!(auto, gooddrag::device::cpu().1, "{wgpu:?} is software");
    }
}

/// `wgpu:N` picks the N-th discrete GPU (one process per GPU on a multi-GPU machine): a discrete
/// GPU when there is one, else a clear error naming the index; a malformed name is refused.
#[test]
fn indexed_discrete_gpu_is_found_or_named_in_the_error() {
    let (_, wgpu) = gooddrag::device::wgpu().expect("wgpu adapter");
    match gooddrag::device::by_name("wgpu:0") {
        Ok((_, report)) => assert_eq!(report.device_type, "DiscreteGpu"),
        Err(e) => {
            assert_ne!(wgpu.device_type, "DiscreteGpu", "{e}");
            assert!(e.to_string().contains("discrete GPU 0"), "{e}");
        }
    }
    let e = gooddrag::device::by_name("wgpu:first")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wgpu:N"), "{e}");
}
