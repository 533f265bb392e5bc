//! Adam and AdamW with PyTorch's exact update (`torch.optim.Adam` / `AdamW`, no amsgrad):
//!
//! ```text
//! θ ← θ·(1 − lr·wd)                       (AdamW only; decoupled decay)
//! m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
//! θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)
//! ```
//!
//! GoodDrag uses AdamW (lr 5e-4, wd 1e-2) for the LoRA weights (docs/ALGORITHM.md §1.9) and a fresh Adam
//! (lr 0.02) on the latent at every drag timestep (docs/ALGORITHM.md §1.13). Both optimise a handful of plain
//! tensors, so state lives here, keyed by position, rather than in a module optimiser.

use burn::tensor::Tensor;

/// Hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε (added to √v̂).
    pub eps: f64,
    /// Decoupled weight decay (0 = plain Adam).
    pub weight_decay: f64,
}

impl AdamConfig {
    /// PyTorch's `Adam(lr)` defaults.
    pub fn adam(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// PyTorch's `AdamW(lr, weight_decay)` with default betas and ε.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            ..Self::adam(lr)
        }
    }
}

/// Moments of one optimised tensor.
#[derive(Debug, Clone)]
struct Moments<const D: usize> {
    m: Tensor<D>,
    v: Tensor<D>,
}

/// Adam(W) over a fixed list of `D`-dimensional tensors (same order at every step).
#[derive(Debug, Clone)]
pub struct Adam<const D: usize> {
    config: AdamConfig,
    step: i32,
    state: Vec<Option<Moments<D>>>,
}

impl<const D: usize> Adam<D> {
    /// Fresh moments.
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            step: 0,
            state: Vec::new(),
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> i32 {
        self.step
    }

    /// One step: returns the updated tensors (detached from any autodiff graph). A `None`
    /// gradient leaves that tensor unchanged (PyTorch skips parameters without `.grad`).
    pub fn step(
        &mut self,
        params: Vec<Tensor<D>>,
        grads: Vec<Option<Tensor<D>>>,
    ) -> Vec<Tensor<D>> {
        assert_eq!(params.len(), grads.len(), "one gradient slot per parameter");
        if self.state.len() < params.len() {
            self.state.resize(params.len(), None);
        }
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step);
        let bc2 = 1.0 - c.beta2.powi(self.step);
        params
            .into_iter()
            .zip(grads)
            .enumerate()
            .map(|(i, (p, g))| {
                let p = p.detach();
                let Some(g) = g else { return p };
                let g = g.detach();
                let (m, v) = match self.state[i].take() {
                    Some(s) => (
                        s.m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
                        s.v.mul_scalar(c.beta2)
                            + g.clone().powi_scalar(2).mul_scalar(1.0 - c.beta2),
                    ),
                    None => (
                        g.clone().mul_scalar(1.0 - c.beta1),
                        g.powi_scalar(2).mul_scalar(1.0 - c.beta2),
                    ),
                };
                let p = if c.weight_decay != 0.0 {
                    p.mul_scalar(1.0 - c.lr * c.weight_decay)
                } else {
                    p
                };
                // PyTorch: denom = √v / √bc2 + ε; θ −= (lr / bc1) · m / denom.
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
                let updated = p - m.clone().div(denom).mul_scalar(c.lr / bc1);
                self.state[i] = Some(Moments { m, v });
                // A fresh leaf: callers may mark it as requiring gradients again.
                updated.detach()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// PyTorch's update written out in f64 for one scalar.
    fn reference(p0: f64, grads: &[f64], c: AdamConfig) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            p *= 1.0 - c.lr * c.weight_decay;
            m = c.beta1 * m + (1.0 - c.beta1) * g;
            v = c.beta2 * v + (1.0 - c.beta2) * g * g;
            let denom = (v.sqrt() / (1.0 - c.beta2.powi(t)).sqrt()) + c.eps;
            p -= c.lr / (1.0 - c.beta1.powi(t)) * m / denom;
        }
        p
    }

    #[test]
    fn matches_pytorch_adamw_update_over_three_steps() {
        let device = Device::flex();
        let c = AdamConfig::adamw(5e-4, 1e-2);
        let p0 = [0.3f32, -1.2, 0.0, 2.0];
        let grads = [
            [0.5f32, -0.1, 1e-9, 3.0],
            [0.2, 0.4, -2e-9, -1.0],
            [-0.3, 0.0, 0.0, 0.5],
        ];
        let mut adam = Adam::<1>::new(c);
        let mut p = Tensor::<1>::from_data(TensorData::new(p0.to_vec(), [4]), &device);
        for g in &grads {
            let g = Tensor::<1>::from_data(TensorData::new(g.to_vec(), [4]), &device);
            p = adam.step(vec![p], vec![Some(g)]).remove(0);
        }
        let got: Vec<f32> = p.into_data().try_into_vec::<f32>().unwrap();
        for (i, &x) in got.iter().enumerate() {
            let gs: Vec<f64> = grads.iter().map(|g| g[i] as f64).collect();
            let want = reference(p0[i] as f64, &gs, c);
            assert!((x as f64 - want).abs() < 1e-6, "element {i}: {x} vs {want}");
        }
    }

    #[test]
    fn missing_gradient_leaves_the_tensor_alone() {
        let device = Device::flex();
        let mut adam = Adam::<1>::new(AdamConfig::adam(0.02));
        let p = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device);
        let out = adam.step(vec![p], vec![None]).remove(0);
        assert_eq!(
            out.into_data().try_into_vec::<f32>().unwrap(),
            vec![1.0, 2.0]
        );
    }
}
