//! Execution strategies that walk a whole model (docs/ARCHITECTURE.md §4): how a UNet pass and
//! its backward are scheduled on a device, above the model files and never imported by them.
//! - [`recompute`]: the backward by layer-wise recomputation (only each layer's input is kept,
//!   plus the graphs of the layers the UNet's `BackwardPlan` keeps);
//! - [`plan`]: which plan a memory budget affords.

pub mod plan;
pub mod recompute;
