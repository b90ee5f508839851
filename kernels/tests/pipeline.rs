//! End to end through the public API: recorder → predictor → solver → applied actions →
//! feedback, on a noisy stationary workload. The placement must converge to each fragment's
//! dominant accessor and then stop changing (no churn).

use augur_kernels::cost::CostModel;
use augur_kernels::feedback::FeedbackLog;
use augur_kernels::predictor::{Predictor, PredictorConfig};
use augur_kernels::rng::SplitMix64;
use augur_kernels::solver::{
    solve, Action, Budget, FragmentState, NodeCapacity, PlacementInput, SolverConfig,
};
use augur_kernels::stats::{AccessKind, CoreRecorder, FragmentIndex, NodeId};

const FRAGMENTS: usize = 64;
const NODES: usize = 4;

#[test]
fn stationary_workload_converges_then_stops_moving() {
    let mut rng = SplitMix64::new(99);
    // Each fragment has a dominant node issuing ~80% of its accesses.
    let dominant: Vec<NodeId> = (0..FRAGMENTS)
        .map(|_| rng.below(NODES as u64) as NodeId)
        .collect();
    let mut fragments: Vec<FragmentState> = (0..FRAGMENTS)
        .map(|f| FragmentState {
            index: f as FragmentIndex,
            bytes: 1 << 20,
            owner: rng.below(NODES as u64) as NodeId,
            ticks_since_change: 1_000,
            split_key: None,
            right_neighbour: None,
        })
        .collect();
    let config = PredictorConfig::default();
    let horizon = config.horizon as f64;
    let mut predictor = Predictor::new(FRAGMENTS, config);
    let mut cores = vec![CoreRecorder::new(FRAGMENTS, NODES, 4); 2];
    let capacities = vec![
        NodeCapacity {
            load: 1e12,
            bytes: u64::MAX
        };
        NODES
    ];
    let cost = CostModel::default();
    let mut feedback = FeedbackLog::new();
    let mut actions_per_tick = Vec::new();
    for _tick in 0..80 {
        for (f, &home) in dominant.iter().enumerate() {
            for node in 0..NODES {
                let mean = if node == usize::from(home) {
                    400.0
                } else {
                    33.0
                };
                let core = &mut cores[node % 2];
                for _ in 0..rng.poisson(mean) {
                    core.record(f as FragmentIndex, node as NodeId, AccessKind::Read, 64);
                }
            }
        }
        for core in &mut cores {
            predictor.fold(core);
        }
        let affinity = predictor.tick();
        let input = PlacementInput {
            fragments: &fragments,
            affinity: &affinity,
            capacities: &capacities,
            budget: Budget {
                max_actions: 8,
                max_bytes: 64 << 20,
            },
            cost: &cost,
        };
        let decisions = solve(&input, &SolverConfig::default());
        actions_per_tick.push(decisions.len());
        for decision in &decisions {
            let id = feedback.record("predictive", decision);
            if let Action::Migrate { fragment, to } = decision.action {
                let state = &mut fragments[fragment as usize];
                // Observed benefit under the true rates: (from target - from source) × gap.
                let rate = |node: NodeId| {
                    if node == dominant[fragment as usize] {
                        400.0
                    } else {
                        33.0
                    }
                };
                let observed = (rate(to) - rate(state.owner))
                    * horizon
                    * (cost.remote_access_us - cost.local_access_us)
                    - decision.predicted_cost_us;
                assert!(feedback.record_outcome(id, observed).is_ok());
                state.owner = to;
                state.ticks_since_change = 0;
            }
        }
        for state in &mut fragments {
            state.ticks_since_change += 1;
        }
    }
    for (state, home) in fragments.iter().zip(&dominant) {
        assert_eq!(
            state.owner, *home,
            "fragment {} not at its accessor",
            state.index
        );
    }
    let late_actions: usize = actions_per_tick[40..].iter().sum();
    assert_eq!(
        late_actions, 0,
        "churn after convergence: {actions_per_tick:?}"
    );
    let report = feedback.report();
    assert_eq!(report.len(), 1);
    let (_, calibration) = &report[0];
    assert!(calibration.decisions > 0);
    // Predictions were made from noisy forecasts of the same rates: they should be close.
    assert!(
        (calibration.realisation_ratio - 1.0).abs() < 0.2,
        "{calibration:?}"
    );
}
