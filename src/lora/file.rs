//! LoRA files (safetensors). Written in the layout diffusers writes today
//! (`StableDiffusionPipeline.save_lora_weights` with PEFT): `unet.<module>.lora_A.weight`
//! `[rank, in]` and `unet.<module>.lora_B.weight` `[out, rank]`, f32 — what
//! `pipe.load_lora_weights(...)` (diffusers ≥ 0.21) and `unet.load_lora_adapter(..., prefix="unet")`
//! read. Read in that layout and three more:
//!
//! * diffusers 0.21–0.24 `LoRACompatibleLinear`: `unet.<module>.lora.down.weight` / `lora.up.weight`;
//! * diffusers ≤ 0.20 attention processors, which the official GoodDrag code writes (docs/ALGORITHM.md §1.9):
//!   `unet.<attn>.processor.to_q_lora.down.weight`, …, `to_out_lora.up.weight`;
//! * kohya-ss / A1111 (most community SD 1.5 LoRAs): `lora_unet_<module with _>.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha` (scale = alpha / rank).
//!
//! Only adapters of the UNet's attention projections can be applied (that is what GoodDrag
//! trains); a file that also adapts the text encoder, feed-forward, projection or convolution
//! layers, or uses LyCORIS variants (LoHa, LoKr, DoRA), is refused with an error naming a
//! layer it cannot apply — never applied in part.

use std::collections::BTreeMap;

use regex::Regex;

use super::{LoraPair, LoraSet};
use crate::error::{Error, Result};
use crate::weights::{F32Tensor, Header, tensor_bytes, tensor_to_f32, write_f32_safetensors};

/// The file name diffusers uses.
pub const LORA_FILE_NAME: &str = "pytorch_lora_weights.safetensors";

/// Serialises `set` in the diffusers/PEFT layout (see the module docs). A scale ≠ 1 is folded
/// into `lora_B`, which gives the same output.
pub fn write_lora(set: &LoraSet) -> Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(2 * set.layers.len());
    for (path, pair) in &set.layers {
        tensors.push(F32Tensor {
            name: format!("unet.{path}.lora_A.weight"),
            shape: vec![pair.rank, pair.in_features],
            data: pair.down.clone(),
        });
        let up = if pair.scale == 1.0 {
            pair.up.clone()
        } else {
            pair.up
                .iter()
                .map(|&v| (v as f64 * pair.scale) as f32)
                .collect()
        };
        tensors.push(F32Tensor {
            name: format!("unet.{path}.lora_B.weight"),
            shape: vec![pair.out_features, pair.rank],
            data: up,
        });
    }
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_f32_safetensors(&tensors, &metadata)
}

/// Which half of a pair a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

/// Maps one file key to (module path, part), or `Err(())` for a layer that cannot be applied.
fn classify(key: &str, kohya: &Regex) -> Result<(String, Part), ()> {
    let k = key.strip_prefix("unet.").unwrap_or(key);
    // PEFT (current diffusers) and diffusers 0.21–0.24.
    for (suffix, part) in [
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
    ] {
        if let Some(module) = k.strip_suffix(suffix) {
            return Ok((module.to_string(), part));
        }
    }
    // diffusers ≤ 0.20 attention processors.
    if let Some((attn, rest)) = k.split_once(".processor.") {
        let (proj, part) = match rest.rsplit_once("_lora.") {
            Some((proj, "down.weight")) => (proj, Part::Down),
            Some((proj, "up.weight")) => (proj, Part::Up),
            _ => return Err(()),
        };
        let proj = match proj {
            "to_q" | "to_k" | "to_v" => proj.to_string(),
            "to_out" => "to_out.0".to_string(),
            _ => return Err(()),
        };
        return Ok((format!("{attn}.{proj}"), part));
    }
    // kohya-ss.
    if let Some(rest) = key.strip_prefix("lora_unet_") {
        let (flat, part) = if let Some(f) = rest.strip_suffix(".lora_down.weight") {
            (f, Part::Down)
        } else if let Some(f) = rest.strip_suffix(".lora_up.weight") {
            (f, Part::Up)
        } else if let Some(f) = rest.strip_suffix(".alpha") {
            (f, Part::Alpha)
        } else {
            return Err(());
        };
        let c = kohya.captures(flat).ok_or(())?;
        let block = match (c.name("updown"), c.name("idx")) {
            (Some(ud), Some(i)) => format!("{}_blocks.{}", ud.as_str(), i.as_str()),
            _ => "mid_block".to_string(),
        };
        let proj = match &c["proj"] {
            "to_out_0" => "to_out.0",
            p => p,
        };
        return Ok((
            format!(
                "{block}.attentions.{}.transformer_blocks.{}.{}.{proj}",
                &c["att"], &c["tb"], &c["attn"]
            ),
            part,
        ));
    }
    Err(())
}

