//! Read a series (one number per line) on stdin, fit a model on all of it, print forecasts for
//! horizons 1..=H, one per line. Used by `bench/statsmodels/crosscheck.sh` to compare with
//! statsmodels.
//!
//! `forecast_csv --model holt_winters|ar|holt|ewma|naive|ensemble [--season 12] [--order 13]
//!  [--horizon 12] [--damping 1.0]`
//!
//! Holt-Winters parameters are chosen by `HoltWinters::fit` (grid search on one-step SSE);
//! AR(p) uses recursive least squares without forgetting, which is ordinary least squares.

use augur_kernels::ensemble::{Ensemble, EnsembleConfig};
use augur_kernels::forecast::holt_winters::HoltWinters;
use augur_kernels::forecast::{ArRls, Ewma, Forecaster, Holt, Naive};
use std::io::{BufRead, Write};
use std::process::ExitCode;

struct Options {
    model: String,
    season: usize,
    order: usize,
    horizon: usize,
    damping: f64,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        model: "holt_winters".into(),
        season: 12,
        order: 13,
        horizon: 12,
        damping: 1.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => options.model = value,
            "--season" => options.season = number(&value)? as usize,
            "--order" => options.order = number(&value)? as usize,
            "--horizon" => options.horizon = number(&value)? as usize,
            "--damping" => options.damping = number(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

fn read_series() -> Result<Vec<f64>, String> {
    let mut values = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let value: f64 = trimmed
            .parse()
            .map_err(|e| format!("bad number {trimmed:?}: {e}"))?;
        values.push(value);
    }
    Ok(values)
}

fn run_model<F: Forecaster>(mut model: F, values: &[f64], horizon: usize) -> Vec<f64> {
    for &x in values {
        model.observe(x);
    }
    (1..=horizon).map(|h| model.forecast(h).mean).collect()
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|options| {
        let values = read_series()?;
        let forecasts = match options.model.as_str() {
            "holt_winters" => {
                let params = HoltWinters::fit(&values, options.season, options.damping);
                eprintln!(
                    "holt_winters alpha={:.3} beta={:.3} gamma={:.3} phi={:.3}",
                    params.alpha, params.beta, params.gamma, params.phi
                );
                run_model(
                    HoltWinters::new(options.season, params),
                    &values,
                    options.horizon,
                )
            }
            "ar" => {
                let mut model = ArRls::new(options.order, 1.0);
                for &x in &values {
                    model.observe(x);
                }
                let (intercept, coefficients) = model.coefficients();
                eprintln!("ar intercept={intercept:.4} coefficients={coefficients:.4?}");
                (1..=options.horizon)
                    .map(|h| model.forecast(h).mean)
                    .collect()
            }
            "holt" => run_model(
                Holt::new(0.3, 0.1, options.damping),
                &values,
                options.horizon,
            ),
            "ewma" => run_model(Ewma::new(0.3), &values, options.horizon),
            "naive" => run_model(Naive::new(), &values, options.horizon),
            "ensemble" => run_model(
                Ensemble::new(EnsembleConfig::with_season(options.season)),
                &values,
                options.horizon,
            ),
            other => return Err(format!("unknown model {other}")),
        };
        let mut out = std::io::stdout().lock();
        for forecast in forecasts {
            writeln!(out, "{forecast}").map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("forecast_csv: {message}");
            ExitCode::FAILURE
        }
    }
}
