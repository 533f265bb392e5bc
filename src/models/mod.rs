//! The Stable Diffusion networks, one file per diffusers/transformers model file, built from
//! their `config.json` with struct fields following the weight keys.

pub mod tokenizer;
