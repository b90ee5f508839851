//! Hashes (issue #13, part 3) on a 3-node cluster of real `augur node` processes: a
//! hash owned by another node is written and read through this one (HSET, HGET,
//! HGETALL cross the wire; GET on it falls back from a one-sided read to the owner's
//! WRONGTYPE), SCAN TYPE hash sees it, and it survives `AUGUR MIGRATE` of its
//! fragment whole (the migrated copy rebuilds its field sets from the region).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use redis::Commands;

mod common;

fn word<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    words: &[&str],
) -> redis::RedisResult<T> {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c.query(con)
}

fn err(con: &mut redis::Connection, words: &[&str]) -> String {
    match word::<redis::Value>(con, words) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{words:?} should fail, got {v:?}"),
    }
}

/// `per` keys owned by `node`, from candidates whose first byte spans the key space.
fn keys_on(con: &mut redis::Connection, node: u64, per: usize) -> Vec<String> {
    let mut found = Vec::new();
    for i in 0..2_000u32 {
        let first = char::from_u32(0x21 + (i * 7) % 0x5e).unwrap_or('a');
        let key = format!("{first}:h{i}");
        if common::owner(con, &key) == node {
            found.push(key);
            if found.len() == per {
                return found;
            }
        }
    }
    panic!("node {node} owns fewer than {per} of the candidate keys");
}

fn scan_all(con: &mut redis::Connection, extra: &[&str]) -> BTreeSet<String> {
    let mut cursor = "0".to_string();
    let mut out = BTreeSet::new();
    for _ in 0..10_000 {
        let mut words = vec!["SCAN", cursor.as_str()];
        words.extend_from_slice(extra);
        let (next, keys): (String, Vec<String>) = word(con, &words).expect("scan");
        out.extend(keys);
        if next == "0" {
            return out;
        }
        cursor = next;
    }
    panic!("scan did not finish");
}

fn wait_owner(con: &mut redis::Connection, key: &str, node: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::owner(con, key) != node {
        assert!(Instant::now() < deadline, "{key} never routed to {node}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_hash_on_another_node_is_read_and_survives_migration() {
    let c = common::start("cluster-hashes", Default::default());
    let mut con = common::connect(c.nodes[0].addr);
    let far = keys_on(&mut con, 2, 1).remove(0);
    let here = keys_on(&mut con, 1, 1).remove(0);

    let fields: Vec<(String, String)> = (0..300)
        .map(|i| (format!("field:{i:03}"), format!("value-{i}")))
        .collect();
    let _: () = con.hset_multiple(&far, &fields).unwrap();
    let _: () = con.hset(&here, "f", "v").unwrap();
    let got: Option<String> = con.hget(&far, "field:042").unwrap();
    assert_eq!(got.as_deref(), Some("value-42"));
    let all: HashMap<String, String> = con.hgetall(&far).unwrap();
    assert_eq!(all.len(), 300);
    assert_eq!(all["field:299"], "value-299");
    assert_eq!(con.hlen::<_, i64>(&far).unwrap(), 300);
    assert_eq!(word::<String>(&mut con, &["TYPE", &far]).unwrap(), "hash");
    // GET is served by one-sided reads for a remote key: on a hash it must not return
    // the header's bytes but the owner's WRONGTYPE.
    assert!(err(&mut con, &["GET", &far]).contains("WRONGTYPE"));
    assert_eq!(word::<i64>(&mut con, &["EXISTS", &far]).unwrap(), 1);
    assert_eq!(con.hincr::<_, _, _, i64>(&far, "n", 7).unwrap(), 7);
    let hashes = scan_all(&mut con, &["TYPE", "hash"]);
    assert_eq!(hashes, BTreeSet::from([far.clone(), here.clone()]));
    assert_eq!(word::<i64>(&mut con, &["DBSIZE"]).unwrap(), 2);

    // Move the fragment holding the hash to node 3.
    let report: String = redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg(&far)
        .arg(3)
        .query(&mut con)
        .unwrap_or_else(|e| panic!("migration failed: {e}"));
    assert!(!report.is_empty());
    wait_owner(&mut con, &far, 3);
    for node in &c.nodes {
        let mut n = common::connect(node.addr);
        wait_owner(&mut n, &far, 3);
        let all: HashMap<String, String> = n.hgetall(&far).unwrap();
        assert_eq!(all.len(), 301, "through node at {}", node.addr);
        assert_eq!(all["field:123"], "value-123");
        assert_eq!(all["n"], "7");
    }
    // The new owner keeps writing and deleting fields of the moved hash.
    assert_eq!(con.hincr::<_, _, _, i64>(&far, "n", 1).unwrap(), 8);
    let n: i64 = con.hdel(&far, &["field:000", "field:001"]).unwrap();
    assert_eq!(n, 2);
    assert_eq!(con.hlen::<_, i64>(&far).unwrap(), 299);
    let n: i64 = con.del(&far).unwrap();
    assert_eq!(n, 1);
    let all: HashMap<String, String> = con.hgetall(&far).unwrap();
    assert!(all.is_empty());
}
