//! CLIP byte-level BPE tokenizer, id-for-id with transformers 5.23.0 `CLIPTokenizer`.
//!
//! Reads a diffusers `tokenizer/` folder: `vocab.json` (token → id), `merges.txt` (ranked
//! merges) and optionally `tokenizer_config.json` / `special_tokens_map.json` (special tokens,
//! padding, `model_max_length`).
//!
//! Since transformers 5, `CLIPTokenizer` is the `tokenizers`-backed one
//! (`transformers/models/clip/tokenization_clip.py`); there is no slow Python path any more, so
//! ftfy is never used (the old slow tokenizer ran `ftfy.fix_text` when installed, else
//! `BasicTokenizer`). The pipeline reproduced here, in order:
//!
//! 1. **Added tokens, raw text.** Special tokens configured with `normalized: false` are cut out
//!    of the raw text (leftmost-longest match) and map straight to their ids.
//! 2. **Normalise** each remaining piece: Unicode NFC, every run of whitespace (`\s+`) → one
//!    space, then lower-casing char by char (`char::to_lowercase`, so no final-sigma rule).
//! 3. **Added tokens, normalised text.** Special tokens with `normalized: true` are cut out of the
//!    normalised text.
//! 4. **Pre-tokenise** with CLIP's pattern
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (matches kept, whitespace between them dropped), then split each word again with the
//!    GPT-2 pattern of the `ByteLevel` pre-tokenizer. That second split only changes a word that
//!    spells a special token after normalisation (e.g. `<|STARTOFTEXT|>` when that token is not
//!    normalised), which becomes `<|`, `startoftext`, `|>`.
//! 5. **Byte-level map**: UTF-8 bytes → printable chars (GPT-2's `bytes_to_unicode`).
//! 6. **BPE** per word: the last symbol carries the `</w>` suffix; symbols missing from the vocab
//!    become the unk token, one per char; pairs are merged lowest rank first, leftmost first
//!    among equal ranks (the `tokenizers` crate's `Word::merge_all`).
//! 7. **Post-process**: `<|startoftext|>` … `<|endoftext|>`; for fixed-length input, the content
//!    is truncated to `max_len - 2` tokens and padded on the right with the pad token.
//!
//! Special-token resolution follows `PreTrainedTokenizerBase.from_pretrained`: defaults
//! (`<|startoftext|>`, `<|endoftext|>` for eos/unk/pad, all `normalized: false`), overridden by
//! `tokenizer_config.json`; then either its `added_tokens_decoder` (newer files) or
//! `special_tokens_map.json` (older files). Tokens are registered in the order bos, eos, unk, sep,
//! pad, cls, mask, and the last registration of the same text sets its `normalized` flag — which
//! is why SD 1.5's `<|endoftext|>` ends up raw-matched (its pad entry is a plain string) while its
//! `<|startoftext|>` is matched after lower-casing. With SD 2.x's `pad_token: "!"`, every `!` in a
//! prompt is the pad token (id 0), never `!</w>`, exactly as in transformers.
//!
//! Known, accepted differences: the Unicode tables differ in age — NFC comes from the
//! `unicode-normalization` crate (Unicode 16), `\p{L}`/`\p{N}`/`\s` from the `regex` crate and
//! lower-casing from Rust's std, while the
//! NFC tables inside `tokenizers` predate Unicode 12. This only changes the canonical order of
//! combining marks assigned since (e.g. U+0EBA, U+1AD2, U+1AED): fuzzing 3 000 random strings
//! of prompt-like characters gave no difference, and 3 000 strings of random code points up to
//! U+1FAFF differed in 4. The `lstrip`/`rstrip`/`single_word` flags of added tokens (all false
//! in CLIP configs) are ignored, and a `tokenizer.json` is not read.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// Context length of the CLIP text encoder: prompts are padded / truncated to this many ids.
pub const MAX_LENGTH: usize = 77;

/// Default beginning-of-sequence token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// Default end-of-sequence token (also the default unk and pad token).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Suffix marking the last symbol of a word in the vocab (`"cat</w>"`).
const END_OF_WORD: &str = "</w>";

