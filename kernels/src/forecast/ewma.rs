//! Exponentially weighted moving average (simple exponential smoothing).

use super::{sanitize_rate, ErrorScale, Forecast, Forecaster};

/// Level-only smoothing: the right model for a noisy, trendless series.
#[derive(Clone, Debug)]
pub struct Ewma {
    alpha: f64,
    level: Option<f64>,
    errors: ErrorScale,
}

impl Ewma {
    /// `alpha` in (0, 1]: weight of the newest value.
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha: sanitize_rate(alpha, 0.3),
            level: None,
            errors: ErrorScale::new(0.05),
        }
    }

    pub fn level(&self) -> Option<f64> {
        self.level
    }
}

impl Forecaster for Ewma {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        match self.level {
            None => self.level = Some(x),
            Some(level) => {
                self.errors.push(x - level);
                self.level = Some(level + self.alpha * (x - level));
            }
        }
    }

    fn forecast(&self, h: usize) -> Forecast {
        let h = h.max(1) as f64;
        // Variance of an SES h-step error: sigma^2 (1 + (h-1) alpha^2).
        let sd = self.errors.sd() * (1.0 + (h - 1.0) * self.alpha * self.alpha).sqrt();
        Forecast::with_sd(self.level.unwrap_or(0.0), sd)
    }

    fn name(&self) -> &'static str {
        "ewma"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constant_series_is_forecast_exactly() {
        let mut model = Ewma::new(0.3);
        for _ in 0..50 {
            model.observe(7.0);
        }
        let forecast = model.forecast(5);
        assert_eq!(forecast.mean, 7.0);
        assert_eq!(forecast.lower, 7.0);
    }

    #[test]
    fn level_moves_by_alpha() {
        let mut model = Ewma::new(0.5);
        model.observe(0.0);
        model.observe(10.0);
        assert_eq!(model.level(), Some(5.0));
    }

    proptest! {
        #[test]
        fn forecast_stays_within_observed_range(values in proptest::collection::vec(-1e6f64..1e6, 1..100), alpha in 0.01f64..1.0) {
            let mut model = Ewma::new(alpha);
            for &x in &values { model.observe(x); }
            let low = values.iter().cloned().fold(f64::INFINITY, f64::min);
            let high = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mean = model.forecast(3).mean;
            prop_assert!(mean >= low - 1e-6 && mean <= high + 1e-6);
            let forecast = model.forecast(3);
            prop_assert!(forecast.lower <= forecast.mean && forecast.mean <= forecast.upper);
        }
    }
}
