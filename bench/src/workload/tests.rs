use super::growth::GROWTH_PREFIX;
use super::hotspot::hot_range;
use super::rng::Rng;
use super::*;
use proptest::prelude::*;
use std::io::Write;

fn params(seed: u64) -> Params {
    Params {
        seed,
        seconds: 20.0,
        sites: 3,
        rate: 2_000.0,
        records: 100_000,
        value_len: 1000,
        period_s: 4.0,
    }
}

fn take_all(w: &mut dyn Workload) -> Vec<Request> {
    std::iter::from_fn(|| w.next_request()).collect()
}

fn in_range(key: &[u8], lo: &[u8], hi: &[u8]) -> bool {
    key >= lo && (hi.is_empty() || key < hi)
}

#[test]
fn record_keys_are_ordered_and_cover_every_first_byte() {
    let records = 1_000;
    let keys: Vec<Vec<u8>> = (0..records + 10).map(|i| record_key(i, records)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
    let firsts: std::collections::BTreeSet<u8> =
        keys[..records as usize].iter().map(|k| k[0]).collect();
    assert_eq!(firsts.len(), 256);
    assert_eq!(&keys[7][1..], b"user0000000007");
    // Inserts past `records` sort after every loaded record.
    assert_eq!(keys[records as usize + 3][0], 255);
    assert_eq!(record_key(0, 1), b"\0user0000000000".to_vec());
}

#[test]
fn same_seed_same_schedule_for_every_workload() {
    for name in NAMES {
        let p = params(42);
        let mut a = build(name, &p).unwrap();
        let mut b = build(name, &p).unwrap();
        let ra: Vec<Request> = std::iter::from_fn(|| a.next_request())
            .take(20_000)
            .collect();
        let rb: Vec<Request> = std::iter::from_fn(|| b.next_request())
            .take(20_000)
            .collect();
        assert_eq!(ra.len(), 20_000, "{name}");
        assert_eq!(ra, rb, "{name}");
        assert_eq!(a.phases(), b.phases(), "{name}");
    }
}

#[test]
fn different_seeds_differ_for_every_workload() {
    for name in NAMES {
        let mut a = build(name, &params(1)).unwrap();
        let mut b = build(name, &params(2)).unwrap();
        let ra: Vec<Request> = std::iter::from_fn(|| a.next_request())
            .take(1_000)
            .collect();
        let rb: Vec<Request> = std::iter::from_fn(|| b.next_request())
            .take(1_000)
            .collect();
        assert_ne!(ra, rb, "{name}");
    }
}

#[test]
fn mean_rate_within_5_percent_over_20_seconds() {
    for name in NAMES {
        let p = params(7);
        let mut w = build(name, &p).unwrap();
        let requests = take_all(w.as_mut());
        let expected = p.rate * p.seconds;
        let got = requests.len() as f64;
        assert!(
            (got - expected).abs() <= 0.05 * expected,
            "{name}: {got} requests, expected {expected}"
        );
        let end = p.end_us();
        assert!(
            requests.iter().all(|r| r.at_us < end && r.site < p.sites),
            "{name}"
        );
    }
}

#[test]
fn ycsb_operation_proportions_within_2_points() {
    let cases: &[(&str, &[(&str, f64)])] = &[
        ("ycsb-a", &[("read", 0.5), ("update", 0.5)]),
        ("ycsb-b", &[("read", 0.95), ("update", 0.05)]),
        ("ycsb-c", &[("read", 1.0)]),
        ("ycsb-d", &[("read", 0.95), ("insert", 0.05)]),
        ("ycsb-e", &[("scan", 0.95), ("insert", 0.05)]),
        ("ycsb-f", &[("read", 0.5), ("rmw", 0.5)]),
    ];
    for (name, shares) in cases {
        let mut w = build(name, &params(3)).unwrap();
        let requests = take_all(w.as_mut());
        let n = requests.len() as f64;
        let share = |kind: &str| {
            let count = requests
                .iter()
                .filter(|r| {
                    matches!(
                        (&r.op, kind),
                        (Op::Read, "read")
                            | (Op::Update, "update")
                            | (Op::Insert, "insert")
                            | (Op::ReadModifyWrite, "rmw")
                            | (Op::Scan { .. }, "scan")
                    )
                })
                .count();
            count as f64 / n
        };
        let mut total = 0.0;
        for (kind, expected) in *shares {
            let got = share(kind);
            total += got;
            assert!(
                (got - expected).abs() <= 0.02,
                "{name} {kind}: {got} vs {expected}"
            );
        }
        assert!((total - 1.0).abs() < 1e-9, "{name}: unexpected ops");
        for r in &requests {
            match r.op {
                Op::Read | Op::Scan { .. } => assert_eq!(r.value_len, 0),
                _ => assert_eq!(r.value_len, 1000),
            }
            if let Op::Scan { records } = r.op {
                assert!((1..=100).contains(&records));
            }
        }
    }
}

/// zeta(n, θ) by Euler–Maclaurin: the first `m` terms summed, the tail integrated.
fn zeta_approx(n: f64, theta: f64) -> f64 {
    let m = 1_000_000u64;
    let head = ycsb::zeta(0, m, theta, 0.0);
    let m = m as f64;
    let tail = (n.powf(1.0 - theta) - m.powf(1.0 - theta)) / (1.0 - theta);
    head + tail + 0.5 * (n.powf(-theta) - m.powf(-theta))
}

#[test]
fn ycsb_zeta_constant_matches_its_definition() {
    // YCSB_ZETAN is zeta(10^10), not zeta(10^16) as YCSB's current ITEM_COUNT would suggest.
    let approx = zeta_approx(1e10, ZIPFIAN_THETA);
    assert!(zeta_approx(1e16, ZIPFIAN_THETA) > 45.0);
    assert!(
        (approx - YCSB_ZETAN).abs() < 1e-3,
        "{approx} vs {YCSB_ZETAN}"
    );
}

#[test]
fn zipfian_top_item_share_matches_the_zeta_normaliser() {
    let items = 1_000;
    let mut zipf = Zipfian::new(items, ZIPFIAN_THETA);
    let expected = 1.0 / ycsb::zeta(0, items, ZIPFIAN_THETA, 0.0);
    assert!((zipf.top_share() - expected).abs() < 1e-12);
    let mut rng = Rng::new(5, 0);
    let n = 200_000;
    let mut counts = vec![0u32; items as usize];
    for _ in 0..n {
        counts[zipf.next(&mut rng, items) as usize] += 1;
    }
    let top = counts[0] as f64 / n as f64;
    assert!(
        (top - expected).abs() < 0.05 * expected,
        "{top} vs {expected}"
    );
    assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
}

#[test]
fn ycsb_c_hottest_record_share_is_ycsbs() {
    // Scrambled zipfian: the hottest record takes item 0's 1/zeta(10^10) ≈ 3.78% (plus a
    // negligible share of colliding cold items).
    let p = Params {
        rate: 10_000.0,
        ..params(11)
    };
    let mut w = build("ycsb-c", &p).unwrap();
    let requests = take_all(w.as_mut());
    let mut counts = std::collections::HashMap::new();
    for r in &requests {
        *counts.entry(r.key.clone()).or_insert(0u32) += 1;
    }
    let (hot_key, hot) = counts.iter().max_by_key(|(_, c)| **c).unwrap();
    let share = *hot as f64 / requests.len() as f64;
    let expected = 1.0 / YCSB_ZETAN;
    assert!(
        (share - expected).abs() < 0.05 * expected,
        "{share} vs {expected}"
    );
    let hottest = ScrambledZipfian::new(0, p.records + 1).hottest();
    assert_eq!(*hot_key, record_key(hottest, p.records));
}

#[test]
fn ycsb_d_reads_favour_the_latest_inserts() {
    let p = params(13);
    let mut w = build("ycsb-d", &p).unwrap();
    let requests = take_all(w.as_mut());
    let inserts = requests.iter().filter(|r| r.op == Op::Insert).count() as u64;
    assert_eq!(
        requests
            .iter()
            .rev()
            .find(|r| r.op == Op::Insert)
            .unwrap()
            .key,
        record_key(p.records + inserts - 1, p.records)
    );
    // Half the reads land within the newest ~1% of records under θ = 0.99 latest.
    let recent = record_key(p.records - p.records / 100, p.records);
    let reads: Vec<&Request> = requests.iter().filter(|r| r.op == Op::Read).collect();
    let recent_reads = reads.iter().filter(|r| r.key >= recent).count();
    assert!(
        recent_reads * 2 > reads.len(),
        "{recent_reads} of {}",
        reads.len()
    );
}

#[test]
fn hotspot_hot_site_hits_the_hot_range_in_every_phase() {
    for sites in [2, 3, 5] {
        let p = Params {
            sites,
            ..params(17)
        };
        let mut w = build("hotspot", &p).unwrap();
        let phases = w.phases();
        let (lo, hi) = hot_range(p.records);
        assert_eq!(phases.len(), 5);
        for (k, phase) in phases.iter().enumerate() {
            assert_eq!(phase.site, k as u32 % sites);
            assert_eq!(phase.from_us, k as u64 * 4_000_000);
            assert_eq!(phase.to_us, (k as u64 + 1) * 4_000_000);
            assert_eq!(phase.lo, record_key(lo, p.records));
            assert_eq!(phase.hi, record_key(hi, p.records));
        }
        let requests = take_all(w.as_mut());
        for phase in &phases {
            let from_hot: Vec<&Request> = requests
                .iter()
                .filter(|r| r.at_us >= phase.from_us && r.at_us < phase.to_us)
                .filter(|r| r.site == phase.site)
                .collect();
            let hits = from_hot
                .iter()
                .filter(|r| in_range(&r.key, &phase.lo, &phase.hi))
                .count();
            let share = hits as f64 / from_hot.len() as f64;
            assert!(share >= 0.85, "sites {sites} phase {phase:?}: {share}");
        }
    }
}

#[test]
fn sun_sites_peak_in_turn_and_prefer_their_region() {
    let p = Params {
        seconds: 30.0,
        rate: 5_000.0,
        ..params(19)
    };
    let mut w = build("sun", &p).unwrap();
    let phases = w.phases();
    let requests = take_all(w.as_mut());
    let day_us = 12_000_000;
    // Around site s's peak it issues most requests, and 70% + 30%/3 of them are in its region.
    for s in 0..3u32 {
        let peak = s as u64 * day_us / 3 + day_us;
        let near: Vec<&Request> = requests
            .iter()
            .filter(|r| r.at_us.abs_diff(peak) < 1_000_000)
            .collect();
        let own: Vec<&&Request> = near.iter().filter(|r| r.site == s).collect();
        assert!(
            own.len() * 2 > near.len(),
            "site {s} does not lead at its peak"
        );
        let phase = phases
            .iter()
            .find(|ph| ph.site == s && ph.from_us <= peak && peak < ph.to_us)
            .expect("a phase covers every peak");
        let hits = own
            .iter()
            .filter(|r| in_range(&r.key, &phase.lo, &phase.hi))
            .count();
        let share = hits as f64 / own.len() as f64;
        assert!((share - 0.8).abs() < 0.05, "site {s}: {share}");
    }
}

#[test]
fn walk_phases_follow_the_session() {
    let p = params(23);
    let mut w = build("walk", &p).unwrap();
    let phases = w.phases();
    assert_eq!(phases.len(), 5);
    let requests = take_all(w.as_mut());
    for phase in &phases {
        let scans: Vec<&Request> = requests
            .iter()
            .filter(|r| r.at_us >= phase.from_us && r.at_us < phase.to_us)
            .filter(|r| matches!(r.op, Op::Scan { .. }))
            .collect();
        assert!(!scans.is_empty());
        assert!(scans.iter().all(|r| r.site == phase.site));
        assert!(scans.iter().all(|r| in_range(&r.key, &phase.lo, &phase.hi)));
        // Sequential: each scan starts where the previous ended (or wraps to the range start).
        let starts: Vec<&Vec<u8>> = scans.iter().map(|r| &r.key).collect();
        let ascending = starts.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(ascending * 10 >= starts.len() * 9);
    }
}

#[test]
fn flash_spike_is_unannounced_but_in_its_window() {
    for seed in 0..5 {
        let p = params(seed);
        let mut w = build("flash", &p).unwrap();
        let phases = w.phases();
        assert_eq!(phases.len(), 1);
        let spike = &phases[0];
        assert!(spike.from_us >= 6_000_000 && spike.from_us <= 10_000_000);
        assert_eq!(spike.to_us - spike.from_us, 4_000_000);
        let requests = take_all(w.as_mut());
        let during = requests
            .iter()
            .filter(|r| r.at_us >= spike.from_us && r.at_us < spike.to_us)
            .count() as f64;
        let before = requests.iter().filter(|r| r.at_us < 4_000_000).count() as f64;
        let ratio = during / before;
        assert!(
            (ratio - 10.0).abs() < 1.0,
            "seed {seed}: spike ratio {ratio}"
        );
        let hot = requests
            .iter()
            .filter(|r| r.at_us >= spike.from_us && r.at_us < spike.to_us)
            .filter(|r| r.site == spike.site && in_range(&r.key, &spike.lo, &spike.hi))
            .count() as f64;
        assert!(hot / during > 0.85, "seed {seed}: {}", hot / during);
    }
}

#[test]
fn growth_writes_a_fresh_prefix_at_a_growing_share() {
    let p = params(29);
    let mut w = build("growth", &p).unwrap();
    assert!(w.preload().all(|(k, _)| k[0] < GROWTH_PREFIX));
    assert_eq!(w.preload().count() as u64, p.records);
    let phase = w.phases().pop().unwrap();
    let requests = take_all(w.as_mut());
    let share = |from: u64, to: u64| {
        let window: Vec<&Request> = requests
            .iter()
            .filter(|r| r.at_us >= from && r.at_us < to)
            .collect();
        let writes: Vec<&&Request> = window.iter().filter(|r| r.op == Op::Insert).collect();
        assert!(writes
            .iter()
            .all(|r| r.site == phase.site && in_range(&r.key, &phase.lo, &phase.hi)));
        writes.len() as f64 / window.len() as f64
    };
    let early = share(0, 2_000_000);
    let late = share(18_000_000, 20_000_000);
    assert!((early - 0.0775).abs() < 0.02, "early {early}");
    assert!((late - 0.5725).abs() < 0.02, "late {late}");
}

#[test]
fn preload_is_ordered_and_bounded() {
    for name in NAMES {
        let p = Params {
            records: 5_000,
            ..params(1)
        };
        let w = build(name, &p).unwrap();
        let keys: Vec<Vec<u8>> = w.preload().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 5_000, "{name}");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{name}");
    }
}

