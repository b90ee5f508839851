//! Naive and seasonal-naive baselines: the yardsticks MASE is measured against.

use super::{ErrorScale, Forecast, Forecaster};
use std::collections::VecDeque;

/// Forecast = last observed value (optimal for a random walk).
#[derive(Clone, Debug, Default)]
pub struct Naive {
    last: Option<f64>,
    errors: ErrorScale,
}

impl Default for ErrorScale {
    fn default() -> Self {
        ErrorScale::new(0.05)
    }
}

impl Naive {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Forecaster for Naive {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if let Some(last) = self.last {
            self.errors.push(x - last);
        }
        self.last = Some(x);
    }

    fn forecast(&self, h: usize) -> Forecast {
        // Random-walk errors add up: sd grows with sqrt(h).
        let sd = self.errors.sd() * (h.max(1) as f64).sqrt();
        Forecast::with_sd(self.last.unwrap_or(0.0), sd)
    }

    fn name(&self) -> &'static str {
        "naive"
    }
}

/// Forecast = value one season ago (falls back to the last value until a season is seen).
#[derive(Clone, Debug)]
pub struct SeasonalNaive {
    season: usize,
    history: VecDeque<f64>,
    errors: ErrorScale,
}

impl SeasonalNaive {
    /// `season` is clamped to at least 1 (season 1 is plain naive).
    pub fn new(season: usize) -> Self {
        let season = season.max(1);
        SeasonalNaive {
            season,
            history: VecDeque::with_capacity(season),
            errors: ErrorScale::default(),
        }
    }
}

impl Forecaster for SeasonalNaive {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if !self.history.is_empty() {
            self.errors.push(x - self.forecast(1).mean);
        }
        if self.history.len() == self.season {
            self.history.pop_front();
        }
        self.history.push_back(x);
    }

    fn forecast(&self, h: usize) -> Forecast {
        let h = h.max(1);
        let mean = if self.history.len() < self.season {
            self.history.back().copied().unwrap_or(0.0)
        } else {
            // history[0] is the value `season` ticks before the next one.
            self.history[(h - 1) % self.season]
        };
        let seasons_ahead = ((h - 1) / self.season + 1) as f64;
        Forecast::with_sd(mean, self.errors.sd() * seasons_ahead.sqrt())
    }

    fn name(&self) -> &'static str {
        "snaive"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_repeats_last_value() {
        let mut model = Naive::new();
        assert_eq!(model.forecast(1).mean, 0.0);
        model.observe(3.0);
        model.observe(f64::NAN);
        model.observe(5.0);
        assert_eq!(model.forecast(4).mean, 5.0);
    }

    #[test]
    fn seasonal_naive_repeats_last_season() {
        let mut model = SeasonalNaive::new(3);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] {
            model.observe(x);
        }
        let forecasts: Vec<f64> = (1..=6).map(|h| model.forecast(h).mean).collect();
        assert_eq!(forecasts, vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);
    }

    proptest::proptest! {
        /// Naive forecasts the last finite value, seasonal naive the value one season before
        /// the target, at every horizon, for any input.
        #[test]
        fn baselines_repeat_history(
            values in proptest::collection::vec(-1e9f64..1e9, 1..100),
            season in 1usize..12,
            horizon in 1usize..30,
        ) {
            let mut naive = Naive::new();
            let mut seasonal = SeasonalNaive::new(season);
            for &x in &values {
                naive.observe(x);
                seasonal.observe(x);
                naive.observe(f64::NAN);
            }
            let last = values[values.len() - 1];
            proptest::prop_assert_eq!(naive.forecast(horizon).mean, last);
            let expected = if values.len() < season {
                last
            } else {
                values[values.len() - season + (horizon - 1) % season]
            };
            proptest::prop_assert_eq!(seasonal.forecast(horizon).mean, expected);
        }
    }

    #[test]
    fn seasonal_naive_interval_widens_per_season() {
        let mut model = SeasonalNaive::new(2);
        for x in [0.0, 1.0, 1.0, 0.0, 0.0, 1.0] {
            model.observe(x);
        }
        let one = model.forecast(1);
        let three = model.forecast(3);
        assert!(three.upper - three.lower > one.upper - one.lower);
    }
}
