//! Every hyperparameter of an edit in one serde struct (docs/ALGORITHM.md §1.19), defaults = the official
//! UI's, and the named presets of the paper's ablations and DragDiffusion-style runs.

use serde::{Deserialize, Serialize};

use super::motion::{MotionSettings, PatchWeight};
use crate::error::{Error, Result};
use crate::lora::LoraConfig;

/// All settings of a drag edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DragConfig {
    /// Text prompt (GoodDrag's default is empty).
    pub prompt: String,
    /// DDIM steps of the full schedule.
    pub n_inference_steps: usize,
    /// Inversion strength κ: the edit starts at `timesteps[n − round(κn)]` (0.75 → t = 741).
    pub inversion_strength: f64,
    /// Which UNet up block's output is the feature map (GoodDrag `feature_idx = 3` = `up_blocks[2]`).
    pub feature_up_block: usize,
    /// Feature/point resolution as a fraction of the image (`sup_res` = 0.5·H × 0.5·W).
    pub feature_scale: f64,
    /// Motion-supervision patch radius r₁ (half-res px).
    pub r1: usize,
    /// Tracking window radius r₂ (half-res px).
    pub r2: usize,
    /// Largest shift per supervision step β (half-res px).
    pub beta: f64,
    /// Weight λ of the mask term.
    pub lambda: f64,
    /// Adam learning rate on the latent.
    pub latent_lr: f64,
    /// Number of timesteps with dragging (AlDD: 7).
    pub drag_end_step: usize,
    /// Drag operations (trackings) per drag timestep, B.
    pub track_per_denoise: usize,
    /// Motion-supervision steps per drag operation, J.
    pub max_drag_per_track: usize,
    /// Stop after this many consecutive trackings in which no handle moved.
    pub max_track_no_change: usize,
    /// Also track when the drag loss ≤ this·(2r₁)² (0: only when every point is skipped).
    pub drag_loss_threshold: f64,
    /// Track after every supervision step.
    pub once_drag: bool,
    /// A handle within this distance (half-res px) of its target counts as reached.
    pub reach_distance: f64,
    /// Information-preserving supervision: the reference patch comes from the unedited
    /// trajectory at the original handle (GoodDrag). Off: the current features at the current
    /// handle, detached (DragDiffusion; the paper's "w/o IP").
    pub information_preserving: bool,
    /// Weight of the per-point L1.
    pub patch_weight: PatchWeight,
    /// Latent-MasaCtrl after the drag phase (docs/ALGORITHM.md §1.16).
    pub masactrl: bool,
    /// First transformer block with mutual self-attention (10 = `up_blocks[2]`, `[3]` in SD 1.5).
    pub masactrl_start_layer: usize,
    /// Fine-tune a LoRA on the image first.
    pub use_lora: bool,
    /// LoRA fine-tuning settings.
    pub lora: LoraConfig,
}

impl Default for DragConfig {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            n_inference_steps: 50,
            inversion_strength: 0.75,
            feature_up_block: 2,
            feature_scale: 0.5,
            r1: 4,
            r2: 12,
            beta: 4.0,
            lambda: 0.2,
            latent_lr: 0.02,
            drag_end_step: 7,
            track_per_denoise: 10,
            max_drag_per_track: 3,
            max_track_no_change: 10,
            drag_loss_threshold: 0.0,
            once_drag: false,
            reach_distance: 2.0,
            information_preserving: true,
            patch_weight: PatchWeight::TwoR,
            masactrl: true,
            masactrl_start_layer: 10,
            use_lora: true,
            lora: LoraConfig::default(),
        }
    }
}

/// Preset names, in the order a UI lists them.
pub const PRESETS: [&str; 5] = [
    "gooddrag",
    "gooddrag-bench",
    "no-ip",
    "no-aldd",
    "dragdiffusion",
];

impl DragConfig {
    /// The motion-supervision loss settings (docs/ALGORITHM.md §1.12) of this configuration.
    pub fn motion_settings(&self) -> MotionSettings {
        MotionSettings {
            r1: self.r1,
            beta: self.beta,
            reach_distance: self.reach_distance,
            lambda: self.lambda,
            patch_weight: self.patch_weight,
        }
    }

