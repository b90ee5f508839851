//! Live migration in a real 3-node cluster: a fragment moves while clients on every
//! node write and read it; afterwards every acknowledged write reads back with its
//! latest value through every node, and no client ever saw an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_bench::cluster::{ClusterOptions, LocalCluster};
use common::{connect, owner};
use redis::Commands;

mod common;

fn cluster() -> LocalCluster {
    common::start("migration", ClusterOptions::default())
}

/// Wait until `con`'s node routes `key` to `node` (nodes learn a commit from their
/// copy of the table within a watcher tick).
fn wait_owner(con: &mut redis::Connection, key: &str, node: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while owner(con, key) != node {
        assert!(
            Instant::now() < deadline,
            "{key} never routed to node {node}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn migrate(con: &mut redis::Connection, key: &str, to: u64) -> String {
    redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg(key)
        .arg(to)
        .query(con)
        .unwrap_or_else(|e| panic!("migration of {key} to {to} failed: {e}"))
}

/// What one writer did: the last acknowledged value per key, ops, errors seen.
type Outcome = (HashMap<String, String>, u64, Vec<String>);

struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Outcome>>,
}

/// One writer per node: each SETs its own keys of the fragment holding `m:`, reads
/// back what it wrote, and remembers the last acknowledged value of every key.
fn start_load(c: &LocalCluster) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = c
        .nodes
        .iter()
        .enumerate()
        .map(|(t, n)| {
            let (addr, stop) = (n.addr, stop.clone());
            std::thread::spawn(move || {
                let mut con = connect(addr);
                let mut last = HashMap::new();
                let mut errors = Vec::new();
                let mut ops = 0u64;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let key = format!("m:{t}:{}", seq % 64);
                    let value = format!("{t}-{seq}-{}", "v".repeat(100));
                    match con.set::<_, _, ()>(&key, &value) {
                        Ok(()) => {
                            last.insert(key.clone(), value.clone());
                        }
                        Err(e) => errors.push(format!("SET {key}: {e}")),
                    }
                    match con.get::<_, Option<String>>(&key) {
                        Ok(v) if v.as_ref() == last.get(&key) => {}
                        Ok(other) => errors.push(format!("GET {key} read {other:?}")),
                        Err(e) => errors.push(format!("GET {key}: {e}")),
                    }
                    ops += 2;
                }
                (last, ops, errors)
            })
        })
        .collect();
    Load { stop, threads }
}

impl Load {
    fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = HashMap::new();
        let mut ops = 0;
        let mut errors = Vec::new();
        for t in self.threads {
            let (last, n, e) = t.join().expect("load thread");
            all.extend(last);
            ops += n;
            errors.extend(e);
        }
        (all, ops, errors)
    }
}

fn check_everywhere(c: &LocalCluster, last: &HashMap<String, String>) {
    for n in &c.nodes {
        let mut con = connect(n.addr);
        for (k, v) in last {
            let got: Option<String> = con.get(k).expect("get");
            assert_eq!(got.as_ref(), Some(v), "key {k} through node {}", n.id);
        }
    }
}

