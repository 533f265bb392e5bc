//! The Stable Diffusion networks, one file per diffusers/transformers model file, built from
//! their `config.json` with struct fields following the weight keys. They call the layer entry
//! points of [`crate::kernels`] and never import the execution strategies of [`crate::exec`]
//! (docs/ARCHITECTURE.md §2).

pub mod tokenizer;

pub mod attention;
pub mod clip;
pub mod embeddings;
pub mod resnet;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod vae;
