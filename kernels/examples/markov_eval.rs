//! Next-fragment prediction on synthetic access traces: the per-node, per-connection Markov
//! chain against a frequency-only baseline (the most accessed fragments of the same node,
//! decayed the same way).
//!
//! `cargo run --release -p augur-kernels --example markov_eval`
//!
//! Prequential: each access is predicted before it is learned from. The first 10% of each
//! trace is warm-up and not scored.

use augur_kernels::markov::{MarkovConfig, SequenceModel};
use augur_kernels::rng::SplitMix64;
use augur_kernels::stats::{FragmentIndex, NodeId};

const NODES: u16 = 4;
const CONNECTIONS_PER_NODE: u64 = 8;
const ACCESSES: usize = 200_000;
/// Accesses per tick (decay happens once per tick).
const TICK: usize = 1_000;

struct Access {
    node: NodeId,
    connection: u64,
    fragment: FragmentIndex,
}

/// Connections scan fragment ranges in order (range scans), restarting at a random fragment
/// after 10..100 steps.
fn sequential_scan(fragments: u32, seed: u64) -> Vec<Access> {
    let mut rng = SplitMix64::new(seed);
    let total = u64::from(NODES) * CONNECTIONS_PER_NODE;
    let mut position: Vec<(u32, u32)> = (0..total)
        .map(|_| (rng.below(u64::from(fragments)) as u32, 0))
        .collect();
    (0..ACCESSES)
        .map(|_| {
            let slot = rng.below(total) as usize;
            let (fragment, remaining) = &mut position[slot];
            if *remaining == 0 {
                *fragment = rng.below(u64::from(fragments)) as u32;
                *remaining = 10 + rng.below(90) as u32;
            } else {
                *fragment = (*fragment + 1) % fragments;
                *remaining -= 1;
            }
            Access {
                node: (slot as u64 / CONNECTIONS_PER_NODE) as NodeId,
                connection: slot as u64,
                fragment: *fragment,
            }
        })
        .collect()
}

/// Sessions walk a fixed link graph (4 out-links per fragment with probabilities
/// .5/.25/.15/.1), end with probability .1 per step and restart at one of 20 entry fragments
/// (Zipf-like popularity); 5% of steps jump anywhere.
fn session_walk(fragments: u32, seed: u64) -> Vec<Access> {
    let mut rng = SplitMix64::new(seed);
    let links: Vec<[u32; 4]> = (0..fragments)
        .map(|_| std::array::from_fn(|_| rng.below(u64::from(fragments)) as u32))
        .collect();
    let entry_weights: Vec<f64> = (1..=20).map(|rank| 1.0 / f64::from(rank)).collect();
    let entry_total: f64 = entry_weights.iter().sum();
    let pick_entry = |rng: &mut SplitMix64| {
        let mut u = rng.uniform() * entry_total;
        for (i, w) in entry_weights.iter().enumerate() {
            if u < *w {
                return i as u32 * (fragments / 20);
            }
            u -= w;
        }
        0
    };
    let total = u64::from(NODES) * CONNECTIONS_PER_NODE;
    let mut position: Vec<u32> = (0..total).map(|_| pick_entry(&mut rng)).collect();
    (0..ACCESSES)
        .map(|_| {
            let slot = rng.below(total) as usize;
            let current = position[slot];
            let u = rng.uniform();
            let next = if u < 0.1 {
                pick_entry(&mut rng)
            } else if u < 0.15 {
                rng.below(u64::from(fragments)) as u32
            } else {
                let v = rng.uniform();
                let link = if v < 0.5 {
                    0
                } else if v < 0.75 {
                    1
                } else if v < 0.9 {
                    2
                } else {
                    3
                };
                links[current as usize][link]
            };
            position[slot] = next;
            Access {
                node: (slot as u64 / CONNECTIONS_PER_NODE) as NodeId,
                connection: slot as u64,
                fragment: next,
            }
        })
        .collect()
}

struct Score {
    markov_top1: u64,
    markov_top5: u64,
    frequency_top1: u64,
    frequency_top5: u64,
    scored: u64,
}

fn evaluate(trace: &[Access], fragments: u32) -> Score {
    let config = MarkovConfig::default();
    let mut model = SequenceModel::new(config);
    let mut last: Vec<Option<FragmentIndex>> =
        vec![None; (u64::from(NODES) * CONNECTIONS_PER_NODE) as usize];
    let mut frequency = vec![vec![0.0f64; fragments as usize]; usize::from(NODES)];
    let mut frequent_top: Vec<Vec<FragmentIndex>> = vec![Vec::new(); usize::from(NODES)];
    let mut score = Score {
        markov_top1: 0,
        markov_top5: 0,
        frequency_top1: 0,
        frequency_top5: 0,
        scored: 0,
    };
    for (i, access) in trace.iter().enumerate() {
        let node = usize::from(access.node);
        if i >= trace.len() / 10 {
            score.scored += 1;
            let predicted = last[access.connection as usize]
                .and_then(|from| {
                    model
                        .chain(access.node)
                        .map(|chain| chain.top_next(from, 5))
                })
                .unwrap_or_default();
            if predicted.first() == Some(&access.fragment) {
                score.markov_top1 += 1;
            }
            if predicted.contains(&access.fragment) {
                score.markov_top5 += 1;
            }
            let frequent = &frequent_top[node];
            if frequent.first() == Some(&access.fragment) {
                score.frequency_top1 += 1;
            }
            if frequent.iter().take(5).any(|f| *f == access.fragment) {
                score.frequency_top5 += 1;
            }
        }
        model.observe_access(access.node, access.connection, access.fragment);
        last[access.connection as usize] = Some(access.fragment);
        frequency[node][access.fragment as usize] += 1.0;
        if i % 100 == 0 {
            for (counts, top) in frequency.iter().zip(frequent_top.iter_mut()) {
                let mut ranked: Vec<FragmentIndex> = (0..fragments).collect();
                ranked.sort_by(|a, b| counts[*b as usize].total_cmp(&counts[*a as usize]));
                ranked.truncate(5);
                *top = ranked;
            }
        }
        if (i + 1) % TICK == 0 {
            model.tick();
            for counts in &mut frequency {
                counts.iter_mut().for_each(|c| *c *= config.decay);
            }
        }
    }
    score
}

fn main() {
    println!("next-fragment hit rate, {ACCESSES} accesses per trace, {NODES} nodes x {CONNECTIONS_PER_NODE} connections, first 10% warm-up");
    println!(
        "{:<18}{:>10}{:>14}{:>14}{:>16}{:>16}",
        "trace", "fragments", "markov top-1", "markov top-5", "frequency top-1", "frequency top-5"
    );
    let fragments = 1000;
    for (name, trace) in [
        ("sequential_scan", sequential_scan(fragments, 21)),
        ("session_walk", session_walk(fragments, 22)),
    ] {
        let score = evaluate(&trace, fragments);
        let rate = |hits: u64| 100.0 * hits as f64 / score.scored.max(1) as f64;
        println!(
            "{:<18}{:>10}{:>13.1}%{:>13.1}%{:>15.1}%{:>15.1}%",
            name,
            fragments,
            rate(score.markov_top1),
            rate(score.markov_top5),
            rate(score.frequency_top1),
            rate(score.frequency_top5)
        );
    }
}
