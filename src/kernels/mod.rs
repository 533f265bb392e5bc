//! Below the models: the layers' entry points and the kernels they run (docs/ARCHITECTURE.md §3).
//! - [`layers`]: linear, convolution and normalisations with weights held in f16 and widened
//!   at use; every model calls these instead of burn's `forward`, so precision and profiling
//!   are decided in one place;
//! - [`precision`]: the UNet's compute dtype — f32, or f16 with f32 where precision needs it —
//!   and the casts between them;
//! - [`conv_gemm`]: stride-1 convolutions as im2col + matrix multiplication in row bands;
//! - [`flash_attention`]: fused attention forward and backward on the wgpu device (online
//!   softmax; no score matrix);
//! - [`row_bands`]: an activation held as bands of rows, with exact halo convolutions and
//!   GroupNorm statistics over all bands (the VAE decoder's large levels);
//! - [`statistics`]: GroupNorm mean/variance as trees of short sums, exact at any group size;
//! - [`upsample`]: nearest-neighbour upsampling with PyTorch's index rules.
//!
//! Nothing here imports `models`; the models' banded forwards live in their own files.

pub mod conv_gemm;
pub mod flash_attention;
pub mod layers;
pub mod precision;
pub mod row_bands;
pub mod statistics;
pub mod upsample;
