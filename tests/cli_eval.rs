//! `gooddrag eval` end to end: a mixed-layout dataset with results in both layouts (one at
//! another size, one missing), IF against the `lpips` package's own value for a committed pair
//! (tests/fixtures/lpips), DAI, MD with the tiny SD 2.x model (tests/fixtures/tiny-sd2), sharded
//! runs + `merge` equal to the unsharded run, and the errors a user meets first.

mod parity_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use gooddrag::image::RgbImage;
use gooddrag::imageio::save_rgb;
use parity_support::{alexnet_trunk_file, fixture_rgb, lpips_dir, report_rows};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gooddrag"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-eval-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("gooddrag runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn fixture_image(name: &str) -> RgbImage {
    fixture_rgb(&lpips_dir().join("images.safetensors"), name)
}

/// The deterministic AlexNet trunk of scripts/make_lpips_fixtures.py as a safetensors file.
fn alexnet_file(dir: &Path) -> PathBuf {
    let path = dir.join("alexnet.safetensors");
    std::fs::write(&path, alexnet_trunk_file()).unwrap();
    path
}

/// Dataset: `pair` (GoodDrag layout; its result is the fixture pair's second image, so its
/// LPIPS is the package's), `db` (DragBench layout, result `dragged_image.png` at half size),
/// `missing` (no result).
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, results) = (dir.join("data"), dir.join("results"));
    let a = fixture_image("if_256x192_a");
    let b = fixture_image("if_256x192_b");
    for name in ["pair", "missing"] {
        let d = data.join(name);
        std::fs::create_dir_all(&d).unwrap();
        save_rgb(&d.join("original.png"), &a).unwrap();
        std::fs::write(d.join("points.json"), r#"{"points": [[60, 90], [80, 95]]}"#).unwrap();
    }
    std::fs::create_dir_all(results.join("pair")).unwrap();
    save_rgb(&results.join("pair/output_image.png"), &b).unwrap();
    let db = data.join("animals/JH_2023-09-14-1820-16");
    std::fs::create_dir_all(&db).unwrap();
    let original = fixture_image("pair_64x64_a");
    let original = RgbImage {
        width: 64,
        height: 48,
        rgb: original.rgb[..64 * 48 * 3].to_vec(),
    };
    save_rgb(&db.join("original_image.png"), &original).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pickle/meta_p4.pkl"),
        db.join("meta_data.pkl"),
    )
    .unwrap();
    let half = fixture_image("pair_64x64_b");
    let half = RgbImage {
        width: 32,
        height: 24,
        rgb: (0..24)
            .flat_map(|y| half.rgb[y * 2 * 64 * 3..(y * 2 * 64 + 32) * 3].to_vec())
            .collect(),
    };
    let out = results.join("animals/JH_2023-09-14-1820-16");
    std::fs::create_dir_all(&out).unwrap();
    save_rgb(&out.join("dragged_image.png"), &half).unwrap();
    (data, results)
}

fn eval_cmd(data: &Path, results: &Path, out: &Path, alexnet: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(["eval", "--device", "cpu", "--dai", "--if", "--md", "--data"])
        .arg(data)
        .arg("--results")
        .arg(results)
        .arg("--out")
        .arg(out)
        .arg("--alexnet")
        .arg(alexnet)
        .arg("--lpips-heads")
        .arg(lpips_dir().join("alex.pth"))
        .arg("--dift-model")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd2"));
    cmd
}

fn rows(out: &Path) -> Vec<serde_json::Value> {
    report_rows(out)
}

