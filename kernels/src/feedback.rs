//! Feedback: every decision carries its predicted benefit; when the outcome is measured the
//! pair is folded into per-policy calibration statistics (is the policy optimistic? does its
//! ranking of moves mean anything?), exposed for reports.

use crate::hash::FxHashMap;
use crate::solver::{Action, Decision};
use std::collections::BTreeMap;
use std::fmt;

/// Handle returned when a decision is logged; quote it when reporting the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId(pub u64);

/// The outcome named a decision that was never logged or was already settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownDecision(pub DecisionId);

impl fmt::Display for UnknownDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no pending decision with id {}", self.0 .0)
    }
}

impl std::error::Error for UnknownDecision {}

#[derive(Clone, Debug)]
struct Pending {
    policy: String,
    action: Action,
    predicted_net_us: f64,
}

/// Running sums for one policy.
#[derive(Clone, Debug, Default)]
struct Calibration {
    count: u64,
    sum_predicted: f64,
    sum_observed: f64,
    sum_abs_error: f64,
    sum_squared_error: f64,
    sum_predicted_squared: f64,
    sum_observed_squared: f64,
    sum_product: f64,
    same_sign: u64,
}

/// Predicted vs observed net benefit (µs) for one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationReport {
    pub decisions: u64,
    pub mean_predicted_us: f64,
    pub mean_observed_us: f64,
    /// mean(predicted - observed): positive means the policy is optimistic.
    pub bias_us: f64,
    pub mean_abs_error_us: f64,
    pub rmse_us: f64,
    /// Sum observed / sum predicted (1 = calibrated on aggregate); 0 when nothing predicted.
    pub realisation_ratio: f64,
    /// Pearson correlation between predicted and observed (0 when undefined).
    pub correlation: f64,
    /// Share of decisions where predicted and observed agree in sign (paid off as promised).
    pub sign_agreement: f64,
}

/// Log of decisions awaiting outcomes plus the per-policy calibration.
#[derive(Clone, Debug, Default)]
pub struct FeedbackLog {
    next_id: u64,
    pending: FxHashMap<u64, Pending>,
    calibration: BTreeMap<String, Calibration>,
}

impl FeedbackLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Log a decision made by `policy`; its predicted net benefit is benefit - cost.
    pub fn record(&mut self, policy: &str, decision: &Decision) -> DecisionId {
        let id = self.next_id;
        self.next_id += 1;
        let predicted = decision.predicted_benefit_us - decision.predicted_cost_us;
        self.pending.insert(
            id,
            Pending {
                policy: policy.to_string(),
                action: decision.action.clone(),
                predicted_net_us: if predicted.is_finite() {
                    predicted
                } else {
                    0.0
                },
            },
        );
        DecisionId(id)
    }

    /// The measured net benefit of a logged decision (same unit as the prediction). Returns
    /// the action it settled. Non-finite observations are recorded as 0.
    pub fn record_outcome(
        &mut self,
        id: DecisionId,
        observed_net_us: f64,
    ) -> Result<Action, UnknownDecision> {
        let pending = self.pending.remove(&id.0).ok_or(UnknownDecision(id))?;
        let observed = if observed_net_us.is_finite() {
            observed_net_us
        } else {
            0.0
        };
        let predicted = pending.predicted_net_us;
        let stats = self.calibration.entry(pending.policy).or_default();
        let error = predicted - observed;
        stats.count += 1;
        stats.sum_predicted += predicted;
        stats.sum_observed += observed;
        stats.sum_abs_error += error.abs();
        stats.sum_squared_error += error * error;
        stats.sum_predicted_squared += predicted * predicted;
        stats.sum_observed_squared += observed * observed;
        stats.sum_product += predicted * observed;
        if (predicted > 0.0) == (observed > 0.0) {
            stats.same_sign += 1;
        }
        Ok(pending.action)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Calibration per policy, sorted by policy name.
    pub fn report(&self) -> Vec<(String, CalibrationReport)> {
        self.calibration
            .iter()
            .map(|(policy, stats)| (policy.clone(), report(stats)))
            .collect()
    }
}