    /// A named preset:
    /// * `gooddrag` — the official UI defaults;
    /// * `gooddrag-bench` — `bench_gooddrag.py`: λ 0.1, early stop after 5 idle trackings;
    /// * `no-ip` — the paper's "w/o information-preserving motion supervision" ablation;
    /// * `no-aldd` — the paper's "w/o AlDD" ablation: the same 70 drag operations, all at the
    ///   first timestep, then plain denoising;
    /// * `dragdiffusion` — DragDiffusion's settings (docs/ALGORITHM.md §1.21): κ 0.7 (one drag timestep,
    ///   681), 80 supervision steps each followed by tracking, unit shifts, r₁ 1, r₂ 3,
    ///   `(2r₁+1)²` weighting, current-feature reference, λ 0.1, lr 0.01, 80 LoRA steps.
    pub fn preset(name: &str) -> Result<Self> {
        let base = Self::default();
        Ok(match name {
            "gooddrag" => base,
            "gooddrag-bench" => Self {
                lambda: 0.1,
                max_track_no_change: 5,
                ..base
            },
            "no-ip" => Self {
                information_preserving: false,
                ..base
            },
            "no-aldd" => Self {
                drag_end_step: 1,
                track_per_denoise: base.drag_end_step * base.track_per_denoise,
                ..base
            },
            "dragdiffusion" => Self {
                inversion_strength: 0.7,
                r1: 1,
                r2: 3,
                beta: 1.0,
                lambda: 0.1,
                latent_lr: 0.01,
                drag_end_step: 1,
                track_per_denoise: 80,
                max_drag_per_track: 1,
                // DragDiffusion has no idle-tracking stop.
                max_track_no_change: 1_000_000,
                information_preserving: false,
                patch_weight: PatchWeight::TwoRPlusOne,
                lora: LoraConfig {
                    steps: 80,
                    ..base.lora.clone()
                },
                ..base
            },
            other => {
                return Err(Error::InvalidInput(format!(
                    "unknown preset `{other}`: use one of {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }

    /// Parses a JSON config; missing fields take the defaults, unknown fields are an error.
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("the drag config is not valid: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks value ranges, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| {
            Err(Error::InvalidInput(format!("drag config `{field}`: {why}")))
        };
        if !(self.inversion_strength > 0.0 && self.inversion_strength <= 1.0) {
            return bad("inversion_strength", "must be in (0, 1]");
        }
        if self.n_inference_steps == 0 || self.n_inference_steps > 1000 {
            return bad("n_inference_steps", "must be in 1..=1000");
        }
        if !(self.feature_scale > 0.0 && self.feature_scale <= 1.0) {
            return bad("feature_scale", "must be in (0, 1]");
        }
        if self.r2 == 0 {
            return bad("r2", "must be at least 1");
        }
        // Written so that NaN fails every check.
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        if !positive(self.beta) {
            return bad("beta", "must be positive");
        }
        if !non_negative(self.lambda) {
            return bad("lambda", "must be ≥ 0");
        }
        if !positive(self.latent_lr) {
            return bad("latent_lr", "must be positive");
        }
        if self.max_drag_per_track == 0 {
            return bad("max_drag_per_track", "must be at least 1");
        }
        if self.reach_distance.is_nan() || self.reach_distance < 0.0 {
            return bad("reach_distance", "must be ≥ 0");
        }
        if self.use_lora && (self.lora.rank == 0 || self.lora.batch_size == 0) {
            return bad("lora", "rank and batch_size must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_ui_values() {
        let c = DragConfig::default();
        assert_eq!(
            (c.r1, c.r2, c.beta, c.lambda, c.latent_lr),
            (4, 12, 4.0, 0.2, 0.02)
        );
        assert_eq!(
            (
                c.drag_end_step,
                c.track_per_denoise,
                c.max_drag_per_track,
                c.max_track_no_change
            ),
            (7, 10, 3, 10)
        );
        assert_eq!((c.lora.rank, c.lora.steps, c.lora.batch_size), (16, 70, 4));
        assert_eq!(c.inversion_strength, 0.75);
    }

    #[test]
    fn every_preset_is_valid_and_unknown_ones_are_named() {
        for name in PRESETS {
            DragConfig::preset(name).unwrap().validate().unwrap();
        }
        let bench = DragConfig::preset("gooddrag-bench").unwrap();
        assert_eq!((bench.lambda, bench.max_track_no_change), (0.1, 5));
        let err = DragConfig::preset("fast").unwrap_err().to_string();
        assert!(
            err.contains("fast") && err.contains("gooddrag-bench"),
            "{err}"
        );
    }

    #[test]
    fn json_fills_defaults_and_rejects_unknown_or_bad_fields() {
        let c = DragConfig::from_json(r#"{"lambda": 0.5, "lora": {"steps": 10}}"#).unwrap();
        assert_eq!(
            (c.lambda, c.lora.steps, c.lora.rank, c.r1),
            (0.5, 10, 16, 4)
        );
        assert!(
            DragConfig::from_json(r#"{"lamda": 0.5}"#)
                .unwrap_err()
                .to_string()
                .contains("lamda")
        );
        assert!(DragConfig::from_json(r#"{"inversion_strength": 2}"#).is_err());
        assert!(DragConfig::from_json("{").is_err());
        let round = serde_json::to_string(&DragConfig::preset("dragdiffusion").unwrap()).unwrap();
        assert_eq!(
            DragConfig::from_json(&round).unwrap(),
            DragConfig::preset("dragdiffusion").unwrap()
        );
    }
}
