//! DDIM (Song et al. 2021) as diffusers' `DDIMScheduler` computes it with GoodDrag's settings
//! (docs/ALGORITHM.md §1.7), plus the inversion step GoodDrag inherits from DragDiffusion (docs/ALGORITHM.md §1.8) and
//! the DDPM forward noising used by LoRA fine-tuning (docs/ALGORITHM.md §1.9).
//!
//! The noise table is computed in f32 in the same order of operations as PyTorch
//! (`torch.linspace` in f32, squared, `1 − β`, sequential `cumprod`), so `alphas_cumprod` equals
//! diffusers' to the last bit or so; the per-step scalar coefficients are f32 too.

use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use crate::error::{Error, Result};

/// `scheduler/scheduler_config.json`. Missing fields take the values GoodDrag constructs its
/// DDIM scheduler with (docs/ALGORITHM.md §1.7), so SD 1.5's own `PNDMScheduler` config (same betas,
/// `steps_offset` 1, `set_alpha_to_one` false) gives the identical scheduler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DdimSchedulerConfig {
    /// Length of the training noise schedule.
    pub num_train_timesteps: usize,
    /// First β.
    pub beta_start: f64,
    /// Last β.
    pub beta_end: f64,
    /// `scaled_linear` (SD) or `linear`.
    pub beta_schedule: String,
    /// Explicit β table (overrides the schedule) — accepted only when absent/null.
    pub trained_betas: Option<Vec<f64>>,
    /// Whether the last step lands on ᾱ = 1 (GoodDrag: false, so it lands on ᾱ₀).
    pub set_alpha_to_one: bool,
    /// Added to every inference timestep (SD: 1).
    pub steps_offset: usize,
    /// `epsilon` only (GoodDrag's formulas assume it).
    pub prediction_type: String,
    /// `leading` (diffusers' DDIM default, GoodDrag), `trailing` or `linspace`.
    pub timestep_spacing: String,
    /// Clipping x₀ (GoodDrag: off; on is rejected rather than silently ignored).
    pub clip_sample: bool,
    /// Dynamic thresholding (off in SD; on is rejected).
    pub thresholding: bool,
    /// Zero-terminal-SNR rescaling (off in SD; on is rejected).
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            set_alpha_to_one: false,
            steps_offset: 1,
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
            clip_sample: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimSchedulerConfig {
    /// Parses `scheduler_config.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| {
            Error::InvalidInput(format!(
                "scheduler/scheduler_config.json is not a valid scheduler config: {e}"
            ))
        })
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)`: the step and both halves computed in f32
/// from each end, as ATen's CPU kernel does.
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// A DDIM scheduler set to a number of inference steps.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimSchedulerConfig,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<usize>,
    step_ratio: usize,
}

impl DdimScheduler {
    /// Builds the noise table and the `num_inference_steps` timesteps (diffusers `__init__` +
    /// `set_timesteps`). Unsupported options give an error naming them.
    pub fn new(config: DdimSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        if config.prediction_type != "epsilon" {
            return Err(Error::InvalidInput(format!(
                "scheduler_config.json: prediction_type `{}` is not supported; GoodDrag needs an \
                 epsilon-prediction Stable Diffusion 1.x/2.x-base scheduler config",
                config.prediction_type
            )));
        }
        Self::build(config, num_inference_steps)
    }

    /// The noise table for the forward process alone ([`add_noise`](Self::add_noise)), which
    /// every prediction type shares: DIFT features come from SD 2.1, a v-prediction model.
    pub fn forward_process(config: DdimSchedulerConfig) -> Result<Self> {
        Self::build(config, 1)
    }

    fn build(config: DdimSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let unsupported = |what: String| {
            Err(Error::InvalidInput(format!(
                "scheduler_config.json: {what} is not supported; GoodDrag needs an \
                 epsilon-prediction Stable Diffusion 1.x/2.x-base scheduler config"
            )))
        };
        if config.trained_betas.is_some() {
            return unsupported("trained_betas".into());
        }
        if config.clip_sample || config.thresholding || config.rescale_betas_zero_snr {
            return unsupported("clip_sample/thresholding/rescale_betas_zero_snr".into());
        }
        let n_train = config.num_train_timesteps;
        if n_train < 2 || num_inference_steps == 0 || num_inference_steps > n_train {
            return Err(Error::InvalidInput(format!(
                "{num_inference_steps} inference steps over {n_train} training timesteps: use \
                 1..={n_train} steps"
            )));
        }
        let betas: Vec<f32> = match config.beta_schedule.as_str() {
            "scaled_linear" => {
                linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n_train)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            "linear" => linspace_f32(config.beta_start, config.beta_end, n_train),
            other => return unsupported(format!("beta_schedule `{other}`")),
        };
        let mut alphas_cumprod = Vec::with_capacity(n_train);
        let mut acc = 1.0f32;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let n = num_inference_steps;
        let step_ratio = n_train / n;
        let timesteps: Vec<usize> = match config.timestep_spacing.as_str() {
            "leading" => (0..n)
                .rev()
                .map(|i| i * step_ratio + config.steps_offset)
                .collect(),
            "trailing" => {
                let ratio = n_train as f64 / n as f64;
                (1..=n)
                    .rev()
                    .map(|i| (n_train as f64 - (n - i) as f64 * ratio).round() as usize - 1)
                    .collect()
            }
            "linspace" => (0..n)
                .rev()
                .map(|i| (i as f64 * (n_train - 1) as f64 / (n - 1).max(1) as f64).round() as usize)
                .collect(),
            other => return unsupported(format!("timestep_spacing `{other}`")),
        };
        if let Some(&t) = timesteps.iter().find(|&&t| t >= n_train) {
            return Err(Error::InvalidInput(format!(
                "scheduler_config.json: timestep {t} is outside the {n_train}-step schedule \
                 (steps_offset too large)"
            )));
        }
        Ok(Self {
            config,
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
            step_ratio,
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &DdimSchedulerConfig {
        &self.config
    }

    /// Inference timesteps, descending (`[981, 961, …, 1]` for 50 SD steps).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// β per training timestep.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// ᾱ per training timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// ᾱ used after the last step (ᾱ₀ unless `set_alpha_to_one`).
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    /// `num_train_timesteps / num_inference_steps` (20 for 50 steps).
    pub fn step_ratio(&self) -> usize {
        self.step_ratio
    }

    /// The timesteps an edit at inversion `strength` κ runs through, from the noisiest:
    /// `timesteps[n − round(κ·n)..]` (κ = 0.75, 50 steps: 38 timesteps, 741 … 1).
    pub fn strength_timesteps(&self, strength: f64) -> Result<&[usize]> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "inversion strength {strength}: use a value in (0, 1]"
            )));
        }
        let n = self.timesteps.len();
        // PARITY: Python's round() (half to even), as `int(round(strength * n))`.
        let steps = (strength * n as f64).round_ties_even() as usize;
        if steps == 0 {
            return Err(Error::InvalidInput(format!(
                "inversion strength {strength} gives 0 of {n} steps; raise it"
            )));
        }
        Ok(&self.timesteps[n - steps..])
    }

    /// ᾱ at a possibly negative timestep (the final ᾱ below 0).
    fn alpha_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }

    /// One deterministic DDIM step (η = 0) from timestep `t` to `t − step_ratio`:
    /// `x₀ = (z − √(1−ᾱₜ)·ε)/√ᾱₜ`, `z' = √ᾱₚ·x₀ + √(1−ᾱₚ)·ε`.
    ///
    /// model_output, sample: `[b, c, h, w]` → `[b, c, h, w]`.
    pub fn step(&self, model_output: Tensor<4>, t: usize, sample: Tensor<4>) -> Tensor<4> {
        let a_t = self.alpha_at(t as i64);
        let a_prev = self.alpha_at(t as i64 - self.step_ratio as i64);
        Self::ddim_update(model_output, sample, a_t, a_prev)
    }

    /// GoodDrag's (DragDiffusion's) inversion step to timestep `t` (docs/ALGORITHM.md §1.8): the noise was
    /// predicted at `t` on the less noisy latent, which is moved from `t − step_ratio` to `t`.
    pub fn inversion_step(
        &self,
        model_output: Tensor<4>,
        t: usize,
        sample: Tensor<4>,
    ) -> Tensor<4> {
        // PARITY: `timestep = min(t - step_ratio, 999)`; below 0 it uses the final ᾱ.
        let from =
            (t as i64 - self.step_ratio as i64).min(self.config.num_train_timesteps as i64 - 1);
        Self::ddim_update(
            model_output,
            sample,
            self.alpha_at(from),
            self.alpha_at(t as i64),
        )
    }

    /// `√a_to·(z − √(1−a_from)·ε)/√a_from + √(1−a_to)·ε`, with f32 coefficients.
    fn ddim_update(eps: Tensor<4>, z: Tensor<4>, a_from: f32, a_to: f32) -> Tensor<4> {
        let x0 = (z - eps.clone().mul_scalar((1.0 - a_from).sqrt())).div_scalar(a_from.sqrt());
        x0.mul_scalar(a_to.sqrt()) + eps.mul_scalar((1.0 - a_to).sqrt())
    }

    /// DDPM forward noising (`DDPMScheduler.add_noise`): `√ᾱₜ·x₀ + √(1−ᾱₜ)·ε`, one timestep per
    /// batch element. x0, noise: `[b, c, h, w]`, timesteps: `b` values `< num_train_timesteps`.
    pub fn add_noise(
        &self,
        x0: Tensor<4>,
        noise: Tensor<4>,
        timesteps: &[usize],
    ) -> Result<Tensor<4>> {
        let [b, _, _, _] = x0.dims();
        if timesteps.len() != b {
            return Err(Error::InvalidInput(format!(
                "add_noise: {} timesteps for a batch of {b}",
                timesteps.len()
            )));
        }
        if let Some(&t) = timesteps.iter().find(|&&t| t >= self.alphas_cumprod.len()) {
            return Err(Error::InvalidInput(format!(
                "add_noise: timestep {t} out of range"
            )));
        }
        let device = x0.device();
        let coeff = |f: fn(f32) -> f32| {
            let v: Vec<f32> = timesteps
                .iter()
                .map(|&t| f(self.alphas_cumprod[t]))
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &device)
        };
        Ok(x0 * coeff(|a| a.sqrt()) + noise * coeff(|a| (1.0 - a).sqrt()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_has_50_leading_timesteps_and_gooddrag_drag_window() {
        let s = DdimScheduler::new(DdimSchedulerConfig::default(), 50).unwrap();
        assert_eq!(s.timesteps().len(), 50);
        assert_eq!(s.timesteps()[0], 981);
        assert_eq!(*s.timesteps().last().unwrap(), 1);
        let valid = s.strength_timesteps(0.75).unwrap();
        assert_eq!(valid.len(), 38);
        assert_eq!(&valid[..7], &[741, 721, 701, 681, 661, 641, 621]);
        // docs/ALGORITHM.md §1.7: ᾱ_741 ≈ 0.0604.
        assert!((s.alphas_cumprod()[741] - 0.0604).abs() < 5e-4);
        assert_eq!(s.final_alpha_cumprod(), s.alphas_cumprod()[0]);
    }

    #[test]
    fn unsupported_configs_are_named() {
        let cfg = DdimSchedulerConfig {
            prediction_type: "v_prediction".into(),
            ..Default::default()
        };
        let err = DdimScheduler::new(cfg, 50).unwrap_err().to_string();
        assert!(err.contains("v_prediction"), "{err}");
        assert!(DdimScheduler::new(DdimSchedulerConfig::default(), 0).is_err());
        let s = DdimScheduler::new(DdimSchedulerConfig::default(), 50).unwrap();
        assert!(s.strength_timesteps(0.0).is_err());
        assert!(s.strength_timesteps(1.5).is_err());
        assert!(DdimSchedulerConfig::from_json("{ not json").is_err());
    }

    #[test]
    fn pndm_config_of_sd15_gives_the_gooddrag_scheduler() {
        // SD 1.5's own scheduler_config.json (PNDM) carries the same betas and offset.
        let json = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule":
            "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "trained_betas": null, "clip_sample": false}"#;
        let a = DdimScheduler::new(DdimSchedulerConfig::from_json(json).unwrap(), 50).unwrap();
        let b = DdimScheduler::new(DdimSchedulerConfig::default(), 50).unwrap();
        assert_eq!(a.timesteps(), b.timesteps());
        assert_eq!(a.alphas_cumprod(), b.alphas_cumprod());
    }
}
