//! Predictive policy: per-(fragment, node) forecasts from the kernels' `Predictor`, hints
//! folded in as forecasts, then the kernels' solver under capacity, budget, hysteresis and
//! cooldown.

use std::collections::HashMap;

use augur_kernels::affinity::{Affinity, FragmentAffinity};
use augur_kernels::ensemble::EnsembleConfig;
use augur_kernels::predictor::{Predictor, PredictorConfig};
use augur_kernels::solver::{
    solve, Action as SolverAction, Budget, FragmentState, NodeCapacity, PlacementInput,
    SolverConfig,
};
use augur_kernels::stats::{AccessCounts, FragmentIndex, NodeId};

use super::ids::{FragmentIds, NodeIds};
use super::{clean_rate, Action, CleanTick, ControllerConfig, Decision, Hint, InFlight, MAX_NODES};

pub struct Predictive {
    predictor: Predictor,
    fragments: FragmentIds,
    nodes: NodeIds,
}

fn predictor_config(config: &ControllerConfig) -> PredictorConfig {
    let ensemble = match config.season_ticks.filter(|s| *s >= 2) {
        // The backtest window spans two seasons, so the seasonal models' advantage (they saw
        // the last shift coming) is still in the window at the next one.
        Some(season) => EnsembleConfig {
            window: EnsembleConfig::default().window.max(2 * season),
            ..EnsembleConfig::with_season(season)
        },
        None => EnsembleConfig::default(),
    };
    let history = config
        .history_ticks
        .max(2 * config.season_ticks.unwrap_or(0))
        .clamp(2, 10_000);
    PredictorConfig {
        horizon: config.horizon_ticks.clamp(1, 1_000),
        window: history,
        ensemble,
        // Sequences are not fed at this level (they need per-connection access order).
        markov_weight: 0.0,
        ..PredictorConfig::default()
    }
}

/// Does the fragment `[lo, hi)` overlap the hint's range (or contain its single key)?
fn overlaps(fragment_lo: &[u8], fragment_hi: Option<&[u8]>, hint: &Hint) -> bool {
    let below_fragment_end = |key: &[u8]| fragment_hi.is_none_or(|hi| key < hi);
    match hint.hi.as_deref() {
        Some(hi) if hi <= hint.lo.as_slice() => {
            fragment_lo <= hint.lo.as_slice() && below_fragment_end(&hint.lo)
        }
        hint_hi => below_fragment_end(&hint.lo) && hint_hi.is_none_or(|hi| fragment_lo < hi),
    }
}

impl Predictive {
    pub fn new(config: &ControllerConfig) -> Self {
        Predictive {
            predictor: Predictor::new(0, predictor_config(config)),
            fragments: FragmentIds::default(),
            nodes: NodeIds::default(),
        }
    }

