#!/usr/bin/env bash
# The one-call GPU benchmark (README "GPU benchmark"): every phase of the default edit on native
# wgpu (Vulkan) for each configuration — f16 weights with f16 compute (`f16c-…`) and with f32
# compute (`f16-…`), f32 weights (`f32-…`); each backward plan — one profiled f16 UNet forward,
# the same binary built with burn's
# `autotune` + `fusion` when it was prepared, and the same phases in PyTorch (diffusers' UNet
# and VAE, random weights, fp16 autocast) on the same machine; then one table, ours ÷ PyTorch.
#
#   scripts/gpu-bench.sh --prepare   on a CPU machine: release binaries, Vulkan loader .debs and
#                                    the diffusers wheel into .gpu-bench/ (git-ignored; carry it)
#   scripts/gpu-bench.sh             on the GPU machine, from the repository root (≈ 5 minutes)
#   scripts/gpu-bench.sh --smoke     anywhere: lavapipe, latent 8, the tiny architecture; the
#                                    PyTorch half on the CPU where torch and diffusers import,
#                                    else reported as skipped (nothing is downloaded)
#
# Reports go to $OUT (the device tool's folder) or test-output/gpu-bench/: ours-*.json,
# profile.json, torch.json (or torch.skipped), table.md (also printed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --prepare) MODE=prepare ;;
  "") ;;
  *) echo "usage: $0 [--smoke|--prepare]" >&2; exit 2 ;;
esac
KIT="$ROOT/.gpu-bench"

if [ "$MODE" = prepare ]; then
  source "$ROOT/scripts/lib.sh"
  grep -qx '/.gpu-bench/' .git/info/exclude 2>/dev/null || echo '/.gpu-bench/' >> .git/info/exclude
  mkdir -p "$KIT/debs" "$KIT/wheels" /tmp/amd64/partial
  cargo build --release --bin gooddrag
  cp "$CARGO_TARGET_DIR/release/gooddrag" "$KIT/gooddrag" && strip "$KIT/gooddrag"
  cargo build --release --bin gooddrag --features autotune,fusion
  cp "$CARGO_TARGET_DIR/release/gooddrag" "$KIT/gooddrag-tuned" && strip "$KIT/gooddrag-tuned"
  cargo build --release --bin gooddrag  # leave the default build in place
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update >/dev/null
  (cd "$KIT/debs" && apt-get $o download libvulkan1)
  # PyTorch is on the GPU machine, diffusers is not: its wheel and the few it needs there.
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" diffusers==0.42.1 huggingface-hub importlib-metadata zipp safetensors
  du -sh "$KIT"
  exit 0
fi

OUTDIR="${OUT:-$ROOT/test-output/gpu-bench}"
mkdir -p "$OUTDIR"
rm -f "$OUTDIR"/ours-*.json "$OUTDIR"/torch.json "$OUTDIR"/torch.skipped "$OUTDIR"/table.md
if [ "$MODE" = smoke ]; then
  BIN="${GOODDRAG_BENCH_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/gooddrag/target}/debug/gooddrag}"
  LATENT=8
  ARCH=(--architecture "$ROOT/tests/fixtures/tiny-sd")
  WARM=(--no-warm-up)
  CONFIGS=("f16c-recompute" "f16-autodiff")
else
  BIN="${GOODDRAG_BENCH_BIN:-$KIT/gooddrag}"
  LATENT=64
  ARCH=()
  WARM=()
  CONFIGS=("f16c-recompute" "f16c-recompute-top" "f16c-autodiff" "f16c-recompute-chunked" "f16-recompute" "f16-recompute-top" "f32-recompute")
  # The Vulkan loader and the Python packages the machine lacks (prepared with --prepare).
  if ! ldconfig -p | grep -q libvulkan && ls "$KIT"/debs/*.deb >/dev/null 2>&1; then
    for f in "$KIT"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
  [ -f "$VK_DRIVER_FILES" ] || unset VK_DRIVER_FILES
  if ls "$KIT"/wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/gpu-bench-site "$KIT"/wheels/*.whl && export PYTHONPATH=/tmp/gpu-bench-site
  fi
fi
[ -x "$BIN" ] || { echo "no gooddrag binary at $BIN (run $0 --prepare, or set GOODDRAG_BENCH_BIN)" >&2; exit 1; }

"$BIN" probe --device wgpu > "$OUTDIR/probe.txt" 2>&1 || true
for config in "${CONFIGS[@]}"; do
  weights="${config%%-*}"
  plan="${config#*-}"
  extra=(--precision f32)
  [ "$weights" = f32 ] && extra+=(--f32-weights)
  [ "$weights" = f16c ] && extra=(--precision f16)
  # "-chunked": attention by chunks with materialised scores (what the fused kernels save).
  if [ "${plan%-chunked}" != "$plan" ]; then plan="${plan%-chunked}"; extra+=(--chunked-attention); fi
  echo "::: ours $config" >&2
  "$BIN" bench-synthetic --latent "$LATENT" --device wgpu "${ARCH[@]}" "${WARM[@]}" \
    --backward-plan "$plan" "${extra[@]}" --json > "$OUTDIR/ours-$config.json"
done
if [ -x "$KIT/gooddrag-tuned" ] && [ "$MODE" = full ]; then
  echo "::: ours with autotune + fusion" >&2
  "$KIT/gooddrag-tuned" bench-synthetic --latent "$LATENT" --device wgpu \
    --backward-plan recompute --precision f16 --json > "$OUTDIR/ours-f16c-recompute-tuned.json"
fi
echo "::: profile" >&2
"$BIN" profile-unet --latent "$LATENT" --device wgpu "${ARCH[@]}" "${WARM[@]}" --precision f16 --json > "$OUTDIR/profile.json"

if python3 -c 'import torch, diffusers' >/dev/null 2>&1; then
  echo "::: PyTorch" >&2
  torch_arch=()
  [ "$MODE" = smoke ] && torch_arch=(--architecture "$ROOT/tests/fixtures/tiny-sd")
  python3 "$ROOT/scripts/torch_bench.py" --latent "$LATENT" "${torch_arch[@]}" > "$OUTDIR/torch.json"
else
  echo "PyTorch or diffusers is not installed for $(command -v python3 || echo 'python3 (absent)')" > "$OUTDIR/torch.skipped"
fi
python3 "$ROOT/scripts/gpu_bench_table.py" "$OUTDIR" | tee "$OUTDIR/table.md"
