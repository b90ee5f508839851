//! Hash commands (issue #13, part 3), driven by the `redis` crate against a real
//! two-core node.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{client, keys_on_two_cores, start_node};
use redis::{Commands, RedisResult};

fn cmd<T: redis::FromRedisValue>(c: &mut redis::Connection, words: &[&str]) -> RedisResult<T> {
    let mut command = redis::cmd(words[0]);
    for w in &words[1..] {
        command.arg(*w);
    }
    command.query(c)
}

fn err(c: &mut redis::Connection, words: &[&str]) -> String {
    match cmd::<redis::Value>(c, words) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{words:?} should fail, got {v:?}"),
    }
}

/// Every key a full SCAN with these extra arguments returns.
fn scan_all(c: &mut redis::Connection, extra: &[&str]) -> BTreeSet<String> {
    let mut cursor = "0".to_string();
    let mut out = BTreeSet::new();
    for _ in 0..10_000 {
        let mut words = vec!["SCAN", cursor.as_str()];
        words.extend_from_slice(extra);
        let (next, keys): (String, Vec<String>) = cmd(c, &words).expect("scan");
        out.extend(keys);
        if next == "0" {
            return out;
        }
        cursor = next;
    }
    panic!("scan did not finish");
}

#[test]
fn hset_multiple_hgetall_on_both_cores() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    for key in [&a, &b] {
        let _: () = c
            .hset_multiple(key, &[("f1", "v1"), ("f2", "v2"), ("f3", "v3")])
            .unwrap();
        let all: HashMap<String, String> = c.hgetall(key).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all["f2"], "v2");
        let n: i64 = c.hset(key, "f4", "v4").unwrap();
        assert_eq!(n, 1);
        let n: i64 = c.hset(key, "f4", "again").unwrap();
        assert_eq!(n, 0);
        assert_eq!(c.hlen::<_, i64>(key).unwrap(), 4);
        let got: Option<String> = c.hget(key, "f4").unwrap();
        assert_eq!(got.as_deref(), Some("again"));
        let t: String = cmd(&mut c, &["TYPE", key]).unwrap();
        assert_eq!(t, "hash");
        assert!(err(&mut c, &["GET", key]).contains("WRONGTYPE"));
    }
    let _: () = c.set("plain", "v").unwrap();
    assert!(err(&mut c, &["HGET", "plain", "f"]).contains("WRONGTYPE"));
    // Fields are not keys.
    let n: i64 = cmd(&mut c, &["DBSIZE"]).unwrap();
    assert_eq!(n, 3);
    let keys: Vec<String> = c.keys("*").unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    // DEL removes the hash and its fields.
    let n: i64 = c.del(&a).unwrap();
    assert_eq!(n, 1);
    let all: HashMap<String, String> = c.hgetall(&a).unwrap();
    assert!(all.is_empty());
    let n: i64 = c.hset(&a, "new", "1").unwrap();
    assert_eq!(n, 1);
    assert_eq!(c.hlen::<_, i64>(&a).unwrap(), 1);
}

#[test]
fn hincr() {
    let port = start_node(|_| {});
    let mut c = client(port);
    assert_eq!(c.hincr::<_, _, _, i64>("counters", "n", 5).unwrap(), 5);
    assert_eq!(c.hincr::<_, _, _, i64>("counters", "n", -2).unwrap(), 3);
    let f: f64 = c.hincr("counters", "x", 1.5f64).unwrap();
    assert_eq!(f, 1.5);
    let _: () = c.hset("counters", "s", "abc").unwrap();
    assert!(
        err(&mut c, &["HINCRBY", "counters", "s", "1"]).contains("hash value is not an integer")
    );
    let _: () = c.hset("counters", "max", i64::MAX).unwrap();
    assert!(err(&mut c, &["HINCRBY", "counters", "max", "1"])
        .contains("increment or decrement would overflow"));
    assert!(
        err(&mut c, &["HINCRBYFLOAT", "counters", "s", "1"]).contains("hash value is not a float")
    );
    assert!(err(&mut c, &["HSET", "counters", "a"])
        .contains("wrong number of arguments for 'hset' command"));
    assert_eq!(c.hlen::<_, i64>("counters").unwrap(), 4);
}

#[test]
fn scan_match_with_type_hash() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let mut hashes = BTreeSet::new();
    for i in 0..60 {
        let key = format!("user:{i:03}");
        if i % 3 == 0 {
            let _: () = c.hset(&key, "name", "x").unwrap();
            hashes.insert(key);
        } else {
            let _: () = c.set(&key, "x").unwrap();
        }
        // Keys on the other core's range too.
        let other = format!("~user:{i:03}");
        let _: () = c.hset(&other, "f", "y").unwrap();
        hashes.insert(other);
    }
    let got = scan_all(&mut c, &["TYPE", "hash", "COUNT", "7"]);
    assert_eq!(got, hashes);
    let strings = scan_all(&mut c, &["TYPE", "string"]);
    assert_eq!(strings.len(), 40);
    let matched = scan_all(&mut c, &["MATCH", "user:0*", "TYPE", "hash"]);
    let expected: BTreeSet<String> = hashes
        .iter()
        .filter(|k| k.starts_with("user:0"))
        .cloned()
        .collect();
    assert_eq!(matched, expected);
    assert!(scan_all(&mut c, &["TYPE", "list"]).is_empty());
    // HSCAN through the crate's iterator.
    for i in 0..100 {
        let _: () = c.hset("wide", format!("f{i}"), i).unwrap();
    }
    let fields: Vec<(String, String)> = c.hscan("wide").unwrap().collect();
    assert_eq!(fields.len(), 100);
}

#[test]
fn splits_never_cut_a_hash() {
    // Small regions: the fragments split many times while hashes grow.
    let port = start_node(|cfg| cfg.region_size = 64 << 10);
    let mut c = client(port);
    for i in 0..400 {
        let _: () = c.set(format!("s:{i:04}"), "v".repeat(40)).unwrap();
        let h = format!("h:{:02}", i % 8);
        let _: () = c.hset(&h, format!("field-{i:04}"), "w".repeat(40)).unwrap();
    }
    let splits: u64 = common::info_field(&mut c, "augur", "splits")
        .parse()
        .expect("splits");
    assert!(splits > 0, "no split happened");
    for h in 0..8 {
        let key = format!("h:{h:02}");
        let all: HashMap<String, String> = c.hgetall(&key).unwrap();
        assert_eq!(all.len(), 50, "{key}");
        assert_eq!(c.hlen::<_, i64>(&key).unwrap(), 50);
    }
    let n: i64 = cmd(&mut c, &["DBSIZE"]).unwrap();
    assert_eq!(n, 408);
}

#[test]
fn maxmemory_refuses_hset_not_hget() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let _: () = c.hset("h", "a", "1").unwrap();
    let _: () = cmd(&mut c, &["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    assert!(err(&mut c, &["HSET", "h", "b", "2"]).contains("OOM"));
    assert!(err(&mut c, &["HINCRBY", "h", "n", "1"]).contains("OOM"));
    let got: Option<String> = c.hget("h", "a").unwrap();
    assert_eq!(got.as_deref(), Some("1"));
    let n: i64 = c.hdel("h", "a").unwrap();
    assert_eq!(n, 1, "deletes are allowed");
}
