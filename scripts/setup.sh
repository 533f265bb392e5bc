#!/usr/bin/env bash
# Installs what the project needs, idempotently (a second run costs seconds).
#   scripts/setup.sh web      — Rust wasm target + wasm-bindgen-cli (building and serving the app)
#   scripts/setup.sh test     — the above + Debian packages (lavapipe Vulkan, Chromium) + npm packages
#   scripts/setup.sh bindgen  — only wasm-bindgen-cli (test.sh runs it alongside the Rust build)
# GOODDRAG_SKIP_BINDGEN=1 leaves wasm-bindgen-cli out of `web` and `test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
scope="${1:-test}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages() {
  local missing=()
  for p in mesa-vulkan-drivers libvulkan1 chromium; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

lint_components() {
  # test.sh runs cargo fmt and cargo clippy; a minimal rustup profile lacks them.
  local installed; installed="$(rustup component list --installed)"
  for c in clippy rustfmt; do
    grep -q "^$c" <<<"$installed" || rustup component add "$c"
  done
}

wasm_target() {
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
}

wasm_bindgen_cli() {
  local want; want="$(wasm_bindgen_version)"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    # --locked fails for this version (see shared toolchain notes); the registry build is fine.
    # --force: reinstall when cargo remembers an install whose binary is missing or stale.
    cargo install --force wasm-bindgen-cli --version "$want"
  fi
}

npm_packages() {
  cd "$ROOT"
  if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
}

if [ "$scope" = bindgen ]; then
  phase "setup: wasm-bindgen-cli" wasm_bindgen_cli
  exit
fi
phase "setup: rust wasm target" wasm_target
[ "${GOODDRAG_SKIP_BINDGEN:-0}" = 1 ] || phase "setup: wasm-bindgen-cli" wasm_bindgen_cli
if [ "$scope" = test ]; then
  phase "setup: rust lint components" lint_components
  phase "setup: debian packages" apt_packages
  phase "setup: npm packages" npm_packages
fi
