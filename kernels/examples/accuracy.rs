//! Rolling-origin backtest of every forecaster and the ensemble on synthetic series.
//!
//! `cargo run --release -p augur-kernels --example accuracy`
//!
//! Each series is generated from a fixed seed. Models are fed the series one tick at a time
//! and, at every origin from tick `WARMUP` on, forecast `h` ticks ahead; MASE divides the mean
//! absolute error by the in-sample mean absolute one-step naive error of the whole series, so
//! naive scores ~1 at h = 1 and anything below 1 beats "tomorrow = today".

use augur_kernels::ensemble::{Ensemble, EnsembleConfig, Model};
use augur_kernels::forecast::Forecaster;
use augur_kernels::rng::SplitMix64;

const LENGTH: usize = 720;
const WARMUP: usize = 96;
const SEASON: usize = 24;

struct SeriesSpec {
    name: &'static str,
    /// Whether the series has structure a model should exploit (goal: ensemble MASE < 1).
    structured: bool,
    values: Vec<f64>,
}

fn generate() -> Vec<SeriesSpec> {
    let mut specs = Vec::new();
    let mut rng = SplitMix64::new(1);
    specs.push(SeriesSpec {
        name: "linear_trend",
        structured: true,
        values: (0..LENGTH)
            .map(|t| 10.0 + 0.5 * t as f64 + 2.0 * rng.normal())
            .collect(),
    });
    let mut rng = SplitMix64::new(2);
    specs.push(SeriesSpec {
        name: "daily_season",
        structured: true,
        values: (0..LENGTH)
            .map(|t| {
                let phase = 2.0 * std::f64::consts::PI * (t % SEASON) as f64 / SEASON as f64;
                100.0
                    + 0.02 * t as f64
                    + 30.0 * phase.sin()
                    + 10.0 * (2.0 * phase).cos()
                    + 3.0 * rng.normal()
            })
            .collect(),
    });
    let mut rng = SplitMix64::new(3);
    let mut ar = vec![28.0, 28.0];
    for t in 2..LENGTH {
        let next = 20.0 + 0.6 * ar[t - 1] - 0.3 * ar[t - 2] + rng.normal();
        ar.push(next);
    }
    specs.push(SeriesSpec {
        name: "ar2",
        structured: true,
        values: ar,
    });
    let mut rng = SplitMix64::new(4);
    let mut level = 100.0;
    specs.push(SeriesSpec {
        name: "random_walk",
        structured: false,
        values: (0..LENGTH)
            .map(|_| {
                level += rng.normal();
                level
            })
            .collect(),
    });
    let mut rng = SplitMix64::new(5);
    specs.push(SeriesSpec {
        name: "level_shift",
        structured: true,
        values: (0..LENGTH)
            .map(|t| {
                let level = if t < 300 {
                    50.0
                } else if t < 500 {
                    80.0
                } else {
                    40.0
                };
                level + 2.0 * rng.normal()
            })
            .collect(),
    });
    let mut rng = SplitMix64::new(6);
    specs.push(SeriesSpec {
        name: "flash_spike",
        structured: true,
        values: (0..LENGTH)
            .map(|t| {
                // Two flash crowds: 8x the base load, decaying with a 10-tick time constant.
                let crowd = |start: usize| {
                    if t >= start {
                        700.0 * (-((t - start) as f64) / 10.0).exp()
                    } else {
                        0.0
                    }
                };
                100.0 + crowd(250) + crowd(500) + 5.0 * rng.normal()
            })
            .collect(),
    });
    let mut rng = SplitMix64::new(7);
    specs.push(SeriesSpec {
        name: "intermittent",
        structured: true,
        values: (0..LENGTH).map(|_| rng.poisson(0.3) as f64).collect(),
    });
    let mut rng = SplitMix64::new(8);
    specs.push(SeriesSpec {
        name: "white_noise",
        structured: false,
        values: (0..LENGTH).map(|_| 10.0 + rng.normal()).collect(),
    });
    specs
}

/// Mean absolute one-step naive error over the whole series.
fn naive_scale(values: &[f64]) -> f64 {
    let diffs: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    diffs.iter().sum::<f64>() / diffs.len().max(1) as f64
}

/// MASE of `model` at horizon `h` with rolling origins WARMUP..len-h.
fn backtest<F: Forecaster>(model: &mut F, values: &[f64], h: usize, scale: f64) -> f64 {
    let mut total_error = 0.0;
    let mut origins = 0usize;
    for (t, &x) in values.iter().enumerate() {
        model.observe(x);
        let target = t + h;
        if t + 1 >= WARMUP && target < values.len() {
            total_error += (model.forecast(h).mean - values[target]).abs();
            origins += 1;
        }
    }
    total_error / origins.max(1) as f64 / scale
}

fn main() {
    let config = EnsembleConfig::with_season(SEASON);
    let model_names: Vec<&'static str> = config.build_models().iter().map(|m| m.name()).collect();
    let mut misses = Vec::new();
    for h in [1usize, 4] {
        println!("\nMASE at horizon h = {h} (rolling origin, {LENGTH} ticks, first {WARMUP} are warm-up; scale = in-sample naive MAE)");
        print!("{:<14}", "series");
        for name in &model_names {
            print!("{name:>13}");
        }
        println!("{:>13}{:>6}  best single", "ensemble", "rank");
        for spec in generate() {
            let scale = naive_scale(&spec.values);
            let mut single = Vec::new();
            for index in 0..model_names.len() {
                let mut model: Model = config.build_models().swap_remove(index);
                single.push(backtest(&mut model, &spec.values, h, scale));
            }
            let mut ensemble = Ensemble::new(config.clone());
            let ensemble_mase = backtest(&mut ensemble, &spec.values, h, scale);
            let rank = 1 + single.iter().filter(|m| **m < ensemble_mase).count();
            let (best_index, best) =
                single
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f64::INFINITY),
                        |acc, (i, m)| if *m < acc.1 { (i, *m) } else { acc },
                    );
            print!("{:<14}", spec.name);
            for mase in &single {
                print!("{mase:>13.3}");
            }
            println!(
                "{:>13.3}{:>6}  {}",
                ensemble_mase, rank, model_names[best_index]
            );
            if h == 1 {
                let naive = single[0];
                if spec.structured && ensemble_mase >= 1.0 {
                    misses.push(format!(
                        "{}: ensemble MASE {ensemble_mase:.3} >= 1",
                        spec.name
                    ));
                }
                if ensemble_mase > 1.10 * best {
                    misses.push(format!(
                        "{}: ensemble {ensemble_mase:.3} is {:.1}% above best single ({best:.3})",
                        spec.name,
                        100.0 * (ensemble_mase / best - 1.0)
                    ));
                }
                if !spec.structured && ensemble_mase > 1.05 * naive {
                    misses.push(format!(
                        "{}: ensemble {ensemble_mase:.3} is {:.1}% worse than naive ({naive:.3})",
                        spec.name,
                        100.0 * (ensemble_mase / naive - 1.0)
                    ));
                }
            }
        }
    }
    println!("\nGoals at h = 1 (ensemble < 1 on structured series, within 10% of the best single model, within 5% of naive on white noise and random walk):");
    if misses.is_empty() {
        println!("  all met");
    } else {
        for miss in misses {
            println!("  MISSED {miss}");
        }
    }
}
