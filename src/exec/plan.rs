//! The backward plan chosen from a memory budget (docs/ARCHITECTURE.md §4): the plan with the
//! least work whose estimated peak fits, else the least-memory plan. Neither WebGPU nor wgpu
//! tells how much memory an adapter has, so without a budget (`auto`) the editor takes the
//! least-memory plan, and a user who knows their GPU gives the budget.
//!
//! The estimates come from measurement, not a model: the reserved device memory of the default
//! edit's gradient phases (LoRA step, motion supervision) in `gooddrag bench-synthetic --latent 64
//! --dry-run --backward-plan P --precision C [--f32-weights]` on SD 1.5 (README "Backward
//! plans"; all networks' weights included), plus 0.4 GiB of margin. Weights stay; the rest
//! scales with the latent's pixel count.

use std::fmt;
use std::str::FromStr;

use crate::kernels::precision::Precision;
use crate::models::unet_2d_condition::BackwardPlan;

const GIB: f64 = (1u64 << 30) as f64;

/// Latent pixels of a 512×512 edit, where the needs below were measured.
const MEASURED_LATENT_PIXELS: f64 = 64.0 * 64.0;

/// GiB needed at 512×512 per plan (recompute, recompute-top, autodiff), and the part that does
/// not scale with the image (the UNet's, VAE's and CLIP's weights): with f16 weights and f16
/// compute (measured 2.46 / 4.79 / 10.29 GiB), f16 weights and f32 compute (2.66 / 7.16 /
/// 12.29 GiB), and f32 weights on an adapter without shader-f16 (4.24 GiB for recompute; the
/// other two measured before transformers were recomputed in bands, `bench-unet` plus the VAE
/// and CLIP: upper bounds).
const NEED_F16_COMPUTE: ([f64; 3], f64) = ([2.9, 5.2, 10.7], 2.0);
const NEED_F16_WEIGHTS: ([f64; 3], f64) = ([3.1, 7.6, 12.7], 2.0);
const NEED_F32: ([f64; 3], f64) = ([4.7, 9.6, 13.2], 4.0);

/// A memory budget for the edit's device: `auto` (unknown: the least-memory plan) or a size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MemoryBudget {
    /// The adapter's memory is unknown (WebGPU does not expose it): plan for the least memory.
    #[default]
    Auto,
    /// This many bytes may be used.
    Bytes(u64),
}

impl FromStr for MemoryBudget {
    type Err = String;
    /// `auto`, or a size with a unit: `8GiB`, `7.5GiB`, `12GB`, `6000MiB`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{s}`: expected auto or a size such as 8GiB"))?;
        let scale = match unit.trim().to_ascii_lowercase().as_str() {
            "gib" => GIB,
            "gb" => 1e9,
            "mib" => (1u64 << 20) as f64,
            "mb" => 1e6,
            _ => return Err(format!("`{s}`: give a unit, GiB, GB, MiB or MB (8GiB)")),
        };
        if value <= 0.0 || !value.is_finite() {
            return Err(format!("`{s}`: the budget must be positive"));
        }
        Ok(Self::Bytes((value * scale) as u64))
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Bytes(b) => write!(f, "{:.1} GiB", *b as f64 / GIB),
        }
    }
}

/// The estimated peak device memory of an edit whose largest gradient pass runs on a latent of
/// `latent_pixels` (h·w) with `plan`, weights held in f16 or not, computing in `precision`.
pub fn estimated_need(
    plan: BackwardPlan,
    latent_pixels: usize,
    f16_weights: bool,
    precision: Precision,
) -> u64 {
    let (needs, fixed) = match (f16_weights, precision) {
        (true, Precision::F16) => NEED_F16_COMPUTE,
        (true, Precision::F32) => NEED_F16_WEIGHTS,
        (false, _) => NEED_F32,
    };
    let index = BackwardPlan::ALL
        .iter()
        .position(|p| *p == plan)
        .expect("every plan is listed");
    let scaled = fixed + (needs[index] - fixed) * latent_pixels as f64 / MEASURED_LATENT_PIXELS;
    (scaled * GIB) as u64
}

