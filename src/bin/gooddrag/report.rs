//! The per-sample report both `bench` and `eval` write, and `gooddrag merge`: one `report.jsonl`
//! line per sample (rewritten after each, so a killed run keeps what it finished), then a
//! `summary.json` / `summary.md` computed from the rows alone. With `--shard K/N` a run covers
//! every N-th sample from the K-th and writes under `<out>/shards/K-of-N/`; `merge` checks the
//! shards form one complete split and writes what the unsharded run would have. Background:
//! docs/EVALUATION.md §1.4.

use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::eval::shard::Shard;
use gooddrag::{Error, Result};

use crate::common::write_file;
use crate::{bench, eval};

/// `gooddrag merge`'s flags.
#[derive(Args)]
pub struct MergeArgs {
    /// Where the merged report.jsonl, summary.json and summary.md go.
    #[arg(long)]
    out: PathBuf,
    /// Shard folders (`…/shards/K-of-N`) or bench/eval output folders holding a `shards/` folder.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

/// What a shard's summary records about the split it belongs to.
pub struct ShardInfo {
    pub shard: Shard,
    /// Samples in the whole dataset.
    pub dataset_samples: usize,
    /// The dataset folder as given.
    pub data: String,
}

impl ShardInfo {
    pub fn to_json(&self) -> serde_json::Value {
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

/// Runs `score(index, name, dir)` for this run's samples (all, or the shard's), writing
/// `report.jsonl` into the report folder after each; a failed sample becomes an `ok: false` row.
/// Returns the report folder and the rows as read back from the file (serde_json reads some
/// floats back one ulp off, and the summary must add the numbers `merge` will add).
pub fn run_samples(
    out: &Path,
    data: &Path,
    samples: &[(String, PathBuf)],
    shard: Option<Shard>,
    mut score: impl FnMut(&str, &Path) -> Result<serde_json::Value>,
) -> Result<(PathBuf, Vec<serde_json::Value>, Option<ShardInfo>)> {
    if samples.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no sample folders (with points.json or meta_data.pkl) under `{}`",
            data.display()
        )));
    }
    let report_dir = match shard {
        Some(shard) => out.join("shards").join(shard.folder_name()),
        None => out.to_path_buf(),
    };
    create_dir(&report_dir)?;
    let mine: Vec<(usize, &(String, PathBuf))> = samples
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| s.contains(*i)))
        .collect();
    let mut report = String::new();
    write_file(&report_dir.join("report.jsonl"), b"")?;
    for (n, &(index, (name, dir))) in mine.iter().enumerate() {
        eprintln!("[{}/{}] {name}", n + 1, mine.len());
        let row = match score(name, dir) {
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
    let rows = read_rows(&report_dir.join("report.jsonl"))?;
    let info = shard.map(|s| ShardInfo {
        shard: s,
        dataset_samples: samples.len(),
        data: data.display().to_string(),
    });
    Ok((report_dir, rows, info))
}

/// Writes a summary as `summary.json` (with the shard's place in the split, if any) and
/// `summary.md`, and prints the Markdown.
pub fn write_summary_files(
    dir: &Path,
    mut summary: serde_json::Value,
    markdown: &str,
    shard: Option<ShardInfo>,
) -> Result<()> {
    write_file(&dir.join("summary.md"), markdown.as_bytes())?;
    if let Some(info) = shard {
        summary["shard"] = info.to_json();
    }
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    println!("{markdown}");
    Ok(())
}

/// Runs `gooddrag merge`: checks that the shards are one complete split of one dataset (every
/// K of the same N exactly once, every sample position exactly once, one kind of run with one
/// set of settings), then writes the rows in the dataset's order and the summary, as the
/// unsharded run would have.
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
                "`{}` is neither a shard folder (summary.json + report.jsonl) nor a bench/eval \
                 output folder with shards/",
                dir.display()
            )));
        }
    }
    let mut infos: Vec<(ShardInfo, serde_json::Value, PathBuf)> = Vec::new();
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
        infos.push((info, summary, dir.clone()));
    }
    let (first, first_summary, _) = infos
        .first()
        .ok_or_else(|| Error::InvalidInput("no shard folders found in the given folders".into()))?;
    let (count, total, data) = (first.shard.count, first.dataset_samples, first.data.clone());
    let settings = |s: &serde_json::Value| (s["kind"].clone(), s["settings"].clone());
    let first_settings = settings(first_summary);
    for (info, summary, dir) in &infos {
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
        if settings(summary) != first_settings {
            return Err(Error::InvalidInput(format!(
                "`{}` was run with other settings (or is another kind of run) than the first \
                 shard: its summary's `kind`/`settings` differ",
                dir.display()
            )));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|k| infos.iter().filter(|(i, _, _)| i.shard.index == *k).count() != 1)
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
    match first_summary["kind"].as_str() {
        Some(eval::KIND) => eval::write_summary(&args.out, &data, &rows, first_summary, None),
        _ => bench::write_summary(&args.out, &data, &rows, first_summary, None),
    }
}

/// A Markdown table of the weights files a summary's settings record (role, file, SHA-256);
/// empty when there are none.
pub fn weights_table(weights: &serde_json::Value) -> String {
    let Some(files) = weights.as_object().filter(|w| !w.is_empty()) else {
        return String::new();
    };
    let mut md = "\n| weights | file | SHA-256 |\n|---|---|---|\n".to_string();
    for (role, w) in files {
        md += &format!(
            "| {role} | {} | `{}` |\n",
            w["file"].as_str().unwrap_or_default(),
            w["sha256"].as_str().unwrap_or_default()
        );
    }
    md
}

pub fn create_dir(dir: &Path) -> Result<()> {
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
