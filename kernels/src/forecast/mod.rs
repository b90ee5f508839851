//! Forecasters behind one small trait.
//!
//! Every model is online: `observe` folds in one new value per tick and `forecast(h)` returns
//! the mean `h` ticks ahead with a ~95% prediction interval. Non-finite observations are
//! ignored (a broken counter must not poison a series), and every forecast is finite.

pub mod ar;
pub mod ewma;
pub mod holt;
pub mod holt_winters;
pub mod naive;

pub use ar::ArRls;
pub use ewma::Ewma;
pub use holt::Holt;
pub use holt_winters::HoltWinters;
pub use naive::{Naive, SeasonalNaive};

/// z-score of a two-sided 95% normal interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A point forecast with a prediction interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Forecast {
    /// Interval `mean ± Z95 * sd`, with non-finite parts replaced so callers never see NaN.
    pub fn with_sd(mean: f64, sd: f64) -> Self {
        let mean = if mean.is_finite() { mean } else { 0.0 };
        let sd = if sd.is_finite() && sd > 0.0 { sd } else { 0.0 };
        // Clamp keeps huge-but-finite inputs from overflowing the bounds to infinity.
        Forecast {
            mean,
            lower: (mean - Z95 * sd).clamp(f64::MIN, f64::MAX),
            upper: (mean + Z95 * sd).clamp(f64::MIN, f64::MAX),
        }
    }
}

/// The one interface the ensemble drives.
pub trait Forecaster {
    /// Fold in the value observed this tick. Non-finite values are ignored.
    fn observe(&mut self, x: f64);
    /// Forecast `h` ticks ahead (`h = 0` is treated as 1).
    fn forecast(&self, h: usize) -> Forecast;
    /// Short stable name for reports.
    fn name(&self) -> &'static str;
    /// Sum of the mean forecasts for horizons 1..=horizon (predicted volume over the horizon).
    /// Models with a cheaper path than `horizon` separate forecasts override this.
    fn forecast_sum(&self, horizon: usize) -> f64 {
        (1..=horizon).map(|h| self.forecast(h).mean).sum()
    }
}

/// Running scale of one-step errors, used for prediction intervals.
///
/// Averages squared errors equally until it has seen `1/alpha` of them, then exponentially, so
/// the interval is sensible early and still tracks regime changes later.
#[derive(Clone, Debug)]
pub struct ErrorScale {
    alpha: f64,
    count: u64,
    mean_square: f64,
}

impl ErrorScale {
    pub fn new(alpha: f64) -> Self {
        ErrorScale {
            alpha: sanitize_rate(alpha, 0.05),
            count: 0,
            mean_square: 0.0,
        }
    }

    pub fn push(&mut self, error: f64) {
        if !error.is_finite() {
            return;
        }
        let weight = (1.0 / (self.count + 1) as f64).max(self.alpha);
        let updated = self.mean_square + weight * (error * error - self.mean_square);
        if updated.is_finite() {
            self.count += 1;
            self.mean_square = updated;
        }
    }

    /// One-step standard deviation (0 before any error is seen).
    pub fn sd(&self) -> f64 {
        self.mean_square.max(0.0).sqrt()
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Clamp a smoothing rate to (0, 1]; fall back to `default` if it is not a usable number.
pub(crate) fn sanitize_rate(rate: f64, default: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate.min(1.0)
    } else {
        default
    }
}

/// Sum of `phi^1 + ... + phi^h` (the damped-trend multiplier).
pub(crate) fn damped_sum(phi: f64, h: usize) -> f64 {
    if (phi - 1.0).abs() < 1e-12 {
        return h as f64;
    }
    // Closed form phi (1 - phi^h) / (1 - phi).
    phi * (1.0 - phi.powi(h.min(i32::MAX as usize) as i32)) / (1.0 - phi)
}

/// Forecast `values` one step at a time with a fresh model and return the one-step errors.
/// Used by parameter fitting and tests.
pub fn one_step_errors<F: Forecaster>(model: &mut F, values: &[f64]) -> Vec<f64> {
    let mut errors = Vec::with_capacity(values.len());
    for &x in values {
        let predicted = model.forecast(1).mean;
        errors.push(x - predicted);
        model.observe(x);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damped_sum_matches_loop() {
        for &phi in &[0.5, 0.9, 0.98, 1.0] {
            let mut expected = 0.0;
            let mut power = 1.0;
            for h in 1..20 {
                power *= phi;
                expected += power;
                assert!((damped_sum(phi, h) - expected).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn error_scale_ignores_non_finite() {
        let mut scale = ErrorScale::new(0.1);
        scale.push(f64::NAN);
        scale.push(f64::INFINITY);
        assert_eq!(scale.count(), 0);
        scale.push(2.0);
        scale.push(-2.0);
        assert!((scale.sd() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn forecast_with_bad_numbers_is_finite() {
        let forecast = Forecast::with_sd(f64::NAN, f64::INFINITY);
        assert_eq!(forecast.mean, 0.0);
        assert_eq!(forecast.lower, 0.0);
        assert_eq!(forecast.upper, 0.0);
    }
}
