//! Predictive policy: per-(fragment, node) forecasts from the kernels' `Predictor`, hints
//! folded in as forecasts, then the kernels' solver under capacity, budget, hysteresis and
//! cooldown.

use std::collections::HashMap;

use augur_kernels::affinity::{Affinity, FragmentAffinity};
use augur_kernels::cost::CostModel;
use augur_kernels::ensemble::EnsembleConfig;
use augur_kernels::predictor::{Predictor, PredictorConfig};
use augur_kernels::solver::{
    solve, Action as SolverAction, Budget, FragmentState, NodeCapacity, PlacementInput,
    SolverConfig,
};
use augur_kernels::stats::{AccessCounts, AccessStats, FragmentIndex, NodeId};

use super::ids::{FragmentIds, NodeIds};
use super::{clean_rate, Action, CleanTick, ControllerConfig, Decision, Hint, InFlight, MAX_NODES};

pub struct Predictive {
    predictor: Predictor,
    fragments: FragmentIds,
    nodes: NodeIds,
    /// The season the forecasters were built with.
    season: Option<usize>,
    /// The last detection's answer and how many checks in a row gave it.
    candidate: Option<(usize, u32)>,
    /// Ticks a migration takes to land: forecasts start this far ahead.
    lead: usize,
}

/// How often (ticks) the period detector runs, and how many hot fragments it looks at.
const SEASON_CHECK_TICKS: u64 = 10;
const SEASON_FRAGMENTS: usize = 16;
/// Share of a fragment's accesses its top node needs to count as its dominant accessor.
const DOMINANT_SHARE: f64 = 0.5;

