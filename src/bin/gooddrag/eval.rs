//! `gooddrag eval`: scores any method's results (ours, or another code's written in GoodDrag's or
//! DragBench's layout) against a dataset with the metrics papers report — DAI (GoodDrag) and IF
//! = 1 − LPIPS (DragBench) — and writes the per-sample report and a summary through
//! [`crate::report`] (so it shards and merges like `bench`). The summary records the weights
//! used (SHA-256 of each file) and the settings. Background: docs/EVALUATION.md §2.

use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::eval::dataset::{self, DaiScores, Sample};
use gooddrag::eval::lpips::AlexLpips;
use gooddrag::eval::shard::Shard;
use gooddrag::weights::read_tensor_file;
use gooddrag::{Error, Result, device};

use crate::common::{failures_json, read_bytes, sha256_hex};
use crate::report::{ShardInfo, run_samples, write_summary_files};

/// The `kind` an eval summary records (`merge` tells eval shards from bench shards by it).
pub const KIND: &str = "eval";

/// `gooddrag eval`'s flags.
#[derive(Args)]
pub struct EvalArgs {
    /// Dataset folder (originals, points; GoodDrag/Drag100 or DragBench layout).
    #[arg(long)]
    data: PathBuf,
    /// Results: <results>/<sample>/output_image.png (or dragged_image.png), or
    /// <results>/<sample>.png.
    #[arg(long)]
    results: PathBuf,
    /// Output folder: report.jsonl, summary.json, summary.md.
    #[arg(long)]
    out: PathBuf,
    /// Score DAI (both variants, γ ∈ {1, 5, 10, 20}).
    #[arg(long)]
    dai: bool,
    /// Score IF = 1 − LPIPS (AlexNet, v0.1) as DragBench does; needs --alexnet and
    /// --lpips-heads.
    #[arg(long = "if")]
    image_fidelity: bool,
    /// torchvision's AlexNet weights (`alexnet-owt-7be5be79.pth`, from
    /// download.pytorch.org/models/), as .pth or safetensors.
    #[arg(long, value_name = "FILE")]
    alexnet: Option<PathBuf>,
    /// The LPIPS v0.1 linear heads (`lpips/weights/v0.1/alex.pth` inside the `lpips` package).
    #[arg(long, value_name = "FILE")]
    lpips_heads: Option<PathBuf>,
    /// Device for the networks: `auto`, `wgpu`, `wgpu:N` or `cpu`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Score only shard K of N (see `gooddrag bench --shard`); `gooddrag merge` joins them.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
}

/// The metrics one run computes, and what they need.
struct Scorers {
    dai: bool,
    lpips: Option<AlexLpips>,
}

/// Runs `gooddrag eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let samples = dataset::discover(&args.data)?;
    // With no metric named, every metric whose inputs were given.
    let any = args.dai || args.image_fidelity;
    let want_if = args.image_fidelity || (!any && args.alexnet.is_some());
    let mut weights = serde_json::Map::new();
    let lpips = if want_if {
        let (Some(alexnet), Some(heads)) = (&args.alexnet, &args.lpips_heads) else {
            return Err(Error::InvalidInput(
                "--if needs --alexnet FILE (torchvision's alexnet-owt-7be5be79.pth) and \
                 --lpips-heads FILE (lpips/weights/v0.1/alex.pth from the lpips package)"
                    .into(),
            ));
        };
        let (dev, adapter) = device::by_name(&args.device)?;
        eprintln!(
            "device: {} ({}, {})",
            adapter.name, adapter.backend, adapter.device_type
        );
        let mut load = |role: &str, path: &Path| -> Result<Vec<_>> {
            let bytes = read_bytes(path)?;
            weights.insert(
                role.into(),
                serde_json::json!({ "file": path.display().to_string(), "sha256": sha256_hex(&bytes) }),
            );
            read_tensor_file(&path.display().to_string(), &bytes)
        };
        let trunk = load("alexnet", alexnet)?;
        let heads = load("lpips_heads", heads)?;
        Some(AlexLpips::new(&trunk, &heads, &dev)?)
    } else {
        None
    };
    let scorers = Scorers {
        dai: args.dai || !any,
        lpips,
    };
    let mut metrics = Vec::new();
    if scorers.dai {
        metrics.push("dai");
    }
    if scorers.lpips.is_some() {
        metrics.push("if");
    }
    let settings = serde_json::json!({
        "metrics": metrics,
        "results": args.results.display().to_string(),
        "weights": weights,
        "if_resize": "bilinear 224×224, align_corners=False, no antialias (DragBench)",
        "version": env!("CARGO_PKG_VERSION"),
    });
    let (report_dir, rows, shard) =
        run_samples(&args.out, &args.data, &samples, args.shard, |name, dir| {
            score_sample(&scorers, &args.results, name, dir)
        })?;
    let header = serde_json::json!({ "kind": KIND, "settings": settings });
    write_summary(
        &report_dir,
        &args.data.display().to_string(),
        &rows,
        &header,
        shard,
    )
}

