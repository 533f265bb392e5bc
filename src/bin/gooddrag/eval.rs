//! `gooddrag eval`: scores any method's results (ours, or another code's written in GoodDrag's or
//! DragBench's layout) against a dataset with the metrics papers report — DAI (GoodDrag), IF
//! = 1 − LPIPS (DragBench) and GScore (GoodDrag's multimodal-model judge) — and writes the
//! per-sample report and a summary through [`crate::report`] (so it shards and merges like
//! `bench`), and MD (DragBench's DIFT point matching). `gooddrag gscore` is the same run with GScore only, for several methods' results
//! judged side by side as the GoodDrag notebook does. The summary records the weights used
//! (SHA-256 of each file), the judging prompt's SHA-256 and the settings. Background:
//! docs/EVALUATION.md §2.

use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::eval::dataset::{self, DaiScores, Sample};
use gooddrag::eval::dift::{DiftNoise, DiftSettings, dift_features};
use gooddrag::eval::lpips::AlexLpips;
use gooddrag::eval::md::match_points;
use gooddrag::eval::sha256_hex;
use gooddrag::eval::shard::Shard;
use gooddrag::image::RgbImage;
use gooddrag::model_set::Models;
use gooddrag::rng::{FNV1A64_OFFSET, Rng, fnv1a64};
use gooddrag::weights::read_tensor_file;
use gooddrag::{Error, Result, device};

use crate::common::{failures_json, insert_model_weights, read_bytes, weights_entry};
use crate::judge::{Judge, JudgeArgs, gscore_summary, judge_sample};
use crate::report::{ShardInfo, run_samples, weights_table, write_summary_files};

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
    /// Score MD (DragBench's DIFT point matching); needs --dift-model.
    #[arg(long)]
    md: bool,
    /// The diffusers folder DIFT features come from: DragBench uses
    /// stabilityai/stable-diffusion-2-1 (any SD 1.x/2.x folder loads).
    #[arg(long, value_name = "DIR")]
    dift_model: Option<PathBuf>,
    /// Seed of DIFT's noise; each sample's draws come from this seed and the sample's name, so
    /// shards draw what the unsharded run draws.
    #[arg(long, default_value_t = 42)]
    dift_seed: u64,
    /// Device for the networks: `auto`, `wgpu`, `wgpu:N` or `cpu`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Score only shard K of N (see `gooddrag bench --shard`); `gooddrag merge` joins them.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Score GScore: the results judged by a multimodal model (needs --endpoint and --model).
    #[arg(long)]
    gscore: bool,
    #[command(flatten)]
    judge: JudgeArgs,
}

/// `gooddrag gscore`'s flags.
#[derive(Args)]
pub struct GscoreArgs {
    /// Dataset folder (originals and points).
    #[arg(long)]
    data: PathBuf,
    /// One results folder per method, judged together in this order (labels A, B, C, …; the
    /// GoodDrag notebook sends GoodDrag, DragDiffusion, SDE-Drag).
    #[arg(long, required = true)]
    results: Vec<PathBuf>,
    /// Output folder: report.jsonl, summary.json, summary.md, gscore-cache/.
    #[arg(long)]
    out: PathBuf,
    /// Judge only shard K of N; `gooddrag merge` joins them.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    #[command(flatten)]
    judge: JudgeArgs,
}

/// MD's featurizer and its settings.
struct Md {
    models: Models,
    settings: DiftSettings,
    seed: u64,
}

/// The metrics one run computes, and what they need.
struct Scorers {
    dai: bool,
    lpips: Option<AlexLpips>,
    md: Option<Md>,
    gscore: Option<Judge>,
}

