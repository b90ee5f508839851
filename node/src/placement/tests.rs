use std::collections::HashMap;

use augur_kernels::rng::SplitMix64;
use proptest::prelude::*;

use super::*;

fn fragment(id: u64, owner: u64, lo: &[u8], hi: Option<&[u8]>) -> FragmentView {
    FragmentView {
        id,
        owner,
        bytes: 4 << 20,
        stable: true,
        lo: lo.to_vec(),
        hi: hi.map(<[u8]>::to_vec),
    }
}

/// Fragments with ids 1..=n over single-byte ranges, owners round-robin over `nodes`.
fn fragments(n: u64, nodes: &[u64]) -> Vec<FragmentView> {
    (1..=n)
        .map(|id| {
            let lo = [id as u8 * 10];
            let hi = [id as u8 * 10 + 10];
            fragment(id, nodes[(id as usize) % nodes.len()], &lo, Some(&hi))
        })
        .collect()
}

/// Drive a controller over `ticks` ticks of `workload(tick) -> rates`, carrying out every
/// decision at once; `check(tick, fragments)` runs before each tick with the placement in
/// force during it. Returns the number of moves per tick.
fn run(
    controller: &mut Controller,
    fragments: &mut Vec<FragmentView>,
    nodes: &[u64],
    ticks: u64,
    mut workload: impl FnMut(u64, &[FragmentView]) -> HashMap<u64, HashMap<u64, f64>>,
    mut check: impl FnMut(u64, &[FragmentView]),
) -> Vec<usize> {
    let mut moves = Vec::new();
    for t in 0..ticks {
        check(t, fragments);
        let rates = workload(t, fragments);
        let now_ms = t * 1_000;
        let input = TickInput {
            now_ms,
            fragments: fragments.as_slice(),
            nodes,
            rates: &rates,
            hints: &[],
            orders: &[],
        };
        let decisions = controller.tick(&input);
        assert!(decisions.len() <= controller.config().max_moves_per_tick);
        moves.push(decisions.len());
        for decision in decisions {
            let Action::Migrate { fragment, to } = decision.action;
            assert!(nodes.contains(&to));
            let view = fragments
                .iter_mut()
                .find(|f| f.id == fragment)
                .expect("decided on a fragment that exists");
            assert_ne!(view.owner, to, "a move to the current owner");
            view.owner = to;
            controller.outcome(fragment, true, now_ms + 500);
        }
    }
    moves
}

const NODES: [u64; 3] = [1, 2, 3];
const HOT: u64 = 100;
const PERIOD_K: u64 = 10;

/// The node whose clients are hot at tick `t`: 1, 2, 3, 1, ... every `PERIOD_K` ticks.
fn hot_node(t: u64) -> u64 {
    NODES[((t / PERIOD_K) % 3) as usize]
}

/// Moving hotspot: fragment `HOT` gets ~2000/s from the hot node's clients and ~20/s from the
/// others; every other fragment ~50/s from each node (Poisson noise, fixed seed).
fn moving_hotspot(
    rng: &mut SplitMix64,
) -> impl FnMut(u64, &[FragmentView]) -> HashMap<u64, HashMap<u64, f64>> + '_ {
    move |t, fragments| {
        let mut rates: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
        for f in fragments {
            for &n in &NODES {
                let mean = if f.id >= HOT {
                    if n == hot_node(t) {
                        2_000.0
                    } else {
                        20.0
                    }
                } else {
                    50.0
                };
                rates
                    .entry(f.id)
                    .or_default()
                    .insert(n, rng.poisson(mean) as f64);
            }
        }
        rates
    }
}

fn periodic_config() -> ControllerConfig {
    ControllerConfig {
        season_ticks: Some(3 * PERIOD_K as usize),
        ..ControllerConfig::default()
    }
}

/// Local-hit ticks of the hot fragment after warm-up, out of the measured ticks.
fn hotspot_local_hits(policy: Policy, ticks: u64, warm_up: u64) -> (u64, u64, Controller) {
    hotspot_local_hits_with(
        Controller::new(policy, periodic_config()),
        7,
        ticks,
        warm_up,
    )
}

