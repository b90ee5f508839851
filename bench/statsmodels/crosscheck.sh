#!/usr/bin/env bash
# Cross-check augur-kernels' Holt-Winters and AR forecasts against statsmodels on the co2
# dataset bundled with statsmodels (weekly, resampled to monthly means, gaps forward-filled).
#
#   bench/statsmodels/crosscheck.sh
#
# Env: VENV (default /tmp/augur-statsmodels-venv), CARGO_TARGET_DIR (default target/),
#      AUGUR_WORKSPACE (directory to run cargo in; default the repository root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
workspace="${AUGUR_WORKSPACE:-$repo}"
venv="${VENV:-/tmp/augur-statsmodels-venv}"
target="${CARGO_TARGET_DIR:-$repo/target}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import statsmodels, pandas' 2>/dev/null \
    || "$venv/bin/pip" install --quiet statsmodels pandas

(cd "$workspace" && CARGO_TARGET_DIR="$target" cargo build --quiet --release -p augur-kernels --example forecast_csv)

AUGUR_FORECAST_CSV="$target/release/examples/forecast_csv" "$venv/bin/python" "$here/crosscheck.py"