/// CLIP's pre-tokenizer pattern (transformers `CLIPTokenizer`, `pre_tokenizers.Split`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// GPT-2's pattern used by the `ByteLevel` pre-tokenizer. Its `\s+(?!\S)` alternative is left
/// out: CLIP words contain no whitespace, so it can never match (and `regex` has no lookahead).
const BYTE_LEVEL_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Special-token keys in the order transformers registers them (`SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A token cut out of the text before BPE, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AddedToken {
    content: String,
    id: u32,
    /// Matched in the normalised text (true) or the raw text (false).
    normalized: bool,
}

/// A configured special token before id lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenSpec {
    content: String,
    normalized: bool,
}

impl TokenSpec {
    fn raw(content: &str) -> Self {
        TokenSpec {
            content: content.to_string(),
            normalized: false,
        }
    }
}

/// One BPE symbol in a word being merged (a doubly linked list over a `Vec`).
#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

/// Piece of text after cutting out added tokens.
enum Piece<'a> {
    Token(u32),
    Text(&'a str),
}

/// The CLIP tokenizer of a Stable Diffusion checkpoint (diffusers `tokenizer/` folder).
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
    bos_id: u32,
    eos_id: u32,
    unk_id: u32,
    pad_id: u32,
    model_max_length: usize,
    raw_added: Vec<AddedToken>,
    normalized_added: Vec<AddedToken>,
    clip_split: Regex,
    byte_level_split: Regex,
    whitespace: Regex,
}

impl ClipTokenizer {
    /// Builds the tokenizer from the text of `vocab.json` and `merges.txt`, with transformers'
    /// defaults for everything a tokenizer config would set (special tokens as listed in the
    /// module docs, pad = `<|endoftext|>`, [`MAX_LENGTH`]).
    pub fn from_files_content(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::from_files_content_with_config(vocab_json, merges_txt, None, None)
    }

    /// Builds the tokenizer from `vocab.json` and `merges.txt` plus, when the folder has them,
    /// `tokenizer_config.json` and `special_tokens_map.json` (special tokens, pad token,
    /// `model_max_length`), resolved as transformers 5.23.0 does.
    pub fn from_files_content_with_config(
        vocab_json: &str,
        merges_txt: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self> {
        let vocab = parse_vocab(vocab_json)?;
        let merges = parse_merges(merges_txt, &vocab)?;
        let config = tokenizer_config_json
            .map(|s| parse_json_object("tokenizer_config.json", s))
            .transpose()?;
        let special_map = special_tokens_map_json
            .map(|s| parse_json_object("special_tokens_map.json", s))
            .transpose()?;
        let specials = resolve_special_tokens(config.as_ref(), special_map.as_ref())?;
        let model_max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(Value::as_u64)
            .map_or(MAX_LENGTH, |n| n as usize);
        Self::assemble(vocab, merges, &specials, model_max_length)
    }

    fn assemble(
        vocab: HashMap<String, u32>,
        merges: HashMap<(u32, u32), (u32, u32)>,
        specials: &[(&'static str, TokenSpec)],
        model_max_length: usize,
    ) -> Result<Self> {
        let id_of = |key: &str, default: &str| -> Result<u32> {
            let content = specials
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map_or(default, |(_, t)| &t.content);
            vocab
                .get(content)
                .copied()
                .ok_or_else(|| missing_token(key, content))
        };
        let (bos_id, eos_id) = (
            id_of("bos_token", BOS_TOKEN)?,
            id_of("eos_token", EOS_TOKEN)?,
        );
        let unk_id = id_of("unk_token", EOS_TOKEN)?;
        let eos_content = specials
            .iter()
            .find(|(k, _)| *k == "eos_token")
            .map_or(EOS_TOKEN, |(_, t)| &t.content);
        let pad_id = id_of("pad_token", eos_content)?;
        let added = added_tokens(specials, &vocab)?;
        let (normalized_added, raw_added) = added.into_iter().partition(|t| t.normalized);
        let mut tokenizer = ClipTokenizer {
            vocab,
            merges,
            byte_chars: bytes_to_unicode(),
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            model_max_length,
            raw_added,
            normalized_added: Vec::new(),
            clip_split: Regex::new(CLIP_PATTERN).expect("CLIP_PATTERN is a valid regex"),
            byte_level_split: Regex::new(BYTE_LEVEL_PATTERN)
                .expect("BYTE_LEVEL_PATTERN is a valid regex"),
            whitespace: Regex::new(r"\s+").expect("\\s+ is a valid regex"),
        };
        // A normalised added token is matched in its normalised spelling.
        tokenizer.normalized_added = normalized_added
            .into_iter()
            .map(|t: AddedToken| AddedToken {
                content: tokenizer.normalize(&t.content),
                ..t
            })
            .collect();
        Ok(tokenizer)
    }

    /// Token ids of `text`: `[bos, …content…, eos]`, neither truncated nor padded.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos_id];
        self.encode_content(text, &mut ids);
        ids.push(self.eos_id);
        ids
    }

    /// Exactly `max_len` ids, as `tokenizer(text, padding="max_length", max_length=max_len,
    /// truncation=True).input_ids`: `[bos, content[..max_len - 2], eos, pad, pad, …]`.
    ///
    /// The eos token always survives truncation. `max_len` below 2 is treated as 2.
    /// Use [`MAX_LENGTH`] (77) for Stable Diffusion's text encoder.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Vec<u32> {
        let max_len = max_len.max(2);
        let mut ids = vec![self.bos_id];
        self.encode_content(text, &mut ids);
        ids.truncate(max_len - 1);
        ids.push(self.eos_id);
        ids.resize(max_len, self.pad_id);
        ids
    }

    /// Id of `<|startoftext|>` (or the configured bos token).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>` (or the configured eos token).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id used for padding: the configured pad token, else the eos token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id that replaces symbols missing from the vocab.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// `model_max_length` from `tokenizer_config.json`, else [`MAX_LENGTH`].
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// Number of entries in `vocab.json`.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Id of a vocab entry (`"cat</w>"`), if present.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Steps 1–6 of the module docs: content ids of `text`, appended to `out`.
    fn encode_content(&self, text: &str, out: &mut Vec<u32>) {
        for piece in split_added(text, &self.raw_added) {
            match piece {
                Piece::Token(id) => out.push(id),
                Piece::Text(raw) => {
                    let normalized = self.normalize(raw);
                    for piece in split_added(&normalized, &self.normalized_added) {
                        match piece {
                            Piece::Token(id) => out.push(id),
                            Piece::Text(t) => self.encode_words(t, out),
                        }
                    }
                }
            }
        }
    }

    /// NFC, whitespace runs → one space, char-wise lower-case (transformers' normalizer sequence).
    fn normalize(&self, text: &str) -> String {
        let nfc: String = text.nfc().collect();
        let spaced = self.whitespace.replace_all(&nfc, " ");
        spaced.chars().flat_map(char::to_lowercase).collect()
    }

    /// Pre-tokenises normalised text into words and appends their BPE ids.
    fn encode_words(&self, text: &str, out: &mut Vec<u32>) {
        for word in self.clip_split.find_iter(text) {
            for part in self.byte_level_split.find_iter(word.as_str()) {
                let mapped: String = part
                    .as_str()
                    .bytes()
                    .map(|b| self.byte_chars[b as usize])
                    .collect();
                self.bpe(&mapped, out);
            }
        }
    }

    /// Byte-pair encodes one byte-mapped word and appends its ids.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        let mut symbols = self.initial_symbols(word);
        self.merge_all(&mut symbols);
        out.extend(symbols.iter().filter(|s| s.alive).map(|s| s.id));
    }

    /// One symbol per char, `</w>` on the last; unknown symbols become unk (one per char).
    fn initial_symbols(&self, word: &str) -> Vec<Symbol> {
        let n = word.chars().count();
        let mut buf = String::new();
        word.chars()
            .enumerate()
            .map(|(i, c)| {
                buf.clear();
                buf.push(c);
                if i + 1 == n {
                    buf.push_str(END_OF_WORD);
                }
                let id = self.vocab.get(&buf).copied().unwrap_or(self.unk_id);
                Symbol {
                    id,
                    prev: i.checked_sub(1),
                    next: (i + 1 < n).then_some(i + 1),
                    alive: true,
                }
            })
            .collect()
    }

    /// Applies merges lowest rank first (leftmost first among equal ranks), like `tokenizers`.
    fn merge_all(&self, symbols: &mut [Symbol]) {
        let mut queue: BinaryHeap<Reverse<(u32, usize, u32)>> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merges
                    .get(&(w[0].id, w[1].id))
                    .map(|&(r, id)| Reverse((r, pos, id)))
            })
            .collect();
        while let Some(Reverse((_, pos, new_id))) = queue.pop() {
            let Some(next) = symbols[pos].next.filter(|_| symbols[pos].alive) else {
                continue;
            };
            // Skip entries made stale by an earlier merge.
            if self
                .merges
                .get(&(symbols[pos].id, symbols[next].id))
                .map(|m| m.1)
                != Some(new_id)
            {
                continue;
            }
            symbols[pos].id = new_id;
            symbols[pos].next = symbols[next].next;
            symbols[next].alive = false;
            if let Some(after) = symbols[pos].next {
                symbols[after].prev = Some(pos);
            }
            // New pairs with the neighbours.
            if let Some(prev) = symbols[pos].prev
                && let Some(&(r, id)) = self.merges.get(&(symbols[prev].id, new_id))
            {
                queue.push(Reverse((r, prev, id)));
            }
            if let Some(after) = symbols[pos].next
                && let Some(&(r, id)) = self.merges.get(&(new_id, symbols[after].id))
            {
                queue.push(Reverse((r, pos, id)));
            }
        }
    }
}