/// The same with a given controller and workload seed.
fn hotspot_local_hits_with(
    mut controller: Controller,
    seed: u64,
    ticks: u64,
    warm_up: u64,
) -> (u64, u64, Controller) {
    let mut frags = fragments(8, &NODES);
    frags.push(fragment(HOT, 1, b"\xf0", None));
    let mut rng = SplitMix64::new(seed);
    let mut hits = 0;
    let mut measured = 0;
    run(
        &mut controller,
        &mut frags,
        &NODES,
        ticks,
        moving_hotspot(&mut rng),
        |t, fragments| {
            if t >= warm_up {
                measured += 1;
                let owner = fragments.iter().find(|f| f.id == HOT).map(|f| f.owner);
                if owner == Some(hot_node(t)) {
                    hits += 1;
                }
            }
        },
    );
    (hits, measured, controller)
}

#[test]
fn predictive_detects_the_period_itself() {
    let ticks = 360;
    let warm_up = 150;
    let (hits, measured, controller) = hotspot_local_hits_with(
        Controller::new(Policy::Predictive, ControllerConfig::default()),
        5,
        ticks,
        warm_up,
    );
    println!(
        "season detected: {:?}; local-hit ticks {hits} of {measured} after {warm_up}",
        controller.season()
    );
    assert_eq!(controller.season(), Some(3 * PERIOD_K as usize));
    assert!(hits * 10 >= measured * 9, "{hits} of {measured}");
    assert!(controller.report().contains("season 30 ticks"));
}

#[test]
fn no_season_is_detected_without_a_cycle() {
    let mut controller = Controller::new(Policy::Predictive, ControllerConfig::default());
    let mut frags = fragments(6, &NODES);
    let mut rng = SplitMix64::new(9);
    // A hotspot that jumps at irregular ticks to a random node.
    let mut node = 1;
    run(
        &mut controller,
        &mut frags,
        &NODES,
        400,
        |_, fragments| {
            if rng.below(13) == 0 {
                node = 1 + rng.below(3);
            }
            let mut rates: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
            for f in fragments {
                for &n in &NODES {
                    let mean = if f.id == 1 && n == node {
                        1_000.0
                    } else {
                        30.0
                    };
                    rates.entry(f.id).or_default().insert(n, mean);
                }
            }
            rates
        },
        |_, _| {},
    );
    assert_eq!(controller.season(), None);
}

#[test]
fn unreported_decisions_expire_as_failed() {
    let config = ControllerConfig {
        in_flight_timeout_ticks: 5,
        ..ControllerConfig::default()
    };
    let frags = vec![fragment(1, 1, b"", None)];
    let rates = one_fragment_rates(&[(2, 1_000.0)]);
    let mut controller = Controller::new(Policy::Reactive, config);
    let mut decided = Vec::new();
    for t in 0..40 {
        let decisions = controller.tick(&TickInput {
            now_ms: t * 1_000,
            fragments: &frags,
            nodes: &NODES,
            rates: &rates,
            hints: &[],
            orders: &[],
        });
        if !decisions.is_empty() {
            decided.push(t);
        }
    }
    // Never carried out: decided again only after each timeout, and the stale ones are
    // settled as failed rather than kept forever.
    assert!(decided.len() >= 3, "{decided:?}");
    assert!(decided.windows(2).all(|w| w[1] - w[0] > 5), "{decided:?}");
    let counters = controller.feedback.counters(Policy::Reactive);
    assert_eq!(counters.failed as usize, decided.len() - 1);
    assert!(controller.feedback.unsettled() <= 1);
}