#[test]
fn eval_scores_dai_and_if_like_the_references_and_shards_merge_to_the_same_report() {
    let dir = scratch("full");
    let (data, results) = dataset(&dir);
    let alexnet = alexnet_file(&dir);
    let single = dir.join("single");
    let (ok, stdout, stderr) = run(&mut eval_cmd(&data, &results, &single, &alexnet));
    assert!(ok, "{stderr}");
    let report = rows(&single);
    let names: Vec<&str> = report
        .iter()
        .map(|r| r["sample"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["animals/JH_2023-09-14-1820-16", "missing", "pair"]);
    // IF: the lpips package's value for this pair (expected.json), through files and the CLI.
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lpips_dir().join("expected.json")).unwrap())
            .unwrap();
    let want = expected["cases"]["if_256x192"]["lpips"].as_f64().unwrap();
    let pair = &report[2];
    assert_eq!(pair["result"], "pair/output_image.png");
    assert_eq!(pair["resized"], false);
    let got = pair["lpips"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-6,
        "LPIPS {got} vs the package's {want}"
    );
    assert!(pair["dai"]["paper"]["1"].as_f64().is_some());
    // The DragBench result was half size: resized to the original's, then scored.
    let db = &report[0];
    assert_eq!(db["ok"], true, "{db}");
    assert_eq!(
        db["result"],
        "animals/JH_2023-09-14-1820-16/dragged_image.png"
    );
    assert_eq!(db["resized"], true);
    assert!(db["lpips"].as_f64().unwrap() > 0.0);
    // MD: one distance per pair, pooled in the summary.
    let distances = |row: &serde_json::Value| -> Vec<f64> {
        serde_json::from_value(row["md"]["distances"].clone()).unwrap()
    };
    assert_eq!(distances(pair).len(), 1);
    assert_eq!(distances(db).len(), 2, "meta_p4.pkl holds two pairs");
    let all: Vec<f64> = [distances(db), distances(pair)].concat();
    assert_eq!(report[1]["ok"], false);
    assert!(
        report[1]["error"]
            .as_str()
            .unwrap()
            .contains("no result for `missing`")
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (summary["scored"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let mean = (got + db["lpips"].as_f64().unwrap()) / 2.0;
    assert!((summary["lpips_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((summary["if"].as_f64().unwrap() - (1.0 - mean)).abs() < 1e-12);
    let md = summary["md"].as_f64().unwrap();
    assert!(
        (md - all.iter().sum::<f64>() / 3.0).abs() < 1e-12,
        "MD pooled over 3 pairs"
    );
    assert_eq!(summary["md_pairs"], 3);
    assert!(summary["settings"]["weights"]["dift_unet"]["sha256"].is_string());
    let sha = summary["settings"]["weights"]["lpips_heads"]["sha256"]
        .as_str()
        .unwrap();
    assert!(
        sha.starts_with("df73285e"),
        "the real heads' SHA-256: {sha}"
    );
    assert!(
        stdout.contains("IF = 1 − LPIPS")
            && stdout.contains(sha)
            && stdout.contains("MD (DIFT, px)")
    );

    // Two shards + merge = the unsharded run, byte for byte.
    let sharded = dir.join("sharded");
    for shard in ["1/2", "0/2"] {
        let (ok, _, stderr) =
            run(eval_cmd(&data, &results, &sharded, &alexnet).args(["--shard", shard]));
        assert!(ok, "shard {shard}: {stderr}");
    }
    let (ok, _, stderr) = run(bin().args(["merge", "--out"]).arg(&sharded).arg(&sharded));
    assert!(ok, "merge: {stderr}");
    for file in ["report.jsonl", "summary.json", "summary.md"] {
        assert_eq!(
            std::fs::read_to_string(sharded.join(file)).unwrap(),
            std::fs::read_to_string(single.join(file)).unwrap(),
            "{file}"
        );
    }
    // A shard scored with other settings does not merge.
    let (ok, _, stderr) = run(bin()
        .args([
            "eval", "--device", "cpu", "--dai", "--shard", "0/2", "--data",
        ])
        .arg(&data)
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(dir.join("other")));
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(bin()
        .args(["merge", "--out"])
        .arg(dir.join("mixed"))
        .arg(dir.join("other/shards/0-of-2"))
        .arg(sharded.join("shards/1-of-2")));
    assert!(!ok && stderr.contains("other settings"), "{stderr}");
}

#[test]
fn eval_explains_missing_weights_and_bad_checkpoints() {
    let dir = scratch("errors");
    let (data, results) = dataset(&dir);
    let (ok, _, stderr) = run(bin()
        .args(["eval", "--if", "--device", "cpu", "--data"])
        .arg(&data)
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(dir.join("out")));
    assert!(
        !ok && stderr.contains("--alexnet") && stderr.contains("--lpips-heads"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&mut eval_cmd(
        &data,
        &results,
        &dir.join("out"),
        &lpips_dir().join("evil.pth"),
    ));
    assert!(!ok && stderr.contains("refusing to call"), "{stderr}");
}