fn report(stats: &Calibration) -> CalibrationReport {
    let n = stats.count.max(1) as f64;
    let mean_predicted = stats.sum_predicted / n;
    let mean_observed = stats.sum_observed / n;
    let covariance = stats.sum_product / n - mean_predicted * mean_observed;
    let var_predicted = stats.sum_predicted_squared / n - mean_predicted * mean_predicted;
    let var_observed = stats.sum_observed_squared / n - mean_observed * mean_observed;
    let correlation = if var_predicted > 1e-12 && var_observed > 1e-12 {
        (covariance / (var_predicted * var_observed).sqrt()).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let ratio = if stats.sum_predicted.abs() > 1e-12 {
        stats.sum_observed / stats.sum_predicted
    } else {
        0.0
    };
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    CalibrationReport {
        decisions: stats.count,
        mean_predicted_us: finite(mean_predicted),
        mean_observed_us: finite(mean_observed),
        bias_us: finite(mean_predicted - mean_observed),
        mean_abs_error_us: finite(stats.sum_abs_error / n),
        rmse_us: finite((stats.sum_squared_error / n).sqrt()),
        realisation_ratio: finite(ratio),
        correlation: finite(correlation),
        sign_agreement: if stats.count == 0 {
            0.0
        } else {
            stats.same_sign as f64 / n
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(benefit: f64, cost: f64) -> Decision {
        Decision {
            action: Action::Migrate { fragment: 1, to: 2 },
            predicted_benefit_us: benefit,
            predicted_cost_us: cost,
        }
    }

    #[test]
    fn calibration_tracks_optimism() {
        let mut log = FeedbackLog::new();
        for (predicted, observed) in [(100.0, 50.0), (200.0, 100.0), (300.0, 150.0)] {
            let id = log.record("predictive", &decision(predicted + 10.0, 10.0));
            assert!(log.record_outcome(id, observed).is_ok());
        }
        let report = log.report();
        assert_eq!(report.len(), 1);
        let (policy, stats) = &report[0];
        assert_eq!(policy, "predictive");
        assert_eq!(stats.decisions, 3);
        assert!((stats.bias_us - 100.0).abs() < 1e-9);
        assert!((stats.realisation_ratio - 0.5).abs() < 1e-9);
        assert!((stats.correlation - 1.0).abs() < 1e-9);
        assert_eq!(stats.sign_agreement, 1.0);
    }

    proptest::proptest! {
        /// A policy whose outcomes equal its predictions is perfectly calibrated, and every
        /// report field is finite whatever the numbers.
        #[test]
        fn exact_predictions_are_calibrated(predictions in proptest::collection::vec(-1e6f64..1e6, 1..50)) {
            let mut log = FeedbackLog::new();
            for &p in &predictions {
                let id = log.record("p", &decision(p, 0.0));
                proptest::prop_assert!(log.record_outcome(id, p).is_ok());
            }
            let (_, report) = &log.report()[0];
            proptest::prop_assert!(report.bias_us.abs() < 1e-6);
            proptest::prop_assert!(report.mean_abs_error_us.abs() < 1e-6);
            proptest::prop_assert!(report.correlation.is_finite() && report.realisation_ratio.is_finite());
        }
    }

    #[test]
    fn unknown_or_repeated_outcomes_are_errors() {
        let mut log = FeedbackLog::new();
        let id = log.record("reactive", &decision(1.0, 0.0));
        assert!(log.record_outcome(id, f64::NAN).is_ok());
        assert_eq!(log.record_outcome(id, 1.0), Err(UnknownDecision(id)));
        assert_eq!(log.pending(), 0);
        let report = log.report();
        assert_eq!(report[0].1.mean_observed_us, 0.0);
    }
}
