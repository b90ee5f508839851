//! AR(p) with intercept, fitted online by recursive least squares with a forgetting factor.

use super::{ErrorScale, Forecast, Forecaster};
use std::collections::VecDeque;

/// Largest supported AR order.
pub const MAX_ORDER: usize = 16;

/// Initial diagonal of the inverse-covariance matrix: "know nothing yet".
const INITIAL_UNCERTAINTY: f64 = 1e4;

/// `x_t = c + a_1 x_{t-1} + ... + a_p x_{t-p} + e_t`, coefficients updated in O(p^2) per tick.
///
/// A forgetting factor `lambda < 1` lets the fit follow a drifting process; the covariance is
/// capped so a flat series (no excitation) cannot wind it up to infinity.
#[derive(Clone, Debug)]
pub struct ArRls {
    order: usize,
    lambda: f64,
    /// theta[0] is the intercept, theta[1..] the lag coefficients.
    theta: Vec<f64>,
    /// Row-major (order+1)^2 inverse covariance.
    covariance: Vec<f64>,
    /// Most recent value first.
    lags: VecDeque<f64>,
    updates: u64,
    errors: ErrorScale,
    scratch_regressor: Vec<f64>,
    scratch_gain: Vec<f64>,
}

impl ArRls {
    /// `order` is clamped to 1..=MAX_ORDER; `lambda` to [0.9, 1].
    pub fn new(order: usize, lambda: f64) -> Self {
        let order = order.clamp(1, MAX_ORDER);
        let lambda = if lambda.is_finite() {
            lambda.clamp(0.9, 1.0)
        } else {
            0.995
        };
        let dim = order + 1;
        let mut model = ArRls {
            order,
            lambda,
            theta: vec![0.0; dim],
            covariance: vec![0.0; dim * dim],
            lags: VecDeque::with_capacity(order),
            updates: 0,
            errors: ErrorScale::new(0.05),
            scratch_regressor: vec![0.0; dim],
            scratch_gain: vec![0.0; dim],
        };
        model.reset_covariance();
        model
    }

    fn reset_covariance(&mut self) {
        let dim = self.order + 1;
        self.covariance.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..dim {
            self.covariance[i * dim + i] = INITIAL_UNCERTAINTY;
        }
    }

    /// (intercept, lag coefficients a_1..a_p).
    pub fn coefficients(&self) -> (f64, &[f64]) {
        (self.theta[0], &self.theta[1..])
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// Has it seen enough data for the coefficients to mean something?
    fn is_warm(&self) -> bool {
        self.updates as usize > 2 * (self.order + 1)
    }

    fn rls_update(&mut self, x: f64) {
        let dim = self.order + 1;
        self.scratch_regressor[0] = 1.0;
        for (slot, &lag) in self.scratch_regressor[1..].iter_mut().zip(self.lags.iter()) {
            *slot = lag;
        }
        let phi = &self.scratch_regressor;
        // gain numerator P * phi
        let mut denominator = self.lambda;
        for i in 0..dim {
            let row = &self.covariance[i * dim..(i + 1) * dim];
            let value: f64 = row.iter().zip(phi.iter()).map(|(p, f)| p * f).sum();
            self.scratch_gain[i] = value;
            denominator += phi[i] * value;
        }
        let prediction: f64 = self.theta.iter().zip(phi.iter()).map(|(t, f)| t * f).sum();
        let error = x - prediction;
        if !(denominator.is_finite() && denominator > 0.0 && error.is_finite()) {
            self.reset_covariance();
            return;
        }
        if self.is_warm() {
            self.errors.push(error);
        }
        for i in 0..dim {
            self.theta[i] += self.scratch_gain[i] / denominator * error;
        }
        // P = (P - (P phi)(P phi)^T / denominator) / lambda   (P is symmetric)
        let mut trace = 0.0;
        for i in 0..dim {
            for j in 0..dim {
                let updated = (self.covariance[i * dim + j]
                    - self.scratch_gain[i] * self.scratch_gain[j] / denominator)
                    / self.lambda;
                self.covariance[i * dim + j] = updated;
            }
            trace += self.covariance[i * dim + i];
        }
        let max_trace = INITIAL_UNCERTAINTY * dim as f64;
        if !trace.is_finite() || self.theta.iter().any(|t| !t.is_finite()) {
            self.theta.iter_mut().for_each(|t| *t = 0.0);
            self.reset_covariance();
        } else if trace > max_trace {
            // Anti-windup: rescale instead of letting unexcited directions explode.
            let scale = max_trace / trace;
            self.covariance.iter_mut().for_each(|v| *v *= scale);
        }
        self.updates += 1;
    }

    /// Psi weights of the MA(infinity) form, for the h-step interval.
    fn psi_weights(&self, h: usize) -> Vec<f64> {
        let coefficients = &self.theta[1..];
        let mut psi = vec![0.0; h];
        if h > 0 {
            psi[0] = 1.0;
        }
        for j in 1..h {
            let mut value = 0.0;
            for (i, a) in coefficients.iter().enumerate().take(j) {
                value += a * psi[j - 1 - i];
            }
            psi[j] = if value.is_finite() { value } else { 0.0 };
        }
        psi
    }
}

impl Forecaster for ArRls {
    fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.lags.len() == self.order {
            self.rls_update(x);
            self.lags.pop_back();
        } else if let Some(&last) = self.lags.front() {
            // Warm-up errors are naive errors, so the interval is not zero early on.
            self.errors.push(x - last);
        }
        self.lags.push_front(x);
    }

