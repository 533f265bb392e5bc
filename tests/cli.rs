//! The native CLI end to end on the tiny model (tests/fixtures/tiny-sd), on the CPU device:
//! `edit` with `--dump`, `bench` over a generated mixed-layout folder with a broken sample, and
//! `dai` on hand-made images with known values; plus its error messages.

mod parity_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use gooddrag::image::RgbImage;
use gooddrag::imageio::{load_rgb, save_png, save_rgb};
use gooddrag::weights::{Header, tensor_bytes, tensor_to_f32};
use parity_support::fixture_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gooddrag"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn photo(width: usize, height: usize) -> RgbImage {
    let mut rgb = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let inside = (x as f64 - 0.4 * width as f64).hypot(y as f64 - 0.5 * height as f64)
                < 0.2 * width.min(height) as f64;
            rgb.extend_from_slice(&[
                (40 + x * 2 + if inside { 150 } else { 0 }) as u8,
                80,
                (60 + y * 2) as u8,
            ]);
        }
    }
    RgbImage { width, height, rgb }
}

/// A fast config: 2 drag timesteps, a 2-step LoRA at 64 px.
fn fast_config(dir: &Path) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        r#"{"drag_end_step": 2, "lora": {"rank": 4, "steps": 2, "resolution": 64}}"#,
    )
    .unwrap();
    path
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("gooddrag runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn sample_dir(root: &Path, name: &str, img: &RgbImage, points: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    save_rgb(&d.join("original.png"), img).unwrap();
    std::fs::write(d.join("points.json"), points).unwrap();
    d
}

#[test]
fn edit_writes_the_official_files_and_the_dump() {
    let dir = scratch("edit");
    let img = photo(64, 64);
    save_rgb(&dir.join("in.png"), &img).unwrap();
    std::fs::write(
        dir.join("points.json"),
        r#"{"points": [[18, 32], [46, 32]]}"#,
    )
    .unwrap();
    let mut mask = vec![0u8; 64 * 64];
    mask[16 * 64..48 * 64].fill(255);
    save_png(&dir.join("mask.png"), 64, 64, 1, &mask).unwrap();
    let (ok, stdout, stderr) = run(bin()
        .args(["edit", "--device", "cpu", "--size", "native", "--model"])
        .arg(fixture_dir())
        .arg("--image")
        .arg(dir.join("in.png"))
        .arg("--points")
        .arg(dir.join("points.json"))
        .arg("--mask")
        .arg(dir.join("mask.png"))
        .arg("--config")
        .arg(fast_config(&dir))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--dump")
        .arg(dir.join("dump.safetensors")));
    assert!(ok, "stderr: {stderr}");
    let out = dir.join("out");
    for f in [
        "output_image.png",
        "output_full.png",
        "image_with_new_points.png",
        "new_points.json",
        "timings.json",
        "pytorch_lora_weights.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let result = load_rgb(&out.join("output_image.png")).unwrap();
    assert_eq!((result.width, result.height), (64, 64));
    let new: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("new_points.json")).unwrap())
            .unwrap();
    let pts = new["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[1], serde_json::json!([46.0, 32.0]), "the target stays");
    let hx = pts[0][0].as_f64().unwrap();
    assert!(hx > 18.0, "the handle moved toward the target: {pts:?}");
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timings.json")).unwrap()).unwrap();
    for phase in ["lora", "invert", "drag", "decode"] {
        assert!(
            timings["phases_ms"][phase].as_f64().unwrap() > 0.0,
            "{phase}"
        );
    }
    assert_eq!(timings["dtype"], "f32");
    assert_eq!(timings["working_size"], "native");
    assert_eq!(timings["working_dims"], serde_json::json!([64, 64]));
    assert!(stdout.contains("final_handles"));
    // The dump.
    let bytes = std::fs::read(dir.join("dump.safetensors")).unwrap();
    let header = Header::parse(&bytes, Some(bytes.len() as u64)).unwrap();
    let shape = |n: &str| header.tensor(n).unwrap().shape.clone();
    assert_eq!(shape("z0"), vec![1, 4, 8, 8]);
    assert_eq!(shape("zT"), vec![1, 4, 8, 8]);
    assert_eq!(shape("z_drag_end"), vec![1, 4, 8, 8]);
    assert_eq!(shape("z_final"), vec![1, 4, 8, 8]);
    let n = shape("drag_loss")[0];
    assert!(n > 0);
    let handles = shape("handles");
    assert_eq!(&handles[1..], &[1, 2]);
    let info = header.tensor("handles").unwrap();
    let h = tensor_to_f32(info, tensor_bytes(&header, info, 0, &bytes).unwrap()).unwrap();
    assert_eq!(&h[..2], &[18.0, 32.0], "first row = the initial handle");
    assert_eq!(h[h.len() - 2] as f64, hx, "last row = the final handle");
    // The saved LoRA is accepted back.
    let (ok, _, stderr) = run(bin()
        .args(["edit", "--device", "cpu", "--size", "native", "--model"])
        .arg(fixture_dir())
        .arg("--image")
        .arg(dir.join("in.png"))
        .arg("--points")
        .arg(dir.join("points.json"))
        .arg("--config")
        .arg(fast_config(&dir))
        .arg("--lora")
        .arg(out.join("pytorch_lora_weights.safetensors"))
        .arg("--out")
        .arg(dir.join("out2")));
    assert!(ok, "{stderr}");
}