/// One sample's report row: where its result was found and each metric.
fn score_sample(
    scorers: &Scorers,
    results: &Path,
    name: &str,
    dir: &Path,
) -> Result<serde_json::Value> {
    let sample: Sample = dataset::load_sample(name, dir)?;
    let found = dataset::find_result(&sample, results)?;
    let relative = found.path.strip_prefix(results).unwrap_or(&found.path);
    let mut row = serde_json::json!({
        "sample": name, "layout": sample.layout, "ok": true,
        "result": relative.display().to_string(), "resized": found.resized,
    });
    if scorers.dai {
        row["dai"] = serde_json::to_value(dataset::dai_scores(
            &sample.image,
            &found.image,
            &sample.points,
        )?)
        .unwrap_or_default();
    }
    if let Some(lpips) = &scorers.lpips {
        let d = pollster::block_on(lpips.dragbench_lpips(&sample.image, &found.image))?;
        row["lpips"] = d.total.into();
        row["lpips_per_layer"] = d.per_layer.to_vec().into();
    }
    Ok(row)
}

/// Writes the eval summary of `rows`; `header` holds `kind` and `settings` (from this run, or
/// from the first shard when merging).
pub fn write_summary(
    dir: &Path,
    data: &str,
    rows: &[serde_json::Value],
    header: &serde_json::Value,
    shard: Option<ShardInfo>,
) -> Result<()> {
    let mut dai = Vec::new();
    let mut lpips = Vec::new();
    let mut failures = Vec::new();
    let mut resized = 0;
    for row in rows {
        let name = row["sample"].as_str().unwrap_or_default().to_string();
        if row["ok"] != true {
            failures.push((name, row["error"].as_str().unwrap_or_default().to_string()));
            continue;
        }
        if row["resized"] == true {
            resized += 1;
        }
        if !row["dai"].is_null() {
            let scores: DaiScores = serde_json::from_value(row["dai"].clone())
                .map_err(|e| Error::InvalidInput(format!("report row `{name}`: `dai`: {e}")))?;
            dai.push(scores);
        }
        if let Some(v) = row["lpips"].as_f64() {
            lpips.push(v);
        }
    }
    let scored = rows.len() - failures.len();
    let mut summary = serde_json::json!({
        "kind": header["kind"], "settings": header["settings"],
        "samples": rows.len(), "scored": scored, "failed": failures.len(),
        "resized": resized, "failures": failures_json(&failures),
    });
    let mut md = format!(
        "# GoodDrag evaluation: {data}\n\n{} samples, {scored} scored, {} failed{}.\n\n",
        rows.len(),
        failures.len(),
        if resized > 0 {
            format!(", {resized} results resized to the original's size")
        } else {
            String::new()
        }
    );
    if !dai.is_empty() {
        let mean = dataset::mean_scores(&dai);
        md += &dataset::dai_table(&mean, dai.len());
        md += "\n";
        summary["dai_mean"] = serde_json::to_value(mean).unwrap_or_default();
    }
    if !lpips.is_empty() {
        // DragBench: np.mean over every image, IF = 1 − that mean.
        let mean = lpips.iter().sum::<f64>() / lpips.len() as f64;
        summary["lpips_mean"] = mean.into();
        summary["if"] = (1.0 - mean).into();
        md += &format!(
            "| metric | value | images |\n|---|---|---|\n| LPIPS (AlexNet, mean) | {mean:.4} | {n} |\n\
             | IF = 1 − LPIPS | {:.4} | {n} |\n",
            1.0 - mean,
            n = lpips.len()
        );
    }
    let weights = &header["settings"]["weights"];
    if let Some(files) = weights.as_object().filter(|w| !w.is_empty()) {
        md += "\n| weights | file | SHA-256 |\n|---|---|---|\n";
        for (role, w) in files {
            md += &format!(
                "| {role} | {} | `{}` |\n",
                w["file"].as_str().unwrap_or_default(),
                w["sha256"].as_str().unwrap_or_default()
            );
        }
    }
    if !failures.is_empty() {
        md += "\n## Failures\n\n";
        for (name, why) in &failures {
            md += &format!("- `{name}`: {why}\n");
        }
    }
    write_summary_files(dir, summary, &md, shard)
}
