//! The cluster's access picture as one node sees it: the latest tick summary of every
//! core of every node (each node sends its summaries to every member), turned into
//! per-fragment load and the share of it that comes from the fragment's owner — the
//! local-hit ratio prediction is meant to raise — and per-node resource use.
//!
//! Bounded: one entry per (node, core) and per fragment seen in the latest tick;
//! summaries older than [`STALE`] are ignored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::access::{Resources, TickSummary};

/// A summary older than this no longer counts (its node stopped reporting).
pub const STALE: Duration = Duration::from_secs(5);
/// Most (node, core) reporters kept.
const MAX_REPORTERS: usize = 4096;

/// Most access orders waiting for the placement controller (it takes them every tick;
/// beyond this, as when this node does not lead, the oldest are dropped).
const MAX_ORDERS: usize = 8192;

#[derive(Default)]
pub struct ClusterTelemetry {
    latest: HashMap<(u64, u32), (Instant, TickSummary)>,
    /// `(node, connection, fragments in order)`, oldest first, each delivered once.
    orders: std::collections::VecDeque<(u64, u64, Vec<u64>)>,
}

impl ClusterTelemetry {
    pub fn ingest(&mut self, mut summary: TickSummary) {
        for (connection, order) in std::mem::take(&mut summary.sequences) {
            if self.orders.len() >= MAX_ORDERS {
                self.orders.pop_front();
            }
            self.orders.push_back((summary.node, connection, order));
        }
        if self.latest.len() >= MAX_REPORTERS
            && !self.latest.contains_key(&(summary.node, summary.core))
        {
            self.latest.retain(|_, (at, _)| at.elapsed() < STALE);
            if self.latest.len() >= MAX_REPORTERS {
                return;
            }
        }
        self.latest
            .insert((summary.node, summary.core), (Instant::now(), summary));
    }

    fn fresh(&self) -> impl Iterator<Item = &TickSummary> {
        self.latest
            .values()
            .filter(|(at, _)| at.elapsed() < STALE)
            .map(|(_, s)| s)
    }

    /// Accesses per second to each fragment by each node's clients, from the latest
    /// tick of every reporter: `fragment → node → per second`.
    pub fn rates(&self) -> HashMap<u64, HashMap<u64, f64>> {
        let mut out: HashMap<u64, HashMap<u64, f64>> = HashMap::new();
        for s in self.fresh() {
            let secs = (s.tick_ms.max(1) as f64) / 1000.0;
            for c in &s.fragments {
                let n = f64::from(c.reads) + f64::from(c.writes);
                *out.entry(c.fragment)
                    .or_default()
                    .entry(s.node)
                    .or_default() += n / secs;
            }
        }
        out
    }

    /// Total accesses per second to `fragment`, and the share from `owner`'s clients
    /// (None when nobody accessed it).
    pub fn load_and_local_share(
        rates: &HashMap<u64, HashMap<u64, f64>>,
        fragment: u64,
        owner: u64,
    ) -> (f64, Option<f64>) {
        let Some(by_node) = rates.get(&fragment) else {
            return (0.0, None);
        };
        let total: f64 = by_node.values().sum();
        let local = by_node.get(&owner).copied().unwrap_or(0.0);
        (total, (total > 0.0).then(|| local / total))
    }

    /// Bytes of each table fragment, as its owner last reported them.
    pub fn sizes(&self) -> HashMap<u64, u64> {
        let mut out = HashMap::new();
        for s in self.fresh() {
            for &(fragment, bytes) in &s.sizes {
                *out.entry(fragment).or_default() += bytes;
            }
        }
        out
    }

    /// The access orders that arrived since the last call, oldest first.
    pub fn take_orders(&mut self) -> Vec<(u64, u64, Vec<u64>)> {
        self.orders.drain(..).collect()
    }

    /// The latest resource report of `node`.
    pub fn resources(&self, node: u64) -> Option<Resources> {
        self.fresh()
            .filter(|s| s.node == node)
            .find_map(|s| s.resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::access::FragmentCounts;

    fn summary(node: u64, core: u32, fragment: u64, reads: u32) -> TickSummary {
        TickSummary {
            node,
            core,
            tick_ms: 500,
            fragments: vec![FragmentCounts {
                fragment,
                reads,
                ..Default::default()
            }],
            sizes: vec![(fragment, 100)],
            resources: None,
            sequences: vec![(node * 10 + u64::from(core), vec![fragment])],
        }
    }

    #[test]
    fn load_sums_reporters_and_local_share_is_the_owners() {
        let mut t = ClusterTelemetry::default();
        t.ingest(summary(1, 0, 7, 30));
        t.ingest(summary(1, 1, 7, 20)); // another core of node 1
        t.ingest(summary(2, 0, 7, 150));
        t.ingest(summary(2, 0, 7, 50)); // replaces node 2 core 0's previous tick
        let rates = t.rates();
        let (load, share) = ClusterTelemetry::load_and_local_share(&rates, 7, 1);
        assert!((load - 200.0).abs() < 1e-9, "{load}"); // (30+20+50) per 0.5 s
        assert!((share.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(
            ClusterTelemetry::load_and_local_share(&rates, 8, 1),
            (0.0, None)
        );
        // Three reporters (node 1 core 0 and 1, node 2 core 0) each said 100 bytes.
        assert_eq!(t.sizes().get(&7), Some(&300));
        // Access orders are kept in arrival order and handed out once.
        let orders = t.take_orders();
        assert_eq!(
            orders.iter().map(|(n, c, _)| (*n, *c)).collect::<Vec<_>>(),
            [(1, 10), (1, 11), (2, 20), (2, 20)]
        );
        assert!(t.take_orders().is_empty());
    }
}
