//! Two nodes in one process, wired by hand (no ownership table): node 1 owns keys
//! below 0x80 on its two cores, node 2 the rest. Every key must read and write the
//! same through either node, multi-key commands must split by owner and come back in
//! order, and the key-space commands must cover both nodes.

mod common;

use std::collections::BTreeSet;

use augur_node::context::NodeShared;
use augur_node::router::table::Owner;
use bytes::Bytes;
use redis::Commands;

use common::wired::{node, wire};

fn b(x: &[u8]) -> Bytes {
    Bytes::copy_from_slice(x)
}

/// Keys whose first byte runs over all 256 values, so both nodes and all cores own some.
fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut k = vec![(i % 256) as u8];
            k.extend_from_slice(format!("key:{i}").as_bytes());
            k
        })
        .collect()
}

#[test]
fn every_key_reads_and_writes_the_same_through_either_node() {
    let one = node(
        1,
        2,
        vec![
            (b(b""), Owner::Core(0), 1),
            (b(b"\x40"), Owner::Core(1), 2),
            (b(b"\x80"), Owner::Node(2), 3),
        ],
        vec![
            vec![(b(b""), Some(b(b"\x40")))],
            vec![(b(b"\x40"), Some(b(b"\x80")))],
        ],
    );
    let two = node(
        2,
        1,
        vec![(b(b""), Owner::Node(1), 1), (b(b"\x80"), Owner::Core(0), 3)],
        vec![vec![(b(b"\x80"), None)]],
    );
    wire(&one, 1, &two, 2);
    let mut c1 = common::client(one.port);
    let mut c2 = common::client(two.port);
    let keys = keys(600);

    // Writes through node 1, reads through node 2, and the other way round.
    for (i, k) in keys.iter().enumerate() {
        let _: () = c1.set(k, format!("v{i}")).expect("set via 1");
    }
    for (i, k) in keys.iter().enumerate() {
        let v: String = c2.get(k).expect("get via 2");
        assert_eq!(v, format!("v{i}"));
    }
    for (i, k) in keys.iter().enumerate().step_by(3) {
        let _: () = c2.set(k, format!("w{i}")).expect("set via 2");
    }
    for (i, k) in keys.iter().enumerate() {
        let want = if i % 3 == 0 {
            format!("w{i}")
        } else {
            format!("v{i}")
        };
        let v1: String = c1.get(k).expect("get via 1");
        let v2: String = c2.get(k).expect("get via 2");
        assert_eq!((&v1, &v2), (&want, &want), "key {k:?}");
    }

    // A pipeline mixing owners keeps request order, and multi-key commands split by
    // owner and reassemble.
    let sample: Vec<&Vec<u8>> = keys.iter().take(40).collect();
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&sample)
        .query(&mut c2)
        .expect("mget");
    for (i, v) in got.iter().enumerate() {
        let want = if i % 3 == 0 {
            format!("w{i}")
        } else {
            format!("v{i}")
        };
        assert_eq!(v.as_deref(), Some(want.as_str()));
    }
    let mut pipe = redis::pipe();
    for k in &sample {
        // Only in this order does every INCRBY answer 10.
        pipe.cmd("SET").arg(*k).arg(0).ignore();
        pipe.cmd("INCR").arg(*k).ignore();
        pipe.cmd("SET").arg(*k).arg(7).ignore();
        pipe.cmd("INCRBY").arg(*k).arg(3);
    }
    let incrs: Vec<i64> = pipe.query(&mut c1).expect("pipeline");
    assert!(incrs.iter().all(|&n| n == 10), "{incrs:?}");
    let deleted: i64 = redis::cmd("DEL")
        .arg(&sample[..20])
        .query(&mut c2)
        .expect("del");
    assert_eq!(deleted, 20);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&sample)
        .query(&mut c1)
        .expect("exists");
    assert_eq!(exists, 20);

    // The key-space commands cover both nodes, from either.
    let expected = keys.len() as i64 - 20;
    for c in [&mut c1, &mut c2] {
        let n: i64 = redis::cmd("DBSIZE").query(c).expect("dbsize");
        assert_eq!(n, expected);
        let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).expect("keys");
        assert_eq!(all.len() as i64, expected);
        let mut seen = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(50)
                .query(c)
                .expect("scan");
            for k in batch {
                assert!(seen.insert(k), "SCAN returned a key twice");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len() as i64, expected);
    }
    let sum =
        |s: &NodeShared,
         f: fn(&augur_node::telemetry::stats::CoreStats) -> &std::sync::atomic::AtomicU64| {
            s.stats
                .iter()
                .map(|c| f(c).load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
        };
    for s in [&one.shared, &two.shared] {
        assert!(
            sum(s, |c| &c.remote_requests) > 0,
            "writes went as messages"
        );
        assert!(sum(s, |c| &c.remote_reads) > 0, "reads went one-sided");
    }

    // Rewrite node 2's keys with larger values (its fragments split and compact,
    // retiring regions node 1 holds descriptors of), reading each back through node
    // 1 right after: a stale descriptor must never give an old value.
    let splits_before = sum(&two.shared, |c| &c.splits) + sum(&two.shared, |c| &c.compactions);
    for round in 0..3 {
        for (i, k) in keys.iter().enumerate().filter(|(_, k)| k[0] >= 0x80) {
            let v = format!("r{round}-{i}-{}", "x".repeat(200));
            let _: () = c2.set(k, &v).expect("set via 2");
            let got: String = c1.get(k).expect("get via 1");
            assert_eq!(got, v);
        }
    }
    assert!(
        sum(&two.shared, |c| &c.splits) + sum(&two.shared, |c| &c.compactions) > splits_before,
        "node 2s fragments never split or compacted ({} before): the test proved nothing",
        splits_before
    );
    let _: () = redis::cmd("FLUSHALL").query(&mut c2).expect("flushall");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c1).expect("dbsize");
    assert_eq!(n, 0);
}
