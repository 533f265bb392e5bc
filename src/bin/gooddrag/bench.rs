//! `gooddrag bench`: edits every sample folder of a dataset and writes `report.jsonl` (one line
//! per sample, written after each), `summary.md` (also printed) and `summary.json`. One bad
//! sample never stops the run. With `--shard K/N` it edits every N-th sample from the K-th and
//! writes its report under `<out>/shards/K-of-N/`; `gooddrag merge` (here too) joins the shards
//! into the report an unsharded run writes. The summary is a function of the report's rows only,
//! so both paths write it the same way. Background: docs/EVALUATION.md §1.2, §1.4.

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

/// `gooddrag merge`'s flags.
#[derive(Args)]
pub struct MergeArgs {
    /// Where the merged report.jsonl, summary.json and summary.md go.
    #[arg(long)]
    out: PathBuf,
    /// Shard folders (`…/shards/K-of-N`) or bench output folders holding a `shards/` folder.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
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
    let report_dir = match args.shard {
        Some(shard) => args.out.join("shards").join(shard.folder_name()),
        None => args.out.clone(),
    };
    create_dir(&report_dir)?;
    let mine: Vec<(usize, &(String, PathBuf))> = samples
        .iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| s.contains(*i)))
        .collect();
    let mut report = String::new();
    write_file(&report_dir.join("report.jsonl"), b"")?;
    for (n, &(index, (name, dir))) in mine.iter().enumerate() {
        eprintln!("[{}/{}] {name}", n + 1, mine.len());
        let row = match edit_and_score(&args, &config, &mut models, &device, name, dir) {
            Ok(mut row) => {
                row["index"] = index.into();
                row
            }
            Err(e) => {
                eprintln!("  failed: {e}");
                serde_json::json!({ "index": index, "sample": name, "ok": false, "error": e.to_string() })
            }
        };
        report.push_str(&row.to_string());
        report.push('\n');
        write_file(&report_dir.join("report.jsonl"), report.as_bytes())?;
    }
    // The summary is computed from the report as written, as `merge` computes it from the
    // shards' files: serde_json reads some floats back one ulp off, and both paths must add the
    // same numbers to write the same summary.
    let rows = read_rows(&report_dir.join("report.jsonl"))?;
    let shard = args.shard.map(|s| ShardInfo {
        shard: s,
        dataset_samples: samples.len(),
        data: args.data.display().to_string(),
    });
    write_summary(&report_dir, &args.data.display().to_string(), &rows, shard)
}

/// Runs `gooddrag merge`: checks that the shards are one complete split of one dataset (every
/// K of the same N exactly once, every sample position exactly once), then writes the rows in
/// the dataset's order and the summary, as the unsharded run would have.
pub fn merge(args: MergeArgs) -> Result<()> {
    let mut shard_dirs = Vec::new();
    for dir in &args.dirs {
        if dir.join("summary.json").is_file() && dir.join("report.jsonl").is_file() {
            shard_dirs.push(dir.clone());
        } else if dir.join("shards").is_dir() {
            let entries = std::fs::read_dir(dir.join("shards")).map_err(|e| {
                Error::InvalidInput(format!("cannot list `{}/shards`: {e}", dir.display()))
            })?;
            let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            found.sort();
            shard_dirs.extend(found.into_iter().filter(|p| p.is_dir()));
        } else {
            return Err(Error::InvalidInput(format!(
                "`{}` is neither a shard folder (summary.json + report.jsonl) nor a bench \
                 output folder with shards/",
                dir.display()
            )));
        }
    }
    let mut infos: Vec<(ShardInfo, PathBuf)> = Vec::new();
    let mut rows = Vec::new();
    for dir in &shard_dirs {
        let summary: serde_json::Value = read_json(&dir.join("summary.json"))?;
        let info = ShardInfo::from_summary(&summary).ok_or_else(|| {
            Error::InvalidInput(format!(
                "`{}/summary.json` is not a shard's summary (no `shard` entry): was it run \
                 with --shard, and did it finish?",
                dir.display()
            ))
        })?;
        rows.extend(read_rows(&dir.join("report.jsonl"))?);
        infos.push((info, dir.clone()));
    }
    let (first, _) = infos
        .first()
        .ok_or_else(|| Error::InvalidInput("no shard folders found in the given folders".into()))?;
    let (count, total, data) = (first.shard.count, first.dataset_samples, first.data.clone());
    for (info, dir) in &infos {
        if (info.shard.count, info.dataset_samples, &info.data) != (count, total, &data) {
            return Err(Error::InvalidInput(format!(
                "`{}` is shard {} of a {}-sample run over `{}`; the first is of {count} shards \
                 over {total} samples of `{data}`",
                dir.display(),
                info.shard,
                info.dataset_samples,
                info.data
            )));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|k| infos.iter().filter(|(i, _)| i.shard.index == *k).count() != 1)
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidInput(format!(
            "shards missing or given twice: {} (every K/{count} exactly once)",
            missing.join(", ")
        )));
    }
    rows.sort_by_key(|r| r["index"].as_u64());
    let positions: Vec<Option<u64>> = rows.iter().map(|r| r["index"].as_u64()).collect();
    if positions != (0..total as u64).map(Some).collect::<Vec<_>>() {
        return Err(Error::InvalidInput(format!(
            "the shards' reports hold {} rows for {total} samples: a shard is incomplete \
             (rerun it) or a report was edited",
            rows.len()
        )));
    }
    create_dir(&args.out)?;
    let report: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write_file(&args.out.join("report.jsonl"), report.as_bytes())?;
    write_summary(&args.out, &data, &rows, None)
}

/// What a shard's summary records about the split it belongs to.
struct ShardInfo {
    shard: Shard,
    /// Samples in the whole dataset.
    dataset_samples: usize,
    /// The dataset folder as given.
    data: String,
}

impl ShardInfo {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "index": self.shard.index, "count": self.shard.count,
            "dataset_samples": self.dataset_samples, "data": self.data,
        })
    }

    fn from_summary(summary: &serde_json::Value) -> Option<Self> {
        let s = &summary["shard"];
        Some(Self {
            shard: Shard {
                index: s["index"].as_u64()? as usize,
                count: s["count"].as_u64()? as usize,
            },
            dataset_samples: s["dataset_samples"].as_u64()? as usize,
            data: s["data"].as_str()?.to_string(),
        })
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::InvalidInput(format!("cannot create `{}`: {e}", dir.display())))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read `{}`: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("`{}` is not JSON: {e}", path.display())))
}

/// The rows of a `report.jsonl`.
fn read_rows(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read `{}`: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::InvalidInput(format!("`{}` line {}: {e}", path.display(), i + 1))
            })
        })
        .collect()
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
/// shard's summary also records its place in the split.
fn write_summary(
    dir: &Path,
    data: &str,
    rows: &[serde_json::Value],
    shard: Option<ShardInfo>,
) -> Result<()> {
    let tally = tally(rows)?;
    let mean = dataset::mean_scores(&tally.scores);
    let md = summary_markdown(data, rows.len(), &tally, &mean);
    write_file(&dir.join("summary.md"), md.as_bytes())?;
    let mut summary = serde_json::json!({
        "samples": rows.len(), "edited": tally.scores.len(), "failed": tally.failures.len(), "dai_mean": mean,
        "mean_phase_ms": tally.mean_phase_ms(),
        "failures": failures_json(&tally.failures),
    });
    if let Some(info) = shard {
        summary["shard"] = info.to_json();
    }
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    println!("{md}");
    Ok(())
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
