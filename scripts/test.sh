#!/usr/bin/env bash
# Runs the whole test suite on a fresh or warm machine, all set-up included:
# Rust tests on the CPU device and on native wgpu (lavapipe without a GPU), the web build,
# JS unit tests and the browser tests (headless Chromium, SwiftShader WebGPU).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
t0=$SECONDS

GOODDRAG_SKIP_BINDGEN=1 "$ROOT/scripts/setup.sh" test
# On a cold machine, building wasm-bindgen-cli (minutes) overlaps the native Rust build.
bindgen_log="$(mktemp)"
"$ROOT/scripts/setup.sh" bindgen >"$bindgen_log" 2>&1 &
bindgen_pid=$!

phase "rust: format check" cargo fmt --all -- --check
# Lints for both builds: the native one (library, CLI, tests) and the browser's wasm32 library.
phase "rust: clippy (native, all targets)" cargo clippy --all-targets -- -D warnings
phase "rust: clippy (wasm32)" cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings
phase "rust: tests (cpu + native wgpu)" cargo test
bindgen_rc=0
wait "$bindgen_pid" || bindgen_rc=$?
cat "$bindgen_log"
[ "$bindgen_rc" -eq 0 ] || { echo "wasm-bindgen-cli installation failed"; exit "$bindgen_rc"; }

# --deploy: also dist/ (the static-host folder, name section stripped, size budget checked),
# which the network browser test serves.
"$ROOT/scripts/build-web.sh" --deploy
phase "js: unit tests" node --test tests/js/
export GOODDRAG_BIN="$CARGO_TARGET_DIR/debug/gooddrag"
phase "browser: e2e tests" node --test --test-concurrency=1 tests/e2e/

echo "::: all tests passed in $((SECONDS - t0)) s"
