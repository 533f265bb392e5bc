//! `scripts/gpu-bench.sh --smoke`: the one-call GPU benchmark runs here, before a GPU is ever
//! lent — every configuration of `bench-synthetic` on lavapipe (latent 8, tiny architecture)
//! with a well-formed report each (the official schedule's counts, memory within the binding
//! limit, the backward plan's work), the profile, and the table joining ours with PyTorch's
//! (its half runs on the CPU where `python3` imports torch and diffusers, else it is reported
//! as skipped: the suite never downloads PyTorch).

mod parity_support;

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_benchmark_runs_end_to_end_in_smoke_mode() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpu-bench-smoke");
    let _ = std::fs::remove_dir_all(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new("bash")
        .arg(root.join("scripts/gpu-bench.sh"))
        .arg("--smoke")
        .env("GOODDRAG_BENCH_BIN", env!("CARGO_BIN_EXE_gooddrag"))
        .env("OUT", &out)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for (config, plan, precision) in [
        ("f16c-recompute", "recompute", "f16"),
        ("f16-autodiff", "autodiff", "f32"),
    ] {
        let report = read(&format!("ours-{config}.json"));
        parity_support::check_edit_bench(&report, "wgpu", true, plan);
        assert_eq!(report["report"]["precision"], precision, "{config}");
    }
    assert!(read("profile.json").is_object());
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert_eq!(table, stdout, "the table is printed as written");
    for row in [
        "VAE encode",
        "LoRA step",
        "motion-supervision",
        "whole default edit",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("| {row}")) || l.contains(row)),
            "{row}: {table}"
        );
    }
    assert!(table.contains("ours f16c-recompute (ms)") && table.contains("ours f16-autodiff (ms)"));
    assert!(
        table.contains("compute f16,") && table.contains("compute f32,"),
        "{table}"
    );
    let has_torch = Command::new("python3")
        .args(["-c", "import torch, diffusers"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_torch {
        assert!(read("torch.json")["phases"].as_array().unwrap().len() == 7);
        assert!(!table.contains("skipped"), "{table}");
    } else {
        assert!(table.contains("PyTorch: skipped"), "{table}");
        eprintln!("PyTorch half: skipped (python3 cannot import torch and diffusers)");
    }
}
