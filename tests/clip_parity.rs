//! CLIP text encoder parity: the tiny fixture's `text_encoder/` loaded through the real
//! weight loader reproduces transformers' `last_hidden_state` (f32: relative error ≤ 1e-4).

mod parity_support;

use burn::tensor::Device;
use gooddrag::device;
use gooddrag::models::attention::DEFAULT_ATTENTION_BYTES;
use gooddrag::models::clip::ClipTextConfig;
use gooddrag::weights::load::{Component, load_safetensors};
use parity_support::*;

fn run_cases(device: &Device, fp16: bool, tol: impl Into<Tolerance> + Copy) {
    let clip = load_clip(device, fp16);
    let exp = expected("clip");
    for suffix in ["", "_empty"] {
        let ids: Vec<u32> = exp[&format!("input_ids{suffix}")]
            .i64
            .iter()
            .map(|&i| i as u32)
            .collect();
        let out = clip.forward(&[ids]).expect("valid ids");
        check(
            &format!("last_hidden_state{suffix}"),
            out,
            &exp[&format!("last_hidden_state{suffix}")],
            tol,
        );
    }
}

#[test]
fn clip_matches_transformers_on_cpu() {
    run_cases(&device::cpu().0, false, F32_TOL);
}

#[test]
fn clip_fp16_weights_match_within_fp16_tolerance_on_cpu() {
    run_cases(&device::cpu().0, true, F16_TOLERANCE);
}

#[test]
fn clip_matches_transformers_on_wgpu() {
    let (device, _) = device::wgpu().expect("wgpu device (lavapipe without a GPU)");
    run_cases(&device, false, F32_TOL);
}

#[test]
fn clip_loads_transformers5_keys_without_text_model_prefix() {
    let device = device::cpu().0;
    let bytes = std::fs::read(fixture_dir().join("text_encoder/model.safetensors")).unwrap();
    let stripped: Vec<_> = read_all(&bytes)
        .into_iter()
        .filter(|(n, ..)| n != "text_model.embeddings.position_ids")
        .map(|(n, d, s, b)| (n.trim_start_matches("text_model.").to_string(), d, s, b))
        .collect();
    let file = write_safetensors(&stripped);
    let cfg = ClipTextConfig::from_json(
        &std::fs::read_to_string(fixture_dir().join("text_encoder/config.json")).unwrap(),
    )
    .unwrap();
    let clip = load_safetensors(
        cfg.init(DEFAULT_ATTENTION_BYTES, &device).unwrap(),
        Component::TextEncoder,
        "model.safetensors",
        &file,
    )
    .expect("loads without prefix");
    let exp = expected("clip");
    let ids: Vec<u32> = exp["input_ids"].i64.iter().map(|&i| i as u32).collect();
    check(
        "last_hidden_state (no prefix)",
        clip.forward(&[ids]).unwrap(),
        &exp["last_hidden_state"],
        F32_TOL,
    );
}

#[test]
fn clip_token_embedding_split_into_blocks_matches_single_table() {
    // A tiny block budget forces many row blocks; lookups must still be exact.
    use gooddrag::models::clip::SplitEmbedding;
    let device = device::cpu().0;
    let bytes = std::fs::read(fixture_dir().join("text_encoder/model.safetensors")).unwrap();
    let table = read_all(&bytes)
        .into_iter()
        .find(|(n, ..)| n == "text_model.embeddings.token_embedding.weight")
        .unwrap();
    let values: Vec<f32> = table
        .3
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (n, d) = (table.2[0], table.2[1]);
    let split = SplitEmbedding::new(n, d, 100 * d * 4, &device);
    assert_eq!(split.weight.len(), n.div_ceil(100));
    #[derive(burn::module::Module, Debug)]
    struct Holder {
        token_embedding: SplitEmbedding,
    }
    let file = write_safetensors(&[(
        "token_embedding.weight".into(),
        "F32",
        vec![n, d],
        table.3.clone(),
    )]);
    let holder = load_safetensors(
        Holder {
            token_embedding: split,
        },
        Component::Unet,
        "emb.safetensors",
        &file,
    )
    .unwrap();
    let ids = [813u32, 0, 250, 99, 100, 101, 812, 5, 813];
    let got = pollster::block_on(gooddrag::tensor_io::read_f32(
        holder.token_embedding.lookup(&ids),
    ))
    .unwrap();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| values[i as usize * d..(i as usize + 1) * d].to_vec())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn clip_rejects_out_of_vocabulary_ids() {
    let clip = load_clip(&device::cpu().0, false);
    let err = clip
        .forward(&[vec![1, 2, 100_000]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("100000"), "{err}");
}

#[test]
fn sd15_clip_from_default_config_has_the_published_shape() {
    use gooddrag::weights::load::WeightLoader;
    let clip = ClipTextConfig::default()
        .init(DEFAULT_ATTENTION_BYTES, &device::cpu().0)
        .unwrap();
    // The 49408×768 token table (151 MB in f32) is split into blocks of at most 64 MiB.
    let blocks = &clip.text_model.embeddings.token_embedding.weight;
    assert!(
        blocks.len() >= 3
            && blocks
                .iter()
                .all(|b| b.lazy_shape()[0] * 768 * 4 <= 64 << 20)
    );
    let expected = WeightLoader::new(clip, Component::TextEncoder, "clip").expected();
    let params: usize = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    eprintln!(
        "SD 1.5 CLIP text: {} tensors, {params} params",
        expected.len()
    );
    assert!(expected.iter().any(
        |(k, s)| k == "text_model.embeddings.token_embedding.weight" && s == &vec![49408, 768]
    ));
    assert_eq!(expected.len(), 196);
    assert_eq!(params, 123_060_480);
}
