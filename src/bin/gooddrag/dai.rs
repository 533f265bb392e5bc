//! `gooddrag dai`: DAI (paper Eq. 8 and compute_DAI.py) of a results folder against a dataset,
//! as a table or JSON. Background: docs/EVALUATION.md.

use std::path::PathBuf;

use clap::Args;
use gooddrag::eval::dataset;
use gooddrag::{Error, Result};

use crate::common::{failures_json, print_report};

/// `gooddrag dai`'s flags.
#[derive(Args)]
pub struct DaiArgs {
    /// Dataset folder (originals and points).
    #[arg(long)]
    data: PathBuf,
    /// Results: <results>/<sample>/output_image.png (or dragged_image.png), or
    /// <results>/<sample>.png; resized to the original's size when it differs.
    #[arg(long)]
    results: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `gooddrag dai`; fails when no result could be scored.
pub fn run(args: DaiArgs) -> Result<()> {
    let samples = dataset::discover(&args.data)?;
    let mut per = Vec::new();
    let mut failures = Vec::new();
    for (name, dir) in &samples {
        match dataset::load_sample(name, dir)
            .and_then(|s| dataset::dai_for_result(&s, &args.results))
        {
            Ok(s) => per.push((name.clone(), s)),
            Err(e) => failures.push((name.clone(), e.to_string())),
        }
    }
    let mean = dataset::mean_scores(per.iter().map(|(_, s)| s));
    print_report(
        args.json,
        || {
            serde_json::json!({
                "mean": mean,
                "images": per.iter().map(|(n, s)| serde_json::json!({"sample": n, "dai": s})).collect::<Vec<_>>(),
                "failures": failures_json(&failures),
            })
        },
        || {
            print!("{}", dataset::dai_table(&mean, per.len()));
            for (name, why) in &failures {
                println!("skipped `{name}`: {why}");
            }
        },
    );
    if per.is_empty() {
        return Err(Error::InvalidInput("no result could be scored".into()));
    }
    Ok(())
}