#[test]
fn a_fragment_moves_under_load_and_nothing_is_lost() {
    let c = cluster();
    let mut admin = connect(c.nodes[0].addr);
    // Some data first, so the copy has something to move.
    for i in 0..2000 {
        let _: () = admin
            .set(format!("m:seed:{i}"), "s".repeat(200))
            .expect("seed");
    }
    let from = owner(&mut admin, "m:0");
    let to = from % 3 + 1;
    let load = start_load(&c);
    std::thread::sleep(Duration::from_millis(500));
    let report = migrate(&mut admin, "m:0", to);
    assert!(report.contains(&format!("to node {to}")), "{report}");
    eprintln!("{report}");
    std::thread::sleep(Duration::from_millis(500));
    let (last, ops, errors) = load.finish();
    assert!(
        errors.is_empty(),
        "clients saw {} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ops > 100, "the load did too little: {ops} ops");
    wait_owner(&mut admin, "m:0", to);
    check_everywhere(&c, &last);
    // The target counted it, with its pause.
    let mut target = connect(c.nodes[(to - 1) as usize].addr);
    let mut field = |name: &str| common::info_u64(&mut target, "cluster", name);
    assert_eq!(field("migrations_in"), 1);
    assert!(field("migration_bytes") >= 2000 * 200);
    assert!(field("migration_pause_max_us") > 0);
    for i in (0..2000).step_by(97) {
        let v: String = connect(c.nodes[2].addr)
            .get(format!("m:seed:{i}"))
            .expect("seed survives");
        assert_eq!(v.len(), 200);
    }
}

#[test]
fn back_and_forth_migrations_under_load_give_no_client_errors() {
    let c = cluster();
    let mut admin = connect(c.nodes[1].addr);
    let load = start_load(&c);
    let started = Instant::now();
    let rounds = 100;
    for i in 0..rounds {
        let to = (owner(&mut admin, "m:0") % 3) + 1;
        let report = migrate(&mut admin, "m:0", to);
        assert!(
            report.contains(&format!("to node {to}")),
            "round {i}: {report}"
        );
        wait_owner(&mut admin, "m:0", to);
    }
    let (last, ops, errors) = load.finish();
    eprintln!(
        "{rounds} migrations in {:?} under {ops} client ops",
        started.elapsed()
    );
    assert!(
        errors.is_empty(),
        "clients saw {} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    check_everywhere(&c, &last);
}

#[test]
fn a_refused_migration_leaves_the_source_serving() {
    let c = cluster();
    let mut admin = connect(c.nodes[0].addr);
    let _: () = admin.set("m:x", "before").expect("set");
    let from = owner(&mut admin, "m:x");
    // To a node that does not exist, and to the owner itself: both refused.
    let err = redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg("m:x")
        .arg(99)
        .query::<String>(&mut admin)
        .expect_err("node 99 does not exist");
    assert!(err.to_string().contains("migration"), "{err}");
    let err = redis::cmd("AUGUR")
        .arg("MIGRATE")
        .arg("KEY")
        .arg("m:x")
        .arg(from)
        .query::<String>(&mut admin)
        .expect_err("already there");
    assert!(err.to_string().contains("already"), "{err}");
    assert_eq!(owner(&mut admin, "m:x"), from);
    let _: () = admin.set("m:x", "after").expect("still takes writes");
    let v: String = connect(c.nodes[2].addr).get("m:x").expect("get");
    assert_eq!(v, "after");
}

/// The source lets go of a handed-over fragment as soon as its table shows the commit,
/// not on its maintenance tick: with that tick an hour away, a write sent to the source
/// right after the migration must still succeed (before, it waited on the fence until
/// the router gave up with TRYAGAIN).
#[test]
fn the_source_releases_a_handed_over_fragment_without_its_maintenance_tick() {
    let c = common::start(
        "migration-release",
        ClusterOptions {
            extra_args: vec!["--expiry-interval-ms".into(), "3600000".into()],
            ..Default::default()
        },
    );
    let mut first = connect(c.nodes[0].addr);
    let _: () = first.set("m:r", "before").expect("set");
    let from = owner(&mut first, "m:r");
    let to = if from == 3 { 1 } else { from + 1 };
    let mut source = connect(c.nodes[from as usize - 1].addr);
    let summary = migrate(&mut source, "m:r", to);
    assert!(summary.contains(&format!("to node {to}")), "{summary}");
    let _: () = source
        .set("m:r", "after")
        .expect("a write through the source");
    let v: String = connect(c.nodes[to as usize - 1].addr)
        .get("m:r")
        .expect("get on the target");
    assert_eq!(v, "after");
    let held = common::info_u64(&mut source, "cluster", "migration_source_hold_max_us");
    assert!(held > 0, "the source recorded no hold for its handover");
}

/// `--migration-max-mb-per-s` holds a copy to its budget, and `AUGUR MIGRATIONS` (on any
/// node) shows the migration while it runs: its nodes, phase and bytes so far.
#[test]
fn a_throttled_migration_keeps_its_budget_and_shows_its_progress() {
    let c = common::start(
        "migration-throttle",
        ClusterOptions {
            extra_args: vec!["--migration-max-mb-per-s".into(), "2".into()],
            ..Default::default()
        },
    );
    let mut admin = connect(c.nodes[0].addr);
    for i in 0..2000 {
        let _: () = admin
            .set(format!("m:seed:{i}"), "s".repeat(2000))
            .expect("seed");
    }
    let from = owner(&mut admin, "m:0");
    let to = from % 3 + 1;
    let addr = c.nodes[0].addr;
    let started = Instant::now();
    let mover = std::thread::spawn(move || migrate(&mut connect(addr), "m:0", to));
    let mut watcher = connect(c.nodes[1].addr);
    let mut seen = None;
    while !mover.is_finished() {
        let listing: String = redis::cmd("AUGUR")
            .arg("MIGRATIONS")
            .query(&mut watcher)
            .expect("AUGUR MIGRATIONS");
        if let Some(line) = listing
            .lines()
            .find(|l| l.contains("phase=copy") && !l.contains(" bytes=0 "))
        {
            seen = Some(line.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = mover.join().expect("mover");
    eprintln!("{report}");
    let took = started.elapsed();
    assert!(report.contains(&format!("to node {to}")), "{report}");
    let line = seen.expect("the copy was never listed in flight");
    assert!(
        line.contains(&format!("from={from} to={to}")),
        "{line} (expected from {from} to {to})"
    );
    // 4 MB at 2 MiB/s: at least about 1.9 s whatever the machine (a lower bound only).
    assert!(
        took >= Duration::from_millis(1500),
        "took {took:?}: {report}"
    );
    let after: String = redis::cmd("AUGUR")
        .arg("MIGRATIONS")
        .query(&mut watcher)
        .expect("AUGUR MIGRATIONS");
    assert_eq!(after.trim(), "no migrations in flight");
    // The budget is a live setting.
    let set: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("migration-max-mb-per-s")
        .arg(0)
        .query(&mut admin)
        .expect("config set");
    assert_eq!(set, "OK");
}
