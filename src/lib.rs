//! GoodDrag Web core: drag editing of real photos (GoodDrag, Zhang et al. 2024) on Stable
//! Diffusion 1.5, one Rust core behind three faces — the browser app (wasm + WebGPU in a Web
//! Worker), the native CLI and the test suite. See `DESIGN.md` (shared) for the architecture.

pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod benchmark;
pub mod clock;
pub mod device;
pub mod drag;
pub mod edit;
pub mod error;
pub mod formats;
#[cfg(not(target_arch = "wasm32"))]
pub mod imageio;
pub mod lora;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod pipeline;
pub mod probe;
pub mod profile;
pub mod progress;
pub mod rng;
pub mod schedulers;
pub mod weights;

#[cfg(target_arch = "wasm32")]
mod web;

pub use error::{Error, Result};
