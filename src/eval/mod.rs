//! Evaluation as the papers do it: drag-editing datasets (GoodDrag/Drag100 and DragBench
//! layouts), their official output files, and the metrics (docs/EVALUATION.md).

pub mod dai;
#[cfg(not(target_arch = "wasm32"))]
pub mod dataset;
pub mod dift;
#[cfg(not(target_arch = "wasm32"))]
pub mod gscore;
pub mod lpips;
#[cfg(not(target_arch = "wasm32"))]
pub mod md;
pub mod shard;
