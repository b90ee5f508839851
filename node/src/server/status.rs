//! `AUGUR STATUS` (and so `augur status`): the cluster as a user sees it, two text
//! tables — nodes, then fragments — from this node's copy of the ownership table.
//!
//! Load, local-hit share, CPU and memory come from the telemetry summaries every node
//! sends every member once per tick (`telemetry::cluster`); `-` where none arrived.

use std::fmt::Write;

use crate::context::NodeShared;
use crate::telemetry::cluster::ClusterTelemetry;
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
    let (rates, reports): (_, Vec<_>) = {
        let t = shared.telemetry();
        (
            t.rates(),
            table
                .members
                .keys()
                .map(|id| (*id, t.resources(*id)))
                .collect(),
        )
    };
    let _ = writeln!(
        out,
        "\n{:<4} {:<22} {:<22} {:<9} {:>5} {:>6} {:>10} {:>10} {:>9} {:>9}",
        "node",
        "address",
        "fabric (core 0)",
        "raft",
        "cores",
        "cpu%",
        "memory",
        "rss",
        "cmds/s",
        "fragments"
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
        let report = reports.iter().find(|(id, _)| *id == m.id).and_then(|r| r.1);
        let tick_s = shared.config.telemetry_interval_ms.max(1) as f64 / 1000.0;
        let (cpu, memory, rss, cmds) = match report {
            Some(r) => (
                format!("{:.0}", r.cpu_percent),
                r.used_memory.to_string(),
                r.rss.to_string(),
                format!("{:.0}", r.commands as f64 / tick_s),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let fabric = m
            .fabric_addrs
            .first()
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<22} {:<9} {:>5} {:>6} {:>10} {:>10} {:>9} {:>9}",
            m.id,
            m.client_addr.to_string(),
            fabric,
            raft,
            m.cores,
            cpu,
            memory,
            rss,
            cmds,
            owned
        );
    }
    let _ = writeln!(
        out,
        "\n{:<6} {:<24} {:>5} {:>5} {:>6} {:<10} {:>9} {:>7}",
        "id", "range", "owner", "core", "epoch", "state", "load/s", "local%"
    );
    for f in table.fragments.values() {
        let range = format!(
            "[{}, {})",
            show_key(&f.lo),
            f.hi.as_deref().map_or_else(|| "+inf".to_string(), show_key)
        );
        let (load, share) = ClusterTelemetry::load_and_local_share(&rates, f.id, f.owner);
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:>5} {:>5} {:>6} {:<10} {:>9.0} {:>7}",
            f.id,
            range,
            f.owner,
            f.core,
            f.epoch,
            format!("{:?}", f.state).to_lowercase(),
            load,
            share.map_or_else(|| "-".to_string(), |s| format!("{:.0}", s * 100.0))
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

/// `AUGUR MIGRATIONS`: one line per migration in flight, `key=value` words so tools can
/// read them (`augur migrate` draws its progress bar from these), or a line saying
/// there are none.
pub fn render_migrations(list: &[crate::telemetry::migrations::Progress]) -> String {
    if list.is_empty() {
        return "no migrations in flight\n".into();
    }
    let mut out = String::new();
    for p in list {
        let rate = p.bytes_done as f64 / (p.elapsed_ms.max(1) as f64 / 1000.0) / (1 << 20) as f64;
        let _ = writeln!(
            out,
            "fragment={} from={} to={} phase={} bytes={} total={} elapsed_ms={} mib_per_s={rate:.1}",
            p.fragment, p.from, p.to, p.phase, p.bytes_done, p.bytes_total, p.elapsed_ms
        );
    }
    out
}
