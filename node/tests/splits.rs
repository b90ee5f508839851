//! Many keys in small regions: fragments split and move between cores, and every key
//! stays readable and is scanned exactly once, in order.

mod common;

use std::collections::BTreeSet;

use common::{client, info_field, start_node};
use redis::Commands;

fn scan_all(c: &mut redis::Connection, count: usize, pattern: Option<&str>) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("COUNT").arg(count);
        if let Some(p) = pattern {
            cmd.arg("MATCH").arg(p);
        }
        let (next, batch): (u64, Vec<String>) = cmd.query(c).unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[test]
fn ten_thousand_keys_across_splits_and_cores() {
    let port = start_node(|c| {
        c.region_size = 128 << 10;
        c.expiry_interval_ms = 10;
    });
    let mut c = client(port);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("SET")
            .arg(format!("key:{i:06}"))
            .arg(format!("value-{i}"))
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let splits: u64 = info_field(&mut c, "augur", "splits").parse().unwrap();
    let fragments: u64 = info_field(&mut c, "augur", "fragments").parse().unwrap();
    assert!(splits >= 4, "expected splits, saw {splits}");
    assert!(fragments >= 5, "expected many fragments, saw {fragments}");
    // Rebalancing moves fragments to the other core within a few ticks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while info_field(&mut c, "augur", "fragment_moves") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "no fragment ever moved to the idle core"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 0..10_000 {
        let v: String = c.get(format!("key:{i:06}")).unwrap();
        assert_eq!(v, format!("value-{i}"));
    }
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 10_000);
    let keys = scan_all(&mut c, 100, None);
    let expected: Vec<String> = (0..10_000).map(|i| format!("key:{i:06}")).collect();
    assert_eq!(keys, expected, "SCAN returns every key once, in key order");
    let matched = scan_all(&mut c, 50, Some("key:00*7"));
    assert_eq!(matched.len(), 1000);
    assert!(matched
        .iter()
        .all(|k| k.starts_with("key:00") && k.ends_with('7')));
    let all: Vec<String> = redis::cmd("KEYS").arg("key:0099*").query(&mut c).unwrap();
    assert_eq!(all.len(), 100);
}

#[test]
fn scan_is_complete_while_writes_split_fragments() {
    let port = start_node(|c| {
        c.region_size = 128 << 10;
        c.expiry_interval_ms = 10;
    });
    let mut c = client(port);
    let mut writer = client(port);
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET").arg(format!("old:{i:05}")).arg("x").ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let splits_before: u64 = info_field(&mut c, "augur", "splits").parse().unwrap();
    // Interleave scan steps with bursts of new keys that force more splits.
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    let mut burst = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(200)
            .query(&mut c)
            .unwrap();
        seen.extend(batch);
        let mut pipe = redis::pipe();
        for j in 0..400 {
            pipe.cmd("SET")
                .arg(format!("new:{burst:03}:{j:04}"))
                .arg("y")
                .ignore();
            pipe.cmd("SET")
                .arg(format!("old:{:05}x{burst}", j * 12))
                .arg("y")
                .ignore();
        }
        let _: () = pipe.query(&mut writer).unwrap();
        burst += 1;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let splits_after: u64 = info_field(&mut c, "augur", "splits").parse().unwrap();
    assert!(
        splits_after > splits_before,
        "the writes should have split fragments during the scan"
    );
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key was returned twice");
    for i in 0..5_000 {
        let k = format!("old:{i:05}");
        assert!(
            unique.contains(&k),
            "{k} present for the whole scan but not returned"
        );
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "keys come in key order");
}

#[test]
fn flushall_empties_every_core() {
    let port = start_node(|c| c.region_size = 128 << 10);
    let mut c = client(port);
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET").arg(format!("{i}")).arg("v").ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(c.get::<_, Option<String>>("5").unwrap(), None);
    let _: () = c.set("after", "1").unwrap();
    assert_eq!(c.get::<_, String>("after").unwrap(), "1");
}

/// Splits and compactions run in slices between client requests (decision 0015):
/// writes paced by their replies (a pipeline of 50 at a time, as a client waiting on
/// its answers) never find a region full, so no write waits for a copy, while the
/// fragments split and compact many times; every key stays readable meanwhile.
#[test]
fn splits_and_compactions_run_between_requests_without_stalls() {
    let port = start_node(|c| {
        c.cores = 1;
        c.region_size = 1 << 20;
    });
    let mut c = client(port);
    let mut reader = client(port);
    let n = 20_000;
    for batch in 0..n / 50 {
        let mut pipe = redis::pipe();
        for i in batch * 50..(batch + 1) * 50 {
            pipe.cmd("SET")
                .arg(format!("key:{i:06}"))
                .arg(format!("value-{i:026}"))
                .ignore();
            // Overwrites too, so that some fragments compact rather than split.
            pipe.cmd("SET")
                .arg(format!("key:{:06}", i % 500))
                .arg(format!("again-{i:026}"))
                .ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
        let probe = batch * 37 % ((batch + 1) * 50);
        let got: String = reader.get(format!("key:{probe:06}")).unwrap();
        assert!(
            got.starts_with("value-") || got.starts_with("again-"),
            "{got}"
        );
    }
    let count = |c: &mut redis::Connection, field: &str| -> u64 {
        info_field(c, "augur", field).parse().unwrap()
    };
    let (splits, compactions) = (count(&mut c, "splits"), count(&mut c, "compactions"));
    assert!(splits >= 3, "expected splits, saw {splits}");
    assert!(compactions >= 1, "expected compactions, saw {compactions}");
    assert!(count(&mut c, "rebuild_slices") > splits + compactions);
    assert_eq!(
        count(&mut c, "rebuild_stalls"),
        0,
        "a write waited for a copy"
    );
    for i in 500..n {
        let v: String = reader.get(format!("key:{i:06}")).unwrap();
        assert_eq!(v, format!("value-{i:026}"));
    }
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), n as i64);
}