    fn forecast(&self, h: usize) -> Forecast {
        let h = h.max(1);
        let last = self.lags.front().copied().unwrap_or(0.0);
        if !self.is_warm() {
            return Forecast::with_sd(last, self.errors.sd() * (h as f64).sqrt());
        }
        if h == 1 {
            // Fast path (the ensemble asks for this every tick): no allocation.
            let mean = self.theta[0]
                + self.theta[1..]
                    .iter()
                    .zip(self.lags.iter())
                    .map(|(a, x)| a * x)
                    .sum::<f64>();
            let mean = if mean.is_finite() { mean } else { last };
            return Forecast::with_sd(mean, self.errors.sd());
        }
        // Iterate the recursion, feeding forecasts back in as lags.
        let mut window: VecDeque<f64> = self.lags.clone();
        let mut mean = last;
        for _ in 0..h.min(4096) {
            mean = self.theta[0]
                + self.theta[1..]
                    .iter()
                    .zip(window.iter())
                    .map(|(a, x)| a * x)
                    .sum::<f64>();
            window.pop_back();
            window.push_front(mean);
        }
        if !mean.is_finite() {
            mean = last;
        }
        let variance_factor: f64 = self
            .psi_weights(h.min(512))
            .iter()
            .map(|psi| psi * psi)
            .sum();
        Forecast::with_sd(mean, self.errors.sd() * variance_factor.sqrt())
    }

    fn name(&self) -> &'static str {
        "ar"
    }

    fn forecast_sum(&self, horizon: usize) -> f64 {
        let last = self.lags.front().copied().unwrap_or(0.0);
        if !self.is_warm() {
            return last * horizon as f64;
        }
        // One pass of the recursion instead of `horizon` separate ones, on a stack window
        // (order <= MAX_ORDER), most recent value first.
        let mut window = [0.0; MAX_ORDER];
        for (slot, lag) in window.iter_mut().zip(self.lags.iter()) {
            *slot = *lag;
        }
        let order = self.order;
        let mut sum = 0.0;
        for _ in 0..horizon.min(4096) {
            let next = self.theta[0]
                + self.theta[1..]
                    .iter()
                    .zip(window[..order].iter())
                    .map(|(a, x)| a * x)
                    .sum::<f64>();
            sum += next;
            window.copy_within(0..order - 1, 1);
            window[0] = next;
        }
        if sum.is_finite() {
            sum
        } else {
            last * horizon as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    fn simulate_ar2(a1: f64, a2: f64, intercept: f64, len: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        let mut values = vec![0.0, 0.0];
        for t in 2..len {
            let next = intercept + a1 * values[t - 1] + a2 * values[t - 2] + rng.normal();
            values.push(next);
        }
        values
    }

    #[test]
    fn recovers_ar2_coefficients() {
        let values = simulate_ar2(0.6, -0.3, 2.0, 5000, 7);
        let mut model = ArRls::new(2, 1.0);
        for &x in &values {
            model.observe(x);
        }
        let (intercept, coefficients) = model.coefficients();
        assert!((coefficients[0] - 0.6).abs() < 0.05, "{coefficients:?}");
        assert!((coefficients[1] + 0.3).abs() < 0.05, "{coefficients:?}");
        assert!((intercept - 2.0).abs() < 0.3, "{intercept}");
    }

    #[test]
    fn forecast_sum_matches_separate_forecasts() {
        let values = simulate_ar2(0.5, 0.2, 1.0, 500, 3);
        let mut model = ArRls::new(2, 0.99);
        for &x in &values {
            model.observe(x);
        }
        let separate: f64 = (1..=10).map(|h| model.forecast(h).mean).sum();
        assert!((model.forecast_sum(10) - separate).abs() < 1e-9 * (1.0 + separate.abs()));
    }

    #[test]
    fn flat_series_does_not_wind_up() {
        let mut model = ArRls::new(3, 0.95);
        for _ in 0..10_000 {
            model.observe(5.0);
        }
        let forecast = model.forecast(10);
        assert!((forecast.mean - 5.0).abs() < 1e-6, "{forecast:?}");
    }

    proptest! {
        /// AR recovers the coefficients of any stationary AR(2) within tolerance.
        #[test]
        fn recovers_random_stationary_ar2(a1 in -0.8f64..0.8, a2 in -0.5f64..0.1, seed in 0u64..1000) {
            // Keep well inside the stationarity triangle so 4000 samples suffice.
            prop_assume!(a1 + a2 < 0.85 && a2 - a1 < 0.85);
            let values = simulate_ar2(a1, a2, 0.0, 4000, seed);
            let mut model = ArRls::new(2, 1.0);
            for &x in &values { model.observe(x); }
            let (_, coefficients) = model.coefficients();
            prop_assert!((coefficients[0] - a1).abs() < 0.08, "a1 {} vs {}", coefficients[0], a1);
            prop_assert!((coefficients[1] - a2).abs() < 0.08, "a2 {} vs {}", coefficients[1], a2);
        }

        #[test]
        fn arbitrary_input_never_yields_nan(values in proptest::collection::vec(proptest::num::f64::ANY, 0..80), order in 0usize..6) {
            let mut model = ArRls::new(order, 0.98);
            for &x in &values { model.observe(x); }
            let forecast = model.forecast(12);
            prop_assert!(forecast.mean.is_finite() && forecast.lower.is_finite() && forecast.upper.is_finite());
        }
    }
}
