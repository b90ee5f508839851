//! Rolling-origin forecasts of the ensemble and each of its members, streamed over one series.
//! Used by `bench/statsmodels/realdata.py` to score augur on real series.
//!
//! `forecast_eval --season 12 --horizon 10 --origins 300,310,320 [--window 48] [--min-window 24] [--error-horizon 2] [--top 2]
//!  [--cusum-threshold 6] [--combination inverse_mase2|...]` < series (one number per line)
//!
//! For every origin t (the model has seen values 0..t), prints one line per model:
//! `t,model,f1,...,fH`. The ensemble and its members see the same stream, so the member
//! forecasts are exactly the ones the ensemble combines.

use augur_kernels::ensemble::{Combination, Ensemble, EnsembleConfig};
use augur_kernels::forecast::Forecaster;
use std::io::{BufRead, Write};
use std::process::ExitCode;

struct Options {
    config: EnsembleConfig,
    horizon: usize,
    origins: Vec<usize>,
}

fn parse_args() -> Result<Options, String> {
    let mut config = EnsembleConfig::default();
    let mut horizon = 10;
    let mut origins = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--season" => {
                let season = number(&value)? as usize;
                config.season = (season >= 2).then_some(season);
            }
            "--horizon" => horizon = (number(&value)? as usize).clamp(1, 1000),
            "--origins" => {
                origins = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<usize>().map_err(|e| format!("{flag}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--window" => config.window = number(&value)? as usize,
            // As the node does for seasonal series: the window spans at least this many ticks.
            "--min-window" => config.window = config.window.max(number(&value)? as usize),
            "--top" => config.top_models = number(&value)? as usize,
            "--error-horizon" => config.error_horizon = number(&value)? as usize,
            "--cusum-threshold" => config.cusum_threshold = number(&value)?,
            "--combination" => {
                config.combination = Combination::from_name(&value)
                    .ok_or_else(|| format!("unknown combination {value}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Options {
        config,
        horizon,
        origins,
    })
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

fn write_line(
    out: &mut impl Write,
    origin: usize,
    name: &str,
    model: &impl Forecaster,
    horizon: usize,
) -> Result<(), String> {
    let mut line = format!("{origin},{name}");
    for h in 1..=horizon {
        line.push_str(&format!(",{}", model.forecast(h).mean));
    }
    writeln!(out, "{line}").map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|options| {
        let values = read_series()?;
        let mut ensemble = Ensemble::new(options.config.clone());
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut origins = options.origins.clone();
        origins.sort_unstable();
        let mut next = origins.iter().peekable();
        for t in 0..=values.len() {
            while next.peek().is_some_and(|&&o| o == t) {
                next.next();
                write_line(&mut out, t, "ensemble", &ensemble, options.horizon)?;
                for model in ensemble.models() {
                    write_line(&mut out, t, model.name(), model, options.horizon)?;
                }
            }
            if let Some(&x) = values.get(t) {
                ensemble.observe(x);
            }
        }
        out.flush().map_err(|e| e.to_string())?;
        eprintln!("shifts_detected={}", ensemble.shifts_detected());
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("forecast_eval: {message}");
            ExitCode::FAILURE
        }
    }
}
