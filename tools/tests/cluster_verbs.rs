//! The 3-node cluster of `tests/cluster.rs`, with the data path over RDMA verbs
//! (`--fabric verbs`): nodes 1 and 3 on rxe0's address, node 2 on rxe1's, so node-to-node
//! messages and one-sided reads really cross between two RDMA devices. Every key is
//! written and read through every node; reads of other nodes' keys go one-sided
//! (`remote_reads` in `INFO cluster`).
//!
//! Needs the SoftRoCE VM: `ci/test-verbs` builds this with `--features verbs` and runs it
//! there. Anywhere else (no `SOFTROCE_GUEST`, no RDMA device, or a build without the
//! `verbs` feature) the test prints why it skips and passes.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use augur_bench::cluster::{ClusterOptions, LocalCluster};
use redis::Commands;

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !cfg!(feature = "verbs") {
        return Some("built without the `verbs` feature (ci/test-verbs builds it)".into());
    }
    if std::env::var_os("SOFTROCE_GUEST").is_none() {
        return Some("not in the SoftRoCE VM (SOFTROCE_GUEST unset; run ci/test-verbs)".into());
    }
    let devices = std::fs::read_dir("/sys/class/infiniband")
        .map(|d| d.count())
        .unwrap_or(0);
    if devices == 0 {
        return Some("no RDMA device in /sys/class/infiniband".into());
    }
    None
}

fn env_ip(name: &str, default: &str) -> IpAddr {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .parse()
        .unwrap_or_else(|e| panic!("${name}: {e}"))
}

fn client(c: &LocalCluster, id: u32) -> redis::Connection {
    let addr = c.nodes[(id - 1) as usize].addr;
    let con = redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("connect");
    // the VM is emulated: a cross-node request is ~20-50x slower than on the host
    con.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    con
}

/// Keys whose first byte spreads over the key space, so every node owns some.
fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut k = vec![(i * 37 % 256) as u8];
            k.extend_from_slice(format!(":k{i}").as_bytes());
            k
        })
        .collect()
}

fn info_u64(con: &mut redis::Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("cluster").query(con).expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

#[test]
fn three_nodes_over_verbs_serve_every_key_with_one_sided_reads() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {why}");
        return;
    }
    let started = Instant::now();
    let rxe0 = env_ip("SOFTROCE_IP", "10.77.0.1");
    let rxe1 = env_ip("SOFTROCE_IP1", "10.77.0.2");
    // under target/: shared with the host, so the logs outlive the VM
    let log_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("augur-test-verbs-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    eprintln!("node logs in {}", log_dir.display());
    let c = LocalCluster::start(
        Path::new(env!("CARGO_BIN_EXE_augur")),
        ClusterOptions {
            nodes: 3,
            base_port: 0,
            cores: 1,
            log_dir,
            ready_timeout: Duration::from_secs(150),
            binds: vec![rxe0, rxe1, rxe0],
            // (no splits, merges or telemetry traffic: the data path is what is tested,
            // and the emulated VM has little CPU to spare)
            extra_args: [
                "--fabric",
                "verbs",
                "--region-size",
                "256kb",
                "--split-load",
                "0",
                "--merge-after-s",
                "0",
                "--telemetry-interval-ms",
                "60000",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        },
        |n| {
            eprintln!(
                "node {} serving on {} after {:?}",
                n.id,
                n.addr,
                started.elapsed()
            )
        },
    )
    .expect("cluster starts");
    let c = ShowLogsOnPanic(c);

    // Each node's fabric endpoint is on the device that holds its bind address.
    for (node, device) in c.nodes.iter().zip(["rxe0", "rxe1", "rxe0"]) {
        let log = std::fs::read_to_string(&node.log).expect("node log");
        assert!(
            log.contains(&format!("fabric endpoint: verbs device {device} ")),
            "node {} is not on verbs/{device}:\n{}",
            node.id,
            augur_bench::cluster::tail(&node.log, 20)
        );
    }

    let mut cons: Vec<redis::Connection> = (1..=3).map(|id| client(&c, id)).collect();
    let keys = keys(60);
    for (i, k) in keys.iter().enumerate() {
        let _: () = cons[i % 3].set(k, format!("v{i}")).expect("set");
    }
    eprintln!("{} keys written after {:?}", keys.len(), started.elapsed());
    for (n, con) in cons.iter_mut().enumerate() {
        for (i, k) in keys.iter().enumerate() {
            let v: String = con.get(k).expect("get");
            assert_eq!(v, format!("v{i}"), "key {i} through node {}", n + 1);
        }
        let size: i64 = redis::cmd("DBSIZE").query(con).expect("dbsize");
        assert_eq!(size, keys.len() as i64, "DBSIZE through node {}", n + 1);
        assert_eq!(info_u64(con, "cluster_nodes"), 3);
        let requests = info_u64(con, "remote_requests");
        let reads = info_u64(con, "remote_reads");
        eprintln!(
            "node {}: remote_requests {requests}, remote_reads {reads}",
            n + 1
        );
        assert!(requests > 0, "node {}: writes went as messages", n + 1);
        assert!(reads > 0, "node {}: reads went one-sided", n + 1);
    }
    eprintln!(
        "every key read through every node after {:?}",
        started.elapsed()
    );
    drop(c);
}

/// Stops the cluster; on a failed assertion prints the end of every node's log first.
struct ShowLogsOnPanic(LocalCluster);

impl std::ops::Deref for ShowLogsOnPanic {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl Drop for ShowLogsOnPanic {
    fn drop(&mut self) {
        self.0.stop();
        if std::thread::panicking() {
            for n in &self.0.nodes {
                eprintln!(
                    "---- node {} ({}) ----\n{}",
                    n.id,
                    n.log.display(),
                    augur_bench::cluster::tail(&n.log, 30)
                );
            }
        }
    }
}
