//! `AUGUR STATUS` (and so `augur status`): the cluster as a user sees it, two text
//! tables — nodes, then fragments — from this node's copy of the ownership table.
//!
//! What this node cannot know yet is shown as `-`: other nodes' CPU, memory, bytes
//! and load arrive with the telemetry summaries (not built yet).

use std::fmt::Write;

use crate::context::NodeShared;
use crate::telemetry::stats::total;

fn show_key(k: &[u8]) -> String {
    if k.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(k).into_owned()
    } else {
        k.iter().map(|b| format!("\\x{b:02x}")).collect()
    }
}

pub fn render(shared: &NodeShared) -> String {
    let mut out = String::new();
    let cluster = shared.cluster();
    let Some(ownership) = shared.ownership.get() else {
        let _ = writeln!(
            out,
            "node {} has no ownership table (wired by hand); members it knows: {}",
            cluster.my_id,
            cluster.members.len()
        );
        return out;
    };
    let table = ownership.table();
    let status = ownership.status();
    let me = ownership.node_id();
    let _ = writeln!(
        out,
        "cluster: {} nodes, {} fragments, table version {}, leader {}, term {}, formed {}",
        table.members.len(),
        table.fragments.len(),
        table.applied,
        status
            .leader
            .map_or_else(|| "none".to_string(), |l| l.to_string()),
        status.term,
        table.formed
    );
    let _ = writeln!(
        out,
        "\n{:<4} {:<22} {:<22} {:<9} {:>5} {:>10} {:>10} {:>9}",
        "node", "address", "fabric (core 0)", "raft", "cores", "memory", "keys", "fragments"
    );
    for m in table.members.values() {
        let raft = if m.id == me {
            format!("{:?}", status.role).to_lowercase()
        } else if table.voters.contains(&m.id) {
            "voter".into()
        } else {
            "learner".into()
        };
        let owned = table.fragments.values().filter(|f| f.owner == m.id).count();
        let (memory, keys) = if m.id == me {
            (
                format!("{}", shared.used_memory()),
                format!("{}", total(&shared.stats, |s| &s.keys)),
            )
        } else {
            ("-".into(), "-".into())
        };
        let fabric = m
            .fabric_addrs
            .first()
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<22} {:<9} {:>5} {:>10} {:>10} {:>9}",
            m.id,
            m.client_addr.to_string(),
            fabric,
            raft,
            m.cores,
            memory,
            keys,
            owned
        );
    }
    let _ = writeln!(
        out,
        "\n{:<6} {:<24} {:>5} {:>5} {:>6} {:<10}",
        "id", "range", "owner", "core", "epoch", "state"
    );
    for f in table.fragments.values() {
        let range = format!(
            "[{}, {})",
            show_key(&f.lo),
            f.hi.as_deref().map_or_else(|| "+inf".to_string(), show_key)
        );
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:>5} {:>5} {:>6} {:<10}",
            f.id,
            range,
            f.owner,
            f.core,
            f.epoch,
            format!("{:?}", f.state).to_lowercase()
        );
    }
    let local_splits = total(&shared.stats, |s| &s.splits);
    let _ = writeln!(
        out,
        "\nthis node (id {me}): {} local fragments after {local_splits} local splits, {} commands, remote requests {} (errors {})",
        total(&shared.stats, |s| &s.fragments),
        total(&shared.stats, |s| &s.commands),
        total(&shared.stats, |s| &s.remote_requests),
        total(&shared.stats, |s| &s.remote_errors),
    );
    out
}
