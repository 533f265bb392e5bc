//! `gooddrag bench`: edits every sample folder of a dataset and writes `report.jsonl` (one line
//! per sample, written after each), `summary.md` (also printed) and `summary.json`. One bad
//! sample never stops the run. Background: docs/EVALUATION.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::drag::DragConfig;
use gooddrag::edit::{EditInput, LoraChoice};
use gooddrag::eval::dataset::{self, DaiScores, Sample, Timings};
use gooddrag::model_set::Models;
use gooddrag::{Error, Result};

use crate::common::{ModelArgs, edit_sample, failures_json, load_config, load_models, write_file};

/// `gooddrag bench`'s flags.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// Output folder: <sample>/…, report.jsonl, summary.md, summary.json.
    #[arg(long)]
    out: PathBuf,
    /// Use DragBench's per-sample prompts (GoodDrag's bench uses "").
    #[arg(long)]
    dataset_prompts: bool,
}

/// What the run has gathered so far.
#[derive(Default)]
struct Tally {
    /// DAI of every edited sample.
    scores: Vec<DaiScores>,
    /// `(sample, why)` of every failed one.
    failures: Vec<(String, String)>,
    /// Phase → (Σ milliseconds, samples).
    phase_sums: BTreeMap<String, (f64, usize)>,
}

impl Tally {
    /// Counts one edited sample.
    fn add(&mut self, dai: DaiScores, timings: &Timings) {
        for (phase, ms) in &timings.phases_ms {
            let e = self.phase_sums.entry(phase.clone()).or_default();
            e.0 += ms;
            e.1 += 1;
        }
        self.scores.push(dai);
    }

    /// Mean milliseconds per phase over the samples that ran it.
    fn mean_phase_ms(&self) -> BTreeMap<String, f64> {
        self.phase_sums
            .iter()
            .map(|(k, (s, n))| (k.clone(), s / *n as f64))
            .collect()
    }
}

/// Runs `gooddrag bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let config = load_config(&args.model)?;
    let samples = dataset::discover(&args.data)?;
    if samples.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no sample folders (with points.json or meta_data.pkl) under `{}`",
            args.data.display()
        )));
    }
    let (mut models, device) = load_models(&args.model)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::InvalidInput(format!("cannot create `{}`: {e}", args.out.display())))?;
    let mut tally = Tally::default();
    let mut report = String::new();
    for (i, (name, dir)) in samples.iter().enumerate() {
        eprintln!("[{}/{}] {name}", i + 1, samples.len());
        let line = match edit_and_score(&args, &config, &mut models, &device, name, dir) {
            Ok((line, dai, timings)) => {
                tally.add(dai, &timings);
                line
            }
            Err(e) => {
                eprintln!("  failed: {e}");
                tally.failures.push((name.clone(), e.to_string()));
                serde_json::json!({ "sample": name, "ok": false, "error": e.to_string() })
            }
        };
        report.push_str(&line.to_string());
        report.push('\n');
        write_file(&args.out.join("report.jsonl"), report.as_bytes())?;
    }
    write_summary(&args, samples.len(), &tally)
}

/// Edits one sample into `<out>/<name>` and scores it: its `report.jsonl` line, DAI and timings.
fn edit_and_score(
    args: &BenchArgs,
    config: &DragConfig,
    models: &mut Models,
    device: &str,
    name: &str,
    dir: &Path,
) -> Result<(serde_json::Value, DaiScores, Timings)> {
    let s: Sample = dataset::load_sample(name, dir)?;
    let mut cfg = config.clone();
    if args.dataset_prompts {
        cfg.prompt = s.prompt.clone();
    }
    let input = EditInput {
        image: s.image.clone(),
        mask: s.mask.clone(),
        points: s.points.clone(),
        config: cfg,
        lora: LoraChoice::Train,
    };
    let (output, timings) = edit_sample(models, device, input, &args.out.join(name), None)?;
    let dai = dataset::dai_scores(&s.image, &output.image, &s.points)?;
    let line = serde_json::json!({
        "sample": name, "layout": s.layout, "ok": true, "dai": dai, "timings": timings,
        "stop": output.record.stop, "supervision_steps": output.record.losses.len(),
        "final_handles": output.final_handles,
    });
    Ok((line, dai, timings))
}

/// Writes `summary.md` and `summary.json` and prints the Markdown.
fn write_summary(args: &BenchArgs, samples: usize, tally: &Tally) -> Result<()> {
    let mean = dataset::mean_scores(&tally.scores);
    let md = summary_markdown(&args.data, samples, tally, &mean);
    write_file(&args.out.join("summary.md"), md.as_bytes())?;
    let summary = serde_json::json!({
        "samples": samples, "edited": tally.scores.len(), "failed": tally.failures.len(), "dai_mean": mean,
        "mean_phase_ms": tally.mean_phase_ms(),
        "failures": failures_json(&tally.failures),
    });
    write_file(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    println!("{md}");
    Ok(())
}

/// `summary.md`: counts, the mean DAI table, mean phase times and the failures.
fn summary_markdown(data: &Path, samples: usize, tally: &Tally, mean: &DaiScores) -> String {
    let mut md = format!(
        "# GoodDrag benchmark: {}\n\n{} samples, {} edited, {} failed.\n\n",
        data.display(),
        samples,
        tally.scores.len(),
        tally.failures.len()
    );
    md += &dataset::dai_table(mean, tally.scores.len());
    md += "\n| phase | mean time (s) |\n|---|---|\n";
    for (phase, ms) in tally.mean_phase_ms() {
        md += &format!("| {phase} | {:.2} |\n", ms / 1e3);
    }
    if !tally.failures.is_empty() {
        md += "\n## Failures\n\n";
        for (name, why) in &tally.failures {
            md += &format!("- `{name}`: {why}\n");
        }
    }
    md
}
