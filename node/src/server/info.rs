//! INFO: Redis's sections (server, clients, memory, stats, keyspace) plus `augur`
//! (fragments and per-core load).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::core::CoreCtx;
use crate::telemetry::stats::{get, total, CoreStats};

/// The Redis version whose command surface augur follows; clients read it.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

pub fn render(ctx: &CoreCtx, sections: &[String]) -> String {
    let shared = &ctx.shared;
    let all = sections.is_empty()
        || sections
            .iter()
            .any(|s| s == "all" || s == "everything" || s == "default");
    let want = |name: &str| all || sections.iter().any(|s| s == name);
    let st = &shared.stats;
    let sum = |f: fn(&CoreStats) -> &std::sync::atomic::AtomicU64| total(st, f);
    let mut out = String::new();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\naugur_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:io_uring\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nexecutor_cores:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.port,
            shared.started.elapsed().as_secs(),
            shared.core_count(),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            shared.clients.count(),
            shared.maxclients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        let used = shared.used_memory();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_regions_mapped:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\r\n",
            used as f64 / (1 << 20) as f64,
            sum(|s| &s.region_bytes),
            shared.maxmemory.load(Ordering::Relaxed),
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n\r\n",
            sum(|s| &s.connections_total),
            sum(|s| &s.commands),
            sum(|s| &s.rejected_connections),
            sum(|s| &s.expired),
            sum(|s| &s.hits),
            sum(|s| &s.misses),
        );
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        let keys = sum(|s| &s.keys);
        if keys > 0 {
            let _ = write!(
                out,
                "db0:keys={keys},expires={},avg_ttl=0\r\n",
                sum(|s| &s.expiring)
            );
        }
        out.push_str("\r\n");
    }
    if want("cluster") {
        let cluster = shared.cluster();
        let migrations = shared.migration_stats();
        let pause = migrations.pause_summary();
        let hold = migrations.hold_summary();
        let routes = shared.routes.snapshot();
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:1\r\ncluster_nodes:{}\r\ncluster_my_id:{}\r\ncluster_leader:{}\r\ncluster_role:{}\r\nepoch:{}\r\nkey_requests:{}\r\nkey_requests_remote:{}\r\npeer_rtt_us:{}\r\nremote_requests:{}\r\nremote_errors:{}\r\nremote_reads:{}\r\nremote_read_retries:{}\r\nmoved_retries:{}\r\nreroute_wait_us:{}\r\nplacement_policy:{}\r\nmigrations_in:{}\r\nmigrations_aborted:{}\r\nmigration_bytes:{}\r\nmigration_pause_p50_us:{}\r\nmigration_pause_p99_us:{}\r\nmigration_pause_max_us:{}\r\nmigration_source_hold_p50_us:{}\r\nmigration_source_hold_p99_us:{}\r\nmigration_source_hold_max_us:{}\r\n\r\n",
            cluster.members.len() + usize::from(!cluster.members.contains_key(&cluster.my_id)),
            cluster.my_id,
            cluster.leader.map_or_else(|| "none".to_string(), |l| l.to_string()),
            if cluster.role.is_empty() { "none" } else { &cluster.role },
            routes.cluster_version,
            sum(|s| &s.key_requests),
            sum(|s| &s.key_requests_remote),
            crate::telemetry::stats::peer_rtt_us(st),
            sum(|s| &s.remote_requests),
            sum(|s| &s.remote_errors),
            sum(|s| &s.remote_reads),
            sum(|s| &s.remote_read_retries),
            sum(|s| &s.moved_retries),
            sum(|s| &s.reroute_wait_us),
            shared.policy(),
            migrations.done,
            migrations.aborted,
            migrations.bytes,
            pause.0,
            pause.1,
            pause.2,
            hold.0,
            hold.1,
            hold.2,
        );
    }
    if want("augur") {
        let routes = shared.routes.snapshot();
        let _ = write!(
            out,
            "# Augur\r\nfragments:{}\r\nroute_ranges:{}\r\nroute_version:{}\r\nsplits:{}\r\ncompactions:{}\r\nrebuilds_in_progress:{}\r\nrebuild_slices:{}\r\nrebuild_stalls:{}\r\nfragment_moves:{}\r\ncross_core_requests:{}\r\n",
            sum(|s| &s.fragments),
            routes.ranges(),
            routes.version,
            sum(|s| &s.splits),
            sum(|s| &s.compactions),
            sum(|s| &s.rebuilds_active),
            sum(|s| &s.rebuild_slices),
            sum(|s| &s.rebuild_stalls),
            sum(|s| &s.moves_out),
            sum(|s| &s.cross_core),
        );
        for (i, s) in st.iter().enumerate() {
            let _ = write!(
                out,
                "core{i}:fragments={},keys={},used_bytes={},commands={},cross_core={},connections={}\r\n",
                get(&s.fragments),
                get(&s.keys),
                get(&s.used_bytes),
                get(&s.commands),
                get(&s.cross_core),
                get(&s.connections),
            );
        }
        out.push_str("\r\n");
    }
    out
}