/// A phone photo as stored: landscape pixels plus EXIF orientation 6 (rotate 90° clockwise to
/// view), written as a real JPEG with an APP1 Exif segment (big-endian TIFF, as Apple writes).
fn rotated_jpeg(path: &Path, stored: &RgbImage) {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend(1u16.to_be_bytes());
    tiff.extend(0x0112u16.to_be_bytes());
    tiff.extend(3u16.to_be_bytes());
    tiff.extend(1u32.to_be_bytes());
    tiff.extend([0, 6, 0, 0]);
    tiff.extend(0u32.to_be_bytes());
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend(tiff);
    let mut encoder = jpeg_encoder::Encoder::new_file(path, 95).unwrap();
    encoder.add_app_segment(1, exif).unwrap();
    encoder
        .encode(
            &stored.rgb,
            stored.width as u16,
            stored.height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
}

#[test]
fn a_rotated_jpeg_is_edited_upright_at_the_working_size() {
    let dir = scratch("rotated");
    // Stored 300×200 with a bright left edge; upright (orientation 6) it is 200×300 with the
    // bright edge at the top.
    let stored = RgbImage {
        width: 300,
        height: 200,
        rgb: (0..300 * 200)
            .flat_map(|i| {
                if i % 300 < 30 {
                    [250, 250, 250]
                } else {
                    [40, 90, 140]
                }
            })
            .collect(),
    };
    rotated_jpeg(&dir.join("in.jpg"), &stored);
    let upright = load_rgb(&dir.join("in.jpg")).unwrap();
    assert_eq!((upright.width, upright.height), (200, 300));
    assert!(upright.rgb[3 * 100] > 200, "top row bright");
    assert!(upright.rgb[3 * (299 * 200 + 100)] < 100, "bottom row dark");
    // Points refer to the upright photo.
    std::fs::write(
        dir.join("points.json"),
        r#"{"points": [[100, 150], [100, 190]]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"drag_end_step": 1, "n_inference_steps": 8}"#,
    )
    .unwrap();
    // The editable region, drawn on the upright photo: x 50..150, y 100..250.
    let mask: Vec<u8> = (0..200 * 300)
        .map(|i| u8::from((50..150).contains(&(i % 200)) && (100..250).contains(&(i / 200))) * 255)
        .collect();
    save_png(&dir.join("mask.png"), 200, 300, 1, &mask).unwrap();
    let (ok, stdout, stderr) = run(bin()
        .args([
            "edit",
            "--device",
            "cpu",
            "--no-lora",
            "--size",
            "256",
            // f16 compute end to end through the CLI (the CPU device offers f16).
            "--precision",
            "f16",
            "--model",
        ])
        .arg(fixture_dir())
        .arg("--mask")
        .arg(dir.join("mask.png"))
        .arg("--image")
        .arg(dir.join("in.jpg"))
        .arg("--points")
        .arg(dir.join("points.json"))
        .arg("--config")
        .arg(dir.join("config.json"))
        .arg("--out")
        .arg(dir.join("out")));
    assert!(ok, "{stderr}");
    let out = dir.join("out");
    let working = load_rgb(&out.join("output_image.png")).unwrap();
    assert_eq!(
        (working.width, working.height),
        (168, 256),
        "200×300 at long side 256"
    );
    let full = load_rgb(&out.join("output_full.png")).unwrap();
    assert_eq!(
        (full.width, full.height),
        (200, 300),
        "the photo's size, upright"
    );
    // Beyond the mask and its feather (8 working pixels ≈ 9.4 photo pixels) the full result is
    // the decoded photo, byte for byte; inside, the (random tiny model's) edit.
    for y in 0..300 {
        for x in 0..200 {
            let i = 3 * (y * 200 + x);
            if !(35..165).contains(&x) || !(85..265).contains(&y) {
                assert_eq!(full.rgb[i..i + 3], upright.rgb[i..i + 3], "({x}, {y})");
            }
        }
    }
    let i = 3 * (175 * 200 + 100);
    assert_ne!(full.rgb[i..i + 3], upright.rgb[i..i + 3]);
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timings.json")).unwrap()).unwrap();
    assert_eq!(timings["working_size"], "256");
    assert_eq!(timings["working_dims"], serde_json::json!([168, 256]));
    assert_eq!(timings["dtype"], "f16");
    assert!(stderr.contains("precision: f16 (asked: f16)"), "{stderr}");
    assert!(timings["phases_ms"]["composite"].as_f64().unwrap() >= 0.0);
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["size"]["photo"], serde_json::json!([200, 300]));
    // Final handles are photo pixels: the handle started at (100, 150).
    let h = &line["final_handles"][0];
    assert!((h[0].as_f64().unwrap() - 100.0).abs() < 40.0, "{h}");
    assert!((h[1].as_f64().unwrap() - 170.0).abs() < 40.0, "{h}");
}

