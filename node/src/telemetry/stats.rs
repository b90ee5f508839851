//! Per-core counters, written only by their core (plain load+store, no locked
//! instructions) and read by anyone (INFO, /metrics, maxmemory, rebalancing).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
#[repr(align(128))]
pub struct CoreStats {
    pub commands: AtomicU64,
    pub keys: AtomicU64,
    pub expiring: AtomicU64,
    pub used_bytes: AtomicU64,
    pub region_bytes: AtomicU64,
    pub fragments: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub expired: AtomicU64,
    pub splits: AtomicU64,
    pub compactions: AtomicU64,
    /// Writes that found their fragment full and waited for a split or compaction on
    /// the request path (finishing an incremental one, or a whole one): each is a
    /// stall of every client of the core (decision 0015).
    pub rebuild_stalls: AtomicU64,
    /// Slices of incremental splits and compactions run between client batches.
    pub rebuild_slices: AtomicU64,
    /// Incremental splits and compactions in progress (a gauge).
    pub rebuilds_active: AtomicU64,
    pub moves_out: AtomicU64,
    /// Key requests from this node's clients, counted once each when first routed ...
    pub key_requests: AtomicU64,
    /// ... of which another node owned the key (the local-hit ratio is the rest's share).
    pub key_requests_remote: AtomicU64,
    /// Round trip of a small peer message (this core's telemetry), µs, smoothed: what
    /// an access to another node's key costs more than a local one.
    pub peer_rtt_us: AtomicU64,
    /// Key requests this core sent to another core.
    pub cross_core: AtomicU64,
    /// Key requests this core sent to another node (by message).
    pub remote_requests: AtomicU64,
    /// Key requests that failed because their owner node could not be reached.
    pub remote_errors: AtomicU64,
    /// Key reads served by a one-sided read of another node's region.
    pub remote_reads: AtomicU64,
    /// One-sided reads retried (torn or stale region).
    pub remote_read_retries: AtomicU64,
    /// Key requests routed again after their owner answered "moved".
    pub moved_retries: AtomicU64,
    /// Time client batches spent waiting to re-route (a fence, or a table behind), µs.
    pub reroute_wait_us: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub rejected_connections: AtomicU64,
}

/// Add to a counter only this thread writes.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Fold a sample into a smoothed value only this thread writes (weight 1/8).
pub fn smooth(value: &AtomicU64, sample: u64) {
    let old = value.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old.saturating_mul(7).saturating_add(sample)) / 8
    };
    value.store(new.max(1), Ordering::Relaxed);
}

pub fn set(counter: &AtomicU64, v: u64) {
    counter.store(v, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Sum one counter over all cores.
pub fn total(all: &[CoreStats], field: impl Fn(&CoreStats) -> &AtomicU64) -> u64 {
    all.iter().map(|s| get(field(s))).sum()
}

/// The mean of the cores' smoothed peer round trips, µs (0: none measured yet).
pub fn peer_rtt_us(all: &[CoreStats]) -> u64 {
    let measured: Vec<u64> = all
        .iter()
        .map(|s| get(&s.peer_rtt_us))
        .filter(|v| *v > 0)
        .collect();
    if measured.is_empty() {
        0
    } else {
        measured.iter().sum::<u64>() / measured.len() as u64
    }
}
