//! Feedback: every decision's predicted net benefit goes into `augur_kernels::feedback`; after
//! the move, the rates of the following `horizon_ticks` ticks measure what it bought (accesses
//! from the new owner's clients, now local, minus those from the old owner's, now remote, times
//! the latency gap), which settles it. Also the share of accesses that were local each tick,
//! per policy in charge, as the plain "did placement help" figure.

use std::collections::HashMap;
use std::fmt::Write as _;

use augur_kernels::feedback::{DecisionId, FeedbackLog};
use augur_kernels::solver::{Action as SolverAction, Decision as SolverDecision};

use super::{CleanTick, ControllerConfig, Decision, Policy};

#[derive(Debug)]
struct Tracked {
    id: DecisionId,
    policy: Policy,
    from: u64,
    to: u64,
    cost_us: f64,
}

#[derive(Debug)]
struct Observing {
    tracked: Tracked,
    fragment: u64,
    ticks_left: usize,
    benefit_us: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyCounters {
    pub decisions: u64,
    pub moved: u64,
    pub failed: u64,
    pub ticks: u64,
    pub local_accesses: f64,
    pub accesses: f64,
}

#[derive(Debug, Default)]
pub struct Feedback {
    log: FeedbackLog,
    awaiting: HashMap<u64, Tracked>,
    observing: Vec<Observing>,
    counters: HashMap<Policy, PolicyCounters>,
}

impl Feedback {
    pub fn counters(&self, policy: Policy) -> PolicyCounters {
        self.counters.get(&policy).copied().unwrap_or_default()
    }

    /// Account one tick's accesses to the policy in charge and advance observations.
    pub fn observe(&mut self, policy: Policy, input: &CleanTick, config: &ControllerConfig) {
        let counters = self.counters.entry(policy).or_default();
        counters.ticks += 1;
        for (fragment, rates) in input.fragments.iter().zip(&input.rates) {
            for &(node, rate) in rates {
                counters.accesses += rate;
                if node == fragment.owner {
                    counters.local_accesses += rate;
                }
            }
        }
        let tick_s = config.tick_ms.max(1) as f64 / 1000.0;
        let gap = (config.cost.remote_access_us - config.cost.local_access_us).max(0.0);
        let gap = if gap.is_finite() { gap } else { 0.0 };
        let mut settled = Vec::new();
        for (i, observing) in self.observing.iter_mut().enumerate() {
            let position = input
                .fragments
                .iter()
                .position(|f| f.id == observing.fragment);
            if let Some(position) = position {
                let rate_of = |node: u64| {
                    input.rates[position]
                        .iter()
                        .find(|(n, _)| *n == node)
                        .map_or(0.0, |(_, r)| *r)
                };
                let avoided = rate_of(observing.tracked.to) - rate_of(observing.tracked.from);
                observing.benefit_us += avoided * tick_s * gap;
                observing.ticks_left = observing.ticks_left.saturating_sub(1);
            } else {
                // Merged away or gone: settle with what was seen.
                observing.ticks_left = 0;
            }
            if observing.ticks_left == 0 {
                settled.push(i);
            }
        }
        for i in settled.into_iter().rev() {
            let done = self.observing.swap_remove(i);
            let _ = self
                .log
                .record_outcome(done.tracked.id, done.benefit_us - done.tracked.cost_us);
        }
    }

    pub fn record(
        &mut self,
        policy: Policy,
        decision: &Decision,
        fragment: u64,
        from: u64,
        to: u64,
        _tick: u64,
    ) {
        // A decision that was never reported back is settled as failed before its successor.
        if let Some(stale) = self.awaiting.remove(&fragment) {
            self.settle_failed(stale);
        }
        let kernel_decision = SolverDecision {
            action: SolverAction::Migrate {
                fragment: u32::try_from(fragment).unwrap_or(u32::MAX),
                to: u16::try_from(to).unwrap_or(u16::MAX),
            },
            predicted_benefit_us: decision.predicted_benefit_us,
            predicted_cost_us: decision.cost_us,
        };
        let id = self.log.record(policy.name(), &kernel_decision);
        self.counters.entry(policy).or_default().decisions += 1;
        self.awaiting.insert(
            fragment,
            Tracked {
                id,
                policy,
                from,
                to,
                cost_us: if decision.cost_us.is_finite() {
                    decision.cost_us
                } else {
                    0.0
                },
            },
        );
    }

    /// The decision on `fragment` will never be reported back: settle it as failed.
    pub fn expire(&mut self, fragment: u64) {
        if let Some(tracked) = self.awaiting.remove(&fragment) {
            self.settle_failed(tracked);
        }
    }

    /// Decisions awaiting an outcome or still being observed (bounded by the in-flight set).
    #[cfg(test)]
    pub fn unsettled(&self) -> usize {
        self.awaiting.len() + self.observing.len()
    }

    fn settle_failed(&mut self, tracked: Tracked) {
        self.counters.entry(tracked.policy).or_default().failed += 1;
        // No benefit realised; the cost is counted as spent.
        let _ = self.log.record_outcome(tracked.id, -tracked.cost_us);
    }

    pub fn outcome(&mut self, fragment: u64, moved: bool, _tick: u64, horizon: usize) {
        let Some(tracked) = self.awaiting.remove(&fragment) else {
            return;
        };
        if moved {
            self.counters.entry(tracked.policy).or_default().moved += 1;
            self.observing.push(Observing {
                tracked,
                fragment,
                ticks_left: horizon.max(1),
                benefit_us: 0.0,
            });
        } else {
            self.settle_failed(tracked);
        }
    }

    pub fn report(&self, active: Policy) -> String {
        let calibration: HashMap<String, _> = self.log.report().into_iter().collect();
        let mut out = String::new();
        for policy in Policy::ALL {
            let c = self.counters(policy);
            let local = if c.accesses > 0.0 {
                100.0 * c.local_accesses / c.accesses
            } else {
                0.0
            };
            let _ = write!(
                out,
                "policy {policy}{}: ticks {} local {local:.1}% decisions {} moved {} failed {}",
                if policy == active { " (active)" } else { "" },
                c.ticks,
                c.decisions,
                c.moved,
                c.failed,
            );
            if let Some(r) = calibration.get(policy.name()) {
                let _ = write!(
                    out,
                    " settled {} predicted_net_ms {:.3} observed_net_ms {:.3} obs/pred {:.2} corr {:.2} sign_ok {:.0}%",
                    r.decisions,
                    r.mean_predicted_us / 1e3,
                    r.mean_observed_us / 1e3,
                    r.realisation_ratio,
                    r.correlation,
                    100.0 * r.sign_agreement,
                );
            }
            out.push('\n');
        }
        out
    }
}
