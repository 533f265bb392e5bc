//! Noise schedulers. GoodDrag uses DDIM only (docs/ALGORITHM.md §1.7): deterministic denoising (η = 0) and
//! DragDiffusion's DDIM inversion.

pub mod ddim;

pub use ddim::{DdimScheduler, DdimSchedulerConfig};