fn tokenizer_error(file: &str, problem: impl Into<String>) -> Error {
    Error::Tokenizer {
        file: file.to_string(),
        problem: problem.into(),
    }
}

fn missing_token(key: &str, content: &str) -> Error {
    tokenizer_error(
        "vocab.json",
        format!("it has no entry for the {key} `{content}`"),
    )
}

/// `vocab.json`: a JSON object of token → id.
fn parse_vocab(vocab_json: &str) -> Result<HashMap<String, u32>> {
    serde_json::from_str(vocab_json).map_err(|e| {
        tokenizer_error(
            "vocab.json",
            format!("it is not a JSON object of token → id ({e})"),
        )
    })
}

/// `merges.txt`: optional `#version` lines, then one `left right` pair per line; the rank is
/// the pair's position among the pairs. Both halves and their concatenation must be in the vocab.
fn parse_merges(
    merges_txt: &str,
    vocab: &HashMap<String, u32>,
) -> Result<HashMap<(u32, u32), (u32, u32)>> {
    let mut merges = HashMap::new();
    let lines = merges_txt
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with("#version"));
    for (rank, (line_index, line)) in lines.enumerate() {
        let line_no = line_index + 1;
        let mut parts = line.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(tokenizer_error(
                "merges.txt",
                format!("line {line_no} is not two tokens separated by one space: {line:?}"),
            ));
        };
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                tokenizer_error(
                    "merges.txt",
                    format!("line {line_no} uses `{token}`, which vocab.json does not have"),
                )
            })
        };
        let merged = format!("{left}{right}");
        merges.insert((id(left)?, id(right)?), (rank as u32, id(&merged)?));
    }
    Ok(merges)
}

