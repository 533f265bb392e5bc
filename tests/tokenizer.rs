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

/// CLIP's byte symbols in the order of its vocabulary (openai/CLIP `bytes_to_unicode().values()`:
/// the printable Latin-1 bytes as themselves, then the other bytes mapped from U+0100 on).
fn clip_byte_symbols() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut symbols: Vec<char> = (0..256)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    let mut next = 256;
    for b in 0..256u32 {
        if !printable(b) {
            symbols.push(char::from_u32(next).expect("a char"));
            next += 1;
        }
    }
    symbols
}

/// SD 1.5's `vocab.json`, rebuilt from its `merges.txt` as openai/CLIP builds the vocabulary
/// (byte symbols, the same with `</w>`, one token per merge in rank order, the two specials).
fn real_clip_vocab_json(merges_txt: &str) -> String {
    let symbols = clip_byte_symbols();
    let mut tokens: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
    tokens.extend(symbols.iter().map(|c| format!("{c}</w>")));
    tokens.extend(
        merges_txt
            .lines()
            .skip(1)
            .map(|m| m.split(' ').collect::<String>()),
    );
    tokens.extend(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
    let vocab: serde_json::Map<String, Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, Value::from(i)))
        .collect();
    serde_json::to_string(&vocab).unwrap()
}

#[test]
fn real_clip_vocabulary_matches_transformers() {
    // tests/fixtures/clip-vocab/: SD 1.5's merges.txt built from the BPE file inside the
    // open-clip-torch wheel, and transformers' ids (make_fixture.py there says how).
    let merges = read("clip-vocab/merges.txt");
    let expected = json("clip-vocab/expected.json");
    let t = ClipTokenizer::from_files_content(&real_clip_vocab_json(&merges), &merges).unwrap();
    assert_eq!(t.vocab_size(), 49_408);
    assert_eq!(
        t.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.pad_id()),
        (49_406, 49_407, 49_407)
    );
    // Ids every SD 1.5 user has seen: "a photo of a cat".
    assert_eq!(
        t.encode("a photo of a cat"),
        [49_406, 320, 1125, 539, 320, 2368, 49_407]
    );
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "the fixture lost its cases");
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            t.encode(text),
            ids(&case["ids_unpadded"]),
            "unpadded: {text:?}"
        );
        let padded = t.encode_padded(text, MAX_LENGTH);
        assert_eq!(padded, ids(&case["ids"]), "padded: {text:?}");
        assert_eq!(padded.len(), MAX_LENGTH);
    }
}
