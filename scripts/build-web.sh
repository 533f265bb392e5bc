#!/usr/bin/env bash
# Builds the web package into pkg/: the wasm core (release) and its wasm-bindgen ES module.
# GOODDRAG_WASM_OPT=1 also runs wasm-opt -O2 (npm binaryen 132; slow, optional).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

phase "web: cargo build (wasm32, release)" \
  cargo build --lib --release --target wasm32-unknown-unknown
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/gooddrag.wasm"
phase "web: wasm-bindgen" \
  wasm-bindgen --target web --no-typescript --out-dir pkg "$wasm"
# The build id (build.rs) from the engine's custom section, for the workers (service, engine).
node "$ROOT/scripts/build-id.mjs" "$wasm" pkg/build-id.js
if [ "${GOODDRAG_WASM_OPT:-0}" = 1 ]; then
  phase "web: wasm-opt" \
    npm exec --yes --package=binaryen@132.0.0 -- wasm-opt -O2 pkg/gooddrag_bg.wasm -o pkg/gooddrag_bg.wasm
fi
raw=$(stat -c %s pkg/gooddrag_bg.wasm)
gz=$(gzip -9 -c pkg/gooddrag_bg.wasm | wc -c)
echo "wasm size: $raw bytes raw, $gz bytes gzip -9"
