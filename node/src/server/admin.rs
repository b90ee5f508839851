//! `/metrics` in Prometheus text format on the admin port, served by a plain thread
//! so scraping never touches a data core.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::context::NodeShared;
use crate::telemetry::stats::{get, CoreStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabel {
    core: String,
}

/// Start the endpoint; returns the bound port.
pub fn serve(shared: Arc<NodeShared>, addr: SocketAddr) -> std::io::Result<u16> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("augur-admin".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(&shared, stream) {
                    tracing::debug!("admin request failed: {e}");
                }
            }
        })?;
    Ok(port)
}

fn answer(shared: &NodeShared, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        ("200 OK", render(shared))
    } else {
        ("404 Not Found", "not found: try /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

pub fn render(shared: &NodeShared) -> String {
    let mut registry = Registry::with_prefix("augur");
    let per_core = |registry: &mut Registry,
                    name: &str,
                    help: &str,
                    counter: bool,
                    field: fn(&CoreStats) -> &AtomicU64| {
        if counter {
            let family = Family::<CoreLabel, Counter>::default();
            for (i, s) in shared.stats.iter().enumerate() {
                family
                    .get_or_create(&CoreLabel {
                        core: i.to_string(),
                    })
                    .inc_by(get(field(s)));
            }
            registry.register(name, help, family);
        } else {
            let family = Family::<CoreLabel, Gauge>::default();
            for (i, s) in shared.stats.iter().enumerate() {
                family
                    .get_or_create(&CoreLabel {
                        core: i.to_string(),
                    })
                    .set(get(field(s)) as i64);
            }
            registry.register(name, help, family);
        }
    };
    per_core(&mut registry, "commands", "Commands processed", true, |s| {
        &s.commands
    });
    per_core(
        &mut registry,
        "keyspace_hits",
        "GETs that found a key",
        true,
        |s| &s.hits,
    );
    per_core(
        &mut registry,
        "keyspace_misses",
        "GETs that found no key",
        true,
        |s| &s.misses,
    );
    per_core(
        &mut registry,
        "expired_keys",
        "Keys removed by expiry",
        true,
        |s| &s.expired,
    );
    per_core(
        &mut registry,
        "cross_core_requests",
        "Key requests sent to another core",
        true,
        |s| &s.cross_core,
    );
    for (name, help, field) in [
        (
            "key_requests",
            "Key requests from this node's clients",
            (|s| &s.key_requests) as fn(&CoreStats) -> &AtomicU64,
        ),
        (
            "key_requests_remote",
            "Key requests from this node's clients for keys another node owned",
            |s| &s.key_requests_remote,
        ),
        (
            "remote_requests",
            "Key requests sent to another node",
            |s| &s.remote_requests,
        ),
        (
            "remote_errors",
            "Key requests whose owner node could not be reached",
            |s| &s.remote_errors,
        ),
        (
            "remote_reads",
            "Reads served by a one-sided read of another node's region",
            |s| &s.remote_reads,
        ),
        (
            "remote_read_retries",
            "One-sided reads retried (torn or stale)",
            |s| &s.remote_read_retries,
        ),
        (
            "moved_retries",
            "Key requests routed again after their owner answered moved",
            |s| &s.moved_retries,
        ),
        (
            "reroute_wait_us",
            "Time client batches waited to re-route (a fence, or a table behind), µs",
            |s| &s.reroute_wait_us,
        ),
    ] {
        per_core(&mut registry, name, help, true, field);
    }
    per_core(&mut registry, "splits", "Fragment splits", true, |s| {
        &s.splits
    });
    per_core(
        &mut registry,
        "compactions",
        "Fragment compactions",
        true,
        |s| &s.compactions,
    );
    per_core(
        &mut registry,
        "rebuild_stalls",
        "Writes that waited for a split or compaction on the request path",
        true,
        |s| &s.rebuild_stalls,
    );
    per_core(
        &mut registry,
        "rebuild_slices",
        "Slices of incremental splits and compactions",
        true,
        |s| &s.rebuild_slices,
    );
    per_core(&mut registry, "keys", "Keys held", false, |s| &s.keys);
    per_core(
        &mut registry,
        "used_bytes",
        "Region bytes in use (header, index, log)",
        false,
        |s| &s.used_bytes,
    );
    per_core(
        &mut registry,
        "region_bytes",
        "Region bytes mapped",
        false,
        |s| &s.region_bytes,
    );
    per_core(&mut registry, "fragments", "Fragments owned", false, |s| {
        &s.fragments
    });
    per_core(
        &mut registry,
        "connections",
        "Open client connections",
        false,
        |s| &s.connections,
    );
    {
        let m = shared.migration_stats();
        let (p50, p99, max) = m.pause_summary();
        for (name, help, value) in [
            (
                "migrations_in",
                "Migrations this node completed as target",
                m.done,
            ),
            (
                "migrations_aborted",
                "Migrations this node aborted as target",
                m.aborted,
            ),
            (
                "migration_bytes",
                "Bytes pulled by completed migrations",
                m.bytes,
            ),
            (
                "migration_pause_p50_us",
                "Median write pause of migrations, us",
                p50,
            ),
            (
                "migration_pause_p99_us",
                "p99 write pause of migrations, us",
                p99,
            ),
            (
                "migration_pause_max_us",
                "Longest write pause of a migration, us",
                max,
            ),
        ] {
            let gauge = Gauge::<i64, AtomicI64>::default();
            gauge.set(value.min(i64::MAX as u64) as i64);
            registry.register(name, help, gauge);
        }
    }
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out = "# encoding failed\n".into();
    }
    out
}
