//! GScore (GoodDrag paper §5.2): a large multimodal model rates the naturalness of edited images
//! against the original, 1–10 per image. The official code calls Gemini through Vertex AI from a
//! notebook (`evaluation/GScore.ipynb`); this client speaks the OpenAI-compatible
//! chat-completions protocol instead, which hosted APIs and local servers of vision models
//! (vLLM, llama.cpp's server, Ollama) all accept (docs/EVALUATION.md §2.5).
//!
//! As in the notebook: one request per sample with the judging prompt, then the original, then
//! each method's edited image in a fixed order (labels A, B, C, …), the files sent as stored
//! (base64 data URLs, no re-encoding), temperature 0.4, top_p 1, up to 2,048 tokens.
//! Deviations, each because the notebook leaves the step undefined: the prompt ends with a
//! request for one `A: <score>` line per image (the notebook asks for free text and has no
//! parser — PARITY: a user's exact copy of the notebook's prompt can be passed instead);
//! answers are parsed by [`parse_scores`], which reports what it cannot read rather than
//! guessing; failed requests are retried with exponential backoff (429, 5xx, timeouts), and
//! answers are cached per sample so a rerun costs nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The notebook's generation settings that the chat-completions protocol can express
/// (`top_k` 32 has no equivalent there).
pub const TEMPERATURE: f64 = 0.4;
/// Nucleus sampling: off, as in the notebook.
pub const TOP_P: f64 = 1.0;
/// The notebook's `max_output_tokens`.
pub const MAX_TOKENS: u32 = 2048;

/// The label of the `i`-th edited image (A, B, C, …).
pub fn label(i: usize) -> char {
    (b'A' + (i % 26) as u8) as char
}

/// The judging prompt for `methods` edited images: the notebook's criteria (naturalness,
/// artifacts, how well the original's integrity is kept; 1–10, 10 = excellent quality with
/// seamless modifications, 1 = poor quality with significant artifacts; reasons in English),
/// in our own words, plus the answer format [`parse_scores`] reads first.
pub fn default_prompt(methods: usize) -> String {
    let labels: Vec<String> = (0..methods).map(|i| label(i).to_string()).collect();
    let images: Vec<String> = (0..methods)
        .map(|i| format!("{} (image {})", label(i), i + 2))
        .collect();
    let format: Vec<String> = labels.iter().map(|l| format!("{l}: <score>")).collect();
    format!(
        "You are given an original photo (image 1) and {methods} edited version{s} of it: {images}. \
         Each edit moves some content of the original to a new place. Judge the quality of each \
         edited image, in particular its naturalness and the presence or absence of artifacts: \
         distortions, unnatural colours, pixelation, blur, duplicated or missing parts and other \
         visual inconsistencies, and how well it keeps the integrity of the original while \
         introducing the modification. Rate each edited image on a scale from 1 to 10, where 10 \
         means excellent quality with seamless modifications and 1 means poor quality with \
         significant, noticeable artifacts. Explain each rating in English, citing specific \
         aspects of the image. End your answer with exactly one line per edited image, in this \
         form: {format}",
        s = if methods == 1 { "" } else { "s" },
        images = images.join(", "),
        format = format.join("; "),
    )
}

/// An image file as sent: its bytes and MIME type.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// The file's bytes, as stored.
    pub bytes: Vec<u8>,
    /// `image/png` or `image/jpeg`.
    pub mime: &'static str,
}

impl ImageFile {
    /// Reads `path`; the MIME type comes from the file's signature.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::InvalidInput(format!("cannot read `{}`: {e}", path.display())))?;
        let mime = if bytes.starts_with(b"\x89PNG") {
            "image/png"
        } else if bytes.starts_with(&[0xff, 0xd8]) {
            "image/jpeg"
        } else {
            return Err(Error::InvalidInput(format!(
                "`{}` is neither PNG nor JPEG",
                path.display()
            )));
        };
        Ok(Self { bytes, mime })
    }

    fn data_url(&self) -> String {
        format!(
            "data:{};base64,{}",
            self.mime,
            base64::engine::general_purpose::STANDARD.encode(&self.bytes)
        )
    }
}

/// The chat-completions request body: the prompt, then the original, then each edit.
pub fn request_body(
    model: &str,
    prompt: &str,
    original: &ImageFile,
    edits: &[ImageFile],
) -> serde_json::Value {
    let mut content = vec![serde_json::json!({ "type": "text", "text": prompt })];
    for image in std::iter::once(original).chain(edits) {
        content.push(
            serde_json::json!({ "type": "image_url", "image_url": { "url": image.data_url() } }),
        );
    }
    serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": content }],
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "max_tokens": MAX_TOKENS,
    })
}