/// A `bench` command on the tiny model over `data` into `out`, with the fast test config.
fn bench_cmd(data: &Path, out: &Path, config: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(["bench", "--device", "cpu", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(config);
    cmd
}

/// A GoodDrag-layout sample folder `name` under `data` with a 64×64 photo and one pair.
fn square_sample(data: &Path, name: &str, pair: &str) {
    sample_dir(
        data,
        name,
        &photo(64, 64),
        &format!(r#"{{"points": {pair}}}"#),
    );
}

#[test]
fn bench_runs_every_sample_and_reports_the_broken_one() {
    let dir = scratch("bench");
    let data = dir.join("data");
    square_sample(&data, "good_a", "[[18, 32], [40, 32]]");
    square_sample(&data, "broken_b", "[[18, 32], [400, 32]]");
    // A DragBench sample (nested category folder, pickled metadata, 64×48 image).
    let db = data.join("animals").join("JH_2023-09-14-1820-16");
    std::fs::create_dir_all(&db).unwrap();
    save_rgb(&db.join("original_image.png"), &photo(64, 48)).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pickle/meta_p4.pkl"),
        db.join("meta_data.pkl"),
    )
    .unwrap();
    let (ok, stdout, stderr) = run(&mut bench_cmd(&data, &dir.join("out"), &fast_config(&dir)));
    assert!(ok, "stderr: {stderr}");
    let report = std::fs::read_to_string(dir.join("out/report.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let by = |name: &str| lines.iter().find(|l| l["sample"] == name).unwrap().clone();
    assert_eq!(by("broken_b")["ok"], false);
    assert!(
        by("broken_b")["error"]
            .as_str()
            .unwrap()
            .contains("outside")
    );
    assert_eq!(by("good_a")["ok"], true);
    let db_line = by("animals/JH_2023-09-14-1820-16");
    assert_eq!(db_line["ok"], true, "{db_line}");
    assert_eq!(db_line["layout"], "dragbench");
    assert!(db_line["dai"]["paper"]["1"].as_f64().is_some());
    assert!(
        dir.join("out/animals/JH_2023-09-14-1820-16/output_image.png")
            .is_file()
    );
    assert!(stdout.contains("compute_DAI.py") && stdout.contains("broken_b"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (summary["edited"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
    // What the numbers depend on: the config run and the weights files, by hash.
    assert_eq!(summary["kind"], "bench");
    assert_eq!(summary["settings"]["config"]["drag_end_step"], 2);
    let unet = &summary["settings"]["weights"]["unet"];
    assert!(
        unet["file"]
            .as_str()
            .unwrap()
            .ends_with("diffusion_pytorch_model.fp16.safetensors")
    );
    assert_eq!(unet["sha256"].as_str().unwrap().len(), 64);
}

/// `bench --shard K/N` on each of two "machines" + `merge` = one unsharded run: the same rows in
/// the same order, the same summary and the same output images (timings aside); an incomplete
/// set of shards is refused, naming the missing one.
#[test]
fn sharded_bench_and_merge_equal_the_unsharded_run() {
    let dir = scratch("shard");
    let data = dir.join("data");
    square_sample(&data, "a", "[[18, 32], [40, 32]]");
    square_sample(&data, "b_broken", "[[18, 32], [400, 32]]");
    square_sample(&data, "c", "[[30, 20], [30, 44]]");
    let config = fast_config(&dir);
    let bench = |out: &Path, shard: Option<&str>| {
        let mut cmd = bench_cmd(&data, out, &config);
        if let Some(shard) = shard {
            cmd.args(["--shard", shard]);
        }
        let (ok, _, stderr) = run(&mut cmd);
        assert!(ok, "bench {shard:?}: {stderr}");
    };
    let (single, sharded) = (dir.join("single"), dir.join("sharded"));
    bench(&single, None);
    bench(&sharded, Some("1/2"));
    let merge = |dirs: &[PathBuf]| run(bin().args(["merge", "--out"]).arg(&sharded).args(dirs));
    let (ok, _, stderr) = merge(&[sharded.join("shards/1-of-2")]);
    assert!(
        !ok && stderr.contains("0/2"),
        "an incomplete split is refused: {stderr}"
    );
    bench(&sharded, Some("0/2"));
    let (ok, _, stderr) = merge(std::slice::from_ref(&sharded));
    assert!(ok, "merge: {stderr}");

    let rows = |out: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("report.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
                row.as_object_mut().unwrap().remove("timings");
                row
            })
            .collect()
    };
    let expected = rows(&single);
    assert_eq!(expected.len(), 3);
    let order: Vec<&str> = expected
        .iter()
        .map(|r| r["sample"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["a", "b_broken", "c"]);
    assert_eq!(rows(&sharded), expected, "merged rows");
    let summary = |out: &Path| {
        let mut s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        s.as_object_mut().unwrap().remove("mean_phase_ms");
        s
    };
    assert_eq!(summary(&sharded), summary(&single), "summary.json");
    assert_eq!(summary(&single)["edited"], 2);
    let markdown = |out: &Path| {
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        let (before, after) = md.split_once("| phase | mean time (s) |").unwrap();
        let after = after.split_once("\n\n").map_or("", |(_, rest)| rest);
        format!("{before}{after}")
    };
    assert_eq!(markdown(&sharded), markdown(&single), "summary.md");
    for sample in ["a", "c"] {
        let image = |out: &Path| std::fs::read(out.join(sample).join("output_image.png")).unwrap();
        assert_eq!(image(&sharded), image(&single), "{sample}/output_image.png");
    }
}

#[test]
fn dai_matches_hand_computed_values() {
    let dir = scratch("dai");
    let (data, results) = (dir.join("data"), dir.join("results"));
    // Original: black with a white 3×3 square at (10, 10). Result A: the square moved exactly to
    // (20, 10) → DAI 0. Result B: not moved → at γ = 1 the target window is black and the
    // handle's white: 9 px × 3 ch × 1² / 9 = 3 (one pair: paper = script).
    let square = |cx: usize| {
        let mut rgb = vec![0u8; 32 * 24 * 3];
        for y in 9..12 {
            for x in cx - 1..cx + 2 {
                rgb[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3].fill(255);
            }
        }
        RgbImage {
            width: 32,
            height: 24,
            rgb,
        }
    };
    for (name, result) in [("moved", square(20)), ("still", square(10))] {
        sample_dir(
            &data,
            name,
            &square(10),
            r#"{"points": [[10, 10], [20, 10]]}"#,
        );
        std::fs::create_dir_all(results.join(name)).unwrap();
        save_rgb(&results.join(name).join("output_image.png"), &result).unwrap();
    }
    let (ok, stdout, stderr) = run(bin()
        .arg("dai")
        .arg("--data")
        .arg(&data)
        .arg("--results")
        .arg(&results)
        .arg("--json"));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let img = |n: &str| {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sample"] == n)
            .unwrap()["dai"]
            .clone()
    };
    assert_eq!(img("moved")["paper"]["1"].as_f64(), Some(0.0));
    assert_eq!(img("still")["paper"]["1"].as_f64(), Some(3.0));
    assert_eq!(img("still")["official"]["1"].as_f64(), Some(3.0));
    assert_eq!(v["mean"]["paper"]["1"].as_f64(), Some(1.5));
}

/// `bench-synthetic` on the tiny architecture: every phase of the edit runs through the real
/// code paths on both devices (on wgpu with gradient checkpointing), and the report adds up.
/// `gooddrag <subcommand> --latent 8 --json --device <device>` on the tiny architecture.
fn tiny_synthetic(subcommand: &str, device: &str) -> Command {
    let mut cmd = bin();
    cmd.args([subcommand, "--latent", "8", "--json", "--device", device])
        .arg("--architecture")
        .arg(fixture_dir());
    cmd
}

#[test]
fn bench_synthetic_runs_every_phase_of_the_edit() {
    // On the CPU without checkpointing; the wgpu (lavapipe) run with checkpointing, and the
    // other backward plans, are scripts/gpu-bench.sh --smoke's (tests/gpu_bench.rs).
    let mut cmd = tiny_synthetic("bench-synthetic", "cpu");
    cmd.arg("--no-checkpointing");
    let (ok, stdout, stderr) = run(&mut cmd);
    assert!(ok, "cpu: {stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    parity_support::check_edit_bench(&out, "cpu", false, "recompute");
    let (ok, _, stderr) = run(bin().args(["bench-synthetic", "--device", "cpu", "--latent", "12"]));
    assert!(!ok && stderr.contains("latent size 12"), "{stderr}");
}

#[test]
fn profile_unet_attributes_the_forward_to_operations_and_layers() {
    for device in ["cpu", "wgpu"] {
        let (ok, stdout, stderr) = run(&mut tiny_synthetic("profile-unet", device));
        assert!(ok, "{device}: {stderr}");
        let out: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        let report = &out["report"];
        let total = report["profiledForwardMillis"].as_f64().unwrap();
        assert!(report["forwardMillis"].as_f64().unwrap() > 0.0);
        assert!(report["forwardBackwardMillis"].as_f64().unwrap() > 0.0);
        let rows = |key: &str| -> Vec<(String, f64, u64)> {
            report["profile"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let kind = r["kind"].as_str().unwrap().to_string();
                    (
                        kind,
                        r["millis"].as_f64().unwrap(),
                        r["count"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        let (ops, layers) = (rows("ops"), rows("layers"));
        let count = |rows: &[(String, f64, u64)], kind: &str| {
            rows.iter().find(|r| r.0 == kind).map_or(0, |r| r.2)
        };
        // The tiny UNet has SD 1.5's layout: 4 down blocks of 2 resnets (attention in the first
        // 3), a mid block (2 resnets, 1 transformer), 4 up blocks of 3 resnets (attention in the
        // last 3): 8 + 2 + 12 resnets, 6 + 1 + 9 transformers, 3 resamplers each way.
        assert_eq!(count(&layers, "resnet"), 22, "{layers:?}");
        assert_eq!(count(&layers, "transformer"), 16, "{layers:?}");
        assert_eq!(count(&layers, "downsampler"), 3, "{layers:?}");
        assert_eq!(count(&layers, "upsampler"), 3, "{layers:?}");
        assert_eq!(count(&layers, "conv_in"), 1);
        // Every transformer runs self- and cross-attention; every resnet two group norms and
        // two 3×3 convolutions.
        assert_eq!(
            count(&ops, "attention core (QKᵀ, softmax, ·V)"),
            32,
            "{ops:?}"
        );
        assert!(count(&ops, "group norm") >= 44, "{ops:?}");
        assert!(count(&ops, "conv 3×3") >= 44, "{ops:?}");
        // Slowest first, and the parts add up to no more than the whole.
        for rows in [&ops, &layers] {
            assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "{rows:?}");
            let sum: f64 = rows.iter().map(|r| r.1).sum();
            assert!(sum > 0.0 && sum <= total * 1.001, "{sum} vs {total}");
        }
    }
    let (ok, _, stderr) = run(bin().args(["profile-unet", "--device", "cpu", "--dry-run"]));
    assert!(!ok && stderr.contains("dry run"), "{stderr}");
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let dir = scratch("errors");
    save_rgb(&dir.join("in.png"), &photo(64, 64)).unwrap();
    std::fs::write(dir.join("bad.json"), "{ nope").unwrap();
    std::fs::write(dir.join("points.json"), r#"{"points": [[1, 1], [9, 9]]}"#).unwrap();
    save_png(&dir.join("small_mask.png"), 10, 10, 1, &[255; 100]).unwrap();
    let edit = |extra: &[&str]| {
        let mut c = bin();
        c.args(["edit", "--device", "cpu", "--no-lora", "--model"])
            .arg(fixture_dir())
            .arg("--image")
            .arg(dir.join("in.png"))
            .arg("--out")
            .arg(dir.join("o"));
        c.args(extra);
        let (ok, _, stderr) = run(&mut c);
        assert!(!ok);
        stderr
    };
    let p = dir.join("points.json").display().to_string();
    assert!(
        edit(&["--points", &dir.join("bad.json").display().to_string()])
            .contains("points.json is not valid")
    );
    assert!(
        edit(&[
            "--points",
            &p,
            "--mask",
            &dir.join("small_mask.png").display().to_string()
        ])
        .contains("10×10")
    );
    assert!(edit(&["--points", &p, "--preset", "turbo"]).contains("turbo"));
    assert!(
        edit(&["--points", &dir.join("missing.json").display().to_string()])
            .contains("missing.json")
    );
    let (ok, _, stderr) = run(bin()
        .args(["edit", "--device", "cpu", "--no-lora", "--model"])
        .arg(dir.join("nowhere"))
        .arg("--image")
        .arg(dir.join("in.png"))
        .arg("--points")
        .arg(&p)
        .arg("--out")
        .arg(dir.join("o")));
    assert!(!ok && stderr.contains("diffusers"), "{stderr}");
}
