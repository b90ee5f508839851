"""Compare augur-kernels forecasts with statsmodels on co2 (monthly).

Rolling origin: every 12 months over the last 10 years, both implementations are fitted on
everything before the origin and forecast the next 12 months. MASE uses the in-sample
seasonal-naive (lag 12) mean absolute error of the training part as its scale, the same for
both implementations, so the numbers are directly comparable.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import statsmodels.api as sm
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.holtwinters import ExponentialSmoothing

SEASON = 12
HORIZON = 12
AR_ORDER = 13
ORIGINS = 10

warnings.filterwarnings("ignore")


def load_series():
    data = sm.datasets.co2.load_pandas().data
    monthly = data["co2"].resample("MS").mean().ffill().bfill()
    return monthly.to_numpy(dtype=float)


def augur_forecast(binary, model, train):
    stdin = "\n".join(repr(float(x)) for x in train) + "\n"
    args = [binary, "--model", model, "--season", str(SEASON), "--order", str(AR_ORDER),
            "--horizon", str(HORIZON)]
    run = subprocess.run(args, input=stdin, capture_output=True, text=True, check=True)
    return np.array([float(line) for line in run.stdout.split()]), run.stderr.strip()


def statsmodels_forecast(model, train):
    if model == "holt_winters":
        fit = ExponentialSmoothing(train, trend="add", seasonal="add",
                                   seasonal_periods=SEASON).fit()
        return np.asarray(fit.forecast(HORIZON)), (
            f"alpha={fit.params['smoothing_level']:.3f} "
            f"beta={fit.params['smoothing_trend']:.3f} "
            f"gamma={fit.params['smoothing_seasonal']:.3f}")
    fit = AutoReg(train, lags=AR_ORDER, trend="c").fit()
    forecast = fit.predict(start=len(train), end=len(train) + HORIZON - 1)
    return np.asarray(forecast), f"intercept={fit.params[0]:.4f}"


def statsmodels_with_augur_params(train, augur_params):
    """Holt-Winters in statsmodels with augur's fitted rates and statsmodels' heuristic
    initialisation: isolates the recursion from the parameter search."""
    values = dict(item.split("=") for item in augur_params.split()[1:])
    fit = ExponentialSmoothing(train, trend="add", seasonal="add", seasonal_periods=SEASON,
                               initialization_method="heuristic").fit(
        smoothing_level=float(values["alpha"]), smoothing_trend=float(values["beta"]),
        smoothing_seasonal=float(values["gamma"]), optimized=False)
    return np.asarray(fit.forecast(HORIZON))


def scale(train):
    return np.mean(np.abs(train[SEASON:] - train[:-SEASON]))


def main():
    binary = os.environ.get("AUGUR_FORECAST_CSV")
    if not binary or not os.path.exists(binary):
        sys.exit("set AUGUR_FORECAST_CSV to the forecast_csv example binary")
    y = load_series()
    n = len(y)
    origins = [n - HORIZON * k for k in range(ORIGINS, 0, -1)]
    print(f"co2 monthly: {n} points; {ORIGINS} origins, horizon {HORIZON}, "
          f"MASE scale = in-sample seasonal-naive MAE")
    print("mean |diff| = mean absolute difference between the two implementations' forecasts")
    print(f"{'model':<14}{'statsmodels':>13}{'augur':>10}{'augur/sm':>10}"
          f"{'mean |diff|':>13}  goal: augur <= 1.05 x statsmodels")
    for model in ["holt_winters", "ar"]:
        sm_errors, augur_errors, differences, same_params_errors = [], [], [], []
        for origin in origins:
            train, test = y[:origin], y[origin:origin + HORIZON]
            s = scale(train)
            ours, our_params = augur_forecast(binary, model, train)
            theirs, their_params = statsmodels_forecast(model, train)
            augur_errors.append(np.mean(np.abs(ours - test)) / s)
            sm_errors.append(np.mean(np.abs(theirs - test)) / s)
            differences.append(np.mean(np.abs(ours - theirs)))
            if model == "holt_winters":
                same = statsmodels_with_augur_params(train, our_params)
                same_params_errors.append(np.mean(np.abs(same - test)) / s)
        sm_mase, augur_mase = np.mean(sm_errors), np.mean(augur_errors)
        ratio = augur_mase / sm_mase
        print(f"{model:<14}{sm_mase:>13.4f}{augur_mase:>10.4f}{ratio:>10.3f}"
              f"{np.mean(differences):>13.4f}  {'met' if ratio <= 1.05 else 'MISSED'}"
              f"{' (and within 5% either way)' if abs(ratio - 1) <= 0.05 else ' (differs by more than 5%)'}")
        print(f"    last fit: augur {our_params} | statsmodels {their_params}")
        if same_params_errors:
            print(f"    statsmodels with augur's rates (heuristic init): MASE "
                  f"{np.mean(same_params_errors):.4f}")


if __name__ == "__main__":
    main()
