//! Nodes in one process wired by hand (no ownership table): each starts with its own
//! routes and per-core ranges, then learns the other's addresses.

use std::sync::Arc;

use augur_node::context::{ClusterMap, MemberAddrs, NodeShared};
use augur_node::router::table::{Owner, RouteTable};
use augur_node::{Assignment, Config};
use bytes::Bytes;

const SECRET: &str = "hand-wired cluster test secret";

pub struct Started {
    pub port: u16,
    pub fabric: Vec<std::net::SocketAddr>,
    pub shared: Arc<NodeShared>,
}

pub fn node(
    id: u64,
    cores: usize,
    routes: Vec<(Bytes, Owner, u64)>,
    per_core: Vec<Vec<(Bytes, Option<Bytes>)>>,
) -> Started {
    let config = Config {
        port: 0,
        admin_port: 0,
        cores,
        // Small regions, so writes split and compact fragments while the other node
        // holds descriptors of them.
        region_size: 64 << 10,
        node_id: id,
        cluster_secret: Some(SECRET.into()),
        ..Config::default()
    };
    let handle = augur_node::start_with(config, move |_| {
        Ok(Assignment {
            routes: RouteTable::from_ranges(1, routes),
            per_core,
            cluster: ClusterMap::default(),
        })
    })
    .expect("node starts");
    let started = Started {
        port: handle.port,
        fabric: handle.fabric_addrs.clone(),
        shared: handle.shared.clone(),
    };
    std::mem::forget(handle);
    started
}

pub fn wire(a: &Started, a_id: u64, b: &Started, b_id: u64) {
    let map = |me: u64, other: u64, s: &Started| ClusterMap {
        my_id: me,
        version: 1,
        members: [(
            other,
            MemberAddrs {
                client: ([127, 0, 0, 1], s.port).into(),
                fabric: s.fabric.clone(),
            },
        )]
        .into(),
        ..ClusterMap::default()
    };
    a.shared.set_cluster(map(a_id, b_id, b));
    b.shared.set_cluster(map(b_id, a_id, a));
}
