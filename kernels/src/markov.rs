//! Sparse first-order Markov chains over fragment transitions, with exponential decay.
//!
//! One chain per accessing node, trained from per-connection sequences (the transition is
//! from the connection's previous fragment to its current one, so interleaved clients do not
//! pollute each other's patterns). k-step lookahead spreads each node's current position
//! through the chain and returns the expected share of its next k accesses per fragment.

use crate::hash::FxHashMap;
use crate::stats::{FragmentIndex, NodeId};

#[derive(Clone, Copy, Debug)]
pub struct MarkovConfig {
    /// Per-tick multiplier applied to every transition weight (0..=1).
    pub decay: f64,
    /// Weights below this after decay are forgotten (keeps the chain sparse).
    pub prune_below: f64,
    /// Most targets kept per row; the lightest is evicted beyond it.
    pub max_row_entries: usize,
    /// Most fragments carried between lookahead steps.
    pub max_lookahead_support: usize,
    /// A connection idle for this many ticks is forgotten.
    pub connection_idle_ticks: u64,
}

impl Default for MarkovConfig {
    fn default() -> Self {
        MarkovConfig {
            decay: 0.95,
            prune_below: 0.05,
            max_row_entries: 32,
            max_lookahead_support: 256,
            connection_idle_ticks: 30,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Row {
    targets: Vec<(FragmentIndex, f64)>,
    total: f64,
}

impl Row {
    fn add(&mut self, to: FragmentIndex, weight: f64, max_entries: usize) {
        self.total += weight;
        if let Some(entry) = self.targets.iter_mut().find(|(f, _)| *f == to) {
            entry.1 += weight;
            return;
        }
        self.targets.push((to, weight));
        if self.targets.len() > max_entries.max(1) {
            // Evict the lightest target (never the one just added unless it is the lightest).
            let mut lightest = 0;
            for (i, (_, w)) in self.targets.iter().enumerate() {
                if *w < self.targets[lightest].1 {
                    lightest = i;
                }
            }
            let (_, removed) = self.targets.swap_remove(lightest);
            self.total -= removed;
        }
    }

    fn decay(&mut self, factor: f64, prune_below: f64) {
        self.targets.retain_mut(|(_, w)| {
            *w *= factor;
            *w >= prune_below
        });
        // Recompute rather than scale: no drift between total and the sum of weights.
        self.total = self.targets.iter().map(|(_, w)| w).sum();
    }
}

/// A sparse decaying transition matrix.
#[derive(Clone, Debug)]
pub struct MarkovChain {
    config: MarkovConfig,
    rows: FxHashMap<FragmentIndex, Row>,
}

impl MarkovChain {
    pub fn new(config: MarkovConfig) -> Self {
        let decay = if config.decay.is_finite() {
            config.decay.clamp(0.0, 1.0)
        } else {
            0.95
        };
        let prune_below = if config.prune_below.is_finite() {
            config.prune_below.max(0.0)
        } else {
            0.0
        };
        MarkovChain {
            config: MarkovConfig {
                decay,
                prune_below,
                ..config
            },
            rows: FxHashMap::default(),
        }
    }

    pub fn observe_transition(&mut self, from: FragmentIndex, to: FragmentIndex) {
        let max_entries = self.config.max_row_entries;
        self.rows.entry(from).or_default().add(to, 1.0, max_entries);
    }

    /// Age every weight by one tick and drop what fell below the pruning threshold.
    pub fn decay(&mut self) {
        let (factor, prune_below) = (self.config.decay, self.config.prune_below);
        self.rows.retain(|_, row| {
            row.decay(factor, prune_below);
            !row.targets.is_empty()
        });
    }

    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Transition probabilities out of `from` (sums to 1), most likely first; empty if unseen.
    pub fn row_distribution(&self, from: FragmentIndex) -> Vec<(FragmentIndex, f64)> {
        let Some(row) = self.rows.get(&from) else {
            return Vec::new();
        };
        if !(row.total > 0.0 && row.total.is_finite()) {
            return Vec::new();
        }
        let mut distribution: Vec<(FragmentIndex, f64)> = row
            .targets
            .iter()
            .map(|(f, w)| (*f, w / row.total))
            .collect();
        distribution.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        distribution
    }

    /// The `k` most likely next fragments after `from`.
    pub fn top_next(&self, from: FragmentIndex, k: usize) -> Vec<FragmentIndex> {
        self.row_distribution(from)
            .into_iter()
            .take(k)
            .map(|(f, _)| f)
            .collect()
    }

    /// Expected share of the next `steps` accesses per fragment, starting from `start`
    /// (a distribution over current positions; it is normalised here). Mass at a fragment with
    /// no known successors stays there: no evidence of movement is evidence of staying.
    pub fn lookahead(
        &self,
        start: &[(FragmentIndex, f64)],
        steps: usize,
    ) -> FxHashMap<FragmentIndex, f64> {
        let mut current: FxHashMap<FragmentIndex, f64> = FxHashMap::default();
        let start_total: f64 = start
            .iter()
            .filter(|(_, m)| m.is_finite() && *m > 0.0)
            .map(|(_, m)| m)
            .sum();
        let mut accumulated: FxHashMap<FragmentIndex, f64> = FxHashMap::default();
        if start_total <= 0.0 || steps == 0 {
            return accumulated;
        }
        for (f, m) in start {
            if m.is_finite() && *m > 0.0 {
                *current.entry(*f).or_default() += m / start_total;
            }
        }
        for _ in 0..steps {
            let mut next: FxHashMap<FragmentIndex, f64> = FxHashMap::default();
            for (&from, &mass) in &current {
                let distribution = self.row_distribution(from);
                if distribution.is_empty() {
                    *next.entry(from).or_default() += mass;
                } else {
                    for (to, p) in distribution {
                        *next.entry(to).or_default() += mass * p;
                    }
                }
            }
            prune_to_support(&mut next, self.config.max_lookahead_support);
            for (&f, &mass) in &next {
                *accumulated.entry(f).or_default() += mass / steps as f64;
            }
            current = next;
        }
        accumulated
    }
}

/// Keep the heaviest `limit` entries and renormalise to the original total.
fn prune_to_support(masses: &mut FxHashMap<FragmentIndex, f64>, limit: usize) {
    if masses.len() <= limit.max(1) {
        return;
    }
    let total: f64 = masses.values().sum();
    let mut entries: Vec<(FragmentIndex, f64)> = masses.drain().collect();
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    entries.truncate(limit.max(1));
    let kept: f64 = entries.iter().map(|(_, m)| m).sum();
    let scale = if kept > 0.0 { total / kept } else { 1.0 };
    masses.extend(entries.into_iter().map(|(f, m)| (f, m * scale)));
}

#[derive(Clone, Copy, Debug)]
struct ConnectionState {
    last_fragment: FragmentIndex,
    last_tick: u64,
}

/// Per-node chains fed by per-connection sequences.
#[derive(Clone, Debug)]
pub struct SequenceModel {
    config: MarkovConfig,
    chains: FxHashMap<NodeId, MarkovChain>,
    connections: FxHashMap<(NodeId, u64), ConnectionState>,
    tick: u64,
}

impl SequenceModel {
    pub fn new(config: MarkovConfig) -> Self {
        SequenceModel {
            config,
            chains: FxHashMap::default(),
            connections: FxHashMap::default(),
            tick: 0,
        }
    }

    /// Connection `connection` of a client on `node` accessed `fragment`.
    pub fn observe_access(&mut self, node: NodeId, connection: u64, fragment: FragmentIndex) {
        let tick = self.tick;
        let state = self.connections.insert(
            (node, connection),
            ConnectionState {
                last_fragment: fragment,
                last_tick: tick,
            },
        );
        if let Some(previous) = state {
            let config = self.config;
            self.chains
                .entry(node)
                .or_insert_with(|| MarkovChain::new(config))
                .observe_transition(previous.last_fragment, fragment);
        }
    }

    /// Once per tick: decay every chain and forget idle connections.
    pub fn tick(&mut self) {
        self.tick += 1;
        for chain in self.chains.values_mut() {
            chain.decay();
        }
        self.chains.retain(|_, chain| chain.row_count() > 0);
        let (now, idle) = (self.tick, self.config.connection_idle_ticks);
        self.connections
            .retain(|_, state| now.saturating_sub(state.last_tick) <= idle);
    }

    pub fn chain(&self, node: NodeId) -> Option<&MarkovChain> {
        self.chains.get(&node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.chains.keys().copied()
    }

    /// Expected share of `node`'s next `steps` accesses per fragment, starting from where its
    /// live connections are now. Empty when the node has no chain or no live connection.
    pub fn node_lookahead(&self, node: NodeId, steps: usize) -> FxHashMap<FragmentIndex, f64> {
        let Some(chain) = self.chains.get(&node) else {
            return FxHashMap::default();
        };
        let start: Vec<(FragmentIndex, f64)> = self
            .connections
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, state)| (state.last_fragment, 1.0))
            .collect();
        chain.lookahead(&start, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn learns_a_cycle() {
        let mut chain = MarkovChain::new(MarkovConfig::default());
        for _ in 0..10 {
            for f in 0..5u32 {
                chain.observe_transition(f, (f + 1) % 5);
            }
        }
        assert_eq!(chain.top_next(2, 1), vec![3]);
        let ahead = chain.lookahead(&[(0, 1.0)], 2);
        assert!((ahead.get(&1).copied().unwrap_or(0.0) - 0.5).abs() < 1e-12);
        assert!((ahead.get(&2).copied().unwrap_or(0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn connections_do_not_mix() {
        let mut model = SequenceModel::new(MarkovConfig::default());
        // Two interleaved connections on one node: 1->2->3 and 10->11->12.
        for (connection, fragment) in [(1, 1), (2, 10), (1, 2), (2, 11), (1, 3), (2, 12)] {
            model.observe_access(0, connection, fragment);
        }
        let chain = model.chain(0).map(|c| c.top_next(1, 5)).unwrap_or_default();
        assert_eq!(chain, vec![2]);
        let ahead = model.node_lookahead(0, 1);
        let total: f64 = ahead.values().sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bad_start_masses_are_ignored() {
        let chain = MarkovChain::new(MarkovConfig::default());
        assert!(chain.lookahead(&[(1, f64::NAN), (2, -1.0)], 3).is_empty());
    }

    proptest! {
        /// Rows sum to 1 after any sequence of observations and decays, and decay only shrinks.
        #[test]
        fn rows_sum_to_one_after_decay(
            operations in proptest::collection::vec((0u32..12, 0u32..12, any::<bool>()), 1..300),
            decay in 0.0f64..1.0,
        ) {
            let config = MarkovConfig { decay, prune_below: 0.01, max_row_entries: 6, ..MarkovConfig::default() };
            let mut chain = MarkovChain::new(config);
            for &(from, to, tick) in &operations {
                chain.observe_transition(from, to);
                if tick { chain.decay(); }
            }
            for from in 0..12 {
                let row = chain.row_distribution(from);
                prop_assert!(row.len() <= 6);
                if !row.is_empty() {
                    let total: f64 = row.iter().map(|(_, p)| p).sum();
                    prop_assert!((total - 1.0).abs() < 1e-9, "row {} sums to {}", from, total);
                }
            }
            let ahead = chain.lookahead(&[(operations[0].0, 1.0)], 4);
            let total: f64 = ahead.values().sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
        }
    }
}
