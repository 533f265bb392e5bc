//! The build id (docs/ARCHITECTURE.md §9): FNV-1a over every web source and wasm input — the
//! files under `src/` and `www/` (the generated `www/pkg/` excluded), `Cargo.toml` and
//! `Cargo.lock`, by path and content — as 16 hex digits. The engine reports it
//! (`buildId()`), the wasm carries it in a `gooddrag-build-id` custom section from which
//! `scripts/build-web.sh` writes `pkg/build-id.js`, and the service worker names its cache after
//! it, so a deployment is cached whole and an old engine is never run against new JS.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "pkg") {
                continue;
            }
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Only the browser build carries an id: hashing www/ for native builds would rebuild the
    // crate (and every test binary) on each JS edit for nothing.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("wasm32") {
        return;
    }
    let mut inputs = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")];
    files(Path::new("src"), &mut inputs);
    files(Path::new("www"), &mut inputs);
    inputs.sort();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for path in &inputs {
        h = fnv1a(h, path.to_string_lossy().replace('\\', "/").as_bytes());
        h = fnv1a(h, &[0xff]);
        h = fnv1a(h, &std::fs::read(path).unwrap_or_default());
        h = fnv1a(h, &[0xff]);
    }
    let id = format!("{h:016x}");
    println!("cargo:rustc-env=GOODDRAG_BUILD_ID={id}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("build-id"), &id).expect("OUT_DIR is writable");
    for watched in ["src", "www", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={watched}");
    }
}