fn parse_json_object(file: &str, text: &str) -> Result<serde_json::Map<String, Value>> {
    serde_json::from_str(text)
        .map_err(|e| tokenizer_error(file, format!("it is not a JSON object ({e})")))
}

/// A special-token value: a string (`normalized: false`) or an `AddedToken` object.
/// `special_default` is what the object's `special` means when absent (true in
/// `special_tokens_map.json`); `normalized` defaults to `!special`, as in transformers' `AddedToken`.
fn token_spec(
    file: &str,
    key: &str,
    value: &Value,
    special_default: bool,
) -> Result<Option<TokenSpec>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(TokenSpec::raw(s))),
        Value::Object(o) => {
            let content = o
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| tokenizer_error(file, format!("`{key}` has no string `content`")))?;
            let special = o
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(special_default);
            let normalized = o
                .get("normalized")
                .and_then(Value::as_bool)
                .unwrap_or(!special);
            Ok(Some(TokenSpec {
                content: content.to_string(),
                normalized,
            }))
        }
        _ => Err(tokenizer_error(
            file,
            format!("`{key}` is neither a string nor a token object"),
        )),
    }
}

/// The special tokens in registration order, as `PreTrainedTokenizerBase.from_pretrained` and
/// `TokenizersBackend._post_init` resolve them (see the module docs). A key set to `null`
/// is absent; the `added_tokens_decoder` entries come first.
fn resolve_special_tokens(
    config: Option<&serde_json::Map<String, Value>>,
    special_map: Option<&serde_json::Map<String, Value>>,
) -> Result<Vec<(&'static str, TokenSpec)>> {
    let mut values: Vec<(&'static str, Option<TokenSpec>)> = vec![
        ("bos_token", Some(TokenSpec::raw(BOS_TOKEN))),
        ("eos_token", Some(TokenSpec::raw(EOS_TOKEN))),
        ("unk_token", Some(TokenSpec::raw(EOS_TOKEN))),
        ("pad_token", Some(TokenSpec::raw(EOS_TOKEN))),
    ];
    let mut set = |key: &'static str, spec: Option<TokenSpec>| match values
        .iter_mut()
        .find(|(k, _)| *k == key)
    {
        Some(slot) => slot.1 = spec,
        None => values.push((key, spec)),
    };
    let decoder = config.and_then(|c| c.get("added_tokens_decoder"));
    for key in SPECIAL_KEYS {
        if let Some(v) = config.and_then(|c| c.get(key)) {
            set(key, token_spec("tokenizer_config.json", key, v, false)?);
        }
    }
    let mut registered = Vec::new();
    if let Some(decoder) = decoder {
        let decoded = decoder_tokens(decoder)?;
        for (_, spec) in values.iter_mut() {
            if let Some(s) = spec.as_mut()
                && let Some(d) = decoded.iter().find(|d| d.content == s.content)
            {
                *s = d.clone();
            }
        }
        registered.extend(decoded.into_iter().map(|d| ("added_token", d)));
    } else if let Some(map) = special_map {
        for key in SPECIAL_KEYS {
            if let Some(v) = map.get(key) {
                set(key, token_spec("special_tokens_map.json", key, v, true)?);
            }
        }
    }
    let order = |key: &str| {
        SPECIAL_KEYS
            .iter()
            .position(|k| *k == key)
            .unwrap_or(SPECIAL_KEYS.len())
    };
    values.sort_by_key(|(k, _)| order(k));
    registered.extend(values.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    Ok(registered)
}

/// `added_tokens_decoder` of `tokenizer_config.json`: id → token object, in id order.
fn decoder_tokens(decoder: &Value) -> Result<Vec<TokenSpec>> {
    let file = "tokenizer_config.json";
    let map = decoder
        .as_object()
        .ok_or_else(|| tokenizer_error(file, "`added_tokens_decoder` is not an object"))?;
    let mut entries = Vec::with_capacity(map.len());
    for (id, value) in map {
        let id: u64 = id.parse().map_err(|_| {
            tokenizer_error(
                file,
                format!("`added_tokens_decoder` has a non-numeric id `{id}`"),
            )
        })?;
        let key = format!("added_tokens_decoder.{id}");
        if let Some(spec) = token_spec(file, &key, value, false)? {
            entries.push((id, spec));
        }
    }
    entries.sort_by_key(|(id, _)| *id);
    Ok(entries.into_iter().map(|(_, s)| s).collect())
}

/// Added tokens with vocab ids; for repeated text the last registration's flag wins.
fn added_tokens(
    specials: &[(&'static str, TokenSpec)],
    vocab: &HashMap<String, u32>,
) -> Result<Vec<AddedToken>> {
    let mut added: Vec<AddedToken> = Vec::new();
    for (key, spec) in specials {
        if spec.content.is_empty() {
            continue;
        }
        let id = vocab
            .get(&spec.content)
            .copied()
            .ok_or_else(|| missing_token(key, &spec.content))?;
        match added.iter_mut().find(|t| t.content == spec.content) {
            Some(t) => t.normalized = spec.normalized,
            None => added.push(AddedToken {
                content: spec.content.clone(),
                id,
                normalized: spec.normalized,
            }),
        }
    }
    Ok(added)
}

/// Cuts `tokens` out of `text` (leftmost-longest, like `tokenizers`' Aho-Corasick matcher).
fn split_added<'a>(text: &'a str, tokens: &[AddedToken]) -> Vec<Piece<'a>> {
    if tokens.is_empty() || text.is_empty() {
        return if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(text)]
        };
    }
    let mut pieces = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < text.len() {
        let rest = &text[at..];
        let hit = tokens
            .iter()
            .filter(|t| rest.starts_with(t.content.as_str()))
            .max_by_key(|t| t.content.len());
        match hit {
            Some(t) => {
                if start < at {
                    pieces.push(Piece::Text(&text[start..at]));
                }
                pieces.push(Piece::Token(t.id));
                at += t.content.len();
                start = at;
            }
            None => at += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        pieces.push(Piece::Text(&text[start..]));
    }
    pieces
}