/// The plan for `budget`: the one with the least work (autodiff, then recompute-top) whose
/// estimated need fits, else `recompute`; `auto` is `recompute`.
pub fn plan_for_budget(
    budget: MemoryBudget,
    latent_pixels: usize,
    f16_weights: bool,
    precision: Precision,
) -> BackwardPlan {
    let MemoryBudget::Bytes(bytes) = budget else {
        return BackwardPlan::Recompute;
    };
    BackwardPlan::ALL
        .into_iter()
        .rev()
        .find(|&p| estimated_need(p, latent_pixels, f16_weights, precision) <= bytes)
        .unwrap_or(BackwardPlan::Recompute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_units_and_refuse_nonsense() {
        assert_eq!("auto".parse(), Ok(MemoryBudget::Auto));
        assert_eq!("8GiB".parse(), Ok(MemoryBudget::Bytes(8 << 30)));
        assert_eq!(
            "7.5 GiB".parse(),
            Ok(MemoryBudget::Bytes(7 << 30 | 1 << 29))
        );
        assert_eq!("12GB".parse(), Ok(MemoryBudget::Bytes(12_000_000_000)));
        assert_eq!("6000MiB".parse(), Ok(MemoryBudget::Bytes(6000 << 20)));
        for bad in ["8", "eight GiB", "0GiB", "-1GiB", "8TB"] {
            assert!(bad.parse::<MemoryBudget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_is_the_least_work_that_fits() {
        let at_512 = 64 * 64;
        let gib = |g: f64| MemoryBudget::Bytes((g * GIB) as u64);
        let plan_for_budget = |b, px, f16| super::plan_for_budget(b, px, f16, Precision::F32);
        let estimated_need = |p, px, f16| super::estimated_need(p, px, f16, Precision::F32);
        assert_eq!(
            plan_for_budget(MemoryBudget::Auto, at_512, true),
            BackwardPlan::Recompute
        );
        assert_eq!(
            plan_for_budget(gib(4.0), at_512, true),
            BackwardPlan::Recompute
        );
        assert_eq!(
            plan_for_budget(gib(7.5), at_512, true),
            BackwardPlan::Recompute
        );
        assert_eq!(
            plan_for_budget(gib(10.0), at_512, true),
            BackwardPlan::RecomputeTop
        );
        // f16 compute: an 8 GiB adapter keeps the graphs below full resolution, 6 GiB does not.
        let f16 = |g, px| super::plan_for_budget(gib(g), px, true, Precision::F16);
        assert_eq!(f16(8.0, at_512), BackwardPlan::RecomputeTop);
        assert_eq!(f16(5.0, at_512), BackwardPlan::Recompute);
        assert_eq!(f16(12.0, at_512), BackwardPlan::Autodiff);
        assert_eq!(
            plan_for_budget(gib(16.0), at_512, true),
            BackwardPlan::Autodiff
        );
        // A 384×384 edit needs less: 7.5 GiB then holds the top-level recomputation.
        assert_eq!(
            plan_for_budget(gib(7.5), 48 * 48, true),
            BackwardPlan::RecomputeTop
        );
        // Needs grow with the image and with f32 weights, and never shrink with less work.
        for f16 in [true, false] {
            let need = |p, px| estimated_need(p, px, f16);
            assert!(need(BackwardPlan::Recompute, at_512) < need(BackwardPlan::Recompute, 96 * 96));
            assert!(
                need(BackwardPlan::Recompute, at_512) < need(BackwardPlan::RecomputeTop, at_512)
            );
            assert!(
                need(BackwardPlan::RecomputeTop, at_512) < need(BackwardPlan::Autodiff, at_512)
            );
        }
        assert!(
            estimated_need(BackwardPlan::Recompute, at_512, true)
                < estimated_need(BackwardPlan::Recompute, at_512, false)
        );
    }
}
