//! What the process-level tests share: starting a local cluster of real `augur node`
//! processes, connecting to a node, asking where a key lives, reading INFO fields.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use augur_bench::cluster::{ClusterOptions, LocalCluster};

pub fn augur() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_augur"))
}

/// A cluster on free ports (below the ephemeral range), logs in a fresh directory named
/// after the test; `opts` says the rest (`..Default::default()`: 3 nodes, 1 core each,
/// the static placement policy).
pub fn start(name: &str, opts: ClusterOptions) -> LocalCluster {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let log_dir =
        std::env::temp_dir().join(format!("augur-test-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    LocalCluster::start(
        augur(),
        ClusterOptions {
            base_port: 0,
            log_dir,
            ready_timeout: Duration::from_secs(60),
            ..opts
        },
        |_| {},
    )
    .expect("cluster starts")
}

pub fn connect(addr: SocketAddr) -> redis::Connection {
    let con = redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    con
}

/// The node that owns `key`, asked of any node (`AUGUR WHERE`).
pub fn owner(con: &mut redis::Connection, key: impl redis::ToRedisArgs) -> u64 {
    let place: String = redis::cmd("AUGUR")
        .arg("WHERE")
        .arg(key)
        .query(con)
        .expect("where");
    place
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("odd AUGUR WHERE answer {place}"))
}

/// A numeric field of an INFO section.
pub fn info_u64(con: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(con).expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}: {info}"))
}
