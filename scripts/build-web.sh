#!/usr/bin/env bash
# Builds the web package into pkg/: the wasm core (release) and its wasm-bindgen ES module, and
# pkg/build-id.js (the build id, docs/ARCHITECTURE.md §9).
#   --deploy   also writes dist/, the folder to copy to a static host: www/ and a pkg/ whose module
#              has no name/producers sections (function names only serve stack traces), and
#              prints its raw / gzip / brotli sizes. Measured (2026-12): 32.9 MB raw, 4.86 MB
#              gzip -9, 2.81 MB brotli; the development module is 40.2 MB / 6.09 MB gzip.
# GOODDRAG_WASM_OPT=1 also runs wasm-opt (npm binaryen 132): -O2 on the development package,
# -Oz on the deploy one. Measured on the deploy module: 19.5 MB raw but 5.01 MB gzip and
# 2.92 MB brotli — smaller to compile, larger to transfer — and 9 minutes on 2 cores; so off.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
deploy=0
[ "${1:-}" = "--deploy" ] && deploy=1

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

if [ "$deploy" = 1 ]; then
  rm -rf dist
  mkdir -p dist
  cp -r www/. dist/
  phase "web: wasm-bindgen (deploy: no name section)" \
    wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
      --out-dir dist/pkg "$wasm"
  cp pkg/build-id.js dist/pkg/
  if [ "${GOODDRAG_WASM_OPT:-0}" = 1 ]; then
    phase "web: wasm-opt -Oz (deploy)" \
      npm exec --yes --package=binaryen@132.0.0 -- wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
        dist/pkg/gooddrag_bg.wasm -o dist/pkg/gooddrag_bg.wasm
  fi
  node "$ROOT/scripts/build-id.mjs" --check dist/pkg/gooddrag_bg.wasm dist/pkg/build-id.js
  node -e '
    const fs = require("fs"), z = require("zlib");
    const b = fs.readFileSync("dist/pkg/gooddrag_bg.wasm");
    const gz = z.gzipSync(b, { level: 9 }).length;
    const br = z.brotliCompressSync(b, { params: { [z.constants.BROTLI_PARAM_QUALITY]: 11, [z.constants.BROTLI_PARAM_LGWIN]: 24 } }).length;
    const mb = (n) => (n / 1e6).toFixed(2) + " MB";
    console.log(`deploy wasm: ${mb(b.length)} raw, ${mb(gz)} gzip -9, ${mb(br)} brotli 11`);
    if (gz > 5e6) { console.error("the deploy module is over its 5 MB gzip budget"); process.exit(1); }'
  echo "dist/ is the folder to copy to a static host (serve .wasm as application/wasm)."
fi