/// Runs `gooddrag eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    // With no metric named, every metric whose inputs were given.
    let any = args.dai || args.image_fidelity || args.md || args.gscore;
    let want_if = args.image_fidelity || (!any && args.alexnet.is_some());
    let want_md = args.md || (!any && args.dift_model.is_some());
    let mut weights = serde_json::Map::new();
    let device = if want_if || want_md {
        let (dev, adapter) = device::by_name(&args.device)?;
        eprintln!(
            "device: {} ({}, {})",
            adapter.name, adapter.backend, adapter.device_type
        );
        Some((dev, adapter.max_storage_buffer_binding_size))
    } else {
        None
    };
    let lpips = match (&device, want_if) {
        (Some((dev, _)), true) => {
            let (Some(alexnet), Some(heads)) = (&args.alexnet, &args.lpips_heads) else {
                return Err(Error::InvalidInput(
                    "--if needs --alexnet FILE (torchvision's alexnet-owt-7be5be79.pth) and \
                     --lpips-heads FILE (lpips/weights/v0.1/alex.pth from the lpips package)"
                        .into(),
                ));
            };
            let mut load = |role: &str, path: &Path| -> Result<Vec<_>> {
                let bytes = read_bytes(path)?;
                weights.insert(role.into(), weights_entry(path, sha256_hex(&bytes)));
                read_tensor_file(&path.display().to_string(), &bytes)
            };
            let trunk = load("alexnet", alexnet)?;
            let heads = load("lpips_heads", heads)?;
            Some(AlexLpips::new(&trunk, &heads, dev)?)
        }
        _ => None,
    };
    let md = match (&device, want_md) {
        (Some((dev, max_binding)), true) => {
            let dir = args.dift_model.as_ref().ok_or_else(|| {
                Error::InvalidInput(
                    "--md needs --dift-model DIR: a diffusers Stable Diffusion folder \
                     (DragBench uses stabilityai/stable-diffusion-2-1)"
                        .into(),
                )
            })?;
            insert_model_weights(&mut weights, "dift_", dir, None)?;
            let started = std::time::Instant::now();
            let models = Models::load_dir(dir, None, dev, *max_binding)?;
            eprintln!(
                "DIFT model loaded from {} in {:.1} s",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
            Some(Md {
                models,
                settings: DiftSettings::default(),
                seed: args.dift_seed,
            })
        }
        _ => None,
    };
    let mut settings = serde_json::Map::new();
    let gscore = if args.gscore {
        Some(
            args.judge
                .judge(vec![args.results.clone()], &args.out, &mut settings)?,
        )
    } else {
        None
    };
    if let Some(md) = &md {
        let d = md.settings;
        settings.insert(
            "md".into(),
            serde_json::json!({
                "timestep": d.timestep, "up_ft_index": d.up_ft_index, "ensemble": d.ensemble,
                "seed": md.seed, "prompt": "the sample's (DragBench's prompt; \"\" for GoodDrag's layout)",
            }),
        );
    }
    let scorers = Scorers {
        dai: args.dai || !any,
        lpips,
        md,
        gscore,
    };
    settings.insert("weights".into(), weights.into());
    if scorers.lpips.is_some() {
        settings.insert(
            "if_resize".into(),
            "bilinear 224×224, align_corners=False, no antialias (DragBench)".into(),
        );
    }
    score_all(
        &scorers,
        &args.data,
        &args.results,
        &args.out,
        args.shard,
        settings,
    )
}

/// Runs `gooddrag gscore`: GScore only, every method's result judged in one request.
pub fn run_gscore(args: GscoreArgs) -> Result<()> {
    let mut settings = serde_json::Map::new();
    let judge = args
        .judge
        .judge(args.results.clone(), &args.out, &mut settings)?;
    let scorers = Scorers {
        dai: false,
        lpips: None,
        md: None,
        gscore: Some(judge),
    };
    score_all(
        &scorers,
        &args.data,
        &args.results[0],
        &args.out,
        args.shard,
        settings,
    )
}