/// Parses a LoRA file held in memory (`file` names it in errors). See the module docs for the
/// layouts; a file with anything GoodDrag cannot apply is refused.
pub fn parse_lora(file: &str, bytes: &[u8]) -> Result<LoraSet> {
    let label = format!("`{file}`");
    let bad = |problem: String| Error::Lora {
        file: label.clone(),
        problem,
    };
    let header = Header::parse_named(file, bytes, Some(bytes.len() as u64))?;
    let kohya = Regex::new(
        r"^(?:(?P<updown>down|up)_blocks_(?P<idx>\d+)|mid_block)_attentions_(?P<att>\d+)_transformer_blocks_(?P<tb>\d+)_(?P<attn>attn[12])_(?P<proj>to_q|to_k|to_v|to_out_0)$",
    )
    .expect("valid regex");

    struct Raw {
        down: Option<(Vec<usize>, Vec<f32>)>,
        up: Option<(Vec<usize>, Vec<f32>)>,
        alpha: Option<f32>,
    }
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    let mut refused: Vec<&str> = Vec::new();
    for info in header.tensors() {
        let Ok((module, part)) = classify(&info.name, &kohya) else {
            refused.push(&info.name);
            continue;
        };
        let data = tensor_to_f32(info, tensor_bytes(&header, info, 0, bytes)?)?;
        let entry = raw.entry(module).or_insert(Raw {
            down: None,
            up: None,
            alpha: None,
        });
        match part {
            Part::Down => entry.down = Some((info.shape.clone(), data)),
            Part::Up => entry.up = Some((info.shape.clone(), data)),
            Part::Alpha => {
                if data.len() != 1 {
                    return Err(bad(format!("`{}` should hold one number", info.name)));
                }
                entry.alpha = Some(data[0]);
            }
        }
    }
    if let Some(first) = refused.first() {
        return Err(bad(format!(
            "{} of its {} tensors adapt layers other than UNet attention projections (e.g. \
             `{first}`: text encoder, feed-forward, projection or convolution layers, or a \
             LyCORIS variant), which GoodDrag cannot apply",
            refused.len(),
            header.tensors().len()
        )));
    }
    let mut layers = BTreeMap::new();
    for (module, r) in raw {
        let (Some((ds, down)), Some((us, up))) = (r.down, r.up) else {
            return Err(bad(format!("layer `{module}` lacks its down or up matrix")));
        };
        // [rank, in] (or [rank, in, 1, 1]) and [out, rank] (or [out, rank, 1, 1]).
        let two_d = |s: &[usize]| match s {
            [a, b] | [a, b, 1, 1] => Some((*a, *b)),
            _ => None,
        };
        let (Some((rank, in_features)), Some((out_features, rank_up))) = (two_d(&ds), two_d(&us))
        else {
            return Err(bad(format!(
                "layer `{module}` has matrices of shapes {ds:?} and {us:?}; expected [rank, in] and [out, rank]"
            )));
        };
        if rank != rank_up || rank == 0 {
            return Err(bad(format!(
                "layer `{module}`: down has rank {rank} but up has rank {rank_up}"
            )));
        }
        let scale = r.alpha.map_or(1.0, |a| a as f64 / rank as f64);
        layers.insert(
            module,
            LoraPair {
                down,
                up,
                rank,
                in_features,
                out_features,
                scale,
            },
        );
    }
    if layers.is_empty() {
        return Err(bad("it contains no LoRA layers".into()));
    }
    Ok(LoraSet { layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(rank: usize, i: usize, o: usize, scale: f64) -> LoraPair {
        LoraPair {
            down: (0..rank * i).map(|v| v as f32 * 0.25 - 1.0).collect(),
            up: (0..o * rank).map(|v| 0.5 - v as f32 * 0.125).collect(),
            rank,
            in_features: i,
            out_features: o,
            scale,
        }
    }

    #[test]
    fn write_then_parse_is_exact() {
        let mut set = LoraSet::default();
        set.layers.insert(
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q".into(),
            pair(2, 3, 4, 1.0),
        );
        set.layers.insert(
            "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0".into(),
            pair(1, 5, 2, 1.0),
        );
        let bytes = write_lora(&set).unwrap();
        assert_eq!(parse_lora("x", &bytes).unwrap(), set);
    }

    #[test]
    fn kohya_names_map_to_module_paths() {
        let re = Regex::new(
            r"^(?:(?P<updown>down|up)_blocks_(?P<idx>\d+)|mid_block)_attentions_(?P<att>\d+)_transformer_blocks_(?P<tb>\d+)_(?P<attn>attn[12])_(?P<proj>to_q|to_k|to_v|to_out_0)$",
        )
        .unwrap();
        assert_eq!(
            classify(
                "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha",
                &re
            ),
            Ok((
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0".into(),
                Part::Alpha
            ))
        );
        assert_eq!(
            classify(
                "lora_unet_up_blocks_3_attentions_1_transformer_blocks_0_attn1_to_k.lora_up.weight",
                &re
            ),
            Ok((
                "up_blocks.3.attentions.1.transformer_blocks.0.attn1.to_k".into(),
                Part::Up
            ))
        );
        assert!(
            classify(
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                &re
            )
            .is_err()
        );
        assert!(
            classify(
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                &re
            )
            .is_err()
        );
        assert!(classify("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", &re).is_ok());
    }

    #[test]
    fn unsupported_layers_and_broken_pairs_are_refused_by_name() {
        let tensors = vec![F32Tensor {
            name: "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight".into(),
            shape: vec![1, 2],
            data: vec![0.0, 1.0],
        }];
        let bytes = write_f32_safetensors(&tensors, &BTreeMap::new()).unwrap();
        let err = parse_lora("te.safetensors", &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lora_te_text_model_encoder_layers_0_mlp_fc1"),
            "{err}"
        );

        let half = vec![F32Tensor {
            name: "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
                .into(),
            shape: vec![1, 2],
            data: vec![0.0, 1.0],
        }];
        let bytes = write_f32_safetensors(&half, &BTreeMap::new()).unwrap();
        let err = parse_lora("half.safetensors", &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks its down or up"), "{err}");
        assert!(parse_lora("junk", b"not a safetensors file").is_err());
    }
}
