#!/usr/bin/env bash
# Builds the app and serves it at http://127.0.0.1:${PORT:-8080}/ (all set-up included).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/setup.sh" web
"$ROOT/scripts/build-web.sh"
exec node "$ROOT/scripts/serve.mjs" --port "${PORT:-8080}"
