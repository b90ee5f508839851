//! Criterion benches for the data-path recorder, the per-tick fold, the full predictor tick
//! and the placement solver, plus a cost-growth table (1k / 10k / 100k fragments) measured in
//! the same run.
//!
//! `cargo bench -p augur-kernels --bench kernels -- --warm-up-time 1 --measurement-time 2`

use augur_kernels::affinity::{Affinity, FragmentAffinity};
use augur_kernels::cost::CostModel;
use augur_kernels::ensemble::{Ensemble, EnsembleConfig};
use augur_kernels::forecast::Forecaster;
use augur_kernels::predictor::{Predictor, PredictorConfig};
use augur_kernels::rng::SplitMix64;
use augur_kernels::solver::{
    solve, Budget, FragmentState, NodeCapacity, PlacementInput, SolverConfig,
};
use augur_kernels::stats::{AccessKind, AccessStats, CoreRecorder, FragmentIndex, NodeId};
use criterion::{black_box, BatchSize, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

const NODES: usize = 16;
/// Share of (fragment, node) pairs with accesses in a tick.
const ACTIVE_SHARE: f64 = 0.10;
const ACCESSES_PER_ACTIVE_PAIR: usize = 4;

/// The (fragment, node) pairs active in every tick: 10% of all pairs, fixed seed.
fn active_pairs(fragments: usize, seed: u64) -> Vec<(FragmentIndex, NodeId)> {
    let mut rng = SplitMix64::new(seed);
    let mut pairs = Vec::new();
    for fragment in 0..fragments {
        for node in 0..NODES {
            if rng.uniform() < ACTIVE_SHARE {
                pairs.push((fragment as FragmentIndex, node as NodeId));
            }
        }
    }
    pairs
}

fn fill(recorder: &mut CoreRecorder, pairs: &[(FragmentIndex, NodeId)]) {
    for &(fragment, node) in pairs {
        for i in 0..ACCESSES_PER_ACTIVE_PAIR {
            let kind = if i == 0 {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            recorder.record(fragment, node, kind, 128);
        }
    }
}

fn bench_record(c: &mut Criterion) {
    let fragments = 10_000;
    let mut recorder = CoreRecorder::new(fragments, NODES, 4);
    let mut rng = SplitMix64::new(1);
    let events: Vec<(FragmentIndex, NodeId)> = (0..4096)
        .map(|_| {
            (
                rng.below(fragments as u64) as FragmentIndex,
                rng.below(NODES as u64) as NodeId,
            )
        })
        .collect();
    let mut next = 0usize;
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_access", |b| {
        b.iter(|| {
            let (fragment, node) = events[next & 4095];
            next = next.wrapping_add(1);
            recorder.record(
                black_box(fragment),
                black_box(node),
                AccessKind::Read,
                black_box(100),
            );
        })
    });
    group.finish();
}

