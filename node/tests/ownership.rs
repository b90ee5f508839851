//! The replicated ownership table on real sockets (127.0.0.1, ephemeral ports, temp dirs):
//! bootstrap + joins, forwarding, losing a voter, restart from disk, wrong secret.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use augur_node::ownership::{
    Change, FragmentState, Member, NodeId, Ownership, OwnershipConfig, OwnershipError, Role,
    TableError,
};

const SECRET: &[u8] = b"test cluster secret";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(
    id: NodeId,
    dir: Option<&Path>,
    bus: SocketAddr,
    join: Option<SocketAddr>,
    expected: u32,
    secret: &[u8],
) -> OwnershipConfig {
    OwnershipConfig {
        node_id: id,
        dir: dir.map(Path::to_path_buf),
        bus_bind: bus,
        secret: secret.to_vec(),
        me: Member {
            id,
            client_addr: local(6379),
            bus_addr: bus,
            fabric_addrs: Vec::new(),
            cores: 2,
            capacity_bytes: 1 << 30,
        },
        join,
        expected_size: expected,
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn propose(node: &Ownership, c: Change) -> Result<augur_node::ownership::Applied, OwnershipError> {
    futures::executor::block_on(node.propose(c)).expect("the control thread answers")
}

fn leader_of(nodes: &[&Ownership]) -> NodeId {
    let mut leader = None;
    wait_for("a leader", Duration::from_secs(10), || {
        leader = nodes
            .iter()
            .find(|n| n.status().role == Role::Leader)
            .map(|n| n.node_id());
        leader.is_some()
    });
    leader.unwrap_or_default()
}

#[test]
fn three_nodes_converge_replicate_survive_and_recover() {
    let started = Instant::now();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = Ownership::start(config(1, Some(dirs[0].path()), local(0), None, 3, SECRET)).unwrap();
    let via = Some(n1.bus_addr());
    let n2 = Ownership::start(config(2, Some(dirs[1].path()), local(0), via, 3, SECRET)).unwrap();
    let n3 = Ownership::start(config(3, Some(dirs[2].path()), local(0), via, 3, SECRET)).unwrap();
    let mut nodes = vec![n1, n2, n3];

    // All three converge on the same formed table with three members and three voters.
    wait_for("a formed, identical table", Duration::from_secs(20), || {
        let t = nodes[0].table();
        t.formed && t.members.len() == 3 && nodes.iter().all(|n| *n.table() == *t)
    });
    let t = nodes[0].table();
    assert_eq!(t.fragments.len(), 48);
    assert_eq!(t.expected_size, 3);
    assert_eq!(t.voters.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for id in 1..=3 {
        assert!(
            t.fragments.values().any(|f| f.owner == id),
            "node {id} owns nothing"
        );
    }
    let refs: Vec<&Ownership> = nodes.iter().collect();
    let leader = leader_of(&refs);
    assert_eq!(nodes[0].status().voters, vec![1, 2, 3]);

    // A split proposed on a follower is forwarded, committed and applied everywhere.
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    let frag = t.fragment_for(b"mango").unwrap().clone();
    let applied = propose(
        follower,
        Change::Split {
            fragment: frag.id,
            at: b"mango".to_vec(),
        },
    )
    .unwrap();
    assert_eq!(applied.touched.len(), 2);
    let new_id = applied.touched[1].id;
    wait_for("the split everywhere", Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.version() >= applied.index
                && n.table().fragment_for(b"mango").map(|f| f.id) == Some(new_id)
        })
    });
    assert_eq!(
        nodes[2].table().fragment(frag.id).unwrap().epoch,
        frag.epoch + 1
    );

    // A refused change comes back as an error and changes nothing.
    let before = nodes[0].table();
    let refused = propose(
        follower,
        Change::Merge {
            left: frag.id,
            right: frag.id,
        },
    );
    assert!(
        matches!(
            refused,
            Err(OwnershipError::Refused(TableError::NotAdjacent { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(nodes[0].table().fragments, before.fragments);

    // Kill a non-leader voter: the other two still commit.
    let victim_idx = nodes.iter().position(|n| n.node_id() != leader).unwrap();
    let victim = nodes.remove(victim_idx);
    let victim_id = victim.node_id();
    let victim_bus = victim.bus_addr();
    victim.shutdown();
    let zebra = nodes[0].table().fragment_for(b"zebra").unwrap().id;
    let survivor = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    let applied2 = propose(
        survivor,
        Change::Split {
            fragment: zebra,
            at: b"zebra".to_vec(),
        },
    )
    .unwrap();
    wait_for(
        "the second split on the survivors",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.version() >= applied2.index),
    );

    // Restart the victim from its directory: it recovers its table from disk at once, then
    // catches up with the change it missed.
    let via = nodes
        .iter()
        .find(|n| n.node_id() == leader)
        .map(|n| n.bus_addr());
    let back = Ownership::start(config(
        victim_id,
        Some(dirs[victim_idx].path()),
        victim_bus,
        via,
        3,
        SECRET,
    ))
    .unwrap();
    let recovered = back.table();
    assert!(recovered.formed, "restarted node lost its table");
    assert!(
        recovered.applied >= applied.index,
        "restart lost committed entries"
    );
    assert_eq!(recovered.fragment_for(b"mango").map(|f| f.id), Some(new_id));
    wait_for(
        "the restarted node to catch up",
        Duration::from_secs(15),
        || back.version() >= applied2.index && *back.table() == *nodes[0].table(),
    );
    nodes.push(back);

    // And the full cluster keeps committing.
    let f = nodes[0].table().fragment_for(b"a").unwrap().clone();
    let to = if f.owner == 1 { 2 } else { 1 };
    let applied3 = propose(
        &nodes[2],
        Change::SetState {
            fragment: f.id,
            state: FragmentState::Migrating { to, phase: 1 },
        },
    )
    .unwrap();
    wait_for(
        "the last change everywhere",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.version() >= applied3.index),
    );
    for n in &nodes {
        assert_eq!(
            n.table().fragment(f.id).unwrap().state,
            FragmentState::Migrating { to, phase: 1 }
        );
    }
    for n in nodes {
        n.shutdown();
    }
    assert!(started.elapsed() < Duration::from_secs(50));
}

#[test]
fn a_wrong_secret_cannot_join() {
    let n1 = Ownership::start(config(1, None, local(0), None, 1, SECRET)).unwrap();
    wait_for("the single node to form", Duration::from_secs(10), || {
        n1.table().formed
    });
    let intruder = Ownership::start(config(
        9,
        None,
        local(0),
        Some(n1.bus_addr()),
        1,
        b"not the secret",
    ))
    .unwrap();
    // Absence can only be checked over a bounded window: give the intruder a few join
    // attempts (its backoff starts at 50 ms).
    let window = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < window {
        assert!(!n1.table().members.contains_key(&9));
        assert_eq!(n1.status().voters, vec![1]);
        assert!(intruder.table().members.is_empty());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(intruder.status().leader, None);
    assert_eq!(intruder.version(), 0);
    intruder.shutdown();
    n1.shutdown();
}

#[test]
fn a_single_node_forms_at_once_and_serves_glommio_callers() {
    let n = Ownership::start(config(7, None, local(0), None, 1, SECRET)).unwrap();
    wait_for("the single node to form", Duration::from_secs(10), || {
        n.table().formed
    });
    let t = n.table();
    assert_eq!(t.fragments.len(), 16);
    assert!(t.fragments.values().all(|f| f.owner == 7 && f.core < 2));
    assert_eq!(n.status().role, Role::Leader);
    assert_eq!(n.status().voters, vec![7]);

    // A glommio task awaits a proposal without any tokio runtime of its own.
    let handle = n.clone();
    let result = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let before = handle.version();
            let r = handle
                .propose(Change::Split {
                    fragment: 0,
                    at: vec![1, 2, 3],
                })
                .await;
            (before, r)
        })
        .unwrap()
        .join()
        .unwrap();
    let (before, r) = result;
    let applied = r.unwrap().unwrap();
    assert!(applied.index > before);
    assert_eq!(n.version(), applied.index);
    assert_eq!(n.table().fragment_for(&[1, 2, 3]).unwrap().id, 16);

    // After shutdown, a remaining clone still reads the last table and proposals fail cleanly.
    let other = n.clone();
    n.shutdown();
    assert!(other.table().formed);
    let r = futures::executor::block_on(other.propose(Change::Form)).unwrap();
    assert_eq!(r, Err(OwnershipError::Shutdown));
}

#[test]
fn a_late_joiner_is_sent_a_snapshot_and_a_restart_reads_it_back() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let n1 = Ownership::start(config(1, Some(dir.path()), local(0), None, 1, SECRET)).unwrap();
    wait_for("the single node to form", Duration::from_secs(10), || {
        n1.table().formed
    });
    // Enough entries for two snapshots (every 1000) and a purge of the oldest log entries,
    // so a newcomer can only be brought up to date by a snapshot.
    let pending: Vec<_> = (0..2300)
        .map(|i| n1.propose(Change::Expect { size: 1 + i % 2 }))
        .collect();
    let mut last = 0;
    for rx in pending {
        last = last.max(futures::executor::block_on(rx).unwrap().unwrap().index);
    }
    assert!(last > 2300);
    assert!(
        dir.path().join("raft/snapshot").exists(),
        "no snapshot on disk"
    );
    wait_for("the log to be purged", Duration::from_secs(10), || {
        n1.status().purged.is_some()
    });

    let n2 = Ownership::start(config(2, None, local(0), Some(n1.bus_addr()), 1, SECRET)).unwrap();
    wait_for("the joiner to catch up", Duration::from_secs(20), || {
        n2.version() >= last && n2.table().members.len() == 2
    });
    // It was sent a snapshot: the entries it started from no longer exist on the leader.
    assert!(n2.status().snapshot.is_some(), "{:?}", n2.status());
    let t1 = n1.table();
    wait_for("identical tables", Duration::from_secs(10), || {
        *n2.table() == *n1.table()
    });
    assert_eq!(n2.table().fragments, t1.fragments);
    n2.shutdown();
    n1.shutdown();

    // Restarted alone (it cannot lead: node 2 is a voter now), node 1 still rebuilds its
    // table from the snapshot plus the committed log on disk.
    let again = Ownership::start(config(1, Some(dir.path()), local(0), None, 1, SECRET)).unwrap();
    let t = again.table();
    assert!(t.applied >= last, "applied {} < {last}", t.applied);
    assert_eq!(t.fragments, t1.fragments);
    assert_eq!(t.members.len(), 2);
    again.shutdown();
    assert!(started.elapsed() < Duration::from_secs(40));
}
