//! Information-preserving motion supervision (GoodDrag §3.3, Eq. 6, as coded in
//! `cal_motion_supervision_loss`, docs/ALGORITHM.md §1.12):
//!
//! ```text
//! for each pair i with ‖qᵢ − pᵢ‖ ≥ 2:
//!     dᵢ = (qᵢ − pᵢ)/‖qᵢ − pᵢ‖ · min(β, ‖qᵢ − pᵢ‖)
//!     drag += (2r₁)² · mean |f₀ᵢ − patch(F₁, pᵢ + dᵢ)|        f₀ᵢ: reference patch, detached
//! loss = drag + λ · Σ |z_{t−1} − z⁰_{t−1}| ⊙ (1 − M)
//! ```
//!
//! `f₀ᵢ` is the unedited trajectory's patch at the **original** handle (the information-
//! preserving part) or, with that off, the current features at the current handle (DragDiffusion).

use burn::tensor::Tensor;

use super::features::FeatureGeometry;
use super::points::Point;

/// The motion-supervision loss and its drag part.
pub struct MotionLoss {
    /// drag + mask term (what is optimised).
    pub total: Tensor<1>,
    /// The drag term alone, `None` when every point was within reach (skipped).
    pub drag: Option<Tensor<1>>,
}

/// Everything the loss reads at one drag timestep.
pub struct MotionInputs<'a> {
    /// Current features `[1, C, h, w]` (latent resolution, with gradient).
    pub features: &'a Tensor<4>,
    /// Feature geometry.
    pub geometry: FeatureGeometry,
    /// One-step-denoised current latent `z_{t−1}` (with gradient).
    pub z_prev: Tensor<4>,
    /// The unedited trajectory's `z⁰_{t−1}`.
    pub reference_prev: &'a Tensor<4>,
    /// `1 − M` at latent resolution, `None` for no mask term.
    pub keep: Option<&'a Tensor<4>>,
    /// Reference patches `[C, 2r₁+1, 2r₁+1]` per handle (information-preserving mode), else
    /// `None` to take the current features at the current handle.
    pub reference_patches: Option<&'a [Tensor<3>]>,
    /// Current handles.
    pub handles: &'a [Point],
    /// Targets.
    pub targets: &'a [Point],
}

/// How the motion-supervision L1 of one point is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchWeight {
    /// GoodDrag: `(2r₁)² · mean` (docs/ALGORITHM.md §1.12).
    TwoR,
    /// DragDiffusion: `(2r₁+1)² · mean`.
    TwoRPlusOne,
}

/// Settings of the loss.
#[derive(Debug, Clone, Copy)]
pub struct MotionSettings {
    /// Patch radius r₁.
    pub r1: usize,
    /// Largest shift β.
    pub beta: f64,
    /// Points closer than this to their target are skipped.
    pub reach_distance: f64,
    /// λ.
    pub lambda: f64,
    /// Weighting of the per-point L1.
    pub patch_weight: PatchWeight,
}

/// Shift of one handle toward its target: `None` when within reach.
pub fn shift(handle: Point, target: Point, beta: f64, reach: f64) -> Option<Point> {
    let (dr, dc) = (target[0] - handle[0], target[1] - handle[1]);
    let dist = (dr * dr + dc * dc).sqrt();
    if dist < reach || dist == 0.0 {
        return None;
    }
    let step = beta.min(dist) / dist;
    Some([dr * step, dc * step])
}

/// Eq. 6 as coded (see the module docs).
pub fn motion_supervision_loss(inp: &MotionInputs<'_>, s: &MotionSettings) -> MotionLoss {
    let r = s.r1;
    let weight = match s.patch_weight {
        PatchWeight::TwoR => (2 * r * 2 * r) as f64,
        PatchWeight::TwoRPlusOne => ((2 * r + 1) * (2 * r + 1)) as f64,
    };
    let mut drag: Option<Tensor<1>> = None;
    for (i, (&p, &q)) in inp.handles.iter().zip(inp.targets).enumerate() {
        let Some(d) = shift(p, q, s.beta, s.reach_distance) else {
            continue;
        };
        let f0 = match inp.reference_patches {
            Some(patches) => patches[i].clone(),
            None => inp.geometry.integer_patch(inp.features, p, r).detach(),
        };
        let f1 = inp
            .geometry
            .bilinear_patch(inp.features, [p[0] + d[0], p[1] + d[1]], r);
        let term = (f0 - f1).abs().mean().mul_scalar(weight);
        drag = Some(match drag {
            Some(acc) => acc + term,
            None => term,
        });
    }
    let device = inp.z_prev.device();
    let mut total = drag.clone().unwrap_or_else(|| Tensor::zeros([1], &device));
    if let Some(keep) = inp.keep
        && s.lambda != 0.0
    {
        let diff = (inp.z_prev.clone() - inp.reference_prev.clone()).abs() * keep.clone();
        total = total + diff.sum().mul_scalar(s.lambda);
    }
    MotionLoss { total, drag }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_is_capped_at_beta_and_skips_reached_points() {
        assert_eq!(shift([0.0, 0.0], [0.0, 10.0], 4.0, 2.0), Some([0.0, 4.0]));
        let d = shift([0.0, 0.0], [3.0, 0.0], 4.0, 2.0).unwrap();
        assert_eq!(d, [3.0, 0.0]);
        assert_eq!(shift([5.0, 5.0], [6.0, 6.0], 4.0, 2.0), None); // √2 < 2
        assert!(shift([5.0, 5.0], [7.0, 5.0], 4.0, 2.0).is_some()); // exactly 2: not skipped
    }
}
