#!/usr/bin/env bash
# Runs the whole test suite on a fresh or warm machine, all set-up included:
# Rust tests on the CPU device and on native wgpu (lavapipe without a GPU), the web build,
# JS unit tests and the browser tests (headless Chromium, SwiftShader WebGPU).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
t0=$SECONDS

"$ROOT/scripts/setup.sh" test
phase "rust: format check" cargo fmt --all -- --check
phase "rust: tests (cpu + native wgpu)" cargo test
"$ROOT/scripts/build-web.sh"
phase "js: unit tests" node --test tests/js/
export GOODDRAG_BIN="$CARGO_TARGET_DIR/debug/gooddrag"
phase "browser: e2e tests" node --test --test-concurrency=1 tests/e2e/

echo "::: all tests passed in $((SECONDS - t0)) s"
