//! Placement solver: turns predicted affinity and load into a small set of actions that fit
//! node capacities and a per-tick migration budget, with hysteresis so a stationary workload
//! causes no churn.

use crate::affinity::Affinity;
use crate::cost::{CostModel, MoveEstimate, NodeLoads};
use crate::stats::{FragmentIndex, NodeId};

/// What the solver knows about one fragment.
#[derive(Clone, Debug)]
pub struct FragmentState {
    pub index: FragmentIndex,
    pub bytes: u64,
    pub owner: NodeId,
    /// Ticks since this fragment last moved, split or merged (cooldown for hysteresis).
    pub ticks_since_change: u64,
    /// Where it could split (median of a key sample or a hot-prefix boundary), if known.
    pub split_key: Option<Vec<u8>>,
    /// The fragment holding the adjacent key range to the right, if any (merge candidate).
    pub right_neighbour: Option<FragmentIndex>,
}

/// Capacity of one node, in the same units as predicted load (accesses over the horizon).
#[derive(Clone, Copy, Debug)]
pub struct NodeCapacity {
    pub load: f64,
    pub bytes: u64,
}

/// Per-tick limits on what may change.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most actions of any kind.
    pub max_actions: usize,
    /// Most bytes migrated.
    pub max_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct SolverConfig {
    /// Benefit must exceed cost by this factor (0.5 = 50% more) ...
    pub margin: f64,
    /// ... and by at least this many microseconds.
    pub min_net_benefit_us: f64,
    /// Fragments changed fewer ticks ago than this are left alone.
    pub cooldown_ticks: u64,
    /// Split when a fragment's load exceeds this fraction of its owner's capacity.
    pub split_load_fraction: f64,
    /// Merge neighbours that are both below this load (accesses over the horizon); 0 disables.
    pub merge_load_below: f64,
    /// And whose combined size is at most this.
    pub merge_max_bytes: u64,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            margin: 0.5,
            min_net_benefit_us: 1_000.0,
            cooldown_ticks: 10,
            split_load_fraction: 0.5,
            merge_load_below: 1.0,
            merge_max_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Migrate {
        fragment: FragmentIndex,
        to: NodeId,
    },
    Split {
        fragment: FragmentIndex,
        at_key: Vec<u8>,
    },
    Merge {
        fragment: FragmentIndex,
        with: FragmentIndex,
    },
}

/// An action with the benefit and cost the policy predicted for it (for feedback).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub predicted_benefit_us: f64,
    pub predicted_cost_us: f64,
}

pub struct PlacementInput<'a> {
    pub fragments: &'a [FragmentState],
    pub affinity: &'a Affinity,
    /// Indexed by node id.
    pub capacities: &'a [NodeCapacity],
    pub budget: Budget,
    pub cost: &'a CostModel,
}

struct Candidate {
    position: usize,
    to: NodeId,
    estimate: MoveEstimate,
}