fn bench_fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick_fold_16_nodes_10pct_active");
    for fragments in [1_000usize, 10_000] {
        let pairs = active_pairs(fragments, 2);
        let mut stats = AccessStats::new(120);
        let mut recorder = CoreRecorder::new(fragments, NODES, 4);
        // Reach steady state (all active pairs already live).
        for _ in 0..3 {
            fill(&mut recorder, &pairs);
            stats.fold(&mut recorder);
            stats.close_tick();
        }
        group.throughput(Throughput::Elements(fragments as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(fragments),
            &fragments,
            |b, _| {
                b.iter_batched_ref(
                    || {
                        let mut filled = recorder.clone();
                        fill(&mut filled, &pairs);
                        filled
                    },
                    |filled| {
                        stats.fold(filled);
                        stats.close_tick();
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

fn bench_predictor(c: &mut Criterion) {
    let mut group = c.benchmark_group("predictor_tick_16_nodes_10pct_active");
    group.sample_size(10);
    for fragments in [1_000usize, 10_000] {
        let pairs = active_pairs(fragments, 3);
        let mut predictor = Predictor::new(fragments, PredictorConfig::default());
        let mut recorder = CoreRecorder::new(fragments, NODES, 4);
        for _ in 0..3 {
            fill(&mut recorder, &pairs);
            predictor.fold(&mut recorder);
            predictor.tick();
        }
        group.bench_with_input(
            BenchmarkId::from_parameter(fragments),
            &fragments,
            |b, _| {
                b.iter_batched_ref(
                    || {
                        let mut filled = recorder.clone();
                        fill(&mut filled, &pairs);
                        filled
                    },
                    |filled| {
                        predictor.fold(filled);
                        black_box(predictor.tick())
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

/// One ensemble step as the predictor does it per live series: observe, then predicted volume
/// over a 2-tick horizon.
fn bench_ensemble(c: &mut Criterion) {
    let mut group = c.benchmark_group("ensemble_step");
    let mut rng = SplitMix64::new(9);
    let values: Vec<f64> = (0..4096)
        .map(|t| {
            100.0
                + 30.0 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
                + 5.0 * rng.normal()
        })
        .collect();
    for (name, config) in [
        ("no_season", EnsembleConfig::default()),
        ("season_24", EnsembleConfig::with_season(24)),
        (
            "season_24_error_horizon_2",
            EnsembleConfig {
                error_horizon: 2,
                ..EnsembleConfig::with_season(24)
            },
        ),
    ] {
        let mut ensemble = Ensemble::new(config);
        values[..200].iter().for_each(|&x| ensemble.observe(x));
        let mut index = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                index = (index + 1) % values.len();
                ensemble.observe(values[index]);
                black_box(ensemble.forecast_sum(2))
            })
        });
    }
    group.finish();
}

/// A placement problem: fragments spread over 16 nodes, each accessed by 1-3 nodes, 10% of
/// them mostly from a non-owner (so there is real work to do).
fn placement_problem(
    fragments: usize,
    seed: u64,
) -> (Vec<FragmentState>, Affinity, Vec<NodeCapacity>) {
    let mut rng = SplitMix64::new(seed);
    let mut states = Vec::with_capacity(fragments);
    let mut rows = Vec::with_capacity(fragments);
    for f in 0..fragments {
        let owner = (f % NODES) as NodeId;
        let mut row = FragmentAffinity::default();
        let remote_heavy = rng.uniform() < 0.1;
        let accessors = 1 + rng.below(3);
        for _ in 0..accessors {
            let node = rng.below(NODES as u64) as NodeId;
            row.by_node.push((node, 100.0 + 900.0 * rng.uniform()));
        }
        if remote_heavy {
            row.by_node.push((((f + 1) % NODES) as NodeId, 50_000.0));
        }
        row.by_node.sort_by_key(|(n, _)| *n);
        row.by_node.dedup_by_key(|(n, _)| *n);
        rows.push(row);
        states.push(FragmentState {
            index: f as FragmentIndex,
            bytes: 4 << 20,
            owner,
            ticks_since_change: 100,
            split_key: Some(vec![f as u8]),
            right_neighbour: Some(((f + 1) % fragments) as FragmentIndex),
        });
    }
    let affinity = Affinity::from_rows(rows);
    let total: f64 = (0..fragments)
        .map(|f| affinity.fragment_load(f as FragmentIndex))
        .sum();
    let capacities = vec![
        NodeCapacity {
            load: 1.5 * total / NODES as f64,
            bytes: u64::MAX,
        };
        NODES
    ];
    (states, affinity, capacities)
}

fn run_solver(
    states: &[FragmentState],
    affinity: &Affinity,
    capacities: &[NodeCapacity],
    cost: &CostModel,
) -> usize {
    let input = PlacementInput {
        fragments: states,
        affinity,
        capacities,
        budget: Budget {
            max_actions: 64,
            max_bytes: 1 << 30,
        },
        cost,
    };
    solve(&input, &SolverConfig::default()).len()
}

fn bench_solver(c: &mut Criterion) {
    let mut group = c.benchmark_group("solver_16_nodes");
    let cost = CostModel::default();
    for fragments in [1_000usize, 10_000, 100_000] {
        let (states, affinity, capacities) = placement_problem(fragments, 4);
        group.throughput(Throughput::Elements(fragments as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(fragments),
            &fragments,
            |b, _| b.iter(|| black_box(run_solver(&states, &affinity, &capacities, &cost))),
        );
    }
    group.finish();
}

/// Median wall time of `runs` calls.
fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Cost growth with the number of fragments, measured here, printed as ratios to 1k.
fn print_growth() {
    println!("\ncost growth (median of 5 runs; 16 nodes; 10% of pairs active for the fold)");
    println!(
        "{:>10}{:>14}{:>10}{:>14}{:>10}",
        "fragments", "fold+close", "x 1k", "solver", "x 1k"
    );
    let cost = CostModel::default();
    let mut base: Option<(f64, f64)> = None;
    for fragments in [1_000usize, 10_000, 100_000] {
        let pairs = active_pairs(fragments, 2);
        let mut stats = AccessStats::new(120);
        let mut recorder = CoreRecorder::new(fragments, NODES, 4);
        for _ in 0..2 {
            fill(&mut recorder, &pairs);
            stats.fold(&mut recorder);
            stats.close_tick();
        }
        // Time only the fold and close, not the refill of the recorder.
        let mut fold_times: Vec<Duration> = (0..5)
            .map(|_| {
                let mut filled = recorder.clone();
                fill(&mut filled, &pairs);
                let start = Instant::now();
                stats.fold(&mut filled);
                stats.close_tick();
                start.elapsed()
            })
            .collect();
        fold_times.sort();
        let fold_ms = fold_times[2].as_secs_f64() * 1e3;
        let (states, affinity, capacities) = placement_problem(fragments, 4);
        let solver_ms = median_time(5, || {
            black_box(run_solver(&states, &affinity, &capacities, &cost));
        })
        .as_secs_f64()
            * 1e3;
        let (fold_base, solver_base) = *base.get_or_insert((fold_ms, solver_ms));
        println!(
            "{:>10}{:>11.3} ms{:>10.1}{:>11.3} ms{:>10.1}",
            fragments,
            fold_ms,
            fold_ms / fold_base.max(1e-9),
            solver_ms,
            solver_ms / solver_base.max(1e-9)
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_record(&mut criterion);
    bench_fold(&mut criterion);
    bench_predictor(&mut criterion);
    bench_ensemble(&mut criterion);
    bench_solver(&mut criterion);
    criterion.final_summary();
    print_growth();
}