/// Scores every sample (of the shard) and writes the report and summary.
fn score_all(
    scorers: &Scorers,
    data: &Path,
    results: &Path,
    out: &Path,
    shard: Option<Shard>,
    mut settings: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let samples = dataset::discover(data)?;
    let mut metrics = Vec::new();
    if scorers.dai {
        metrics.push("dai");
    }
    if scorers.lpips.is_some() {
        metrics.push("if");
    }
    if scorers.md.is_some() {
        metrics.push("md");
    }
    if scorers.gscore.is_some() {
        metrics.push("gscore");
    }
    settings.insert("metrics".into(), metrics.into());
    settings.insert("results".into(), results.display().to_string().into());
    settings.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let (report_dir, rows, shard) = run_samples(out, data, &samples, shard, |name, dir| {
        score_sample(scorers, results, name, dir)
    })?;
    let header = serde_json::json!({ "kind": KIND, "settings": settings });
    write_summary(
        &report_dir,
        &data.display().to_string(),
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
    if let Some(md) = &scorers.md {
        row["md"] = md_sample(md, &sample, &found.image)?;
    }
    if let Some(judge) = &scorers.gscore {
        row["gscore"] = judge_sample(judge, &sample, dir)?;
    }
    Ok(row)
}

/// MD of one sample: each handle's best match in the result, its cosine and its distance to
/// the target (docs/EVALUATION.md §2.3).
fn md_sample(md: &Md, sample: &Sample, edited: &RgbImage) -> Result<serde_json::Value> {
    // PARITY (deviation): DragBench draws from one stream per run, so an image's noise depends
    // on every image before it; here it depends on the seed and the sample's name only.
    let mut rng = Rng::new(fnv1a64(FNV1A64_OFFSET ^ md.seed, sample.name.as_bytes()));
    let mut features = |image: &RgbImage| {
        pollster::block_on(dift_features(
            &md.models,
            image,
            &sample.prompt,
            md.settings,
            DiftNoise::Seeded(&mut rng),
        ))
    };
    let source = features(&sample.image)?;
    let result = features(edited)?;
    let mut handles = Vec::new();
    let mut targets = Vec::new();
    for pair in sample.points.chunks_exact(2) {
        let [x, y] = pair[0];
        if x < 0.0 || y < 0.0 {
            return Err(Error::InvalidInput(format!(
                "MD: handle ({x}, {y}) is outside the image"
            )));
        }
        // PARITY: DragBench indexes the feature map with the integer points as given.
        handles.push([x as usize, y as usize]);
        targets.push(pair[1]);
    }
    let size = (sample.image.width, sample.image.height);
    let matches = match_points(&source, &result, size, &handles, &targets)?;
    let distances: Vec<f64> = matches.iter().map(|m| m.distance).collect();
    Ok(serde_json::json!({
        "distances": distances,
        "matches": matches.iter().map(|m| m.found).collect::<Vec<_>>(),
        "cosines": matches.iter().map(|m| m.cosine).collect::<Vec<_>>(),
    }))
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
    // MD: every pair's distance, pooled, and each image's mean.
    let mut md_pairs: Vec<f64> = Vec::new();
    let mut md_images: Vec<f64> = Vec::new();
    let mut failures = Vec::new();
    let mut resized = 0;
    // GScore: [run][method] → the scores read.
    let mut judged: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut unparsed = 0;
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
        if let Some(d) = row["md"]["distances"].as_array() {
            let d: Vec<f64> = d.iter().filter_map(serde_json::Value::as_f64).collect();
            if !d.is_empty() {
                md_images.push(d.iter().sum::<f64>() / d.len() as f64);
                md_pairs.extend(d);
            }
        }
        for (r, run) in row["gscore"]["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let scores = run["scores"].as_array().cloned().unwrap_or_default();
            if judged.len() <= r {
                judged.push(vec![Vec::new(); scores.len()]);
            }
            for (m, score) in scores.iter().enumerate() {
                match (score.as_f64(), judged[r].get_mut(m)) {
                    (Some(v), Some(per)) => per.push(v),
                    _ => unparsed += 1,
                }
            }
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
    if !md_pairs.is_empty() {
        // DragBench: the mean over all pairs of all images, pooled (images with more pairs
        // weigh more); the mean of per-image means beside it.
        let pooled = md_pairs.iter().sum::<f64>() / md_pairs.len() as f64;
        let per_image = md_images.iter().sum::<f64>() / md_images.len() as f64;
        summary["md"] = pooled.into();
        summary["md_pairs"] = md_pairs.len().into();
        summary["md_image_mean"] = per_image.into();
        md += &format!(
            "\n| MD (DIFT, px) | value | count |\n|---|---|---|\n| pooled over pairs (DragBench) \
             | {pooled:.2} | {} pairs |\n| mean of per-image means | {per_image:.2} | {} images |\n",
            md_pairs.len(),
            md_images.len()
        );
    }
    if !judged.is_empty() {
        let (json, table) = gscore_summary(&judged, unparsed, &header["settings"]["gscore"]);
        summary["gscore"] = json;
        md += &table;
    }
    md += &weights_table(&header["settings"]["weights"]);
    if !failures.is_empty() {
        md += "\n## Failures\n\n";
        for (name, why) in &failures {
            md += &format!("- `{name}`: {why}\n");
        }
    }
    write_summary_files(dir, summary, &md, shard)
}
