//! Transactions on a two-node cluster (wired by hand, as in `cluster_static`): node 1
//! owns keys below 0x80 on its two cores, node 2 the rest. A transaction whose keys are
//! all on node 1 runs atomically there; one touching node 2's keys is refused with
//! CROSSNODE and writes nothing.

mod common;

use augur_node::router::table::Owner;
use bytes::Bytes;
use redis::{Commands, Value};

use common::wired::{node, wire};

fn b(x: &[u8]) -> Bytes {
    Bytes::copy_from_slice(x)
}

/// MULTI, SET each key, EXEC: EXEC's error (the crate's atomic pipe hides its text).
fn exec_error(c: &mut redis::Connection, keys: &[&[u8]]) -> String {
    let _: () = redis::cmd("MULTI").query(c).unwrap();
    for k in keys {
        let queued: String = redis::cmd("SET").arg(*k).arg("never").query(c).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    match redis::cmd("EXEC").query::<Value>(c) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("EXEC ran: {v:?}"),
    }
}

#[test]
fn transactions_stay_on_one_node() {
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
    let (core0, core1, remote): (&[u8], &[u8], &[u8]) = (b"\x10k", b"\x50k", b"\x90k");

    // Both cores of node 1: runs.
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr(core0, 1)
        .incr(core1, 1)
        .query(&mut c1)
        .expect("a transaction on one node");
    assert_eq!((x, y), (1, 1));

    // One key on node 2: refused, and the local key is not written either.
    let _: () = c2.set(remote, "before").unwrap();
    let err = exec_error(&mut c1, &[core0, remote]);
    assert!(err.to_string().contains("CROSSNODE"), "{err}");
    assert!(err.to_string().contains("node 2"), "{err}");
    assert_eq!(c1.get::<_, String>(core0).unwrap(), "1");
    assert_eq!(c2.get::<_, String>(remote).unwrap(), "before");

    // All keys on the other node: refused too (no forwarding of whole transactions).
    let err = exec_error(&mut c1, &[remote]);
    assert!(err.to_string().contains("CROSSNODE"), "{err}");
    // Served by node 2 itself, the same transaction runs.
    let _: () = redis::pipe()
        .atomic()
        .set(remote, "two")
        .ignore()
        .query(&mut c2)
        .expect("on its own node");
    assert_eq!(c1.get::<_, String>(remote).unwrap(), "two");

    // DBSIZE inside MULTI would have to hold every node: refused, nothing written.
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: String = redis::cmd("SET")
        .arg(core0)
        .arg("never")
        .query(&mut c1)
        .unwrap();
    let _: String = redis::cmd("DBSIZE").query(&mut c1).unwrap();
    let err = redis::cmd("EXEC")
        .query::<Value>(&mut c1)
        .expect_err("refused");
    assert!(err.to_string().contains("CROSSNODE"), "{err}");
    assert_eq!(c1.get::<_, String>(core0).unwrap(), "1");

    // WATCH of a key on another node: refused at once.
    let err = redis::cmd("WATCH")
        .arg(remote)
        .query::<()>(&mut c1)
        .expect_err("refused");
    assert!(err.to_string().contains("CROSSNODE"), "{err}");
}
