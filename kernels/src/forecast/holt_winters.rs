//! Additive Holt-Winters: level + (damped) trend + additive season of configurable length.

use super::{damped_sum, one_step_errors, ErrorScale, Forecast, Forecaster};

/// Smoothing parameters. Rates are clamped to [0, 1]; `phi` to (0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HoltWintersParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
}

impl Default for HoltWintersParams {
    fn default() -> Self {
        HoltWintersParams {
            alpha: 0.3,
            beta: 0.05,
            gamma: 0.2,
            phi: 0.98,
        }
    }
}

fn unit_interval(rate: f64, default: f64) -> f64 {
    if rate.is_finite() {
        rate.clamp(0.0, 1.0)
    } else {
        default
    }
}

/// Additive Holt-Winters. It buffers the first two seasons to initialise level, trend and
/// seasonal indices (heuristic initialisation); until then it forecasts the last value.
#[derive(Clone, Debug)]
pub struct HoltWinters {
    params: HoltWintersParams,
    season: usize,
    warmup: Vec<f64>,
    initialised: bool,
    level: f64,
    trend: f64,
    seasonal: Vec<f64>,
    /// Index in `seasonal` of the component that applies to the next observation.
    next_season_index: usize,
    errors: ErrorScale,
}

impl HoltWinters {
    /// `season` is clamped to at least 2.
    pub fn new(season: usize, params: HoltWintersParams) -> Self {
        let season = season.max(2);
        let defaults = HoltWintersParams::default();
        let params = HoltWintersParams {
            alpha: unit_interval(params.alpha, defaults.alpha),
            beta: unit_interval(params.beta, defaults.beta),
            gamma: unit_interval(params.gamma, defaults.gamma),
            phi: if params.phi.is_finite() && params.phi > 0.0 {
                params.phi.min(1.0)
            } else {
                defaults.phi
            },
        };
        HoltWinters {
            params,
            season,
            warmup: Vec::with_capacity(2 * season),
            initialised: false,
            level: 0.0,
            trend: 0.0,
            seasonal: vec![0.0; season],
            next_season_index: 0,
            errors: ErrorScale::new(0.05),
        }
    }

    pub fn params(&self) -> HoltWintersParams {
        self.params
    }

    pub fn season(&self) -> usize {
        self.season
    }

    /// Choose alpha, beta, gamma (phi fixed) minimising the one-step squared error on
    /// `history`: a coarse grid then a fine grid around the best point. Deterministic, no
    /// optimiser dependency; a few milliseconds for a few hundred points.
    pub fn fit(history: &[f64], season: usize, phi: f64) -> HoltWintersParams {
        let season = season.max(2);
        let score = |params: HoltWintersParams| -> f64 {
            let mut model = HoltWinters::new(season, params);
            let errors = one_step_errors(&mut model, history);
            let sse: f64 = errors.iter().skip(2 * season).map(|e| e * e).sum();
            if sse.is_finite() {
                sse
            } else {
                f64::INFINITY
            }
        };
        let mut best = HoltWintersParams {
            phi,
            ..HoltWintersParams::default()
        };
        let mut best_score = score(best);
        // Coarse grid centred at 0.5 covers [0, 1]; two refinements around the best point.
        let passes = [(0.5, 0.1), (f64::NAN, 0.02), (f64::NAN, 0.004)];
        for (fixed_centre, step) in passes {
            let centre = if fixed_centre.is_nan() {
                best
            } else {
                HoltWintersParams {
                    alpha: fixed_centre,
                    beta: fixed_centre,
                    gamma: fixed_centre,
                    phi,
                }
            };
            for i in -5..=5 {
                for j in -5..=5 {
                    for k in -5..=5 {
                        let candidate = HoltWintersParams {
                            alpha: (centre.alpha + step * f64::from(i)).clamp(0.01, 1.0),
                            beta: (centre.beta + step * f64::from(j)).clamp(0.0, 1.0),
                            gamma: (centre.gamma + step * f64::from(k)).clamp(0.0, 1.0),
                            phi,
                        };
                        let candidate_score = score(candidate);
                        if candidate_score < best_score {
                            best_score = candidate_score;
                            best = candidate;
                        }
                    }
                }
            }
        }
        best
    }

