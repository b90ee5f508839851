//! Transactions while one of their keys' fragments migrates to another node, in a
//! real two-node cluster with two cores each: keys `a` and `b` on different cores of
//! node 1, a client looping `MULTI; INCR a; INCR b; EXEC` on node 1 while `a`'s
//! fragment moves to node 2. A fence landing between a transaction's checks and its
//! writes would leave it half applied (`b` incremented, `a` not); every EXEC must
//! instead be all or nothing, so at the end a == b == the EXECs that succeeded.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_bench::cluster::ClusterOptions;
use common::{connect, owner};
use redis::Commands;

mod common;

fn place(con: &mut redis::Connection, key: &str) -> String {
    redis::cmd("AUGUR")
        .arg("WHERE")
        .arg(key)
        .query(con)
        .expect("where")
}

#[test]
fn transactions_stay_whole_while_a_fragment_migrates() {
    let c = common::start(
        "txn-migration",
        ClusterOptions {
            nodes: 2,
            cores: 2,
            ..ClusterOptions::default()
        },
    );
    let mut admin = connect(c.nodes[0].addr);
    // Two keys on different cores of node 1.
    let mut on_core = [None, None];
    for p in (b'!'..=b'~').map(char::from) {
        let key = format!("{p}txn");
        let at = place(&mut admin, &key);
        for (core, slot) in on_core.iter_mut().enumerate() {
            if slot.is_none() && at == format!("node 1 core {core}") {
                *slot = Some(key.clone());
            }
        }
    }
    let [Some(a), Some(b)] = on_core else {
        panic!("no keys on both cores of node 1: {on_core:?}");
    };
    // Some data next to `a`, so its fragment's copy takes a while.
    for i in 0..2000 {
        let _: () = admin
            .set(format!("{a}:seed:{i}"), "s".repeat(200))
            .expect("seed");
    }
    let _: () = admin.set(&a, 0).unwrap();
    let _: () = admin.set(&b, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, progress) = (stop.clone(), progress.clone());
        let (a, b, addr) = (a.clone(), b.clone(), c.nodes[0].addr);
        std::thread::spawn(move || {
            let mut w = connect(addr);
            let (mut done, mut errors) = (0i64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match redis::pipe()
                    .atomic()
                    .incr(&a, 1)
                    .incr(&b, 1)
                    .query::<(i64, i64)>(&mut w)
                {
                    Ok((x, y)) => {
                        assert_eq!(x, y, "a transaction saw a and b apart");
                        done += 1;
                        progress.store(done, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        // After the move every EXEC is refused (CROSSNODE): no spinning.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            (done, errors)
        })
    };
    // Move once transactions are flowing (polled: this machine may be slow).
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "transactions are not flowing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let report: String = redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg(&a)
        .arg(2)
        .query(&mut admin)
        .expect("migration");
    eprintln!("{report}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while owner(&mut admin, &a) != 2 {
        assert!(Instant::now() < deadline, "{a} never routed to node 2");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (done, errors) = writer.join().expect("writer");
    let (va, vb): (i64, i64) = (admin.get(&a).unwrap(), admin.get(&b).unwrap());
    eprintln!(
        "{done} transactions, {} refused; a = {va}, b = {vb}; first errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert!(done >= 100, "too few transactions: {done}");
    assert_eq!(
        (va, vb),
        (done, done),
        "a transaction was half applied or lost"
    );
    assert!(
        errors.iter().all(|e| e.contains("CROSSNODE")
            || e.contains("TRYAGAIN")
            || e.contains("parsing multi")),
        "unexpected errors: {errors:?}"
    );
}