#[test]
fn bad_params_and_names_are_refused() {
    assert!(matches!(
        build("ycsb-z", &params(1)),
        Err(WorkloadError::UnknownWorkload { .. })
    ));
    let cases = [
        Params {
            sites: 0,
            ..params(1)
        },
        Params {
            sites: 17,
            ..params(1)
        },
        Params {
            rate: 0.0,
            ..params(1)
        },
        Params {
            records: 0,
            ..params(1)
        },
        Params {
            records: 10_000_001,
            ..params(1)
        },
        Params {
            seconds: f64::NAN,
            ..params(1)
        },
        Params {
            period_s: 0.0,
            ..params(1)
        },
        Params {
            seconds: 1e7,
            period_s: 1e-3,
            ..params(1)
        },
    ];
    for p in cases {
        assert!(
            matches!(build("hotspot", &p), Err(WorkloadError::Param { .. })),
            "{p:?}"
        );
    }
}

fn trace(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

fn replay_err(content: &str) -> String {
    match replay(trace(content).path(), &params(1)) {
        Ok(_) => panic!("accepted a bad trace: {content:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn replay_streams_a_good_trace() {
    let f = trace(
        "timestamp_ms,site,op,key,size\r\n\
         1000,0,GET,user1,0\r\n\
         1000.5,2,set,a,b,c,100\n\
         \n\
         1010,1,Scan,k,20\n\
         1020,0,rmw,k2,64\n\
         1030,1,insert,k3,32\n\
         1040,1,update,k4,16\n\
         1050,0,read,k5,7\n\
         99000,0,get,late,0\n",
    );
    let mut w = replay(f.path(), &params(1)).unwrap();
    assert_eq!(w.preload().count(), 0);
    assert!(w.phases().is_empty());
    let got = take_all(w.as_mut());
    let expect = vec![
        (0, 0, Op::Read, &b"user1"[..], 0),
        (500, 2, Op::Update, b"a,b,c", 100),
        (10_000, 1, Op::Scan { records: 20 }, b"k", 0),
        (20_000, 0, Op::ReadModifyWrite, b"k2", 64),
        (30_000, 1, Op::Insert, b"k3", 32),
        (40_000, 1, Op::Update, b"k4", 16),
        (50_000, 0, Op::Read, b"k5", 0),
        // 99000 ms is 98 s in, past the 20 s schedule.
    ];
    let got: Vec<_> = got
        .iter()
        .map(|r| (r.at_us, r.site, r.op.clone(), &r.key[..], r.value_len))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn replay_errors_name_the_line() {
    let e = replay_err("0,0,get,a,0\n1,0,frobnicate,b,0\n");
    assert!(e.contains("line 2") && e.contains("unknown op"), "{e}");
    let e = replay_err("ts,0,get,a,0\n");
    assert!(
        e.contains("line 1") && e.contains("bad timestamp_ms"),
        "{e}"
    );
    let e = replay_err("0,0,get,a,0\n1,0,get,a,0\n2,x,get,a,0\n");
    assert!(e.contains("line 3") && e.contains("bad site"), "{e}");
    let e = replay_err("0,0,set,a,12k\n");
    assert!(e.contains("line 1") && e.contains("bad size"), "{e}");
    let e = replay_err("5,0,get,a,0\n7,0,get,a,0\n6,0,get,a,0\n");
    assert!(e.contains("line 3") && e.contains("non-decreasing"), "{e}");
    let long = format!("0,0,get,a,0\n0,0,get,{},0\n", "k".repeat(70_000));
    let e = replay_err(&long);
    assert!(e.contains("line 2") && e.contains("longer than"), "{e}");
    let e = replay_err(&format!("0,0,get,{},0\n", "k".repeat(2_000)));
    assert!(e.contains("line 1") && e.contains("exceeds 1024"), "{e}");
    let e = replay_err("0,3,get,a,0\n");
    assert!(e.contains("site 3 out of range"), "{e}");
    let e = replay_err("0,0,set,a,600000000\n");
    assert!(e.contains("exceeds"), "{e}");
    let e = replay_err("0,0,get\n");
    assert!(e.contains("line 1") && e.contains("5 fields"), "{e}");
    let e = replay_err("0,0,scan,a,0\n");
    assert!(e.contains("at least 1"), "{e}");
    let missing = std::path::Path::new("/nonexistent/trace.csv");
    assert!(matches!(
        replay(missing, &params(1)),
        Err(WorkloadError::Open { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn due_times_never_decrease(
        seed in any::<u64>(),
        which in 0..NAMES.len(),
        sites in 1u32..=16,
        records in 1u64..20_000,
        period_s in 0.05f64..5.0,
    ) {
        let p = Params { seed, seconds: 3.0, sites, rate: 3_000.0, records, value_len: 100, period_s };
        let mut w = build(NAMES[which], &p).unwrap();
        let mut last = 0;
        let end = p.end_us();
        while let Some(r) = w.next_request() {
            prop_assert!(r.at_us >= last, "{} went back in time", NAMES[which]);
            prop_assert!(r.at_us < end);
            prop_assert!(r.site < sites);
            last = r.at_us;
        }
        for phase in w.phases() {
            prop_assert!(phase.from_us < phase.to_us && phase.to_us <= end);
            prop_assert!(phase.site < sites);
            prop_assert!(phase.hi.is_empty() || phase.lo < phase.hi);
        }
    }
}

/// Not a pass/fail test: prints the generation rate. Run it in release:
/// `cargo test --release -p augur-bench workload::tests::generation_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn generation_speed() {
    for name in NAMES {
        let p = Params {
            rate: 100_000.0,
            seconds: 10.0,
            records: 1_000_000,
            ..params(1)
        };
        let start = std::time::Instant::now();
        let mut w = build(name, &p).unwrap();
        let n = std::iter::from_fn(|| w.next_request()).count();
        println!("{name}: {n} requests in {:?}", start.elapsed());
    }
}

#[test]
fn tiny_and_empty_schedules_work_for_every_workload() {
    for name in NAMES {
        let tiny = Params {
            records: 1,
            sites: 1,
            seconds: 2.0,
            rate: 500.0,
            period_s: 0.5,
            ..params(3)
        };
        let mut w = build(name, &tiny).unwrap();
        let requests = take_all(w.as_mut());
        assert!(requests.len() > 500, "{name}: {}", requests.len());
        assert_eq!(w.preload().count(), 1, "{name}");
        let empty = Params {
            seconds: 0.0,
            ..params(3)
        };
        let mut w = build(name, &empty).unwrap();
        assert!(w.next_request().is_none(), "{name}");
        assert!(w.phases().is_empty(), "{name}");
    }
}
