//! Baseline policies the predictive solver is compared against:
//! `static` (jump consistent hash of the fragment id), `reactive` (act on observed load that
//! stayed above a threshold for k ticks, as E-Store and TiKV's hot-region scheduler do), and
//! `oracle` (the same solver fed the true future instead of a forecast; bench only).

use crate::affinity::{Affinity, FragmentAffinity};
use crate::cost::{CostModel, NodeLoads};
use crate::solver::{
    solve, Action, Budget, Decision, FragmentState, NodeCapacity, PlacementInput, SolverConfig,
};
use crate::stats::NodeId;

/// Lamping & Veach jump consistent hash: bucket in `[0, buckets)`; 0 when `buckets` is 0.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    if buckets == 0 {
        return 0;
    }
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

/// Static placement: each fragment belongs on `jump_consistent_hash(id, nodes)`; emit the
/// migrations that restore that (within budget), and nothing once it holds.
pub fn static_policy(fragments: &[FragmentState], nodes: u32, budget: Budget) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let mut bytes_used: u64 = 0;
    for fragment in fragments {
        if decisions.len() >= budget.max_actions {
            break;
        }
        let home = jump_consistent_hash(u64::from(fragment.index), nodes) as NodeId;
        if home == fragment.owner {
            continue;
        }
        let Some(bytes_after) = bytes_used.checked_add(fragment.bytes) else {
            continue;
        };
        if bytes_after > budget.max_bytes {
            continue;
        }
        bytes_used = bytes_after;
        decisions.push(Decision {
            action: Action::Migrate {
                fragment: fragment.index,
                to: home,
            },
            predicted_benefit_us: 0.0,
            predicted_cost_us: 0.0,
        });
    }
    decisions
}

#[derive(Clone, Copy, Debug)]
pub struct ReactiveConfig {
    /// A node is hot when its observed load exceeds this fraction of its capacity ...
    pub hot_fraction: f64,
    /// ... for this many consecutive ticks.
    pub ticks_required: u32,
    /// A fragment follows its accessor when one non-owner node issued more than this share of
    /// its accesses for `ticks_required` consecutive ticks.
    pub follow_share: f64,
    /// Observed per-tick load is scaled by this to compare with horizon capacities.
    pub horizon_ticks: f64,
    /// Split a fragment (TiKV-style load split) whose scaled load stayed above this fraction
    /// of its owner's capacity for `ticks_required` ticks, if it has a split key.
    pub split_load_fraction: f64,
}

impl Default for ReactiveConfig {
    fn default() -> Self {
        ReactiveConfig {
            hot_fraction: 0.8,
            ticks_required: 3,
            follow_share: 0.6,
            horizon_ticks: 10.0,
            split_load_fraction: 0.5,
        }
    }
}

/// Reactive policy: no forecast, only persistence of what was observed.
#[derive(Clone, Debug, Default)]
pub struct ReactivePolicy {
    config: ReactiveConfig,
    hot_streak: Vec<u32>,
    follow_streak: Vec<(NodeId, u32)>,
    split_streak: Vec<u32>,
}

impl ReactivePolicy {
    pub fn new(config: ReactiveConfig) -> Self {
        ReactivePolicy {
            config,
            hot_streak: Vec::new(),
            follow_streak: Vec::new(),
            split_streak: Vec::new(),
        }
    }