/// GPT-2's reversible byte → printable char map (`bytes_to_unicode`): printable Latin-1 bytes
/// map to themselves, the other 68 bytes to U+0100 onwards, in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' own CLIP test vocab (`tests/models/clip/test_tokenization_clip.py`).
    fn hf_test_tokenizer() -> ClipTokenizer {
        let vocab = [
            "l",
            "o",
            "w",
            "e",
            "r",
            "s",
            "t",
            "i",
            "d",
            "n",
            "lo",
            "l</w>",
            "w</w>",
            "r</w>",
            "t</w>",
            "low</w>",
            "er</w>",
            "lowest</w>",
            "newer</w>",
            "wider",
            "<unk>",
            "<|startoftext|>",
            "<|endoftext|>",
        ];
        let vocab: serde_json::Map<String, Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), Value::from(i)))
            .collect();
        let merges = "#version: 0.2\nl o\nlo w</w>\ne r</w>\n";
        ClipTokenizer::from_files_content(&Value::Object(vocab).to_string(), merges).unwrap()
    }

    #[test]
    fn byte_map_is_a_bijection_onto_printable_chars() {
        let table = bytes_to_unicode();
        let mut chars: Vec<char> = table.to_vec();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert_eq!(
            (
                table[b'a' as usize],
                table[b' ' as usize],
                table[0],
                table[0xAD]
            ),
            ('a', 'Ġ', 'Ā', 'Ń')
        );
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    // Expected ids below: transformers 5.23.0 `CLIPTokenizer` on the same vocab and merges.
    #[test]
    fn bpe_merges_by_rank_and_marks_word_ends() {
        let t = hf_test_tokenizer();
        assert_eq!(t.encode("lower newer"), [21, 10, 2, 16, 9, 3, 2, 16, 22]);
        assert_eq!(t.encode("low"), [21, 15, 22]);
        assert_eq!(t.encode("lowlow"), [21, 10, 2, 15, 22]);
        assert_eq!(t.encode(""), [21, 22]);
    }

    #[test]
    fn symbols_missing_from_the_vocab_become_unk_one_per_char() {
        let t = hf_test_tokenizer();
        assert_eq!(t.unk_id(), 22);
        assert_eq!(t.encode("xyz"), [21, 22, 22, 22, 22]);
        assert_eq!(t.encode("lower\u{e9}"), [21, 10, 2, 3, 4, 22, 22, 22]);
        assert_eq!(t.encode("l o w"), [21, 11, 22, 12, 22]);
    }

    #[test]
    fn padding_keeps_eos_and_fills_with_pad() {
        let t = hf_test_tokenizer();
        assert_eq!(t.encode_padded("low", 6), [21, 15, 22, 22, 22, 22]);
        assert_eq!(t.encode_padded("lower newer", 5), [21, 10, 2, 16, 22]);
        assert_eq!(t.encode_padded("lower newer", 0), [21, 22]);
        assert_eq!(t.encode_padded("low", MAX_LENGTH).len(), 77);
    }

    #[test]
    fn normalization_is_nfc_single_spaces_and_charwise_lowercase() {
        let t = hf_test_tokenizer();
        assert_eq!(
            t.normalize("Cafe\u{301}\t\n  X\u{a0}\u{3000}Y"),
            "caf\u{e9} x y"
        );
        assert_eq!(
            t.normalize("\u{3a3}\u{391}\u{3a3}"),
            "\u{3c3}\u{3b1}\u{3c3}",
            "no final sigma"
        );
        assert_eq!(t.normalize("\u{130}"), "i\u{307}");
        assert_eq!(
            t.normalize("a\u{200b}b\u{1c}c"),
            "a\u{200b}b\u{1c}c",
            "not whitespace for tokenizers"
        );
    }

    #[test]
    fn pre_tokenizer_splits_words_digits_punctuation_and_contractions() {
        let t = hf_test_tokenizer();
        let words: Vec<&str> = t
            .clip_split
            .find_iter("don't 3.14 hi!! 'sa")
            .map(|m| m.as_str())
            .collect();
        assert_eq!(
            words,
            ["don", "'t", "3", ".", "1", "4", "hi", "!!", "'s", "a"]
        );
        let parts: Vec<&str> = t
            .byte_level_split
            .find_iter("<|startoftext|>")
            .map(|m| m.as_str())
            .collect();
        assert_eq!(parts, ["<|", "startoftext", "|>"]);
    }

    #[test]
    fn raw_special_tokens_in_text_map_to_their_ids() {
        let t = hf_test_tokenizer();
        assert_eq!(t.encode("low<|endoftext|>low"), [21, 15, 22, 15, 22]);
        assert_eq!(t.encode("<|startoftext|>"), [21, 21, 22]);
    }

    #[test]
    fn config_pad_token_and_normalized_flags_are_resolved_like_transformers() {
        let vocab = r#"{"!":0,"a</w>":1,"<|startoftext|>":2,"<|endoftext|>":3}"#;
        let config = r#"{"bos_token":{"__type":"AddedToken","content":"<|startoftext|>","normalized":true},
                         "pad_token":"!","model_max_length":8}"#;
        let t = ClipTokenizer::from_files_content_with_config(
            vocab,
            "#version: 0.2\n",
            Some(config),
            None,
        )
        .unwrap();
        assert_eq!(
            (t.pad_id(), t.bos_id(), t.eos_id(), t.model_max_length()),
            (0, 2, 3, 8)
        );
        assert_eq!(
            t.encode_padded("a!", 6),
            [2, 1, 0, 3, 0, 0],
            "`!` is the pad token, not `!</w>`"
        );
        assert_eq!(
            t.encode("<|STARTOFTEXT|>"),
            [2, 2, 3],
            "normalized bos matches after lower-casing"
        );
        let map = r#"{"pad_token":"<|endoftext|>"}"#;
        let t = ClipTokenizer::from_files_content_with_config(vocab, "", Some(config), Some(map))
            .unwrap();
        assert_eq!(
            t.pad_id(),
            3,
            "special_tokens_map.json overrides tokenizer_config.json"
        );
    }

    #[test]
    fn bad_files_are_reported_with_file_and_line() {
        let vocab = r#"{"a":0,"b":1,"ab":2,"<|startoftext|>":3,"<|endoftext|>":4}"#;
        let msg = ClipTokenizer::from_files_content("[1,2]", "")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`vocab.json`"), "{msg}");
        let msg = ClipTokenizer::from_files_content(vocab, "#version: 0.2\na b\na c\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`merges.txt`") && msg.contains("line 3 uses `c`"),
            "{msg}"
        );
        let msg = ClipTokenizer::from_files_content(vocab, "a b\n\nb a\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2 is not two tokens"), "{msg}");
        let msg = ClipTokenizer::from_files_content(r#"{"a":0}"#, "")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bos_token `<|startoftext|>`"), "{msg}");
        let msg = ClipTokenizer::from_files_content_with_config(
            vocab,
            "",
            Some("{\"pad_token\":\"?\"}"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("pad_token `?`"), "{msg}");
    }
}