fn predictor_config(config: &ControllerConfig, season: Option<usize>) -> PredictorConfig {
    let ensemble = match season.filter(|s| *s >= 2) {
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
        .max(2 * season.unwrap_or(0))
        .clamp(2, 10_000);
    PredictorConfig {
        horizon: config.horizon_ticks.clamp(1, 1_000),
        window: history,
        ensemble,
        // Fed with each client connection's order of fragments (`CleanTick::orders`).
        markov_weight: config.markov_weight.clamp(0.0, 1.0),
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
        let season = config.season_ticks.filter(|s| *s >= 2);
        Predictive {
            predictor: Predictor::new(0, predictor_config(config, season)),
            fragments: FragmentIds::default(),
            nodes: NodeIds::default(),
            season,
            candidate: None,
            lead: 0,
        }
    }

    pub fn set_lead(&mut self, lead: usize) {
        self.lead = lead;
    }

    pub fn season(&self) -> Option<usize> {
        self.season
    }

    /// Every `SEASON_CHECK_TICKS`, look for a period; adopt one found twice in a row (then
    /// return the rebuilt forecasters' forecast for this tick).
    fn maybe_adopt_season(&mut self, tick: u64, config: &ControllerConfig) -> Option<Affinity> {
        if config.season_ticks.is_some()
            || !config.detect_season
            || !tick.is_multiple_of(SEASON_CHECK_TICKS)
        {
            return None;
        }
        let max_period = (config.history_ticks.clamp(2, 10_000) / 3).max(2);
        let Some(period) = detect_period(self.predictor.stats(), max_period) else {
            self.candidate = None;
            return None;
        };
        let seen = match self.candidate {
            Some((p, n)) if p == period => n + 1,
            _ => 1,
        };
        self.candidate = Some((period, seen));
        if seen >= 2 && self.season != Some(period) {
            return Some(self.rebuild(config, period));
        }
        None
    }

    /// New forecasters with `season`, trained by replaying the history the old ones kept.
    fn rebuild(&mut self, config: &ControllerConfig, season: usize) -> Affinity {
        let history: Vec<((FragmentIndex, NodeId), Vec<AccessCounts>)> = self
            .predictor
            .stats()
            .pairs()
            .map(|(&key, series)| (key, series.samples().copied().collect()))
            .collect();
        let length = history.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut forecast = Affinity::default();
        let mut predictor =
            Predictor::new(self.fragments.len(), predictor_config(config, Some(season)));
        predictor.set_window(self.lead, config.horizon_ticks.clamp(1, 1_000));
        for i in 0..length {
            for ((fragment, node), samples) in &history {
                // Series are aligned at their newest sample.
                if let Some(sample) = (i + samples.len())
                    .checked_sub(length)
                    .and_then(|j| samples.get(j))
                {
                    predictor.add_counts(*fragment, *node, *sample);
                }
            }
            forecast = predictor.tick();
        }
        self.predictor = predictor;
        self.season = Some(season);
        forecast
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

        // Where each connection went, in order, for the sequence model: a fragment its
        // clients are walking towards gains affinity before they arrive.
        for (node, connection, order) in &input.orders {
            let Some(n) = self.nodes.index(*node) else {
                continue;
            };
            for id in order {
                if let Some(f) = self.fragments.index(*id) {
                    self.predictor.observe_sequence(n, *connection, f);
                }
            }
        }

        // 3. Forecast, then hints on top.
        self.predictor
            .set_window(self.lead, config.horizon_ticks.clamp(1, 1_000));
        let mut forecast = self.predictor.tick();
        if let Some(rebuilt) = self.maybe_adopt_season(input.tick, config) {
            // The rebuilt forecasters replayed this tick too: theirs is the forecast.
            forecast = rebuilt;
        }
        let affinity = self.apply_hints(forecast, input, config, tick_s);
        // The forecast is accesses over the horizon; a move pays off over the payback window.
        let horizon = config.horizon_ticks.clamp(1, 1_000) as f64;
        let payback = config.payback_ticks() as f64;
        let affinity = scaled(&affinity, payback / horizon, self.fragments.len());

        // 4. Solve.
        let node_count = self.nodes.len();
        let capacity_load = clean_rate(config.node_capacity_rate) * tick_s * payback;
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
            let predicted_rate = affinity
                .fragment(index)
                .map_or(0.0, |row| row.total / (payback * tick_s));
            let frozen = !fragment.stable
                || in_flight.contains_key(&fragment.id)
                || predicted_rate < clean_rate(config.min_rate);
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
        let cost = CostModel {
            horizon_us: payback * tick_s * 1e6,
            ..config.cost
        };
        let placement = PlacementInput {
            fragments: &states,
            affinity: &affinity,
            capacities: &capacities,
            budget: Budget {
                max_actions: config.max_moves_per_tick,
                max_bytes: config.max_bytes_per_tick,
            },
            cost: &cost,
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
            // Counts over the horizon (the rows are scaled to the payback window): a gain
            // within three Poisson standard deviations of the two nodes' counts is noise,
            // which a forecaster that follows the last tick passes straight through.
            let per_horizon = horizon / payback;
            let noise = 3.0
                * ((row.accesses_from(to) + from) * per_horizon)
                    .max(0.0)
                    .sqrt();
            if gain < hysteresis * row.total
                || gain * per_horizon < noise
                || decisions.len() >= config.max_moves_per_tick
            {
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
                    config.payback_ticks(),
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

/// `affinity` with every predicted access count multiplied by `factor`.
fn scaled(affinity: &Affinity, factor: f64, fragments: usize) -> Affinity {
    let rows = (0..fragments)
        .map(|f| {
            let row = FragmentIndex::try_from(f)
                .ok()
                .and_then(|f| affinity.fragment(f))
                .cloned()
                .unwrap_or_default();
            FragmentAffinity {
                total: 0.0,
                by_node: row.by_node.iter().map(|&(n, a)| (n, a * factor)).collect(),
            }
        })
        .collect();
    Affinity::from_rows(rows)
}

/// The smallest period P (2..=max_period) at which hot fragments' dominant accessor repeats
/// its changes: a change at tick t (top node a → b) counts as repeated when the same change
/// happened at t − P. A fragment votes for its smallest P with at least two changes compared
/// and 80% repeated; the most voted P wins (smaller on ties). None without changes to go on.
fn detect_period(stats: &AccessStats, max_period: usize) -> Option<usize> {
    const NONE: NodeId = NodeId::MAX;
    let mut by_fragment: HashMap<FragmentIndex, Vec<(NodeId, Vec<u64>)>> = HashMap::new();
    for (&(fragment, node), series) in stats.pairs() {
        let samples = series.samples().map(AccessCounts::accesses).collect();
        by_fragment
            .entry(fragment)
            .or_default()
            .push((node, samples));
    }
    // (load, top node per tick, changes)
    let mut candidates: Vec<(u64, Vec<NodeId>, usize)> = Vec::new();
    for cells in by_fragment.values() {
        let length = cells.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut top = vec![NONE; length];
        let mut load: u64 = 0;
        for (i, slot) in top.iter_mut().enumerate() {
            let mut total: u64 = 0;
            let mut best: (NodeId, u64) = (NONE, 0);
            for (node, samples) in cells {
                let value = (i + samples.len())
                    .checked_sub(length)
                    .and_then(|j| samples.get(j))
                    .copied()
                    .unwrap_or(0);
                total = total.saturating_add(value);
                if value > best.1 || (value == best.1 && value > 0 && *node < best.0) {
                    best = (*node, value);
                }
            }
            load = load.saturating_add(total);
            if total > 0 && best.1 as f64 >= DOMINANT_SHARE * total as f64 {
                *slot = best.0;
            }
        }
        let changes = top.windows(2).filter(|w| w[0] != w[1]).count();
        if changes >= 3 {
            candidates.push((load, top, changes));
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.truncate(SEASON_FRAGMENTS);
    let mut votes: HashMap<usize, usize> = HashMap::new();
    for (_, top, _) in &candidates {
        let vote = (2..=max_period.min(top.len() / 2)).find(|&period| {
            let mut compared = 0;
            let mut repeated = 0;
            for t in (period + 1)..top.len() {
                if top[t] == top[t - 1] {
                    continue;
                }
                compared += 1;
                if top[t - period] == top[t] && top[t - period - 1] == top[t - 1] {
                    repeated += 1;
                }
            }
            compared >= 2 && repeated * 5 >= compared * 4
        });
        if let Some(period) = vote {
            *votes.entry(period).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(period, _)| period)
}

#[cfg(test)]
mod tests {
    use super::super::{FragmentView, TickInput};
    use super::*;

    fn view(id: u64, lo: &[u8], hi: Option<&[u8]>) -> FragmentView {
        FragmentView {
            id,
            owner: 2,
            bytes: 1000,
            stable: true,
            lo: lo.to_vec(),
            hi: hi.map(<[u8]>::to_vec),
        }
    }

    /// Node 1's clients read fragment 10 only, and (with orders) its connections always
    /// go on from 10 to 30: the forecast then gives node 1 a share of fragment 30 that
    /// the same rates without orders do not.
    #[test]
    fn access_orders_move_affinity_to_where_connections_go_next() {
        let config = ControllerConfig {
            markov_weight: 0.2,
            ..ControllerConfig::default()
        };
        let fragments = vec![
            view(10, b"a", Some(b"h")),
            view(20, b"h", Some(b"p")),
            view(30, b"p", None),
        ];
        let nodes = [1, 2];
        let mut rates: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
        rates.insert(10, [(1, 500.0)].into_iter().collect());
        rates.insert(30, [(2, 50.0)].into_iter().collect());
        let orders: Vec<(u64, u64, Vec<u64>)> = (1..=4).map(|c| (1, c, vec![10, 30, 10])).collect();
        let share_of_30 = |with_orders: bool| {
            let mut p = Predictive::new(&config);
            for tick in 0..20 {
                let input = TickInput {
                    now_ms: tick * 200,
                    fragments: &fragments,
                    nodes: &nodes,
                    rates: &rates,
                    hints: &[],
                    orders: if with_orders { &orders } else { &[] },
                };
                p.tick(
                    &CleanTick::new(&input, tick),
                    &config,
                    &HashMap::new(),
                    &HashMap::new(),
                );
            }
            let (n1, f30) = (p.nodes.index(1).unwrap(), p.fragments.index(30).unwrap());
            p.predictor.tick().share(n1, f30)
        };
        let (without, with) = (share_of_30(false), share_of_30(true));
        assert!(
            without < 0.01,
            "no orders, yet node 1 has {without} of fragment 30"
        );
        assert!(with > 0.3, "orders gave node 1 only {with} of fragment 30");
    }
}
