//! The Stable Diffusion networks, one file per diffusers/transformers model file, built from
//! their `config.json` with struct fields following the weight keys.

pub mod tokenizer;

pub mod attention;
pub mod banded;
pub mod clip;
pub mod conv_gemm;
pub mod embeddings;
pub mod packed;
pub mod resnet;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_recompute;
pub mod vae;