/// The score of each label in a free-text answer, `None` where none could be read. First the
/// answer lines the prompt asks for (`A: 7`, `**Image A**: 7/10`, `A - 7.5`; the last such line
/// per label wins), then, for labels still missing, the first `N/10` or `N out of 10` (or a
/// number after "rating"/"score") in the passage that starts at the label's heading (`Image A`,
/// or `Image k+2` as the notebook numbers them) and ends at the next heading. Scores outside
/// 0–10 are not scores.
pub fn parse_scores(answer: &str, labels: usize) -> Vec<Option<f64>> {
    let mut scores = vec![None; labels];
    let line = regex::Regex::new(
        r"(?im)^[\s>*_#-]*(?:image\s+)?([A-Z])[\s*_)]*[:=–-]\s*[*_]*\s*(\d{1,2}(?:\.\d+)?)[*_]*\s*(?:/\s*10|out of 10)?[*_\s.]*$",
    )
    .expect("valid regex");
    for c in line.captures_iter(answer) {
        let l = c[1].to_ascii_uppercase().as_bytes()[0];
        let i = (l - b'A') as usize;
        if i < labels {
            scores[i] = c[2]
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=10.0).contains(v))
                .or(scores[i]);
        }
    }
    let heading = |i: usize| {
        regex::Regex::new(&format!(r"(?i)\bimage\s*(?:{}|{})\b", label(i), i + 2))
            .expect("valid regex")
    };
    let rating = regex::Regex::new(
        r"(?i)(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10|out of 10)|(?:rating|score)\D{0,20}?(\d{1,2}(?:\.\d+)?)",
    )
    .expect("valid regex");
    let starts: Vec<Option<usize>> = (0..labels)
        .map(|i| heading(i).find(answer).map(|m| m.start()))
        .collect();
    for i in 0..labels {
        if scores[i].is_some() {
            continue;
        }
        let Some(start) = starts[i] else { continue };
        let end = starts
            .iter()
            .flatten()
            .filter(|&&s| s > start)
            .min()
            .copied()
            .unwrap_or(answer.len());
        scores[i] = rating
            .captures_iter(&answer[start..end])
            .filter_map(|c| c.get(1).or(c.get(2))?.as_str().parse::<f64>().ok())
            .find(|v| (0.0..=10.0).contains(v));
    }
    scores
}

/// How the client talks to the endpoint.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `…/v1/chat/completions`, or a base URL (`…/v1`) that the path is appended to.
    pub endpoint: String,
    /// The model name the endpoint serves.
    pub model: String,
    /// The bearer key, if the endpoint needs one (read from the environment by the caller).
    pub api_key: Option<String>,
    /// Attempts per request (the first included).
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time (a `Retry-After` header wins, up to a
    /// minute).
    pub backoff: Duration,
    /// Time allowed for one whole request.
    pub timeout: Duration,
}

impl ClientConfig {
    /// The URL requests are POSTed to.
    pub fn url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        if e.ends_with("/chat/completions") {
            e.to_string()
        } else {
            format!("{e}/chat/completions")
        }
    }
}

/// One answer as cached: the request it answers (SHA-256 of the body) and the model's text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedAnswer {
    /// SHA-256 of the request body.
    pub request_sha256: String,
    /// The answer's text.
    pub answer: String,
}

/// What one request cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calls {
    /// HTTP requests sent (retries included).
    pub requests: u32,
    /// Whether the answer came from the cache.
    pub cached: bool,
}

/// A chat-completions client with retries and an answer cache.
pub struct Client {
    config: ClientConfig,
    agent: ureq::Agent,
    cache: Option<PathBuf>,
}

fn http_error(problem: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("GScore request failed: {problem}"))
}

