//! The placement controller acting on a real 3-node cluster: when one node's clients
//! make all the accesses to a fragment another node owns, `reactive` and `predictive`
//! move it there by themselves, with no client error; `static` leaves it where it is.

use std::time::{Duration, Instant};

use augur_bench::cluster::{ClusterOptions, LocalCluster};
use common::{connect, owner};

mod common;

fn cluster(policy: &str) -> LocalCluster {
    common::start(
        policy,
        ClusterOptions {
            policy: Some(policy.into()),
            extra_args: vec!["--telemetry-interval-ms".into(), "200".into()],
            ..Default::default()
        },
    )
}

/// Hammer the `m:` fragment from node `from`'s clients for up to `limit`, stopping early
/// once the fragment is there; returns whether it got there, and client errors.
fn hammer_until_local(c: &LocalCluster, from: usize, limit: Duration) -> (bool, Vec<String>) {
    let mut con = connect(c.nodes[from].addr);
    let me = from as u64 + 1;
    let deadline = Instant::now() + limit;
    let mut errors = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        // Pipelined, so a loaded machine still produces a sustained rate the policies can
        // see (one round trip per 200 pairs rather than per command).
        let mut pipe = redis::pipe();
        let first = i + 1;
        for _ in 0..200 {
            i += 1;
            let key = format!("m:{}", i % 500);
            pipe.set(&key, i).ignore().get(&key);
        }
        match pipe.query::<Vec<Option<u64>>>(&mut con) {
            Ok(values) => {
                for (v, expected) in values.into_iter().zip(first..) {
                    if v != Some(expected) {
                        errors.push(format!(
                            "GET m:{}: {v:?}, expected {expected}",
                            expected % 500
                        ));
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        if owner(&mut con, "m:0") == me {
            return (true, errors);
        }
    }
    (false, errors)
}

fn follows_its_clients(policy: &str) {
    let c = cluster(policy);
    let start_owner = owner(&mut connect(c.nodes[0].addr), "m:0") as usize - 1;
    let clients_on = (start_owner + 1) % 3;
    let started = Instant::now();
    let (arrived, errors) = hammer_until_local(&c, clients_on, Duration::from_secs(30));
    eprintln!(
        "{policy}: fragment of m:0 {} node {} after {:?}",
        if arrived { "moved to" } else { "never reached" },
        clients_on + 1,
        started.elapsed()
    );
    assert!(
        errors.is_empty(),
        "clients saw errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        arrived,
        "{policy} did not move the fragment to its clients' node"
    );
}

#[test]
fn reactive_moves_a_fragment_to_its_clients() {
    follows_its_clients("reactive");
}

#[test]
fn predictive_moves_a_fragment_to_its_clients() {
    follows_its_clients("predictive");
}

#[test]
fn static_never_moves() {
    let c = cluster("static");
    let start_owner = owner(&mut connect(c.nodes[0].addr), "m:0") as usize - 1;
    let (arrived, errors) = hammer_until_local(&c, (start_owner + 1) % 3, Duration::from_secs(4));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!arrived, "static moved a fragment");
}
