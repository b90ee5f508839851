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
    pub moves_out: AtomicU64,
    /// Key requests from this node's clients, counted once each when first routed ...
    pub key_requests: AtomicU64,
    /// ... of which another node owned the key (the local-hit ratio is the rest's share).
    pub key_requests_remote: AtomicU64,
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