    /// `observed`: last tick's accesses per fragment by node (indexed like `fragments`).
    pub fn decide(
        &mut self,
        fragments: &[FragmentState],
        observed: &Affinity,
        capacities: &[NodeCapacity],
        budget: Budget,
        cost: &CostModel,
    ) -> Vec<Decision> {
        let nodes = capacities.len();
        let scale = if self.config.horizon_ticks.is_finite() {
            self.config.horizon_ticks.max(0.0)
        } else {
            1.0
        };
        self.hot_streak.resize(nodes, 0);
        self.follow_streak.resize(fragments.len(), (NodeId::MAX, 0));
        self.split_streak.resize(fragments.len(), 0);
        let mut node_load = vec![0.0; nodes];
        for fragment in fragments {
            if let Some(load) = node_load.get_mut(usize::from(fragment.owner)) {
                *load += observed.fragment_load(fragment.index) * scale;
            }
        }
        for (n, streak) in self.hot_streak.iter_mut().enumerate() {
            let hot = node_load[n] > self.config.hot_fraction * capacities[n].load;
            *streak = if hot { streak.saturating_add(1) } else { 0 };
        }
        let mut decisions = Vec::new();
        let mut bytes_used: u64 = 0;
        let mut moved = vec![false; fragments.len()];
        let mut push_move = |decisions: &mut Vec<Decision>,
                             node_load: &mut Vec<f64>,
                             position: usize,
                             to: NodeId,
                             moved: &mut Vec<bool>| {
            let fragment = &fragments[position];
            let (source, target) = (usize::from(fragment.owner), usize::from(to));
            let load = observed.fragment_load(fragment.index) * scale;
            let Some(bytes_after) = bytes_used.checked_add(fragment.bytes) else {
                return;
            };
            if moved[position]
                || decisions.len() >= budget.max_actions
                || bytes_after > budget.max_bytes
                || target >= nodes
                || source >= nodes
                || node_load[target] + load > capacities[target].load
            {
                return;
            }
            let entry = observed.fragment(fragment.index);
            let estimate = cost.migration(
                fragment.bytes,
                load,
                entry.map_or(0.0, |a| a.accesses_from(to)) * scale,
                entry.map_or(0.0, |a| a.accesses_from(fragment.owner)) * scale,
                NodeLoads {
                    source_load: node_load[source],
                    source_capacity: capacities[source].load,
                    target_load: node_load[target],
                    target_capacity: capacities[target].load,
                },
            );
            bytes_used = bytes_after;
            node_load[source] -= load;
            node_load[target] += load;
            moved[position] = true;
            decisions.push(Decision {
                action: Action::Migrate {
                    fragment: fragment.index,
                    to,
                },
                predicted_benefit_us: estimate.benefit_us,
                predicted_cost_us: estimate.cost_us,
            });
        };
        // Load split of fragments that stayed too hot for one node.
        for (position, fragment) in fragments.iter().enumerate() {
            let owner = usize::from(fragment.owner);
            let too_hot = owner < nodes
                && observed.fragment_load(fragment.index) * scale
                    > self.config.split_load_fraction * capacities[owner].load;
            let streak = &mut self.split_streak[position];
            *streak = if too_hot { streak.saturating_add(1) } else { 0 };
            if *streak >= self.config.ticks_required && decisions.len() < budget.max_actions {
                if let Some(at_key) = fragment.split_key.clone() {
                    *streak = 0;
                    moved[position] = true;
                    decisions.push(Decision {
                        action: Action::Split {
                            fragment: fragment.index,
                            at_key,
                        },
                        predicted_benefit_us: 0.0,
                        predicted_cost_us: cost
                            .handoff_cost_us(observed.fragment_load(fragment.index) * scale),
                    });
                }
            }
        }
        // Follow a dominant remote accessor that persisted.
        for (position, fragment) in fragments.iter().enumerate() {
            let dominant = observed
                .fragment(fragment.index)
                .and_then(FragmentAffinity::top_node)
                .filter(|(n, _)| *n != fragment.owner)
                .filter(|(n, _)| observed.share(*n, fragment.index) > self.config.follow_share)
                .map(|(n, _)| n);
            let streak = &mut self.follow_streak[position];
            match dominant {
                Some(n) if streak.0 == n => streak.1 = streak.1.saturating_add(1),
                Some(n) => *streak = (n, 1),
                None => *streak = (NodeId::MAX, 0),
            }
            if streak.1 >= self.config.ticks_required {
                let to = streak.0;
                push_move(&mut decisions, &mut node_load, position, to, &mut moved);
            }
        }
        // Shed the hottest fragments of nodes that stayed hot to the coolest node.
        for n in 0..nodes {
            if self.hot_streak[n] < self.config.ticks_required {
                continue;
            }
            let mut owned: Vec<usize> = (0..fragments.len())
                .filter(|&p| usize::from(fragments[p].owner) == n && !moved[p])
                .collect();
            owned.sort_by(|&a, &b| {
                observed
                    .fragment_load(fragments[b].index)
                    .total_cmp(&observed.fragment_load(fragments[a].index))
            });
            for position in owned {
                if node_load[n] <= self.config.hot_fraction * capacities[n].load {
                    break;
                }
                let coolest = (0..nodes)
                    .filter(|&m| m != n && capacities[m].load > 0.0)
                    .min_by(|&a, &b| {
                        (node_load[a] / capacities[a].load)
                            .total_cmp(&(node_load[b] / capacities[b].load))
                    });
                if let Some(to) = coolest {
                    push_move(
                        &mut decisions,
                        &mut node_load,
                        position,
                        to as NodeId,
                        &mut moved,
                    );
                }
            }
        }
        decisions
    }
}