impl Client {
    /// A client; answers are cached as files under `cache` when given.
    pub fn new(config: ClientConfig, cache: Option<PathBuf>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            config,
            agent,
            cache,
        }
    }

    /// The model requests name.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The answer to `body`, from the cache file `key` when it answers this very request,
    /// else from the endpoint (then cached).
    pub fn answer(&self, key: &str, body: &serde_json::Value) -> Result<(String, Calls)> {
        let text = body.to_string();
        let sha = super::sha256_hex(text.as_bytes());
        let file = self.cache.as_ref().map(|c| c.join(format!("{key}.json")));
        if let Some(file) = &file
            && let Ok(cached) = std::fs::read_to_string(file)
            && let Ok(cached) = serde_json::from_str::<CachedAnswer>(&cached)
            && cached.request_sha256 == sha
        {
            return Ok((
                cached.answer,
                Calls {
                    requests: 0,
                    cached: true,
                },
            ));
        }
        let (answer, requests) = self.post(&text)?;
        if let Some(file) = &file {
            let entry = CachedAnswer {
                request_sha256: sha,
                answer: answer.clone(),
            };
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::write(
                        file,
                        serde_json::to_string_pretty(&entry).unwrap_or_default(),
                    )
                });
            written.map_err(|e| {
                Error::InvalidInput(format!(
                    "cannot write the GScore cache `{}`: {e}",
                    file.display()
                ))
            })?;
        }
        Ok((
            answer,
            Calls {
                requests,
                cached: false,
            },
        ))
    }

    /// POSTs `body` until an answer comes back or the attempts run out.
    fn post(&self, body: &str) -> Result<(String, u32)> {
        let url = self.config.url();
        let mut wait = self.config.backoff;
        let mut last = String::new();
        for attempt in 1..=self.config.attempts.max(1) {
            let mut request = self
                .agent
                .post(&url)
                .header("content-type", "application/json");
            if let Some(key) = &self.config.api_key {
                request = request.header("authorization", &format!("Bearer {key}"));
            }
            let retry_after = match request.send(body) {
                Err(e) => {
                    last = format!("{url}: {e}");
                    None
                }
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    match status {
                        200..=299 => match answer_text(&text) {
                            Ok(answer) => return Ok((answer, attempt)),
                            Err(e) => last = format!("{url} answered 200 but {e}"),
                        },
                        401 | 403 => {
                            return Err(http_error(format!(
                                "{url} refused the key (HTTP {status}): set the API key's \
                                 environment variable (see --api-key-env) to a valid key. \
                                 Server said: {}",
                                snippet(&text)
                            )));
                        }
                        404 => {
                            return Err(http_error(format!(
                                "{url} does not exist (HTTP 404): --endpoint should be the \
                                 server's OpenAI-compatible base URL (…/v1) or its \
                                 …/v1/chat/completions. Server said: {}",
                                snippet(&text)
                            )));
                        }
                        429 | 500..=599 => {
                            last = format!("{url}: HTTP {status}: {}", snippet(&text))
                        }
                        _ => {
                            return Err(http_error(format!(
                                "{url}: HTTP {status}: {}",
                                snippet(&text)
                            )));
                        }
                    }
                    retry_after
                }
            };
            if attempt < self.config.attempts {
                std::thread::sleep(retry_after.unwrap_or(wait));
                wait *= 2;
            }
        }
        Err(http_error(format!(
            "no answer after {} attempts; last: {last}",
            self.config.attempts
        )))
    }
}

/// The first 200 characters of a server's message.
fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// `choices[0].message.content` of a chat-completions response (a string, or text parts).
fn answer_text(body: &str) -> std::result::Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| format!("its body is not JSON ({e}): {}", snippet(body)))?;
    let content = &v["choices"][0]["message"]["content"];
    match content {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(format!(
            "it has no choices[0].message.content: {}",
            snippet(body)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_answer_lines_are_read_first_and_last_wins() {
        let answer = "Image A looks fine, 3/10 would be unfair.\n\nA: 7\nB: **8.5**/10\n";
        assert_eq!(parse_scores(answer, 2), vec![Some(7.0), Some(8.5)]);
        let answer = "**Image A**: 6/10\n- B - 9 out of 10\nC = 4\n";
        assert_eq!(
            parse_scores(answer, 3),
            vec![Some(6.0), Some(9.0), Some(4.0)]
        );
    }

    #[test]
    fn free_text_answers_are_read_per_section_and_unreadable_ones_reported() {
        let answer = "## Image 2 (A)\nThe dog's leg is blurred. Rating: 6\n\n## Image 3 (B)\n\
                      Seamless. I would give it 9 out of 10.\n\n## Image C\nNo rating here.";
        assert_eq!(parse_scores(answer, 3), vec![Some(6.0), Some(9.0), None]);
        assert_eq!(parse_scores("I cannot judge these images.", 1), vec![None]);
        // 11/10 and 42 are not scores.
        assert_eq!(
            parse_scores("Image A: 11/10 amazing, score 42", 1),
            vec![None]
        );
    }

    #[test]
    fn the_prompt_names_every_image_and_the_answer_format() {
        let p = default_prompt(3);
        assert!(p.contains("A (image 2), B (image 3), C (image 4)"));
        assert!(p.ends_with("A: <score>; B: <score>; C: <score>"));
        assert!(default_prompt(1).contains("1 edited version of it"));
    }

    #[test]
    fn endpoints_take_a_base_url_or_the_full_path() {
        let c = |e: &str| ClientConfig {
            endpoint: e.into(),
            model: "m".into(),
            api_key: None,
            attempts: 1,
            backoff: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(c("http://h:1/v1/").url(), "http://h:1/v1/chat/completions");
        assert_eq!(
            c("http://h:1/v1/chat/completions").url(),
            "http://h:1/v1/chat/completions"
        );
    }
}
