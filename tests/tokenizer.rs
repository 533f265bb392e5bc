//! The CLIP tokenizer against transformers 5.23.0 `CLIPTokenizer`, id for id.
//!
//! * `tests/fixtures/tiny-sd/` — the tiny SD model's `tokenizer/` folder (SD 1.5 configuration)
//!   and `expected/tokenizer.json`, written by `scripts/make_fixtures.py`.
//! * `tests/fixtures/tokenizer-small/` — a small CLIP-style vocab with expected ids for tricky
//!   prompts under four configurations (none, SD 1.5, SD 2.1 with pad `!`, and a
//!   tokenizer_config.json with `added_tokens_decoder`), written by `make_fixture.py` there.

use gooddrag::models::tokenizer::{ClipTokenizer, MAX_LENGTH};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("a list of ids")
}

fn tiny_sd_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_files_content_with_config(
        &read("tiny-sd/tokenizer/vocab.json"),
        &read("tiny-sd/tokenizer/merges.txt"),
        Some(&read("tiny-sd/tokenizer/tokenizer_config.json")),
        Some(&read("tiny-sd/tokenizer/special_tokens_map.json")),
    )
    .unwrap()
}

#[test]
fn tiny_sd_tokenizer_matches_transformers() {
    let t = tiny_sd_tokenizer();
    let expected = json("tiny-sd/expected/tokenizer.json");
    assert_eq!(
        t.bos_id(),
        expected["bos_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        t.eos_id(),
        expected["eos_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        t.pad_id(),
        expected["pad_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        t.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(
        t.model_max_length() as u64,
        expected["max_length"].as_u64().unwrap()
    );
    let cases = expected["cases"].as_array().unwrap().clone();
    assert!(!cases.is_empty(), "fixture has no cases");
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            t.encode(text),
            ids(&case["ids_unpadded"]),
            "unpadded {text:?}"
        );
        assert_eq!(
            t.encode_padded(text, MAX_LENGTH),
            ids(&case["ids"]),
            "padded {text:?}"
        );
    }
}

/// Serialises an optional config object back to the file text the tokenizer reads.
fn config_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

#[test]
fn tricky_prompts_match_transformers_in_every_configuration() {
    let expected = json("tokenizer-small/expected.json");
    let (vocab, merges) = (
        read("tokenizer-small/vocab.json"),
        read("tokenizer-small/merges.txt"),
    );
    for (name, config) in expected["configs"].as_object().unwrap() {
        let tokenizer_config = config_text(&config["tokenizer_config"]);
        let special_tokens_map = config_text(&config["special_tokens_map"]);
        let t = ClipTokenizer::from_files_content_with_config(
            &vocab,
            &merges,
            tokenizer_config.as_deref(),
            special_tokens_map.as_deref(),
        )
        .unwrap();
        assert_eq!(
            t.pad_id() as u64,
            config["pad_id"].as_u64().unwrap(),
            "{name}"
        );
        let cases = expected["cases"].as_array().unwrap().clone();
        assert!(!cases.is_empty(), "fixture has no cases");
        for case in &cases {
            let text = case["text"].as_str().unwrap();
            assert_eq!(t.encode(text), ids(&case["ids"][name]), "{name}: {text:?}");
            if let Some(padded) = case["padded"].get(name) {
                assert_eq!(
                    t.encode_padded(text, MAX_LENGTH),
                    ids(padded),
                    "{name} padded: {text:?}"
                );
            }
        }
    }
}

#[test]
fn long_prompts_are_truncated_keeping_eos_last() {
    let t = tiny_sd_tokenizer();
    let long = "a photo of a cat ".repeat(40);
    assert!(t.encode(&long).len() > MAX_LENGTH);
    let padded = t.encode_padded(&long, MAX_LENGTH);
    assert_eq!(padded.len(), MAX_LENGTH);
    assert_eq!(
        (padded[0], padded[MAX_LENGTH - 1]),
        (t.bos_id(), t.eos_id())
    );
    assert_eq!(
        &padded[..MAX_LENGTH - 1],
        &t.encode(&long)[..MAX_LENGTH - 1]
    );
}

#[test]
fn sd21_style_pad_token_is_read_from_the_config() {
    let sd21 = r#"{"pad_token": "!"}"#;
    let t = ClipTokenizer::from_files_content_with_config(
        &read("tokenizer-small/vocab.json"),
        &read("tokenizer-small/merges.txt"),
        Some(sd21),
        None,
    )
    .unwrap();
    assert_eq!(t.pad_id(), 0);
    assert_eq!(t.encode_padded("", 4), [t.bos_id(), t.eos_id(), 0, 0]);
}

#[test]
fn broken_tokenizer_files_name_the_file() {
    let vocab = read("tokenizer-small/vocab.json");
    let err = ClipTokenizer::from_files_content(&vocab, "#version: 0.2\nzz qq\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`merges.txt`") && err.contains("line 2"),
        "{err}"
    );
    let err = ClipTokenizer::from_files_content("not json", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`vocab.json`"), "{err}");
}
