//! `gooddrag bench`: edits every sample folder of a dataset and writes `report.jsonl` (one line
//! per sample, written after each), `summary.md` (also printed) and `summary.json` through
//! [`crate::report`], which also shards the run (`--shard K/N`) and merges shards. One bad
//! sample never stops the run. The summary is a function of the report's rows only, so a merge
//! writes it the same way. Background: docs/EVALUATION.md §1.2, §1.4.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::drag::DragConfig;
use gooddrag::edit::{EditInput, LoraChoice};
use gooddrag::eval::dataset::{self, DaiScores, Sample, Timings};
use gooddrag::eval::shard::Shard;
use gooddrag::image::working::WorkingSize;
use gooddrag::model_set::Models;
use gooddrag::{Error, Result};

use crate::common::{ModelArgs, edit_sample, failures_json, load_config, load_models};
use crate::report::{ShardInfo, run_samples, weights_table, write_summary_files};

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
    /// Run only shard K of N (0 ≤ K < N): the samples at positions K, K+N, K+2N, … of the
    /// sorted sample list. Sample folders go to --out as usual, the report to
    /// --out/shards/K-of-N/; `gooddrag merge --out OUT OUT` joins the shards. For job arrays:
    /// `--shard $SLURM_ARRAY_TASK_ID/N` or `--shard $JOB_COMPLETION_INDEX/N`.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// The size each sample is edited at: `native` (the dataset's own size, as the official
    /// benchmark) or a long side in pixels (a multiple of 8 from 64 to 1024). DAI is scored at
    /// the dataset's size either way (on the full-resolution composite when not native).
    #[arg(long, default_value = "native", value_name = "native|PIXELS")]
    size: WorkingSize,
}

/// The `kind` a bench summary records.
pub const KIND: &str = "bench";

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
    // What the run's numbers depend on, recorded in the summary (and compared by `merge`).
    let header = serde_json::json!({
        "kind": KIND,
        "settings": {
            "config": config, "preset": args.model.preset(), "size": args.size.to_string(),
            "dataset_prompts": args.dataset_prompts, "weights": args.model.weights_json()?,
            "version": env!("CARGO_PKG_VERSION"),
        },
    });
    let (mut models, device) = load_models(&args.model)?;
    let (report_dir, rows, shard) =
        run_samples(&args.out, &args.data, &samples, args.shard, |name, dir| {
            edit_and_score(&args, &config, &mut models, &device, name, dir)
        })?;
    write_summary(
        &report_dir,
        &args.data.display().to_string(),
        &rows,
        &header,
        shard,
    )
}

/// The tally of a report's rows (in the dataset's order, so sums add in the same order however
/// the rows were produced).
fn tally(rows: &[serde_json::Value]) -> Result<Tally> {
    let mut tally = Tally::default();
    let field =
        |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or_default().to_string();
    for row in rows {
        if row["ok"] == true {
            let bad = |key: &str, e: serde_json::Error| {
                Error::InvalidInput(format!(
                    "report row `{}`: `{key}`: {e}",
                    field(row, "sample")
                ))
            };
            let dai: DaiScores =
                serde_json::from_value(row["dai"].clone()).map_err(|e| bad("dai", e))?;
            let timings: Timings =
                serde_json::from_value(row["timings"].clone()).map_err(|e| bad("timings", e))?;
            tally.add(dai, &timings);
        } else {
            tally
                .failures
                .push((field(row, "sample"), field(row, "error")));
        }
    }
    Ok(tally)
}

/// Edits one sample into `<out>/<name>` and scores it: its `report.jsonl` row.
fn edit_and_score(
    args: &BenchArgs,
    config: &DragConfig,
    models: &mut Models,
    device: &str,
    name: &str,
    dir: &Path,
) -> Result<serde_json::Value> {
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
        size: args.size,
    };
    let (output, timings) = edit_sample(models, device, input, &args.out.join(name), None)?;
    let dai = dataset::dai_scores(&s.image, output.at_photo_size(), &s.points)?;
    Ok(serde_json::json!({
        "sample": name, "layout": s.layout, "ok": true, "dai": dai, "timings": timings,
        "stop": output.record.stop, "supervision_steps": output.record.losses.len(),
        "final_handles": output.final_handles,
    }))
}

/// Writes `summary.md` and `summary.json` of `rows` into `dir` and prints the Markdown; a
/// shard's summary also records its place in the split. `header` holds `kind` and `settings`
/// (from this run, or from the first shard when merging).
pub fn write_summary(
    dir: &Path,
    data: &str,
    rows: &[serde_json::Value],
    header: &serde_json::Value,
    shard: Option<ShardInfo>,
) -> Result<()> {
    let tally = tally(rows)?;
    let mean = dataset::mean_scores(&tally.scores);
    let md = summary_markdown(data, rows.len(), &tally, &mean)
        + &weights_table(&header["settings"]["weights"]);
    let summary = serde_json::json!({
        "kind": header["kind"], "settings": header["settings"],
        "samples": rows.len(), "edited": tally.scores.len(), "failed": tally.failures.len(), "dai_mean": mean,
        "mean_phase_ms": tally.mean_phase_ms(),
        "failures": failures_json(&tally.failures),
    });
    write_summary_files(dir, summary, &md, shard)
}

/// `summary.md`: counts, the mean DAI table, mean phase times and the failures.
fn summary_markdown(data: &str, samples: usize, tally: &Tally, mean: &DaiScores) -> String {
    let mut md = format!(
        "# GoodDrag benchmark: {}\n\n{} samples, {} edited, {} failed.\n\n",
        data,
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