#[test]
fn the_per_tick_budget_holds_for_moves_and_bytes() {
    let mut frags = fragments(6, &[1]);
    for f in &mut frags {
        f.bytes = 600 << 20;
    }
    let mut rates: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
    for f in &frags {
        rates.entry(f.id).or_default().insert(2, 1e6);
    }
    let hints = [Hint {
        lo: Vec::new(),
        hi: None,
        node: 2,
        until_ms: u64::MAX,
    }];
    for (policy, max_bytes, expected) in [
        (Policy::Reactive, 1 << 30, 1), // 2 × 600 MiB > 1 GiB
        (Policy::Reactive, 4 << 30, 2), // max_moves_per_tick
        (Policy::Predictive, 1 << 30, 1),
        (Policy::Predictive, 4 << 30, 2),
    ] {
        let config = ControllerConfig {
            max_bytes_per_tick: max_bytes,
            max_moves_per_tick: 2,
            reactive_ticks: 1,
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(policy, config);
        let decisions = controller.tick(&TickInput {
            now_ms: 0,
            fragments: &frags,
            nodes: &NODES,
            rates: &rates,
            hints: &hints,
            orders: &[],
        });
        assert_eq!(decisions.len(), expected, "{policy} {max_bytes}");
        assert!(decisions
            .iter()
            .all(|d| matches!(d.action, Action::Migrate { to: 2, .. })));
    }
}

#[test]
fn policy_names_round_trip() {
    for policy in Policy::ALL {
        assert_eq!(policy.to_string().parse::<Policy>(), Ok(policy));
    }
    assert_eq!(" Predictive ".parse::<Policy>(), Ok(Policy::Predictive));
    assert!("oracle".parse::<Policy>().is_err());
}

#[test]
fn static_never_moves() {
    let (hits, measured, controller) = hotspot_local_hits(Policy::Static, 200, 0);
    assert_eq!(controller.feedback.counters(Policy::Static).decisions, 0);
    // The hot fragment stays on node 1: local exactly while node 1 is hot.
    assert_eq!(measured, 200);
    assert_eq!(hits, (0..200).filter(|&t| hot_node(t) == 1).count() as u64);
}

fn one_fragment_rates(by_node: &[(u64, f64)]) -> HashMap<u64, HashMap<u64, f64>> {
    let mut rates = HashMap::new();
    rates.insert(1, by_node.iter().copied().collect());
    rates
}

#[test]
fn reactive_moves_after_exactly_k_ticks_and_respects_min_rate() {
    let config = ControllerConfig::default();
    let k = config.reactive_ticks as usize;
    let frags = vec![fragment(1, 1, b"", None)];
    let tick = |controller: &mut Controller, t: u64, rates: &HashMap<u64, HashMap<u64, f64>>| {
        controller.tick(&TickInput {
            now_ms: t * 1_000,
            fragments: &frags,
            nodes: &NODES,
            rates,
            hints: &[],
            orders: &[],
        })
    };
    // Node 2 dominant (80% of 1000/s), except one tick that breaks the streak.
    let dominant = one_fragment_rates(&[(1, 200.0), (2, 800.0)]);
    let balanced = one_fragment_rates(&[(1, 500.0), (2, 500.0)]);
    let mut controller = Controller::new(Policy::Reactive, config.clone());
    let mut counts = Vec::new();
    for t in 0..(k as u64 - 1) {
        counts.push(tick(&mut controller, t, &dominant).len());
    }
    counts.push(tick(&mut controller, 10, &balanced).len());
    for t in 0..k as u64 {
        let decisions = tick(&mut controller, 20 + t, &dominant);
        counts.push(decisions.len());
        if let Some(d) = decisions.first() {
            assert_eq!(d.action, Action::Migrate { fragment: 1, to: 2 });
            assert!(d.reason.starts_with("reactive"));
        }
    }
    let mut expected = vec![0; 2 * k];
    expected[2 * k - 1] = 1;
    assert_eq!(counts, expected);

    // Same shares below min_rate: never.
    let quiet = one_fragment_rates(&[(1, 2.0), (2, 8.0)]);
    let mut controller = Controller::new(Policy::Reactive, config);
    for t in 0..50 {
        assert!(tick(&mut controller, t, &quiet).is_empty());
    }
}

#[test]
fn predictive_follows_a_periodic_hotspot_ahead_of_reactive() {
    let ticks = 330;
    let warm_up = 90; // three periods
    let (predictive_hits, measured, predictive) =
        hotspot_local_hits(Policy::Predictive, ticks, warm_up);
    let (reactive_hits, _, reactive) = hotspot_local_hits(Policy::Reactive, ticks, warm_up);
    let (static_hits, _, _) = hotspot_local_hits(Policy::Static, ticks, warm_up);
    let pct = |hits: u64| 100.0 * hits as f64 / measured as f64;
    println!(
        "local-hit ticks of the hot fragment over {measured} ticks after {warm_up} warm-up: \
         predictive {predictive_hits} ({:.1}%), reactive {reactive_hits} ({:.1}%), static {static_hits} ({:.1}%)",
        pct(predictive_hits),
        pct(reactive_hits),
        pct(static_hits)
    );
    println!("predictive report:\n{}", predictive.report());
    println!("reactive report:\n{}", reactive.report());
    assert!(pct(predictive_hits) >= 90.0);
    assert!(pct(reactive_hits) <= pct(predictive_hits) - 15.0);
    // Reactive follows exactly `reactive_ticks` after each shift: it misses that many ticks
    // of every K.
    let k = u64::from(ControllerConfig::default().reactive_ticks);
    assert_eq!(reactive_hits * PERIOD_K, measured * (PERIOD_K - k));
    // The cold fragments never moved: every predictive move was the hot one's.
    let moves = predictive.feedback.counters(Policy::Predictive).moved;
    assert!(moves <= ticks / PERIOD_K + 3, "{moves} moves");
}

/// Moves after warm-up on a workload with fixed per-(fragment, node) means.
fn moves_after_warm_up(policy: Policy, means: impl Fn(u64, u64) -> f64) -> (usize, usize) {
    let mut controller = Controller::new(policy, ControllerConfig::default());
    let mut frags = fragments(12, &NODES);
    let mut rng = SplitMix64::new(11);
    let moves = run(
        &mut controller,
        &mut frags,
        &NODES,
        1_300,
        |_, fragments| {
            let mut rates: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
            for f in fragments {
                for &n in &NODES {
                    let count = rng.poisson(means(f.id, n)) as f64;
                    rates.entry(f.id).or_default().insert(n, count);
                }
            }
            rates
        },
        |_, _| {},
    );
    (moves[..100].iter().sum(), moves[100..].iter().sum())
}

#[test]
fn no_churn_on_a_uniform_workload() {
    for rate in [20.0, 300.0, 5_000.0] {
        let (_, after) = moves_after_warm_up(Policy::Predictive, |_, _| rate);
        assert!(after <= 2, "{after} moves in 1200 ticks at {rate}/s");
        let (before, after) = moves_after_warm_up(Policy::Reactive, |_, _| rate);
        assert_eq!(before + after, 0);
    }
}

#[test]
fn no_churn_on_a_static_skewed_workload() {
    // Each fragment's dominant node is fixed (70% of its accesses), usually not its owner.
    let skewed = |f: u64, n: u64| if n == 1 + (f * 2) % 3 { 700.0 } else { 150.0 };
    let (before, after) = moves_after_warm_up(Policy::Predictive, skewed);
    println!("static skew, predictive: {before} moves in warm-up, {after} after");
    assert!(before >= 4, "it should have placed the fragments first");
    assert!(after <= 2, "{after} moves in 1200 ticks");
    let (before, after) = moves_after_warm_up(Policy::Reactive, skewed);
    assert!(before >= 4);
    assert_eq!(after, 0);
}

#[test]
fn a_hint_moves_a_range_before_any_access() {
    let frags = vec![fragment(1, 1, b"a", Some(b"m")), fragment(2, 1, b"m", None)];
    let rates = HashMap::new();
    let mut controller = Controller::new(Policy::Predictive, ControllerConfig::default());
    let tick = |controller: &mut Controller, now_ms: u64, hints: &[Hint]| {
        controller.tick(&TickInput {
            now_ms,
            fragments: &frags,
            nodes: &NODES,
            rates: &rates,
            hints,
            orders: &[],
        })
    };
    let hint = |node, until_ms| Hint {
        lo: b"user:".to_vec(),
        hi: Some(b"user;".to_vec()),
        node,
        until_ms,
    };
    // Expired, or naming a node that is not a member: nothing.
    assert!(tick(&mut controller, 5_000, &[hint(3, 5_000)]).is_empty());
    assert!(tick(&mut controller, 6_000, &[hint(9, 60_000)]).is_empty());
    let decisions = tick(&mut controller, 7_000, &[hint(3, 60_000)]);
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].action, Action::Migrate { fragment: 2, to: 3 });
    assert!(
        decisions[0].reason.contains("hint"),
        "{}",
        decisions[0].reason
    );
    assert!(decisions[0].predicted_benefit_us > decisions[0].cost_us);
    // A single-key hint inside fragment 1.
    let key = Hint {
        lo: b"b".to_vec(),
        hi: None,
        node: 2,
        until_ms: 60_000,
    };
    let key = Hint {
        hi: Some(key.lo.clone()),
        ..key
    };
    let decisions = tick(&mut controller, 8_000, &[key]);
    assert_eq!(
        decisions
            .iter()
            .map(|d| d.action.clone())
            .collect::<Vec<_>>(),
        vec![Action::Migrate { fragment: 1, to: 2 }]
    );
}

