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

use crate::kernels::flash_attention::AttentionKernel;
use crate::kernels::precision::Precision;
use crate::models::unet_2d_condition::BackwardPlan;

const GIB: f64 = (1u64 << 30) as f64;

/// Latent pixels of a 512×512 edit, where the needs below were measured.
const MEASURED_LATENT_PIXELS: f64 = 64.0 * 64.0;

/// What one setting needs at 512×512: GiB per plan (recompute, recompute-top, autodiff) with
/// the fused attention kernels and with chunked attention (the CPU device, burn's `fusion`
/// feature), and the part that does not scale with the image (the UNet's, VAE's and CLIP's
/// weights).
struct Needs {
    fused: [f64; 3],
    chunked: [f64; 3],
    fixed: f64,
}

/// f16 weights and f16 compute. Measured, fused: 2.47 / 4.55 / 5.80 GiB; chunked: 2.46 / 4.79 /
/// 10.29 GiB (plain autodiff kept every 4096² probability matrix). Each need is the measured
/// peak plus 0.4 GiB, rounded up.
const NEED_F16_COMPUTE: Needs = Needs {
    fused: [2.9, 5.0, 6.2],
    chunked: [2.9, 5.2, 10.7],
    fixed: 2.0,
};
/// f16 weights, f32 compute. Measured, fused: 2.67 / 6.98 / 8.55 GiB; chunked: 2.66 / 7.16 /
/// 12.29 GiB.
const NEED_F16_WEIGHTS: Needs = Needs {
    fused: [3.1, 7.4, 9.0],
    chunked: [3.1, 7.6, 12.7],
    fixed: 2.0,
};
/// f32 weights (an adapter without shader-f16). Measured, fused: 4.24 / 7.62 / 9.12 GiB;
/// chunked: 4.24 GiB for recompute, the other two measured before transformers were recomputed
/// in bands (`bench-unet` plus the VAE and CLIP: upper bounds).
const NEED_F32: Needs = Needs {
    fused: [4.7, 8.1, 9.6],
    chunked: [4.7, 9.6, 13.2],
    fixed: 4.0,
};

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

/// What the edit's device runs, besides the plan: the weights' and the compute's dtypes and
/// how attention runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// Weights held in f16 (fp16 files on an adapter with f16 storage).
    pub f16_weights: bool,
    /// The UNet's compute dtype.
    pub precision: Precision,
    /// Fused attention kernels or chunks.
    pub attention: AttentionKernel,
}

/// The estimated peak device memory of an edit whose largest gradient pass runs on a latent of
/// `latent_pixels` (h·w) with `plan` in `setting`.
pub fn estimated_need(plan: BackwardPlan, latent_pixels: usize, setting: Setting) -> u64 {
    let needs = match (setting.f16_weights, setting.precision) {
        (true, Precision::F16) => &NEED_F16_COMPUTE,
        (true, Precision::F32) => &NEED_F16_WEIGHTS,
        (false, _) => &NEED_F32,
    };
    let per_plan = match setting.attention {
        AttentionKernel::Fused => needs.fused,
        AttentionKernel::Chunked => needs.chunked,
    };
    let index = BackwardPlan::ALL
        .iter()
        .position(|p| *p == plan)
        .expect("every plan is listed");
    let fixed = needs.fixed;
    let scaled = fixed + (per_plan[index] - fixed) * latent_pixels as f64 / MEASURED_LATENT_PIXELS;
    (scaled * GIB) as u64
}

/// The plan for `budget`: the one with the least work (autodiff, then recompute-top) whose
/// estimated need fits, else `recompute`; `auto` is `recompute`.
pub fn plan_for_budget(
    budget: MemoryBudget,
    latent_pixels: usize,
    setting: Setting,
) -> BackwardPlan {
    let MemoryBudget::Bytes(bytes) = budget else {
        return BackwardPlan::Recompute;
    };
    BackwardPlan::ALL
        .into_iter()
        .rev()
        .find(|&p| estimated_need(p, latent_pixels, setting) <= bytes)
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

    fn setting(f16_weights: bool, precision: Precision, attention: AttentionKernel) -> Setting {
        Setting {
            f16_weights,
            precision,
            attention,
        }
    }

    #[test]
    fn the_plan_is_the_least_work_that_fits() {
        use AttentionKernel::{Chunked, Fused};
        let at_512 = 64 * 64;
        let gib = |g: f64| MemoryBudget::Bytes((g * GIB) as u64);
        let plan = |g: f64, px: usize, s: Setting| plan_for_budget(gib(g), px, s);
        let f32_compute = setting(true, Precision::F32, Fused);
        assert_eq!(
            plan_for_budget(MemoryBudget::Auto, at_512, f32_compute),
            BackwardPlan::Recompute
        );
        assert_eq!(plan(4.0, at_512, f32_compute), BackwardPlan::Recompute);
        assert_eq!(plan(7.0, at_512, f32_compute), BackwardPlan::Recompute);
        assert_eq!(plan(8.0, at_512, f32_compute), BackwardPlan::RecomputeTop);
        assert_eq!(plan(10.0, at_512, f32_compute), BackwardPlan::Autodiff);
        // A 384×384 edit needs less: 5.5 GiB then holds the top-level recomputation.
        assert_eq!(plan(5.5, 48 * 48, f32_compute), BackwardPlan::RecomputeTop);
        assert_eq!(plan(5.5, at_512, f32_compute), BackwardPlan::Recompute);
        // f16 compute with fused attention: plain autodiff keeps no score matrix, so an 8 GiB
        // adapter keeps every graph; with chunked attention it keeps the levels below the top.
        let fused = setting(true, Precision::F16, Fused);
        let chunked = setting(true, Precision::F16, Chunked);
        assert_eq!(plan(8.0, at_512, fused), BackwardPlan::Autodiff);
        assert_eq!(plan(5.5, at_512, fused), BackwardPlan::RecomputeTop);
        assert_eq!(plan(4.0, at_512, fused), BackwardPlan::Recompute);
        assert_eq!(plan(8.0, at_512, chunked), BackwardPlan::RecomputeTop);
        assert_eq!(plan(5.0, at_512, chunked), BackwardPlan::Recompute);
        assert_eq!(plan(12.0, at_512, chunked), BackwardPlan::Autodiff);
        // Needs grow with the image and with f32 weights, never shrink with less work, and
        // fused attention never needs more than chunks.
        for f16_weights in [true, false] {
            for precision in [Precision::F32, Precision::F16] {
                for attention in [Fused, Chunked] {
                    let s = setting(f16_weights, precision, attention);
                    let need = |p, px| estimated_need(p, px, s);
                    assert!(
                        need(BackwardPlan::Recompute, at_512)
                            < need(BackwardPlan::Recompute, 96 * 96)
                    );
                    assert!(
                        need(BackwardPlan::Recompute, at_512)
                            < need(BackwardPlan::RecomputeTop, at_512)
                    );
                    assert!(
                        need(BackwardPlan::RecomputeTop, at_512)
                            < need(BackwardPlan::Autodiff, at_512)
                    );
                    let s_chunked = setting(f16_weights, precision, Chunked);
                    for p in BackwardPlan::ALL {
                        assert!(need(p, at_512) <= estimated_need(p, at_512, s_chunked));
                    }
                }
            }
        }
        for attention in [Fused, Chunked] {
            assert!(
                estimated_need(
                    BackwardPlan::Recompute,
                    at_512,
                    setting(true, Precision::F32, attention)
                ) < estimated_need(
                    BackwardPlan::Recompute,
                    at_512,
                    setting(false, Precision::F32, attention)
                )
            );
        }
    }
}