/// Oracle: the predictive solver given the true future accesses instead of a forecast.
pub fn oracle_policy(
    fragments: &[FragmentState],
    true_future: &Affinity,
    capacities: &[NodeCapacity],
    budget: Budget,
    cost: &CostModel,
    config: &SolverConfig,
) -> Vec<Decision> {
    let input = PlacementInput {
        fragments,
        affinity: true_future,
        capacities,
        budget,
        cost,
    };
    solve(&input, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fragment(index: u32, owner: NodeId) -> FragmentState {
        FragmentState {
            index,
            bytes: 1 << 20,
            owner,
            ticks_since_change: 100,
            split_key: None,
            right_neighbour: None,
        }
    }

    #[test]
    fn jump_hash_spreads_evenly() {
        assert_eq!(jump_consistent_hash(0xdead_beef, 0), 0);
        let mut counts = [0u32; 10];
        for key in 0..100_000u64 {
            counts[jump_consistent_hash(key, 10) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn static_policy_settles() {
        let mut fragments: Vec<FragmentState> = (0..50).map(|f| fragment(f, 0)).collect();
        let budget = Budget {
            max_actions: usize::MAX,
            max_bytes: u64::MAX,
        };
        for decision in static_policy(&fragments, 4, budget) {
            if let Action::Migrate { fragment, to } = decision.action {
                fragments[fragment as usize].owner = to;
            }
        }
        assert!(static_policy(&fragments, 4, budget).is_empty());
    }

    #[test]
    fn reactive_waits_k_ticks_then_follows() {
        let fragments = vec![fragment(0, 0)];
        let observed = Affinity::from_rows(vec![FragmentAffinity {
            total: 0.0,
            by_node: vec![(1, 100.0)],
        }]);
        let capacities = vec![
            NodeCapacity {
                load: 1e9,
                bytes: u64::MAX
            };
            2
        ];
        let budget = Budget {
            max_actions: 10,
            max_bytes: u64::MAX,
        };
        let mut policy = ReactivePolicy::new(ReactiveConfig::default());
        let cost = CostModel::default();
        let counts: Vec<usize> = (0..3)
            .map(|_| {
                policy
                    .decide(&fragments, &observed, &capacities, budget, &cost)
                    .len()
            })
            .collect();
        assert_eq!(counts, vec![0, 0, 1]);
    }

    #[test]
    fn reactive_splits_a_persistently_hot_fragment() {
        let mut fragments = vec![fragment(0, 0)];
        fragments[0].split_key = Some(b"m".to_vec());
        let observed = Affinity::from_rows(vec![FragmentAffinity {
            total: 0.0,
            by_node: vec![(0, 800.0)],
        }]);
        let capacities = vec![
            NodeCapacity {
                load: 10_000.0,
                bytes: u64::MAX
            };
            2
        ];
        let budget = Budget {
            max_actions: 10,
            max_bytes: u64::MAX,
        };
        let mut policy = ReactivePolicy::new(ReactiveConfig::default());
        let cost = CostModel::default();
        let decisions: Vec<Vec<Decision>> = (0..3)
            .map(|_| policy.decide(&fragments, &observed, &capacities, budget, &cost))
            .collect();
        assert!(decisions[0].is_empty() && decisions[1].is_empty());
        assert!(decisions[2].iter().any(|d| d.action
            == Action::Split {
                fragment: 0,
                at_key: b"m".to_vec()
            }));
    }

    proptest! {
        /// Jump hash: in range, and growing from n to n+1 buckets only moves keys to the new one.
        #[test]
        fn jump_hash_is_consistent(key in any::<u64>(), buckets in 1u32..500) {
            let before = jump_consistent_hash(key, buckets);
            let after = jump_consistent_hash(key, buckets + 1);
            prop_assert!(before < buckets);
            prop_assert!(after == before || after == buckets);
        }
    }
}
