//! GScore in the CLI (`gooddrag gscore`, `gooddrag eval --gscore`): the judge's flags, one
//! sample judged (every run, every method's result in one request, answers cached), and the
//! summary per method (mean over samples per run, then mean ± std over runs, as the paper).
//! The client, prompt and parser are the library's (`gooddrag::eval::gscore`). Background:
//! docs/EVALUATION.md §2.2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use gooddrag::eval::dataset::{self, Sample};
use gooddrag::eval::gscore::{self, Client, ClientConfig, ImageFile};
use gooddrag::eval::sha256_hex;
use gooddrag::{Error, Result};

/// How GScore reaches its judge.
#[derive(Args)]
pub struct JudgeArgs {
    /// An OpenAI-compatible chat-completions endpoint that accepts images: its base URL
    /// (`https://api.openai.com/v1`, `http://localhost:8000/v1` for vLLM or llama.cpp's server,
    /// `http://localhost:11434/v1` for Ollama) or the full `…/chat/completions` URL.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The model name the endpoint serves.
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// The environment variable holding the API key (sent as a bearer token; never written to
    /// a file). Unset or empty: no key is sent, as local servers expect.
    #[arg(long, default_value = "GSCORE_API_KEY", value_name = "VAR")]
    api_key_env: String,
    /// How many times the whole dataset is judged (the paper: 10, reported as mean ± std
    /// over runs).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// A file with the judging prompt to use instead of ours (e.g. your copy of the GoodDrag
    /// notebook's prompt; its SHA-256 goes into the summary).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Attempts per request; 429s, 5xx answers, timeouts and broken answers are retried.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Seconds before the first retry, doubled each time (a Retry-After header wins).
    #[arg(long, default_value_t = 2.0)]
    backoff_secs: f64,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 300.0)]
    timeout_secs: f64,
}

/// GScore's judge and what it is shown.
pub struct Judge {
    client: Client,
    prompt: String,
    runs: usize,
    /// The results folder of each method, in label order.
    methods: Vec<PathBuf>,
}

impl JudgeArgs {
    /// The judge for `methods`, answers cached under `<out>/gscore-cache`; adds the judge's
    /// settings to `settings`.
    pub fn judge(
        &self,
        methods: Vec<PathBuf>,
        out: &Path,
        settings: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Judge> {
        let (Some(endpoint), Some(model)) = (&self.endpoint, &self.model) else {
            return Err(Error::InvalidInput(
                "GScore needs --endpoint URL (an OpenAI-compatible chat-completions server that \
                 accepts images) and --model NAME"
                    .into(),
            ));
        };
        if self.runs == 0 {
            return Err(Error::InvalidInput("--runs must be at least 1".into()));
        }
        let prompt = match &self.prompt_file {
            Some(path) => crate::common::read_text(path)?.trim().to_string(),
            None => gscore::default_prompt(methods.len()),
        };
        let api_key = std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        settings.insert(
            "gscore".into(),
            serde_json::json!({
                "endpoint": endpoint, "model": model, "runs": self.runs,
                "methods": methods.iter().enumerate().map(|(i, m)| serde_json::json!({
                    "label": gscore::label(i).to_string(), "results": m.display().to_string(),
                })).collect::<Vec<_>>(),
                "prompt": if self.prompt_file.is_some() { "file" } else { "default" },
                "prompt_sha256": sha256_hex(prompt.as_bytes()),
                "temperature": gscore::TEMPERATURE, "top_p": gscore::TOP_P,
                "max_tokens": gscore::MAX_TOKENS,
            }),
        );
        let config = ClientConfig {
            endpoint: endpoint.clone(),
            model: model.clone(),
            api_key,
            attempts: self.attempts.max(1),
            backoff: Duration::from_secs_f64(self.backoff_secs.max(0.0)),
            timeout: Duration::from_secs_f64(self.timeout_secs.max(0.001)),
        };
        Ok(Judge {
            client: Client::new(config, Some(out.join("gscore-cache"))),
            prompt,
            runs: self.runs,
            methods,
        })
    }
}

/// GScore of one sample: every run's answer and scores (one per method; `null` where the
/// answer could not be read), and what the requests cost.
pub fn judge_sample(judge: &Judge, sample: &Sample, dir: &Path) -> Result<serde_json::Value> {
    let original = dataset::original_path(dir)
        .ok_or_else(|| Error::InvalidInput(format!("`{}` has no original", dir.display())))?;
    let original = ImageFile::read(&original)?;
    let edits = judge
        .methods
        .iter()
        .map(|m| ImageFile::read(&dataset::find_result(sample, m)?.path))
        .collect::<Result<Vec<_>>>()?;
    let model = judge.client.model();
    let body = gscore::request_body(model, &judge.prompt, &original, &edits);
    let mut runs = Vec::new();
    let (mut requests, mut cached, mut unparsed) = (0, 0, 0);
    for run in 0..judge.runs {
        let key = format!("{}/run-{run}", sample.name);
        let (answer, calls) = judge.client.answer(&key, &body)?;
        requests += calls.requests;
        cached += usize::from(calls.cached);
        let scores = gscore::parse_scores(&answer, edits.len());
        unparsed += scores.iter().filter(|s| s.is_none()).count();
        runs.push(serde_json::json!({ "scores": scores, "answer": answer }));
    }
    Ok(serde_json::json!({
        "runs": runs, "unparsed": unparsed, "requests": requests, "cached_runs": cached,
    }))
}

/// GScore per method: the mean over samples in each run, then mean ± std over runs (as the
/// paper reports it), with how many scores were read and how many answers were not.
pub fn gscore_summary(
    judged: &[Vec<Vec<f64>>],
    unparsed: usize,
    settings: &serde_json::Value,
) -> (serde_json::Value, String) {
    let methods = judged[0].len();
    let mut out = Vec::new();
    let mut md = format!(
        "\n| GScore ({} run{}, model {}) | mean | std over runs | scores read |\n|---|---|---|---|\n",
        judged.len(),
        if judged.len() == 1 { "" } else { "s" },
        settings["model"].as_str().unwrap_or("?"),
    );
    for m in 0..methods {
        let per_run: Vec<f64> = judged
            .iter()
            .filter_map(|run| {
                let v = run.get(m)?;
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect();
        let read: usize = judged
            .iter()
            .map(|run| run.get(m).map_or(0, Vec::len))
            .sum();
        let mean =
            (!per_run.is_empty()).then(|| per_run.iter().sum::<f64>() / per_run.len() as f64);
        let std = mean.map(|mu| {
            (per_run.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / per_run.len() as f64).sqrt()
        });
        let label = gscore::label(m).to_string();
        let results = settings["methods"][m]["results"]
            .as_str()
            .unwrap_or_default();
        md += &format!(
            "| {label}: {results} | {} | {} | {read} |\n",
            mean.map_or("–".into(), |v| format!("{v:.2}")),
            std.map_or("–".into(), |v| format!("{v:.2}")),
        );
        out.push(serde_json::json!({
            "label": label, "results": results, "mean": mean, "std_over_runs": std,
            "per_run": per_run, "scores_read": read,
        }));
    }
    if unparsed > 0 {
        md += &format!(
            "\n{unparsed} answers gave no readable score for an image (see report.jsonl).\n"
        );
    }
    (
        serde_json::json!({ "methods": out, "unparsed": unparsed }),
        md,
    )
}
