//! Migrations that fail part way, in a real 3-node cluster: the target killed before the
//! fence, the target killed after the source fenced, the source killed during the copy.
//! A test-only delay (`AUGUR_TEST_DELAY_*_MS`, read by the migration engine) widens the
//! phase so the kill lands inside it. Afterwards there is one consistent owner, the table
//! says `stable` again, and — where the owner survived — no acknowledged write is lost
//! and clients saw no error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_bench::cluster::{ClusterOptions, LocalCluster};
use common::{connect, owner};
use redis::Commands;

mod common;

fn cluster(env: &[(&str, &str)]) -> LocalCluster {
    common::start(
        "migration-faults",
        ClusterOptions {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
}

/// The state column of the fragment holding keys `m...` in AUGUR STATUS.
fn state_of_m(con: &mut redis::Connection) -> String {
    let status: String = redis::cmd("AUGUR")
        .arg("STATUS")
        .query(con)
        .expect("status");
    status
        .lines()
        .find(|l| l.contains("[j, p)"))
        .and_then(|l| l.split_whitespace().nth(6))
        .unwrap_or_else(|| panic!("no [j, p) fragment in {status}"))
        .to_string()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nodes as (source, target, bystander) for the fragment holding `m:0`.
fn roles(c: &LocalCluster) -> (usize, usize, usize) {
    let source = owner(&mut connect(c.nodes[0].addr), "m:0") as usize - 1;
    let target = (source + 1) % 3;
    (source, target, (source + 2) % 3)
}

/// Start `AUGUR MIGRATE KEY m:0 <to>` on `via` in a thread; its answer comes later.
fn migrate_in_background(
    via: SocketAddr,
    to: usize,
) -> std::thread::JoinHandle<Result<String, String>> {
    std::thread::spawn(move || {
        redis::cmd("AUGUR")
            .arg("MIGRATE")
            .arg("KEY")
            .arg("m:0")
            .arg(to + 1)
            .query::<String>(&mut connect(via))
            .map_err(|e| e.to_string())
    })
}

fn seed(con: &mut redis::Connection) {
    for i in 0..500 {
        let _: () = con
            .set(format!("m:seed:{i}"), format!("v{i}"))
            .expect("seed");
    }
}

fn check_seed(con: &mut redis::Connection) {
    for i in 0..500 {
        let v: String = con.get(format!("m:seed:{i}")).expect("seed readable");
        assert_eq!(v, format!("v{i}"));
    }
}

/// The target's copy of the log appended just before the fence differs from the
/// source's by one byte (a test hook flips it after the records were checked, as a
/// peer lying consistently would): the delta checksum catches it, the migration aborts
/// with an error naming the range, and the source serves every write, old and new.
#[test]
fn a_changed_byte_in_the_final_delta_aborts_the_migration() {
    let c = cluster(&[
        ("AUGUR_TEST_DELAY_BEFORE_FENCE_MS", "1500"),
        ("AUGUR_TEST_FLIP_FINAL_DELTA", "1"),
    ]);
    let (source, target, bystander) = roles(&c);
    let mut by = connect(c.nodes[bystander].addr);
    seed(&mut by);
    let answer = migrate_in_background(c.nodes[bystander].addr, target);
    // Writes until the answer is in: some land between the last catch-up and the fence.
    let mut writer = connect(c.nodes[source].addr);
    let mut written = 0u32;
    while !answer.is_finished() {
        let _: () = writer
            .set(format!("m:late:{written}"), written)
            .expect("writes go on");
        written += 1;
    }
    let answer = answer.join().expect("migrate thread");
    let why = answer.expect_err("a corrupt copy must not be installed");
    assert!(why.contains("differs from the source"), "{why}");
    wait_until(
        "the fragment is stable again",
        Duration::from_secs(15),
        || state_of_m(&mut by) == "stable",
    );
    assert_eq!(owner(&mut by, "m:0"), source as u64 + 1);
    check_seed(&mut by);
    assert!(written > 0);
    for i in 0..written {
        let v: u32 = by.get(format!("m:late:{i}")).expect("late write readable");
        assert_eq!(v, i);
    }
    let _: () = by.set("m:after", "x").expect("the source takes writes");
}

#[test]
fn target_killed_before_the_fence_leaves_the_source_owning() {
    let mut c = cluster(&[("AUGUR_TEST_DELAY_BEFORE_FENCE_MS", "3000")]);
    let (source, target, bystander) = roles(&c);
    let mut by = connect(c.nodes[bystander].addr);
    seed(&mut by);
    let answer = migrate_in_background(c.nodes[bystander].addr, target);
    std::thread::sleep(Duration::from_millis(800));
    c.nodes[target].kill();
    let answer = answer.join().expect("migrate thread");
    assert!(
        answer.is_err(),
        "the migration cannot have succeeded: {answer:?}"
    );
    wait_until(
        "the fragment is stable again",
        Duration::from_secs(15),
        || state_of_m(&mut by) == "stable",
    );
    assert_eq!(owner(&mut by, "m:0"), source as u64 + 1);
    check_seed(&mut by);
    let _: () = by.set("m:after", "x").expect("the source takes writes");
    // And it can move again, to the node that is still up.
    let moved: String = redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg("m:0")
        .arg(bystander + 1)
        .query(&mut by)
        .expect("a later migration succeeds");
    assert!(
        moved.contains(&format!("to node {}", bystander + 1)),
        "{moved}"
    );
    check_seed(&mut connect(c.nodes[source].addr));
}

#[test]
fn target_killed_after_the_fence_lets_the_source_serve_again_without_client_errors() {
    let mut c = cluster(&[("AUGUR_TEST_DELAY_AFTER_FENCE_MS", "3000")]);
    let (source, target, bystander) = roles(&c);
    let mut by = connect(c.nodes[bystander].addr);
    seed(&mut by);
    // Writers on the source and the bystander while the handover hangs.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [source, bystander]
        .into_iter()
        .map(|n| {
            let (addr, stop) = (c.nodes[n].addr, stop.clone());
            std::thread::spawn(move || {
                let mut con = connect(addr);
                let mut acked = Vec::new();
                let mut errors = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("m:w{n}:{i}");
                    match con.set::<_, _, ()>(&key, i) {
                        Ok(()) => acked.push((key, i)),
                        Err(e) => errors.push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (acked, errors)
            })
        })
        .collect();
    let answer = migrate_in_background(c.nodes[bystander].addr, target);
    std::thread::sleep(Duration::from_millis(800));
    c.nodes[target].kill();
    let answer = answer.join().expect("migrate thread");
    assert!(
        answer.is_err(),
        "the migration cannot have succeeded: {answer:?}"
    );
    wait_until(
        "the fragment is stable again",
        Duration::from_secs(15),
        || state_of_m(&mut by) == "stable",
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (acked, errors) = w.join().expect("writer");
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
        assert!(!acked.is_empty());
        for (k, v) in acked {
            let got: i64 = by.get(&k).expect("acked write readable");
            assert_eq!(got, v, "{k}");
        }
    }
    assert_eq!(owner(&mut by, "m:0"), source as u64 + 1);
    check_seed(&mut by);
}

#[test]
fn source_killed_during_the_copy_is_an_aborted_migration() {
    let mut c = cluster(&[("AUGUR_TEST_DELAY_BEFORE_FENCE_MS", "3000")]);
    let (source, target, bystander) = roles(&c);
    let mut by = connect(c.nodes[bystander].addr);
    seed(&mut by);
    let answer = migrate_in_background(c.nodes[bystander].addr, target);
    std::thread::sleep(Duration::from_millis(800));
    c.nodes[source].kill();
    let started = Instant::now();
    let answer = answer.join().expect("migrate thread");
    assert!(
        answer.is_err(),
        "the migration cannot have succeeded: {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the abort took {:?}",
        started.elapsed()
    );
    wait_until(
        "the fragment is stable again",
        Duration::from_secs(15),
        || state_of_m(&mut by) == "stable",
    );
    // One owner: still the (dead) source; its keys fail fast, the others serve.
    assert_eq!(owner(&mut by, "m:0"), source as u64 + 1);
    let err = by
        .get::<_, String>("m:seed:1")
        .expect_err("the owner is dead");
    assert_eq!(err.kind(), redis::ErrorKind::ClusterDown, "{err}");
    let mut live = connect(c.nodes[target].addr);
    let key = (0u8..=255)
        .map(|b| vec![b, b'x'])
        .find(|k| owner(&mut live, &k[..]) != source as u64 + 1)
        .expect("some key is owned by a live node");
    let _: () = live.set(&key, "y").expect("keys of live nodes still serve");
}