#[test]
fn fragments_that_split_and_merge_keep_it_working() {
    let mut controller = Controller::new(Policy::Predictive, periodic_config());
    let mut frags = fragments(4, &NODES);
    frags.push(fragment(HOT, 1, b"\xf0", None));
    let mut rng = SplitMix64::new(3);
    let mut workload = moving_hotspot(&mut rng);
    let mut hits_after_split = 0;
    for phase in 0..3 {
        match phase {
            // Split: HOT keeps [f0, f8), a new fragment takes [f8, ..) with the same owner.
            1 => {
                let owner = frags.iter().find(|f| f.id == HOT).map_or(1, |f| f.owner);
                if let Some(f) = frags.iter_mut().find(|f| f.id == HOT) {
                    f.hi = Some(b"\xf8".to_vec());
                }
                frags.push(fragment(HOT + 1, owner, b"\xf8", None));
            }
            // Merge back, and a cold fragment disappears too.
            2 => {
                frags.retain(|f| f.id != HOT + 1 && f.id != 2);
                if let Some(f) = frags.iter_mut().find(|f| f.id == HOT) {
                    f.hi = None;
                }
            }
            _ => {}
        }
        run(
            &mut controller,
            &mut frags,
            &NODES,
            150,
            |t, f| workload(phase * 150 + t, f),
            |t, f| {
                if phase == 1 && t >= 90 {
                    let owner = f.iter().find(|f| f.id == HOT + 1).map(|f| f.owner);
                    hits_after_split += u64::from(owner == Some(hot_node(150 + t)));
                }
            },
        );
    }
    // The new half learnt its own season within the phase.
    assert!(hits_after_split >= 45, "{hits_after_split} of 60");
}

