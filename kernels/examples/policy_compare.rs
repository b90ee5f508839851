//! Predictive placement vs the static, reactive and oracle baselines on a synthetic cluster
//! workload, with the feedback log's calibration of each policy.
//!
//! `cargo run --release -p augur-kernels --example policy_compare [-- --heatmap FILE.csv]`
//!
//! With `--heatmap`, the predictive policy's observed and predicted per-tick load per fragment
//! key range is written as CSV (`affinity::Heatmap`).
//!
//! Workload (fixed seed, Poisson noise around known rates): 4 nodes, 64 fragments of 4 MiB in
//! four groups. Group g is read mostly by node g during the first half of each 24-tick "day"
//! and by node g+2 during the second half (a diurnal hand-over), with a background trickle
//! from every node. From tick 300 to 340 a flash crowd on node 1 hits fragments 0..4.
//! Every policy starts from the same jump-hash placement. Cost per tick is the latency all
//! remote accesses pay plus the cost of every migration, in the cost model's microseconds.

use augur_kernels::affinity::{Affinity, FragmentAffinity, Heatmap};
use augur_kernels::baselines::{
    jump_consistent_hash, oracle_policy, ReactiveConfig, ReactivePolicy,
};
use augur_kernels::cost::CostModel;
use augur_kernels::ensemble::EnsembleConfig;
use augur_kernels::feedback::{DecisionId, FeedbackLog};
use augur_kernels::predictor::{Predictor, PredictorConfig};
use augur_kernels::rng::SplitMix64;
use augur_kernels::solver::{
    solve, Action, Budget, Decision, FragmentState, NodeCapacity, PlacementInput, SolverConfig,
};
use augur_kernels::stats::{AccessKind, CoreRecorder, FragmentIndex, NodeId};

const NODES: usize = 4;
const FRAGMENTS: usize = 64;
const SEASON: usize = 24;
const TICKS: usize = 480;
const HORIZON: usize = 10;
const FRAGMENT_BYTES: u64 = 4 << 20;

/// Expected accesses to `f` from `n` at tick `t`.
fn rate(t: usize, f: usize, n: usize) -> f64 {
    let group = f % NODES;
    let first_half = t % SEASON < SEASON / 2;
    let active = if first_half {
        group
    } else {
        (group + 2) % NODES
    };
    let mut r = if n == active { 300.0 } else { 10.0 };
    if (300..340).contains(&t) && f < 4 && n == 1 {
        r += 2_000.0;
    }
    r
}

/// Expected accesses over the next `HORIZON` ticks after `t`, as an affinity (the oracle's view).
fn true_future(t: usize) -> Affinity {
    let rows = (0..FRAGMENTS)
        .map(|f| FragmentAffinity {
            total: 0.0,
            by_node: (0..NODES)
                .map(|n| {
                    let sum: f64 = (t + 1..=t + HORIZON).map(|s| rate(s, f, n)).sum();
                    (n as NodeId, sum)
                })
                .collect(),
        })
        .collect();
    Affinity::from_rows(rows)
}

enum Kind {
    Static,
    Reactive(Box<ReactivePolicy>),
    Predictive(Box<Predictor>, CoreRecorder),
    Oracle,
}

struct Pending {
    id: DecisionId,
    fragment: usize,
    from: NodeId,
    to: NodeId,
    tick: usize,
    cost_us: f64,
}

struct Policy {
    name: &'static str,
    kind: Kind,
    fragments: Vec<FragmentState>,
    remote_us: f64,
    migration_us: f64,
    migrations: usize,
    pending: Vec<Pending>,
}