    fn initialise(&mut self) {
        let m = self.season;
        let first_mean = self.warmup[..m].iter().sum::<f64>() / m as f64;
        let second_mean = self.warmup[m..2 * m].iter().sum::<f64>() / m as f64;
        let trend = (second_mean - first_mean) / m as f64;
        let centre = (m as f64 - 1.0) / 2.0;
        for i in 0..m {
            // Seasonal index = average deviation from the within-season trend line.
            let offset = (i as f64 - centre) * trend;
            let first = self.warmup[i] - (first_mean + offset);
            let second = self.warmup[m + i] - (second_mean + offset);
            self.seasonal[i] = (first + second) / 2.0;
        }
        self.trend = trend;
        self.level = second_mean + centre * trend;
        self.next_season_index = 0;
        self.initialised = true;
        self.warmup = Vec::new();
    }
}

impl Forecaster for HoltWinters {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if !self.initialised {
            if let Some(&last) = self.warmup.last() {
                self.errors.push(x - last);
            }
            self.warmup.push(x);
            if self.warmup.len() == 2 * self.season {
                self.initialise();
            }
            return;
        }
        let HoltWintersParams {
            alpha,
            beta,
            gamma,
            phi,
        } = self.params;
        let seasonal = self.seasonal[self.next_season_index];
        let base = self.level + phi * self.trend;
        self.errors.push(x - (base + seasonal));
        let new_level = alpha * (x - seasonal) + (1.0 - alpha) * base;
        let new_trend = beta * (new_level - self.level) + (1.0 - beta) * phi * self.trend;
        let new_seasonal = gamma * (x - base) + (1.0 - gamma) * seasonal;
        if new_level.is_finite() && new_trend.is_finite() && new_seasonal.is_finite() {
            self.level = new_level;
            self.trend = new_trend;
            self.seasonal[self.next_season_index] = new_seasonal;
        }
        self.next_season_index = (self.next_season_index + 1) % self.season;
    }

    fn forecast(&self, h: usize) -> Forecast {
        let h = h.max(1);
        if !self.initialised {
            let last = self.warmup.last().copied().unwrap_or(0.0);
            return Forecast::with_sd(last, self.errors.sd() * (h as f64).sqrt());
        }
        let HoltWintersParams {
            alpha, beta, gamma, ..
        } = self.params;
        let seasonal = self.seasonal[(self.next_season_index + h - 1) % self.season];
        let mean = self.level + damped_sum(self.params.phi, h) * self.trend + seasonal;
        let mut variance_factor = 1.0;
        for j in 1..h.min(512) {
            let seasonal_hit = if j % self.season == 0 { gamma } else { 0.0 };
            let c = alpha + alpha * beta * j as f64 + seasonal_hit;
            variance_factor += c * c;
        }
        Forecast::with_sd(mean, self.errors.sd() * variance_factor.sqrt())
    }

    fn name(&self) -> &'static str {
        "holt_winters"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seasonal_line(t: usize, season: usize) -> f64 {
        let pattern = [3.0, -1.0, 4.0, -2.0, 0.5, -4.5];
        10.0 + 0.5 * t as f64 + pattern[t % season]
    }

    #[test]
    fn exact_on_trend_plus_season() {
        let season = 6;
        let params = HoltWintersParams {
            alpha: 0.4,
            beta: 0.1,
            gamma: 0.3,
            phi: 1.0,
        };
        let mut model = HoltWinters::new(season, params);
        for t in 0..60 {
            model.observe(seasonal_line(t, season));
        }
        for h in 1..=12 {
            let expected = seasonal_line(59 + h, season);
            assert!((model.forecast(h).mean - expected).abs() < 1e-9);
        }
    }

    #[test]
    fn fit_prefers_low_error_parameters() {
        let season = 6;
        let values: Vec<f64> = (0..120)
            .map(|t| seasonal_line(t, season) + if t % 7 == 0 { 1.0 } else { -0.3 })
            .collect();
        let fitted = HoltWinters::fit(&values, season, 1.0);
        let sse = |params| {
            let mut model = HoltWinters::new(season, params);
            one_step_errors(&mut model, &values)
                .iter()
                .skip(2 * season)
                .map(|e| e * e)
                .sum::<f64>()
        };
        assert!(sse(fitted) <= sse(HoltWintersParams::default()));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_yields_nan(
            values in proptest::collection::vec(proptest::num::f64::ANY, 0..80),
            season in 0usize..10,
        ) {
            let mut model = HoltWinters::new(season, HoltWintersParams::default());
            for &x in &values { model.observe(x); }
            for h in [0, 1, 7, 30] {
                let forecast = model.forecast(h);
                prop_assert!(forecast.mean.is_finite() && forecast.lower.is_finite() && forecast.upper.is_finite());
            }
        }
    }
}