fn clean(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

/// Greedy solver: rank moves by predicted net benefit, accept while they still clear the
/// hysteresis threshold under the loads left by the moves already accepted, never pushing a
/// node over its load or byte capacity and never exceeding the budget. Then split fragments
/// too hot for any node and merge cold neighbours with what budget is left.
pub fn solve(input: &PlacementInput<'_>, config: &SolverConfig) -> Vec<Decision> {
    let node_count = input.capacities.len();
    let mut node_load = vec![0.0; node_count];
    let mut node_bytes = vec![0u64; node_count];
    for fragment in input.fragments {
        let owner = usize::from(fragment.owner);
        if owner < node_count {
            node_load[owner] += clean(input.affinity.fragment_load(fragment.index));
            node_bytes[owner] = node_bytes[owner].saturating_add(fragment.bytes);
        }
    }
    let capacity_load = |n: usize| clean(input.capacities[n].load);
    let estimate = |fragment: &FragmentState, to: NodeId, node_load: &[f64]| -> MoveEstimate {
        let entry = input.affinity.fragment(fragment.index);
        let load = entry.map_or(0.0, |a| a.total);
        let from_target = entry.map_or(0.0, |a| a.accesses_from(to));
        let from_source = entry.map_or(0.0, |a| a.accesses_from(fragment.owner));
        let (source, target) = (usize::from(fragment.owner), usize::from(to));
        input.cost.migration(
            fragment.bytes,
            load,
            from_target,
            from_source,
            NodeLoads {
                source_load: node_load[source],
                source_capacity: capacity_load(source),
                target_load: node_load[target],
                target_capacity: capacity_load(target),
            },
        )
    };
    let margin = clean(config.margin);
    let clears_threshold = |estimate: &MoveEstimate| {
        estimate.benefit_us > estimate.cost_us * (1.0 + margin) + clean(config.min_net_benefit_us)
    };

    // 1. Candidate migrations: towards the top accessor, and off overloaded nodes towards the
    //    least-loaded node.
    let least_loaded = (0..node_count)
        .filter(|&n| capacity_load(n) > 0.0)
        .min_by(|&a, &b| {
            (node_load[a] / capacity_load(a)).total_cmp(&(node_load[b] / capacity_load(b)))
        });
    let mut candidates = Vec::new();
    for (position, fragment) in input.fragments.iter().enumerate() {
        let owner = usize::from(fragment.owner);
        if owner >= node_count || fragment.ticks_since_change < config.cooldown_ticks {
            continue;
        }
        let mut targets: Vec<NodeId> = Vec::with_capacity(2);
        if let Some((top, _)) = input
            .affinity
            .fragment(fragment.index)
            .and_then(|a| a.top_node())
        {
            targets.push(top);
        }
        if node_load[owner] > capacity_load(owner) {
            if let Some(n) = least_loaded {
                targets.push(n as NodeId);
            }
        }
        for to in targets {
            if usize::from(to) >= node_count || to == fragment.owner {
                continue;
            }
            let estimate = estimate(fragment, to, &node_load);
            if clears_threshold(&estimate) {
                candidates.push(Candidate {
                    position,
                    to,
                    estimate,
                });
            }
        }
    }
    candidates.sort_by(|a, b| {
        b.estimate
            .net_us()
            .total_cmp(&a.estimate.net_us())
            .then(a.position.cmp(&b.position))
            .then(a.to.cmp(&b.to))
    });

    let mut decisions = Vec::new();
    let mut changed = vec![false; input.fragments.len()];
    let mut bytes_used: u64 = 0;
    for candidate in candidates {
        if decisions.len() >= input.budget.max_actions {
            break;
        }
        let fragment = &input.fragments[candidate.position];
        if changed[candidate.position] {
            continue;
        }
        let Some(bytes_after) = bytes_used.checked_add(fragment.bytes) else {
            continue;
        };
        if bytes_after > input.budget.max_bytes {
            continue;
        }
        let (source, target) = (usize::from(fragment.owner), usize::from(candidate.to));
        let load = clean(input.affinity.fragment_load(fragment.index));
        let target_bytes = node_bytes[target].saturating_add(fragment.bytes);
        if node_load[target] + load > capacity_load(target)
            || target_bytes > input.capacities[target].bytes
        {
            continue;
        }
        // Earlier moves changed the loads: re-check the benefit before committing.
        let estimate = estimate(fragment, candidate.to, &node_load);
        if !clears_threshold(&estimate) {
            continue;
        }
        node_load[source] -= load;
        node_load[target] += load;
        node_bytes[source] = node_bytes[source].saturating_sub(fragment.bytes);
        node_bytes[target] = target_bytes;
        bytes_used = bytes_after;
        changed[candidate.position] = true;
        decisions.push(Decision {
            action: Action::Migrate {
                fragment: fragment.index,
                to: candidate.to,
            },
            predicted_benefit_us: estimate.benefit_us,
            predicted_cost_us: estimate.cost_us,
        });
    }

    // 2. Splits: a fragment hotter than a fraction of its owner's capacity cannot be balanced
    //    by moving it whole.
    let split_fraction = clean(config.split_load_fraction);
    let mut hot: Vec<(f64, usize)> = input
        .fragments
        .iter()
        .enumerate()
        .filter(|(position, fragment)| {
            let owner = usize::from(fragment.owner);
            !changed[*position]
                && owner < node_count
                && fragment.split_key.is_some()
                && fragment.ticks_since_change >= config.cooldown_ticks
                && split_fraction > 0.0
                && input.affinity.fragment_load(fragment.index)
                    > split_fraction * capacity_load(owner)
        })
        .map(|(position, fragment)| (input.affinity.fragment_load(fragment.index), position))
        .collect();
    hot.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (load, position) in hot {
        if decisions.len() >= input.budget.max_actions {
            break;
        }
        let fragment = &input.fragments[position];
        if let Some(at_key) = fragment.split_key.clone() {
            changed[position] = true;
            let owner = usize::from(fragment.owner);
            decisions.push(Decision {
                action: Action::Split {
                    fragment: fragment.index,
                    at_key,
                },
                // Half the load becomes movable; count the overload that half could relieve.
                predicted_benefit_us: crate::cost::saturate(
                    (node_load[owner] - capacity_load(owner)).clamp(0.0, load / 2.0)
                        * clean(input.cost.overload_us_per_access),
                ),
                predicted_cost_us: input.cost.handoff_cost_us(load),
            });
        }
    }

    // 3. Merges of cold neighbours on the same owner.
    if config.merge_load_below > 0.0 {
        let position_of: crate::hash::FxHashMap<FragmentIndex, usize> = input
            .fragments
            .iter()
            .enumerate()
            .map(|(position, f)| (f.index, position))
            .collect();
        for (position, fragment) in input.fragments.iter().enumerate() {
            if decisions.len() >= input.budget.max_actions {
                break;
            }
            let Some(neighbour_position) = fragment
                .right_neighbour
                .and_then(|n| position_of.get(&n).copied())
            else {
                continue;
            };
            let neighbour = &input.fragments[neighbour_position];
            let cold = |f: &FragmentState| {
                input.affinity.fragment_load(f.index) < config.merge_load_below
                    && f.ticks_since_change >= config.cooldown_ticks
            };
            if changed[position]
                || changed[neighbour_position]
                || neighbour.owner != fragment.owner
                || !cold(fragment)
                || !cold(neighbour)
                || fragment.bytes.saturating_add(neighbour.bytes) > config.merge_max_bytes
            {
                continue;
            }
            changed[position] = true;
            changed[neighbour_position] = true;
            decisions.push(Decision {
                action: Action::Merge {
                    fragment: fragment.index,
                    with: neighbour.index,
                },
                predicted_benefit_us: 0.0,
                predicted_cost_us: input.cost.handoff_cost_us(0.0),
            });
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::FragmentAffinity;
    use proptest::prelude::*;

    fn fragment(index: FragmentIndex, owner: NodeId, bytes: u64) -> FragmentState {
        FragmentState {
            index,
            bytes,
            owner,
            ticks_since_change: 100,
            split_key: None,
            right_neighbour: None,
        }
    }

    fn rows(cells: &[(FragmentIndex, NodeId, f64)], fragments: usize) -> Affinity {
        let mut rows = vec![FragmentAffinity::default(); fragments];
        for &(f, n, a) in cells {
            rows[f as usize].by_node.push((n, a));
        }
        Affinity::from_rows(rows)
    }

    fn roomy(nodes: usize) -> Vec<NodeCapacity> {
        vec![
            NodeCapacity {
                load: 1e9,
                bytes: u64::MAX
            };
            nodes
        ]
    }

    fn budget() -> Budget {
        Budget {
            max_actions: 100,
            max_bytes: u64::MAX,
        }
    }

    #[test]
    fn moves_a_fragment_to_its_accessor_once() {
        let fragments = vec![fragment(0, 0, 1 << 20)];
        let affinity = rows(&[(0, 1, 10_000.0), (0, 0, 100.0)], 1);
        let cost = CostModel::default();
        let capacities = roomy(2);
        let input = PlacementInput {
            fragments: &fragments,
            affinity: &affinity,
            capacities: &capacities,
            budget: budget(),
            cost: &cost,
        };
        let decisions = solve(&input, &SolverConfig::default());
        assert_eq!(
            decisions
                .iter()
                .map(|d| d.action.clone())
                .collect::<Vec<_>>(),
            vec![Action::Migrate { fragment: 0, to: 1 }]
        );
        // After the move, the same prediction asks for nothing (no ping-pong).
        let moved = vec![fragment(0, 1, 1 << 20)];
        let input = PlacementInput {
            fragments: &moved,
            ..input
        };
        assert!(solve(&input, &SolverConfig::default()).is_empty());
    }

    #[test]
    fn small_gain_is_not_worth_a_move() {
        let fragments = vec![fragment(0, 0, 64 << 20)];
        let affinity = rows(&[(0, 1, 60.0), (0, 0, 40.0)], 1);
        let cost = CostModel::default();
        let capacities = roomy(2);
        let input = PlacementInput {
            fragments: &fragments,
            affinity: &affinity,
            capacities: &capacities,
            budget: budget(),
            cost: &cost,
        };
        assert!(solve(&input, &SolverConfig::default()).is_empty());
    }

    #[test]
    fn offloads_an_overloaded_node_and_splits_a_too_hot_fragment() {
        let mut fragments: Vec<FragmentState> = (0..4).map(|f| fragment(f, 0, 1 << 20)).collect();
        fragments[3].split_key = Some(b"m".to_vec());
        let affinity = rows(
            &[(0, 2, 300.0), (1, 2, 300.0), (2, 2, 300.0), (3, 0, 1500.0)],
            4,
        );
        let cost = CostModel::default();
        let capacities = vec![
            NodeCapacity {
                load: 1000.0,
                bytes: u64::MAX,
            };
            3
        ];
        let input = PlacementInput {
            fragments: &fragments,
            affinity: &affinity,
            capacities: &capacities,
            budget: budget(),
            cost: &cost,
        };
        let decisions = solve(&input, &SolverConfig::default());
        assert!(decisions.iter().any(|d| matches!(
            d.action,
            Action::Migrate { to: 1, .. } | Action::Migrate { to: 2, .. }
        )));
        assert!(decisions.iter().any(|d| d.action
            == Action::Split {
                fragment: 3,
                at_key: b"m".to_vec()
            }));
    }

    #[test]
    fn merges_cold_neighbours() {
        let mut fragments = vec![fragment(0, 0, 1024), fragment(1, 0, 1024)];
        fragments[0].right_neighbour = Some(1);
        let affinity = rows(&[], 2);
        let cost = CostModel::default();
        let capacities = roomy(1);
        let input = PlacementInput {
            fragments: &fragments,
            affinity: &affinity,
            capacities: &capacities,
            budget: budget(),
            cost: &cost,
        };
        let decisions = solve(&input, &SolverConfig::default());
        assert_eq!(
            decisions
                .iter()
                .map(|d| d.action.clone())
                .collect::<Vec<_>>(),
            vec![Action::Merge {
                fragment: 0,
                with: 1
            }]
        );
    }

    /// Apply migrations and return per-node (load, bytes) afterwards.
    fn loads_after(
        fragments: &[FragmentState],
        affinity: &Affinity,
        decisions: &[Decision],
        nodes: usize,
    ) -> (Vec<f64>, Vec<u64>) {
        let mut owners: Vec<NodeId> = fragments.iter().map(|f| f.owner).collect();
        for decision in decisions {
            if let Action::Migrate { fragment, to } = decision.action {
                if let Some(position) = fragments.iter().position(|f| f.index == fragment) {
                    owners[position] = to;
                }
            }
        }
        let mut load = vec![0.0; nodes];
        let mut bytes = vec![0u64; nodes];
        for (fragment, owner) in fragments.iter().zip(&owners) {
            load[usize::from(*owner)] += affinity.fragment_load(fragment.index);
            bytes[usize::from(*owner)] += fragment.bytes;
        }
        (load, bytes)
    }

    proptest! {
        /// The solver never exceeds the budget, and never pushes a node it moves data to above
        /// its load or byte capacity.
        #[test]
        fn respects_capacity_and_budget(
            cells in proptest::collection::vec((0u32..40, 0u16..5, 0f64..5000.0), 0..200),
            owners in proptest::collection::vec(0u16..5, 40),
            sizes in proptest::collection::vec(1u64..(8 << 20), 40),
            capacity_load in 1000f64..40_000.0,
            capacity_bytes in (16u64 << 20)..(200 << 20),
            max_actions in 0usize..10,
            max_bytes in 0u64..(40 << 20),
        ) {
            let fragments: Vec<FragmentState> = (0..40)
                .map(|f| fragment(f as FragmentIndex, owners[f], sizes[f]))
                .collect();
            let affinity = rows(&cells, 40);
            let capacities = vec![NodeCapacity { load: capacity_load, bytes: capacity_bytes }; 5];
            let cost = CostModel::default();
            let input = PlacementInput {
                fragments: &fragments,
                affinity: &affinity,
                capacities: &capacities,
                budget: Budget { max_actions, max_bytes },
                cost: &cost,
            };
            let decisions = solve(&input, &SolverConfig::default());
            prop_assert!(decisions.len() <= max_actions);
            let moved_bytes: u64 = decisions
                .iter()
                .filter_map(|d| match d.action {
                    Action::Migrate { fragment, .. } => Some(fragments[fragment as usize].bytes),
                    _ => None,
                })
                .sum();
            prop_assert!(moved_bytes <= max_bytes);
            let (load, bytes) = loads_after(&fragments, &affinity, &decisions, 5);
            for decision in &decisions {
                if let Action::Migrate { to, .. } = decision.action {
                    let to = usize::from(to);
                    prop_assert!(load[to] <= capacity_load + 1e-6, "node {} load {} > {}", to, load[to], capacity_load);
                    prop_assert!(bytes[to] <= capacity_bytes);
                }
            }
        }

        /// Garbage numbers (NaN, infinities, huge values) never panic and never yield
        /// non-finite predictions.
        #[test]
        fn garbage_numbers_are_survived(
            cells in proptest::collection::vec((0u32..10, 0u16..3, proptest::num::f64::ANY), 0..40),
            capacity in proptest::num::f64::ANY,
            owners in proptest::collection::vec(0u16..4, 10),
        ) {
            let mut fragments: Vec<FragmentState> = (0..10)
                .map(|f| fragment(f as FragmentIndex, owners[f], 1 << 20))
                .collect();
            fragments[0].split_key = Some(b"k".to_vec());
            fragments[1].right_neighbour = Some(2);
            let affinity = rows(&cells, 10);
            let capacities = vec![NodeCapacity { load: capacity, bytes: u64::MAX }; 3];
            let cost = CostModel::default();
            let input = PlacementInput {
                fragments: &fragments,
                affinity: &affinity,
                capacities: &capacities,
                budget: budget(),
                cost: &cost,
            };
            for decision in solve(&input, &SolverConfig::default()) {
                prop_assert!(decision.predicted_benefit_us.is_finite());
                prop_assert!(decision.predicted_cost_us.is_finite());
            }
        }

        /// Uniform stationary input: every node accesses every fragment equally and nothing
        /// is overloaded, so there is nothing to gain and nothing may change.
        #[test]
        fn uniform_stationary_input_changes_nothing(
            nodes in 1usize..16,
            fragment_count in 1usize..200,
            per_node in 1f64..1e6,
            size in 1u64..(1 << 30),
        ) {
            let fragments: Vec<FragmentState> = (0..fragment_count)
                .map(|f| {
                    let mut state = fragment(f as FragmentIndex, (f % nodes) as NodeId, size);
                    state.split_key = Some(vec![f as u8]);
                    state.right_neighbour = Some(((f + 1) % fragment_count) as FragmentIndex);
                    state
                })
                .collect();
            let cells: Vec<(FragmentIndex, NodeId, f64)> = (0..fragment_count)
                .flat_map(|f| (0..nodes).map(move |n| (f as FragmentIndex, n as NodeId, per_node)))
                .collect();
            let affinity = rows(&cells, fragment_count);
            let per_fragment = per_node * nodes as f64;
            let owned = fragment_count.div_ceil(nodes) as f64;
            // Capacity with headroom: a balanced cluster, not an overloaded one.
            let capacities = vec![NodeCapacity { load: 4.0 * owned * per_fragment, bytes: u64::MAX }; nodes];
            let cost = CostModel::default();
            let input = PlacementInput {
                fragments: &fragments,
                affinity: &affinity,
                capacities: &capacities,
                budget: budget(),
                cost: &cost,
            };
            prop_assert!(solve(&input, &SolverConfig::default()).is_empty());
        }
    }
}
