//! Large values are first-class (issue #12, part 4): any value up to
//! `proto-max-bulk-len` lands in a fragment whatever it holds, and afterwards every key
//! of that fragment is still readable and deletable.

mod common;

use common::{client, info_field, start_node};
use redis::Commands;

/// `n` keys `key:NNNNNN` with short values, in pipelines.
fn populate(c: &mut redis::Connection, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("key:{i:06}"))
                .arg(format!("value-{i}"))
                .ignore();
        }
        let _: () = pipe.query(c).unwrap();
    }
}

fn check_then_delete_all(c: &mut redis::Connection, n: usize, big: &[u8]) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.get(format!("key:{i:06}"));
    }
    let values: Vec<String> = pipe.query(c).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v, &format!("value-{i}"));
    }
    let back: Vec<u8> = c.get("key:big").unwrap();
    assert!(back == big, "the large value came back different");
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.del(format!("key:{i:06}"));
    }
    let deleted: Vec<i64> = pipe.query(c).unwrap();
    assert!(deleted.iter().all(|&d| d == 1), "a key was not deletable");
    assert_eq!(c.del::<_, i64>("key:big").unwrap(), 1);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(c).unwrap(), 0);
    // And the fragment takes writes again.
    let _: () = c.set("key:after", "1").unwrap();
    assert_eq!(c.get::<_, String>("key:after").unwrap(), "1");
}

/// Used to fail with `ERR internal: no room after compaction`, after splitting the
/// fragment four times: no split can make room for a record bigger than a region.
#[test]
fn a_10_mib_value_into_a_fragment_of_30k_keys() {
    let port = start_node(|c| c.cores = 1);
    let mut c = client(port);
    let n = 30_000;
    populate(&mut c, n);
    // All in one fragment (the key space starts cut by first byte, none split yet).
    let fragments = info_field(&mut c, "augur", "fragments");
    assert_eq!(info_field(&mut c, "augur", "splits"), "0");
    let big: Vec<u8> = (0..10 << 20).map(|i: usize| (i * 31 % 253) as u8).collect();
    let _: () = c.set("key:big", &big[..]).unwrap();
    // Grown for it, not shattered: splitting cannot make room for one record.
    assert_eq!(info_field(&mut c, "augur", "splits"), "0");
    assert_eq!(info_field(&mut c, "augur", "fragments"), fragments);
    check_then_delete_all(&mut c, n, &big);
}

#[test]
fn a_value_of_exactly_the_bulk_limit_lands_and_reads_back() {
    let limit: usize = 32 << 20;
    let port = start_node(|c| {
        c.cores = 1;
        c.proto_max_bulk_len = limit as u64;
    });
    let mut c = client(port);
    let n = 5_000;
    populate(&mut c, n);
    let big: Vec<u8> = (0..limit).map(|i| (i * 7 % 251) as u8).collect();
    let _: () = c.set("key:big", &big[..]).unwrap();
    let len: i64 = redis::cmd("STRLEN").arg("key:big").query(&mut c).unwrap();
    assert_eq!(len, limit as i64);
    // One byte more is the protocol's refusal, not the store's.
    let too_long = redis::cmd("SET")
        .arg("key:over")
        .arg(vec![0u8; limit + 1])
        .query::<()>(&mut client(port));
    assert!(too_long.is_err());
    check_then_delete_all(&mut c, n, &big);
}