fn main() {
    let cost = CostModel {
        horizon_us: HORIZON as f64 * 1e6,
        ..CostModel::default()
    };
    let capacities = vec![
        NodeCapacity {
            load: 1e9,
            bytes: u64::MAX
        };
        NODES
    ];
    let budget = Budget {
        max_actions: 16,
        max_bytes: 16 * FRAGMENT_BYTES,
    };
    let solver_config = SolverConfig {
        cooldown_ticks: 3,
        ..SolverConfig::default()
    };
    let initial: Vec<FragmentState> = (0..FRAGMENTS)
        .map(|f| FragmentState {
            index: f as FragmentIndex,
            bytes: FRAGMENT_BYTES,
            owner: jump_consistent_hash(f as u64, NODES as u32) as NodeId,
            ticks_since_change: 1_000,
            split_key: None,
            right_neighbour: None,
        })
        .collect();
    let predictor_config = PredictorConfig {
        horizon: HORIZON,
        ensemble: EnsembleConfig::with_season(SEASON),
        markov_weight: 0.0,
        ..PredictorConfig::default()
    };
    let mut policies: Vec<Policy> = vec![
        ("static", Kind::Static),
        (
            "reactive",
            Kind::Reactive(Box::new(ReactivePolicy::new(ReactiveConfig {
                horizon_ticks: HORIZON as f64,
                ..ReactiveConfig::default()
            }))),
        ),
        (
            "predictive",
            Kind::Predictive(
                Box::new(Predictor::new(FRAGMENTS, predictor_config)),
                CoreRecorder::new(FRAGMENTS, NODES, 4),
            ),
        ),
        ("oracle", Kind::Oracle),
    ]
    .into_iter()
    .map(|(name, kind)| Policy {
        name,
        kind,
        fragments: initial.clone(),
        remote_us: 0.0,
        migration_us: 0.0,
        migrations: 0,
        pending: Vec::new(),
    })
    .collect();
    let heatmap_path = std::env::args().skip_while(|arg| arg != "--heatmap").nth(1);
    let mut heatmap = Heatmap::new();
    let mut feedback = FeedbackLog::new();
    let gap = cost.remote_access_us - cost.local_access_us;
    let mut rng = SplitMix64::new(2026);
    let mut history: Vec<Vec<[f64; NODES]>> = Vec::with_capacity(TICKS);

    for t in 0..TICKS {
        // The same noisy accesses for every policy.
        let counts: Vec<[f64; NODES]> = (0..FRAGMENTS)
            .map(|f| std::array::from_fn(|n| rng.poisson(rate(t, f, n)) as f64))
            .collect();
        history.push(counts.clone());
        let observed = Affinity::from_rows(
            counts
                .iter()
                .map(|row| FragmentAffinity {
                    total: 0.0,
                    by_node: row
                        .iter()
                        .enumerate()
                        .map(|(n, c)| (n as NodeId, *c))
                        .collect(),
                })
                .collect(),
        );
        for policy in &mut policies {
            for (f, row) in counts.iter().enumerate() {
                let owner = usize::from(policy.fragments[f].owner);
                let remote: f64 = row
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| *n != owner)
                    .map(|(_, c)| c)
                    .sum();
                policy.remote_us += remote * gap;
            }
            // Settle decisions whose horizon has fully elapsed: observed net benefit.
            let (due, waiting): (Vec<Pending>, Vec<Pending>) = policy
                .pending
                .drain(..)
                .partition(|p| p.tick + HORIZON <= t);
            policy.pending = waiting;
            for p in due {
                let avoided: f64 = (p.tick + 1..=p.tick + HORIZON)
                    .map(|s| {
                        history[s][p.fragment][usize::from(p.to)]
                            - history[s][p.fragment][usize::from(p.from)]
                    })
                    .sum();
                let _ = feedback.record_outcome(p.id, avoided * gap - p.cost_us);
            }
            let decisions: Vec<Decision> = match &mut policy.kind {
                Kind::Static => Vec::new(),
                Kind::Reactive(reactive) => {
                    reactive.decide(&policy.fragments, &observed, &capacities, budget, &cost)
                }
                Kind::Predictive(predictor, recorder) => {
                    for (f, row) in counts.iter().enumerate() {
                        for (n, c) in row.iter().enumerate() {
                            for _ in 0..(*c as u64) {
                                recorder.record(
                                    f as FragmentIndex,
                                    n as NodeId,
                                    AccessKind::Read,
                                    100,
                                );
                            }
                        }
                    }
                    predictor.fold(recorder);
                    let affinity = predictor.tick();
                    if heatmap_path.is_some() {
                        for (f, row) in counts.iter().enumerate() {
                            // Fragment f holds keys [f * 1024, (f + 1) * 1024) as big-endian u32.
                            let low = (f as u32 * 1024).to_be_bytes();
                            let high = ((f as u32 + 1) * 1024).to_be_bytes();
                            let predicted =
                                affinity.fragment_load(f as FragmentIndex) / HORIZON as f64;
                            heatmap.push(t as u64, &low, &high, row.iter().sum(), predicted);
                        }
                    }
                    let input = PlacementInput {
                        fragments: &policy.fragments,
                        affinity: &affinity,
                        capacities: &capacities,
                        budget,
                        cost: &cost,
                    };
                    solve(&input, &solver_config)
                }
                Kind::Oracle => oracle_policy(
                    &policy.fragments,
                    &true_future(t),
                    &capacities,
                    budget,
                    &cost,
                    &solver_config,
                ),
            };
            for decision in decisions {
                if let Action::Migrate { fragment, to } = decision.action {
                    let f = fragment as usize;
                    let from = policy.fragments[f].owner;
                    let move_cost = FRAGMENT_BYTES as f64 * cost.transfer_us_per_byte
                        + cost.handoff_cost_us(counts[f].iter().sum::<f64>() * HORIZON as f64);
                    let id = feedback.record(policy.name, &decision);
                    policy.pending.push(Pending {
                        id,
                        fragment: f,
                        from,
                        to,
                        tick: t,
                        cost_us: move_cost,
                    });
                    policy.migration_us += move_cost;
                    policy.migrations += 1;
                    policy.fragments[f].owner = to;
                    policy.fragments[f].ticks_since_change = 0;
                }
            }
            for state in &mut policy.fragments {
                state.ticks_since_change += 1;
            }
        }
    }

    println!("{TICKS} ticks, {NODES} nodes, {FRAGMENTS} fragments; cost in seconds of client-visible latency (cost model units)");
    println!(
        "{:<12}{:>14}{:>12}{:>16}{:>12}{:>12}",
        "policy", "remote (s)", "migrations", "migration (s)", "total (s)", "vs static"
    );
    let static_total = policies[0].remote_us + policies[0].migration_us;
    for policy in &policies {
        let total = policy.remote_us + policy.migration_us;
        println!(
            "{:<12}{:>14.2}{:>12}{:>16.3}{:>12.2}{:>12.3}",
            policy.name,
            policy.remote_us / 1e6,
            policy.migrations,
            policy.migration_us / 1e6,
            total / 1e6,
            total / static_total
        );
    }
    if let Some(path) = heatmap_path {
        match std::fs::write(&path, heatmap.to_csv()) {
            Ok(()) => println!("heatmap: {} cells written to {path}", heatmap.len()),
            Err(error) => eprintln!("heatmap: cannot write {path}: {error}"),
        }
    }
    println!("\nfeedback calibration (predicted vs observed net benefit per migration, over the horizon)");
    println!(
        "{:<12}{:>10}{:>16}{:>16}{:>12}{:>12}{:>10}",
        "policy", "settled", "mean pred (ms)", "mean obs (ms)", "obs/pred", "corr", "sign ok"
    );
    for (policy, report) in feedback.report() {
        println!(
            "{:<12}{:>10}{:>16.2}{:>16.2}{:>12.3}{:>12.3}{:>9.0}%",
            policy,
            report.decisions,
            report.mean_predicted_us / 1e3,
            report.mean_observed_us / 1e3,
            report.realisation_ratio,
            report.correlation,
            100.0 * report.sign_agreement
        );
    }
}
