//! Holt's linear trend method with an optional damped trend.

use super::{damped_sum, sanitize_rate, ErrorScale, Forecast, Forecaster};

/// Level + trend smoothing. `phi < 1` damps the trend so long horizons do not run away,
/// which matters for access counts that rise for a while and then flatten.
#[derive(Clone, Debug)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    phi: f64,
    level: f64,
    trend: f64,
    seen: u64,
    errors: ErrorScale,
}

impl Holt {
    /// `alpha`: level rate, `beta`: trend rate, `phi`: damping in (0, 1] (1 = undamped).
    pub fn new(alpha: f64, beta: f64, phi: f64) -> Self {
        Holt {
            alpha: sanitize_rate(alpha, 0.5),
            beta: sanitize_rate(beta, 0.1),
            phi: sanitize_rate(phi, 0.98),
            level: 0.0,
            trend: 0.0,
            seen: 0,
            errors: ErrorScale::new(0.05),
        }
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    pub fn trend(&self) -> f64 {
        self.trend
    }
}

impl Forecaster for Holt {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        match self.seen {
            0 => self.level = x,
            1 => {
                // Two points define the initial line exactly (no forecast error to record).
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let predicted = self.level + self.phi * self.trend;
                self.errors.push(x - predicted);
                let previous_level = self.level;
                self.level = predicted + self.alpha * (x - predicted);
                self.trend = self.phi * self.trend
                    + self.beta * (self.level - previous_level - self.phi * self.trend);
            }
        }
        self.seen += 1;
        if !self.level.is_finite() || !self.trend.is_finite() {
            // Only reachable with absurd magnitudes; restart from the value rather than emit NaN.
            self.level = x;
            self.trend = 0.0;
        }
    }

    fn forecast(&self, h: usize) -> Forecast {
        let h = h.max(1);
        let mean = self.level + damped_sum(self.phi, h) * self.trend;
        // Approximate h-step variance (Hyndman et al. class-1 formula with damping ignored in
        // the trend term): sigma^2 (1 + sum_{j<h} (alpha + alpha*beta*j)^2).
        let mut variance_factor = 1.0;
        for j in 1..h.min(512) {
            let c = self.alpha + self.alpha * self.beta * j as f64;
            variance_factor += c * c;
        }
        Forecast::with_sd(mean, self.errors.sd() * variance_factor.sqrt())
    }

    fn name(&self) -> &'static str {
        "holt"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn damped_trend_flattens() {
        let mut model = Holt::new(0.5, 0.1, 0.8);
        for t in 0..100 {
            model.observe(t as f64);
        }
        let far = model.forecast(1000).mean;
        // With phi = 0.8 the trend contributes at most trend * phi / (1 - phi) = 4 * trend.
        assert!(far < model.level() + 5.0 * model.trend().abs() + 1e-9);
    }

    #[test]
    fn ignores_nan_and_infinity() {
        let mut model = Holt::new(0.5, 0.1, 1.0);
        for t in 0..10 {
            model.observe(t as f64);
            model.observe(f64::NAN);
            model.observe(f64::NEG_INFINITY);
        }
        assert!((model.forecast(1).mean - 10.0).abs() < 1e-9);
    }

    proptest! {
        /// Holt on a pure line forecasts the line exactly, at every horizon.
        #[test]
        fn pure_line_is_forecast_exactly(
            intercept in -1e4f64..1e4,
            slope in -100f64..100.0,
            len in 2usize..200,
            alpha in 0.01f64..1.0,
            beta in 0.01f64..1.0,
            horizon in 1usize..50,
        ) {
            let mut model = Holt::new(alpha, beta, 1.0);
            for t in 0..len {
                model.observe(intercept + slope * t as f64);
            }
            let expected = intercept + slope * (len - 1 + horizon) as f64;
            let forecast = model.forecast(horizon);
            let tolerance = 1e-6 * (1.0 + expected.abs());
            prop_assert!((forecast.mean - expected).abs() <= tolerance,
                "forecast {} expected {}", forecast.mean, expected);
            // A perfect fit has a zero-width interval.
            prop_assert!((forecast.upper - forecast.lower).abs() <= tolerance);
        }

        #[test]
        fn arbitrary_input_never_yields_nan(values in proptest::collection::vec(proptest::num::f64::ANY, 0..60)) {
            let mut model = Holt::new(0.4, 0.2, 0.95);
            for &x in &values { model.observe(x); }
            let forecast = model.forecast(10);
            prop_assert!(forecast.mean.is_finite() && forecast.lower.is_finite() && forecast.upper.is_finite());
        }
    }
}