    pub fn tick(
        &mut self,
        input: &CleanTick,
        config: &ControllerConfig,
        in_flight: &HashMap<u64, InFlight>,
        last_change: &HashMap<u64, u64>,
    ) -> Vec<Decision> {
        // 1. Dense indices; vanished fragments take their history with them.
        for index in self.fragments.sync(input.fragments.iter().map(|f| &f.id)) {
            self.predictor.forget_fragment(index);
        }
        self.predictor.set_fragment_count(self.fragments.len());
        for &node in &input.nodes {
            self.nodes.intern(node, MAX_NODES);
        }

        // 2. This tick's counts.
        let tick_s = config.tick_ms.max(1) as f64 / 1000.0;
        for (fragment, rates) in input.fragments.iter().zip(&input.rates) {
            let Some(f) = self.fragments.index(fragment.id) else {
                continue;
            };
            for &(node, rate) in rates {
                let Some(n) = self.nodes.index(node) else {
                    continue;
                };
                let count = (rate * tick_s).round().clamp(0.0, f64::from(u32::MAX)) as u32;
                self.predictor.add_counts(
                    f,
                    n,
                    AccessCounts {
                        reads: count,
                        ..AccessCounts::default()
                    },
                );
            }
        }

        // 3. Forecast, then hints on top.
        let forecast = self.predictor.tick();
        let affinity = self.apply_hints(forecast, input, config, tick_s);

        // 4. Solve.
        let node_count = self.nodes.len();
        let horizon = config.horizon_ticks.clamp(1, 1_000) as f64;
        let capacity_load = clean_rate(config.node_capacity_rate) * tick_s * horizon;
        let capacities: Vec<NodeCapacity> = (0..node_count)
            .map(|n| {
                let member = NodeId::try_from(n)
                    .ok()
                    .and_then(|n| self.nodes.id(n))
                    .is_some_and(|id| input.is_member(id));
                if member {
                    NodeCapacity {
                        load: capacity_load,
                        bytes: config.node_capacity_bytes,
                    }
                } else {
                    // A node that left: never a target.
                    NodeCapacity {
                        load: 0.0,
                        bytes: 0,
                    }
                }
            })
            .collect();
        let cooldown = config.cooldown_ticks;
        let mut states = Vec::with_capacity(input.fragments.len());
        let mut id_of_index: HashMap<FragmentIndex, usize> = HashMap::new();
        for (position, fragment) in input.fragments.iter().enumerate() {
            let (Some(index), Some(owner)) = (
                self.fragments.index(fragment.id),
                self.nodes.index(fragment.owner),
            ) else {
                continue;
            };
            if !input.is_member(fragment.owner) {
                continue;
            }
            let frozen = !fragment.stable || in_flight.contains_key(&fragment.id);
            let since = last_change
                .get(&fragment.id)
                .map_or(u64::MAX, |&t| input.tick.saturating_sub(t));
            states.push(FragmentState {
                index,
                bytes: fragment.bytes,
                owner,
                ticks_since_change: if frozen { 0 } else { since },
                split_key: None,
                right_neighbour: None,
            });
            id_of_index.insert(index, position);
        }
        let solver_config = SolverConfig {
            margin: config.margin,
            min_net_benefit_us: config.min_net_benefit_us,
            // Frozen fragments carry 0; `cooldown` of 0 must still exclude them.
            cooldown_ticks: cooldown.max(1),
            split_load_fraction: 0.0,
            merge_load_below: 0.0,
            merge_max_bytes: 0,
        };
        let placement = PlacementInput {
            fragments: &states,
            affinity: &affinity,
            capacities: &capacities,
            budget: Budget {
                max_actions: config.max_moves_per_tick,
                max_bytes: config.max_bytes_per_tick,
            },
            cost: &config.cost,
        };
        let hysteresis = if config.hysteresis_share.is_finite() {
            config.hysteresis_share.clamp(0.0, 1.0)
        } else {
            0.25
        };
        let mut decisions = Vec::new();
        for decision in solve(&placement, &solver_config) {
            let SolverAction::Migrate { fragment, to } = decision.action else {
                continue;
            };
            let (Some(&position), Some(to_id)) = (id_of_index.get(&fragment), self.nodes.id(to))
            else {
                continue;
            };
            let view = input.fragments[position];
            let Some(row) = affinity.fragment(fragment) else {
                continue;
            };
            let from = self
                .nodes
                .index(view.owner)
                .map_or(0.0, |o| row.accesses_from(o));
            let gain = row.accesses_from(to) - from;
            if gain < hysteresis * row.total || decisions.len() >= config.max_moves_per_tick {
                continue;
            }
            let hinted = input.hints.iter().any(|h| {
                h.node == to_id
                    && h.until_ms > input.now_ms
                    && overlaps(&view.lo, view.hi.as_deref(), h)
            });
            decisions.push(Decision {
                action: Action::Migrate {
                    fragment: view.id,
                    to: to_id,
                },
                predicted_benefit_us: decision.predicted_benefit_us,
                cost_us: decision.predicted_cost_us,
                reason: format!(
                    "predictive{}: node {to_id} predicted {:.0}% of {:.0} accesses over {} ticks (owner {:.0}%)",
                    if hinted { " (hint)" } else { "" },
                    100.0 * row.share(to),
                    row.total,
                    config.horizon_ticks,
                    100.0 * from / row.total.max(f64::MIN_POSITIVE),
                ),
            });
        }
        decisions
    }

    /// A live hint says the hinted node will make `hint_share` of the range's accesses, at
    /// least `hint_min_rate` per second, over the horizon: rewrite the rows it covers.
    fn apply_hints(
        &self,
        forecast: Affinity,
        input: &CleanTick,
        config: &ControllerConfig,
        tick_s: f64,
    ) -> Affinity {
        let live: Vec<(&Hint, NodeId)> = input
            .hints
            .iter()
            .filter(|h| h.until_ms > input.now_ms && input.is_member(h.node))
            .filter_map(|h| self.nodes.index(h.node).map(|n| (h, n)))
            .collect();
        if live.is_empty() {
            return forecast;
        }
        let share = if config.hint_share.is_finite() {
            config.hint_share.clamp(0.0, 1.0)
        } else {
            0.9
        };
        let horizon = config.horizon_ticks.clamp(1, 1_000) as f64;
        let mut rows: Vec<FragmentAffinity> = (0..self.fragments.len())
            .map(|f| {
                FragmentIndex::try_from(f)
                    .ok()
                    .and_then(|f| forecast.fragment(f).cloned())
                    .unwrap_or_default()
            })
            .collect();
        for (fragment, rates) in input.fragments.iter().zip(&input.rates) {
            // The latest hint covering the fragment wins.
            let Some(&(_, node)) = live
                .iter()
                .rev()
                .find(|(h, _)| overlaps(&fragment.lo, fragment.hi.as_deref(), h))
            else {
                continue;
            };
            let Some(row) = self
                .fragments
                .index(fragment.id)
                .and_then(|f| rows.get_mut(f as usize))
            else {
                continue;
            };
            let observed: f64 = rates.iter().map(|(_, r)| r).sum();
            let total = row
                .total
                .max(observed.max(clean_rate(config.hint_min_rate)) * tick_s * horizon);
            let others: f64 = row
                .by_node
                .iter()
                .filter(|(n, _)| *n != node)
                .map(|(_, a)| a)
                .sum();
            let scale = if others > 0.0 {
                (1.0 - share) * total / others
            } else {
                0.0
            };
            let mut by_node: Vec<(NodeId, f64)> = row
                .by_node
                .iter()
                .filter(|(n, _)| *n != node)
                .map(|&(n, a)| (n, a * scale))
                .collect();
            by_node.push((node, share * total));
            *row = FragmentAffinity {
                total: 0.0,
                by_node,
            };
        }
        Affinity::from_rows(rows)
    }
}
