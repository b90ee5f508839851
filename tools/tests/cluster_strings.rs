//! The string and keyspace commands of issue #13 (part 2) on a 3-node cluster of real
//! `augur node` processes: per-key commands on keys another node owns go there and
//! back (their operations cross the wire); RENAME/COPY with a key on another node are
//! refused with CROSSNODE and change nothing; MSETNX is atomic on one node's core and
//! refused across nodes.

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
        let key = format!("{first}:s{i}");
        if common::owner(con, &key) == node {
            found.push(key);
            if found.len() == per {
                return found;
            }
        }
    }
    panic!("node {node} owns fewer than {per} of the candidate keys");
}

#[test]
fn string_commands_across_a_cluster() {
    let c = common::start("cluster-strings", Default::default());
    let mut con = common::connect(c.nodes[0].addr);
    let here = keys_on(&mut con, 1, 1).remove(0);
    let there = keys_on(&mut con, 2, 2);
    let (far, far2) = (&there[0], &there[1]);

    // Per-key commands on a key node 2 owns, asked of node 1.
    let _: () = con.set(far, "Hello World").unwrap();
    assert_eq!(
        word::<i64>(&mut con, &["SETRANGE", far, "6", "Redis"]).unwrap(),
        11
    );
    assert_eq!(
        word::<String>(&mut con, &["GETRANGE", far, "-5", "-1"]).unwrap(),
        "Redis"
    );
    assert_eq!(
        word::<String>(&mut con, &["GETEX", far, "EX", "100"]).unwrap(),
        "Hello Redis"
    );
    assert!(con.ttl::<_, i64>(far).unwrap() > 90);
    assert_eq!(
        word::<String>(&mut con, &["OBJECT", "ENCODING", far]).unwrap(),
        "embstr"
    );
    assert_eq!(
        word::<String>(&mut con, &["INCRBYFLOAT", far2, "0.1"]).unwrap(),
        "0.1"
    );
    assert_eq!(
        word::<String>(&mut con, &["INCRBYFLOAT", far2, "0.2"]).unwrap(),
        "0.3"
    );
    assert_eq!(
        word::<i64>(&mut con, &["TOUCH", far, far2, &here]).unwrap(),
        2
    );
    let random: String = word(&mut con, &["RANDOMKEY"]).unwrap();
    assert_eq!(con.exists::<_, i64>(&random).unwrap(), 1, "{random}");

    // Keys on two nodes: refused, nothing changed.
    let e = err(&mut con, &["RENAME", far, &here]);
    assert!(e.contains("CROSSNODE"), "{e}");
    assert!(err(&mut con, &["COPY", &here, far]).contains("CROSSNODE"));
    assert_eq!(con.get::<_, String>(far).unwrap(), "Hello Redis");
    assert_eq!(con.exists::<_, i64>(&here).unwrap(), 0);

    // MSETNX: all keys on node 2 (one core there) works, atomically; across nodes no.
    let _: i64 = con.del(far2).unwrap();
    assert_eq!(
        word::<i64>(&mut con, &["MSETNX", far2, "a", &format!("{far2}x"), "b"]).unwrap(),
        1
    );
    assert_eq!(
        word::<i64>(&mut con, &["MSETNX", &format!("{far2}y"), "a", far, "b"]).unwrap(),
        0
    );
    assert_eq!(con.exists::<_, i64>(format!("{far2}y")).unwrap(), 0);
    let e = err(&mut con, &["MSETNX", &here, "1", &format!("{far}z"), "2"]);
    assert!(e.contains("MSETNX keys must all be on one core"), "{e}");
    assert_eq!(con.exists::<_, i64>(&here).unwrap(), 0);
}
