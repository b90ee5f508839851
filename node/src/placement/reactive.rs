//! Reactive policy (E-Store, TiKV hot-region scheduling): no forecast, only persistence of
//! what was observed. A fragment follows a remote node whose clients made more than
//! `reactive_share` of its accesses for `reactive_ticks` consecutive ticks while it saw at
//! least `min_rate` accesses per second.
//!
//! Not `augur_kernels::baselines::ReactivePolicy`: that one keys its streaks by position in
//! the fragment slice (which shifts when fragments split or merge) and has no rate floor;
//! here streaks are keyed by fragment id.

use std::collections::HashMap;

use augur_kernels::cost::NodeLoads;

use super::{clean_rate, Action, CleanTick, ControllerConfig, Decision, InFlight};

#[derive(Debug, Default)]
pub struct Reactive {
    /// fragment id → (dominant node, consecutive ticks).
    streaks: HashMap<u64, (u64, u32)>,
}

pub(crate) fn idle_loads() -> NodeLoads {
    NodeLoads {
        source_load: 0.0,
        source_capacity: 1e18,
        target_load: 0.0,
        target_capacity: 1e18,
    }
}

impl Reactive {
    pub fn forget(&mut self, fragment: u64) {
        self.streaks.remove(&fragment);
    }

    pub fn tick(
        &mut self,
        input: &CleanTick,
        config: &ControllerConfig,
        in_flight: &HashMap<u64, InFlight>,
    ) -> Vec<Decision> {
        let share_needed = if config.reactive_share.is_finite() {
            config.reactive_share.clamp(0.0, 1.0)
        } else {
            0.6
        };
        let min_rate = clean_rate(config.min_rate);
        let ticks_needed = config.reactive_ticks.max(1);
        let tick_s = config.tick_ms.max(1) as f64 / 1000.0;
        let horizon = config.horizon_ticks.max(1) as f64;
        let mut streaks = HashMap::with_capacity(self.streaks.len());
        // (rate, position, to)
        let mut ready: Vec<(f64, usize, u64)> = Vec::new();
        for (position, (fragment, rates)) in input.fragments.iter().zip(&input.rates).enumerate() {
            let total: f64 = rates.iter().map(|(_, r)| r).sum();
            // Ties go to the lowest node id (rates are sorted by node).
            let top = rates
                .iter()
                .fold(None::<(u64, f64)>, |best, &(n, r)| match best {
                    Some((_, b)) if b >= r => best,
                    _ => Some((n, r)),
                });
            let dominant = top
                .filter(|(n, _)| *n != fragment.owner)
                .filter(|(_, r)| total > 0.0 && r / total > share_needed)
                .filter(|_| total >= min_rate && fragment.stable)
                .filter(|_| input.is_member(fragment.owner))
                .filter(|_| !in_flight.contains_key(&fragment.id))
                .map(|(n, _)| n);
            let Some(node) = dominant else {
                continue;
            };
            let streak = match self.streaks.get(&fragment.id) {
                Some(&(n, count)) if n == node => count.saturating_add(1),
                _ => 1,
            };
            streaks.insert(fragment.id, (node, streak));
            if streak >= ticks_needed {
                ready.push((total, position, node));
            }
        }
        self.streaks = streaks;
        // Hottest first, within the per-tick budget.
        ready.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut decisions = Vec::new();
        let mut bytes_used: u64 = 0;
        for (total, position, to) in ready {
            if decisions.len() >= config.max_moves_per_tick {
                break;
            }
            let fragment = input.fragments[position];
            let Some(bytes_after) = bytes_used.checked_add(fragment.bytes) else {
                continue;
            };
            if bytes_after > config.max_bytes_per_tick {
                continue;
            }
            bytes_used = bytes_after;
            let rate_of = |node: u64| {
                input.rates[position]
                    .iter()
                    .find(|(n, _)| *n == node)
                    .map_or(0.0, |(_, r)| *r)
            };
            let per_horizon = tick_s * horizon;
            let estimate = config.cost.migration(
                fragment.bytes,
                total * per_horizon,
                rate_of(to) * per_horizon,
                rate_of(fragment.owner) * per_horizon,
                idle_loads(),
            );
            decisions.push(Decision {
                action: Action::Migrate {
                    fragment: fragment.id,
                    to,
                },
                predicted_benefit_us: estimate.benefit_us,
                cost_us: estimate.cost_us,
                reason: format!(
                    "reactive: node {to} made {:.0}% of {:.0} accesses/s for {ticks_needed} ticks",
                    100.0 * rate_of(to) / total.max(f64::MIN_POSITIVE),
                    total
                ),
            });
        }
        decisions
    }
}