fn arb_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(f64::MAX),
        0.0..10_000.0f64,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Garbage in (NaN/inf/negative rates, unknown owners and accessors, duplicate fragment
    /// ids, empty tables, odd hints): no panic, and decisions always name a present fragment
    /// and a member other than its owner, within the per-tick limit.
    #[test]
    fn garbage_never_panics(
        ticks in proptest::collection::vec(
            (
                proptest::collection::vec((0u64..12, 0u64..6, any::<u64>(), any::<bool>()), 0..10),
                proptest::collection::vec(0u64..6, 0..5),
                proptest::collection::vec((0u64..14, 0u64..7, arb_rate()), 0..40),
                proptest::collection::vec((any::<u8>(), proptest::option::of(any::<u8>()), 0u64..7, any::<u64>()), 0..3),
            ),
            1..25,
        ),
        policy in prop_oneof![Just(Policy::Static), Just(Policy::Reactive), Just(Policy::Predictive)],
        season in proptest::option::of(0usize..8),
    ) {
        let config = ControllerConfig {
            season_ticks: season,
            reactive_ticks: 1,
            min_rate: 0.0,
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(policy, config);
        for (t, (frags, nodes, rates, hints)) in ticks.into_iter().enumerate() {
            let frags: Vec<FragmentView> = frags
                .into_iter()
                .map(|(id, owner, bytes, stable)| FragmentView {
                    id,
                    owner,
                    bytes,
                    stable,
                    lo: vec![id as u8],
                    hi: None,
                })
                .collect();
            let mut rate_map: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
            for (f, n, r) in rates {
                rate_map.entry(f).or_default().insert(n, r);
            }
            let hints: Vec<Hint> = hints
                .into_iter()
                .map(|(lo, hi, node, until_ms)| Hint { lo: vec![lo], hi: hi.map(|h| vec![h]), node, until_ms })
                .collect();
            let input = TickInput {
                now_ms: t as u64 * 1_000,
                fragments: &frags,
                nodes: &nodes,
                rates: &rate_map,
                hints: &hints,
                orders: &[],
            };
            let decisions = controller.tick(&input);
            prop_assert!(decisions.len() <= controller.config().max_moves_per_tick);
            for (i, d) in decisions.iter().enumerate() {
                let Action::Migrate { fragment, to } = d.action;
                let view = frags.iter().find(|f| f.id == fragment);
                prop_assert!(view.is_some());
                prop_assert!(nodes.contains(&to));
                prop_assert!(view.is_some_and(|v| v.owner != to));
                prop_assert!(d.predicted_benefit_us.is_finite() && d.cost_us.is_finite());
                controller.outcome(fragment, i % 2 == 0, t as u64 * 1_000);
            }
            controller.outcome(99, true, 0);
        }
        prop_assert!(controller.report().contains("(active)"));
    }
}

/// A steady 100 accesses/s from a remote node to a 4 MiB fragment: priced with the RDMA
/// constants (10 µs saved per access) the move never pays for itself within the payback
/// window; priced with a measured 300 µs peer round trip it does. Bad samples change
/// nothing.
#[test]
fn a_measured_round_trip_prices_remote_accesses() {
    let decide = |rtt: Option<f64>| {
        let mut c = Controller::new(Policy::Predictive, ControllerConfig::default());
        if let Some(rtt) = rtt {
            c.calibrate(rtt);
        }
        let mut fragments = vec![fragment(1, 1, b"a", Some(b"b"))];
        let moves = run(
            &mut c,
            &mut fragments,
            &NODES,
            20,
            |_, _| HashMap::from([(1, HashMap::from([(2, 100.0)]))]),
            |_, _| {},
        );
        (moves.iter().sum::<usize>(), fragments[0].owner)
    };
    assert_eq!(decide(None), (0, 1));
    assert_eq!(decide(Some(f64::NAN)), (0, 1));
    assert_eq!(decide(Some(-5.0)), (0, 1));
    assert_eq!(decide(Some(300.0)), (1, 2));
}

/// Cold fragments with noisy accesses from every node (a few per tick, the busiest node
/// changing at random) are never moved, even with remote accesses priced high; a hot one
/// still is.
#[test]
fn predictive_leaves_cold_noise_alone() {
    let mut c = Controller::new(Policy::Predictive, ControllerConfig::default());
    c.calibrate(1_000.0);
    let mut fragments = fragments(20, &NODES);
    let mut rng = SplitMix64::new(7);
    let moved_cold = std::cell::Cell::new(0);
    run(
        &mut c,
        &mut fragments,
        &NODES,
        60,
        |_, frs| {
            frs.iter()
                .map(|f| {
                    let by_node = NODES
                        .iter()
                        .map(|&n| {
                            let hot = f.id == 1 && n == 3;
                            let rate = if hot {
                                500.0
                            } else {
                                (rng.next_u64() % 8) as f64
                            };
                            (n, rate)
                        })
                        .collect();
                    (f.id, by_node)
                })
                .collect()
        },
        |_, frs| {
            let cold_moved = frs
                .iter()
                .filter(|f| f.id != 1 && f.owner != NODES[(f.id as usize) % 3])
                .count();
            moved_cold.set(cold_moved);
        },
    );
    assert_eq!(moved_cold.get(), 0, "a cold fragment was moved");
    assert_eq!(
        fragments[0].owner, 3,
        "the hot fragment did not follow its clients"
    );
}

/// The moving hotspot with migrations that take 2.5 ticks to land (the fragment changes
/// owner, and the outcome is reported, 3 ticks after the decision). Returns, for each shift
/// after warm-up, the hot fragment's decision tick relative to the shift, and the lead the
/// controller learnt.
fn decision_offsets_with_slow_moves() -> (Vec<i64>, usize) {
    let ticks = 240;
    let warm_up = 90;
    let mut controller = Controller::new(Policy::Predictive, periodic_config());
    let mut frags = fragments(8, &NODES);
    frags.push(fragment(HOT, 1, b"\xf0", None));
    let mut rng = SplitMix64::new(11);
    let mut workload = moving_hotspot(&mut rng);
    // (lands at tick, fragment, to)
    let mut landing: Vec<(u64, u64, u64)> = Vec::new();
    let mut offsets = Vec::new();
    for t in 0..ticks {
        for &(at, fragment, to) in landing.iter().filter(|l| l.0 == t) {
            if let Some(f) = frags.iter_mut().find(|f| f.id == fragment) {
                f.owner = to;
            }
            controller.outcome(fragment, true, t * 1_000);
            let _ = at;
        }
        landing.retain(|l| l.0 != t);
        let rates = workload(t, &frags);
        let input = TickInput {
            now_ms: t * 1_000,
            fragments: &frags,
            nodes: &NODES,
            rates: &rates,
            hints: &[],
            orders: &[],
        };
        for d in controller.tick(&input) {
            let Action::Migrate { fragment, to } = d.action;
            landing.push((t + 3, fragment, to));
            if fragment == HOT && t >= warm_up {
                // The shift this move is for: the nearest multiple of the period.
                let shift = ((t + PERIOD_K / 2) / PERIOD_K) * PERIOD_K;
                offsets.push(t as i64 - shift as i64);
            }
        }
    }
    (offsets, controller.lead_ticks())
}

#[test]
fn slow_migrations_are_started_earlier() {
    let (offsets, lead) = decision_offsets_with_slow_moves();
    println!("lead {lead} ticks; hot fragment decided at {offsets:?} ticks from each shift");
    assert_eq!(lead, 3, "3 ticks from decision to reported success");
    assert!(
        offsets.len() >= 8,
        "too few moves of the hot fragment: {offsets:?}"
    );
    // Decided at least 3 ticks ahead, so the move (3 ticks) lands by the shift.
    let early = offsets.iter().filter(|&&o| o <= -3).count();
    assert!(
        early * 10 >= offsets.len() * 8,
        "most moves should be decided >= 3 ticks before their shift: {offsets:?}"
    );
}

/// A uniform workload just above `min_rate` at 200 ms ticks (every node ~4 accesses per
/// tick on every fragment, Poisson): no node needs a fragment more than another, so nothing
/// may move after warm-up, however high remote accesses are priced (8 moves without the
/// noise test). On a real cluster (YCSB-C) predictive
/// made 40 moves in 30 s like this, each "node N predicted 45-69% of ~55 accesses" — noise.
#[test]
fn predictive_does_not_chase_noise_on_a_uniform_workload() {
    let config = ControllerConfig {
        tick_ms: 200,
        ..ControllerConfig::default()
    };
    let mut c = Controller::new(Policy::Predictive, config);
    c.calibrate(1_000.0);
    let mut fragments = fragments(20, &NODES);
    let mut rng = SplitMix64::new(3);
    let moves = run(
        &mut c,
        &mut fragments,
        &NODES,
        150,
        |_, frs| {
            frs.iter()
                .map(|f| {
                    let by_node = NODES
                        .iter()
                        .map(|&n| (n, rng.poisson(4.0) as f64 * 5.0))
                        .collect();
                    (f.id, by_node)
                })
                .collect()
        },
        |_, _| {},
    );
    // The first 20 ticks are warm-up: forecasts from a handful of samples.
    let after: usize = moves[20..].iter().sum();
    assert_eq!(after, 0, "{after} moves after warm-up; per tick: {moves:?}");
}
