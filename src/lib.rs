//! GoodDrag Web core: drag editing of real photos (GoodDrag, Zhang et al. 2024) on Stable
//! Diffusion 1.5, one Rust core behind three faces — the browser app (wasm + WebGPU in a Web
//! Worker), the native CLI and the test suite. `docs/ARCHITECTURE.md` describes the layers and
//! `docs/ALGORITHM.md` the method as this code implements it.
//!
//! Layers, bottom to top (a module imports only from its own layer or below;
//! docs/ARCHITECTURE.md §2):
//! - foundations: [`error`], [`progress`], [`clock`], [`rng`], [`tensor_io`], [`device`],
//!   [`image`], [`pickle`] (restricted Python pickles: DragBench metadata, PyTorch `.pth`), [`optim`] (PyTorch-exact Adam(W) on plain tensors), [`perf::profiler`]
//!   (instrumentation scopes, a leaf);
//! - [`kernels`]: the layers' entry points and the kernels under them (f16 weights and compute,
//!   convolution as matrix multiplications, fused attention, row bands);
//! - [`models`] (one file per diffusers model file), [`schedulers`], [`weights`], and the LoRA
//!   adapters and their files ([`lora`]);
//! - [`exec`]: strategies that walk a whole model (the recomputing backward) and the plan chosen
//!   from a memory budget;
//! - the method: [`model_set`] (one model's networks, assembled), [`lora::train`] (fine-tuning,
//!   through `exec`), [`pipeline`], [`drag`], [`edit`];
//! - tooling over the method: [`eval`] (datasets, metrics), [`imageio`] (image files, native),
//!   [`perf`] (benchmarks), [`probe`];
//! - faces: `web` (wasm-bindgen boundary) and the `gooddrag` binary.

pub mod clock;
pub mod device;
pub mod drag;
pub mod edit;
pub mod error;
pub mod eval;
pub mod exec;
pub mod image;
#[cfg(not(target_arch = "wasm32"))]
pub mod imageio;
pub mod kernels;
pub mod lora;
pub mod model_set;
pub mod models;
pub mod optim;
pub mod perf;
pub mod pickle;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod rng;
pub mod schedulers;
pub mod tensor_io;
pub mod weights;

#[cfg(target_arch = "wasm32")]
mod web;

pub use error::{Error, Result};
