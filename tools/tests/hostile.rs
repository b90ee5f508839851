//! Hostile input against a real 3-node cluster: a pathological glob fanned out to
//! every node answers promptly, and a malformed or oversized request closes only its
//! own connection.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use augur_bench::cluster::ClusterOptions;
use redis::Commands;

mod common;

#[test]
fn hostile_clients_do_not_stall_a_cluster() {
    let cluster = common::start("hostile", ClusterOptions::default());
    let mut con = common::connect(cluster.nodes[0].addr);
    // 60-byte keys whose first bytes spread them over every node.
    let keys: Vec<Vec<u8>> = (0..64u8)
        .map(|i| {
            let mut k = vec![i * 4];
            k.extend(std::iter::repeat_n(b'a', 59));
            k
        })
        .collect();
    for k in &keys {
        let _: () = con.set(k, "v").unwrap();
    }
    // 31 stars: every node runs the glob on its keys; the recursive matcher took
    // minutes per key here.
    let miss = format!("{}*b", "*a".repeat(30));
    let hit = format!("{}*", "*a".repeat(30));
    let start = Instant::now();
    let none: Vec<Vec<u8>> = con.keys(&miss).unwrap();
    let all: Vec<Vec<u8>> = con.keys(&hit).unwrap();
    let elapsed = start.elapsed();
    assert!(none.is_empty());
    assert_eq!(all.len(), keys.len());
    assert!(elapsed < Duration::from_secs(5), "KEYS took {elapsed:?}");

    // A bad frame and a request stalled halfway: each closes its own connection only.
    let addr = cluster.nodes[1].addr;
    let mut bad = std::net::TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"*1\r\n$-5\r\n").unwrap();
    let mut out = String::new();
    let _ = bad.read_to_string(&mut out);
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\nxx")
        .unwrap();
    let mut other = common::connect(addr);
    let v: Option<String> = other.get(&keys[0]).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
