//! GroupNorm statistics at full size (docs/ARCHITECTURE.md §3, "Statistics"): a group of 1,048,576 values (the
//! VAE encoder's first level at 512×512) with a large mean and a small spread — where one running
//! f32 sum loses the mean and, through it, the variance — checked against f64 on the CPU device
//! and on wgpu; the blocked sum on odd lengths; GroupNorm's gradient equal to burn's.

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::kernels::statistics::{BLOCK, DIRECT, blocked_sum, group_norm, moments};
use gooddrag::rng::deterministic_values;

/// Two groups of 4 × 512 × 512 values: mean 100 ± 1 (uniform), and mean 1000 ± 0.1.
const GROUP: usize = 4 * 512 * 512;
const GROUPS: [(f64, f64); 2] = [(100.0, 1.0), (1000.0, 0.1)];

fn large_groups() -> Vec<f32> {
    GROUPS
        .iter()
        .enumerate()
        .flat_map(|(i, &(mean, spread))| {
            deterministic_values(GROUP, 0.1 + 0.3 * i as f64, spread)
                .into_iter()
                .map(move |v| (mean + v as f64) as f32)
        })
        .collect()
}

/// Mean and population variance in f64 of the f32 values as stored.
fn f64_moments(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    pollster::block_on(gooddrag::tensor_io::read_f32(t)).expect("readback")
}

fn full_size_moments_match_f64(device: &Device) {
    let values = large_groups();
    let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [1, 2, GROUP]), device);
    // What the device's own one-call reduction gives (printed for the record: burn-flex's SIMD
    // lanes or cubecl's workgroup tree), beside the blocked statistics that are asserted.
    let direct = to_vec(x.clone().mean_dim(2));
    let (mean, var) = moments(&[x]);
    let (mean, var) = (to_vec(mean), to_vec(var));
    for (g, chunk) in values.chunks(GROUP).enumerate() {
        let (m64, v64) = f64_moments(chunk);
        let mean_err = (mean[g] as f64 - m64).abs() / m64.abs();
        let var_err = (var[g] as f64 - v64).abs() / v64;
        let direct_err = (direct[g] as f64 - m64).abs() / m64.abs();
        println!(
            "group {g}: mean rel. error {mean_err:.2e} (the device's own mean_dim: \
             {direct_err:.2e}), variance rel. error {var_err:.2e}"
        );
        assert!(mean_err < 1e-6, "group {g}: mean {} vs {m64}", mean[g]);
        assert!(var_err < 1e-6, "group {g}: variance {} vs {v64}", var[g]);
    }

    // The normalised values themselves, for the group whose spread f32 resolves finely
    // (mean 100 ± 1: one f32 step of the input is 7.6e-6 of a standard deviation).
    let norm: GroupNorm = GroupNormConfig::new(2, 8).init(device);
    let input = Tensor::<4>::from_data(TensorData::new(values.clone(), [1, 8, 512, 512]), device);
    let out = to_vec(group_norm(&norm, input));
    let (m64, v64) = f64_moments(&values[..GROUP]);
    let inv = 1.0 / (v64 + norm.epsilon).sqrt();
    let worst = values[..GROUP]
        .iter()
        .zip(&out[..GROUP])
        .map(|(&x, &y)| ((x as f64 - m64) * inv - y as f64).abs())
        .fold(0.0, f64::max);
    println!("normalised values (mean 100 group): max abs. error {worst:.2e}");
    assert!(worst < 2e-5, "max abs. error {worst}");
}

#[test]
fn million_value_group_moments_match_f64_on_cpu() {
    full_size_moments_match_f64(&device::cpu().0);
}

#[test]
fn million_value_group_moments_match_f64_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    full_size_moments_match_f64(&device);
}

#[test]
fn blocked_sum_is_exact_on_lengths_with_and_without_small_divisors() {
    let device = device::cpu().0;
    // Direct rows (1, BLOCK, DIRECT) and trees: DIRECT + 1, 4099 · 2 (prime factor 4099: padded),
    // 10,000 = 250 · 40 and a three-level 300,000.
    for n in [1, BLOCK, DIRECT, DIRECT + 1, 2 * 4099, 10_000, 300_000] {
        let values = deterministic_values(3 * n, 0.2, 1.0);
        let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [1, 3, n]), &device);
        let sums = to_vec(blocked_sum(x));
        assert_eq!(sums.len(), 3, "one sum per row (n = {n})");
        for (row, chunk) in values.chunks(n).enumerate() {
            let exact: f64 = chunk.iter().map(|&v| v as f64).sum();
            let scale: f64 = chunk.iter().map(|&v| (v as f64).abs()).sum();
            let err = (sums[row] as f64 - exact).abs() / scale;
            assert!(err < 1e-6, "n = {n}, row {row}: {} vs {exact}", sums[row]);
        }
    }
}

#[test]
fn group_norm_equals_burns_with_gradients() {
    let device = device::cpu().0.autodiff();
    let mut norm: GroupNorm = GroupNormConfig::new(4, 12).init(&device);
    // Non-trivial affine so that the gradient through γ and β is checked too.
    let gamma = deterministic_values(12, 0.5, 1.0);
    let beta = deterministic_values(12, 0.7, 0.5);
    let param = |values: Vec<f32>| {
        Some(burn::module::Param::from_tensor(
            Tensor::<1>::from_data(TensorData::new(values, [12]), &device).require_grad(),
        ))
    };
    norm.gamma = param(gamma);
    norm.beta = param(beta);
    let values = deterministic_values(2 * 12 * 7 * 9, 0.3, 2.0);
    let input = || {
        Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 12, 7, 9]), &device)
            .require_grad()
    };
    let weights = Tensor::<4>::from_data(
        TensorData::new(
            deterministic_values(2 * 12 * 7 * 9, 0.9, 1.0),
            [2, 12, 7, 9],
        ),
        &device,
    );

    let (ours_x, theirs_x) = (input(), input());
    let ours = group_norm(&norm, ours_x.clone());
    let theirs = norm.forward(theirs_x.clone());
    let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{what}: max abs. difference {worst}");
    };
    close(to_vec(ours.clone()), to_vec(theirs.clone()), "output");

    let ours_grads = (ours * weights.clone()).sum().backward();
    let theirs_grads = (theirs * weights).sum().backward();
    close(
        to_vec(ours_x.grad(&ours_grads).unwrap()),
        to_vec(theirs_x.grad(&theirs_grads).unwrap()),
        "input gradient",
    );
    let gamma = norm.gamma.as_ref().unwrap().val();
    close(
        to_vec(gamma.grad(&ours_grads).unwrap()),
        to_vec(gamma.grad(&theirs_grads).unwrap()),
        "γ gradient",
    );
}
