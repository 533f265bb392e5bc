# Shared by the scripts: paths, the shared cargo target directory and timed phases.
# Source it; it does not run anything by itself.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One target directory outside the clone, shared by the README commands, CI and development on
# the same machine, so repeated runs build incrementally (burn + wgpu cost tens of minutes cold).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gooddrag/target}"
export PATH="$HOME/.cargo/bin:$PATH"
# wgpu warns without it when no session runtime dir exists (CI, containers).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

# phase NAME COMMAND...: runs a command and prints how long it took (the CI log reads these).
phase() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "::: $name"
  local rc=0
  "$@" || rc=$?
  echo "::: $name: $((SECONDS - t0)) s (exit $rc)"
  return $rc
}

# The wasm-bindgen version pinned in Cargo.lock: the CLI must equal it exactly.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
