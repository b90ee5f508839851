//! State every core of the node shares: the config, the route table, per-core
//! counters, the client registry and SCAN cursors. A leaf: it imports nothing above
//! it, so every layer can hold it. Written rarely (config changes, client registry,
//! route changes); the data path reads only atomics and its own core's shard.

pub mod clients;
pub mod cursors;
pub mod pace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::router::table::Routes;
use crate::store::Geometry;
use crate::telemetry::stats::{self, CoreStats};
use clients::Clients;
use cursors::Cursors;

/// What a core needs to know about the other nodes: where to reach them. Derived
/// from the ownership table whenever it changes.
#[derive(Debug, Clone, Default)]
pub struct ClusterMap {
    pub my_id: u64,
    /// Version of the ownership table this map was derived from.
    pub version: u64,
    pub members: BTreeMap<u64, MemberAddrs>,
    /// The ownership table's leader, as this node last heard.
    pub leader: Option<u64>,
    /// This node's Raft role (`leader`, `follower`, `learner`, ...); empty when the
    /// node runs without an ownership table (wired by hand).
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct MemberAddrs {
    pub client: SocketAddr,
    /// Fabric endpoint of each core, index = core.
    pub fabric: Vec<SocketAddr>,
}

/// An application's word that `node` will need `[lo, hi)` until `until_ms`
/// (`AUGUR HINT`), weighed by the placement controller like a forecast.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HintEntry {
    pub lo: Bytes,
    pub hi: Option<Bytes>,
    pub node: u64,
    pub until_ms: u64,
}

/// Hints kept at once; the oldest go first.
pub const MAX_HINTS: usize = 1024;

/// A key range whose requests wait (are retried by the router) while its fragment
/// hands over to another node: from the fence until the table names the new owner.
#[derive(Debug, Clone)]
pub struct Fence {
    pub fragment: u64,
    /// The core holding the fragment's data: only it may drop or renew that data.
    pub core: usize,
    pub lo: Bytes,
    pub hi: Option<Bytes>,
    pub since: Instant,
}

impl Fence {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.lo[..] && self.hi.as_ref().is_none_or(|h| key < &h[..])
    }
}

pub struct NodeShared {
    pub config: Config,
    cores: usize,
    pub port: u16,
    pub routes: Arc<Routes>,
    pub stats: Arc<[CoreStats]>,
    pub clients: Clients,
    pub cursors: Mutex<Cursors>,
    pub fragment_ids: Arc<AtomicU64>,
    geometry: Geometry,
    pub started: Instant,
    pub maxmemory: AtomicU64,
    pub maxclients: AtomicU64,
    pub max_bulk_len: AtomicU64,
    pub requirepass: Mutex<Option<Bytes>>,
    cluster: Mutex<Arc<ClusterMap>>,
    fences: Mutex<Vec<Fence>>,
    /// The placement policy in force (a name from `config::POLICIES`).
    pub policy: Mutex<String>,
    /// Migrations this node pulled in, and how they went.
    pub migrations: Mutex<crate::telemetry::migrations::MigrationStats>,
    /// The bandwidth budget every migration copy to this node shares.
    pub migration_pace: pace::Pace,
    pub hints: Mutex<Vec<HintEntry>>,
    /// The leader's placement feedback (decisions, predicted vs observed), for
    /// `AUGUR PLACEMENT`.
    placement_report: Mutex<String>,
    /// How many fences are up: the data path looks at `fences` only when not zero.
    fenced: std::sync::atomic::AtomicUsize,
    /// The cluster's access picture from every node's tick summaries.
    pub telemetry: Mutex<crate::telemetry::cluster::ClusterTelemetry>,
    /// The replicated ownership table, once the node has one (not when wired by hand).
    pub ownership: std::sync::OnceLock<crate::ownership::Ownership>,
}

impl NodeShared {
    pub fn new(config: Config, port: u16, routes: Routes) -> NodeShared {
        let cores = config.core_count();
        NodeShared {
            cores,
            port,
            routes: Arc::new(routes),
            stats: (0..cores).map(|_| CoreStats::default()).collect(),
            clients: Clients::default(),
            cursors: Mutex::new(Cursors::default()),
            // Unique across the cluster: a migrated fragment keeps its id on its new node.
            fragment_ids: Arc::new(AtomicU64::new((config.node_id << 40) + 1)),
            geometry: Geometry::sized_for(config.region_size as usize, 72),
            started: Instant::now(),
            maxmemory: AtomicU64::new(config.maxmemory),
            maxclients: AtomicU64::new(config.maxclients as u64),
            max_bulk_len: AtomicU64::new(config.proto_max_bulk_len),
            requirepass: Mutex::new(config.requirepass.clone().map(Bytes::from)),
            cluster: Mutex::new(Arc::new(ClusterMap::default())),
            ownership: std::sync::OnceLock::new(),
            telemetry: Mutex::new(Default::default()),
            fences: Mutex::new(Vec::new()),
            policy: Mutex::new(config.placement_policy.clone()),
            migrations: Mutex::new(Default::default()),
            migration_pace: pace::Pace::new(config.migration_max_mb_per_s.saturating_mul(1 << 20)),
            hints: Mutex::new(Vec::new()),
            placement_report: Mutex::new(String::new()),
            fenced: std::sync::atomic::AtomicUsize::new(0),
            config,
        }
    }

    pub fn core_count(&self) -> usize {
        self.cores
    }

    /// The geometry of a fresh fragment: `region-size` bytes for records of the
    /// size a small-value workload has.
    pub fn default_geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn used_memory(&self) -> u64 {
        stats::total(&self.stats, |s| &s.used_bytes)
    }

    pub fn over_maxmemory(&self) -> bool {
        let max = self.maxmemory.load(Ordering::Relaxed);
        max > 0 && self.used_memory() >= max
    }

    pub fn cluster(&self) -> Arc<ClusterMap> {
        match self.cluster.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_cluster(&self, map: ClusterMap) {
        let map = Arc::new(map);
        match self.cluster.lock() {
            Ok(mut c) => *c = map,
            Err(poisoned) => *poisoned.into_inner() = map,
        }
    }

    pub fn telemetry(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::telemetry::cluster::ClusterTelemetry> {
        match self.telemetry.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn fences_locked(&self) -> std::sync::MutexGuard<'_, Vec<Fence>> {
        match self.fences.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether requests for `key` must wait for a handover to finish.
    #[inline]
    pub fn is_fenced(&self, key: &[u8]) -> bool {
        self.fenced.load(Ordering::Acquire) > 0
            && self.fences_locked().iter().any(|f| f.contains(key))
    }

    pub fn fence(&self, fence: Fence) {
        let mut fences = self.fences_locked();
        fences.retain(|f| f.fragment != fence.fragment);
        fences.push(fence);
        self.fenced.store(fences.len(), Ordering::Release);
    }

    pub fn unfence(&self, fragment: u64) -> Option<Fence> {
        let mut fences = self.fences_locked();
        let i = fences.iter().position(|f| f.fragment == fragment)?;
        let fence = fences.remove(i);
        self.fenced.store(fences.len(), Ordering::Release);
        Some(fence)
    }

    /// An atomic load: whether any handover is open on this node.
    pub fn has_fences(&self) -> bool {
        self.fenced.load(Ordering::Acquire) > 0
    }

    pub fn fences(&self) -> Vec<Fence> {
        self.fences_locked().clone()
    }

    /// Bring the route table up to the node's copy of the ownership table (other
    /// nodes' owners, boundaries, fragment labels). Cheap when nothing changed.
    pub fn follow_table(&self) {
        let Some(ownership) = self.ownership.get() else {
            return;
        };
        if ownership.version() <= self.routes.snapshot().cluster_version {
            return;
        }
        let table = ownership.table();
        let me = ownership.node_id();
        let fragments: Vec<_> = table
            .fragments
            .values()
            .map(|f| {
                (
                    Bytes::copy_from_slice(&f.lo),
                    f.hi.as_deref().map(Bytes::copy_from_slice),
                    f.owner,
                    f.id,
                )
            })
            .collect();
        self.routes
            .update(|r| r.follow_cluster(table.applied, me, &fragments));
    }

    pub fn migration_stats(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::telemetry::migrations::MigrationStats> {
        match self.migrations.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn placement_report(&self) -> std::sync::MutexGuard<'_, String> {
        match self.placement_report.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn policy(&self) -> String {
        match self.policy.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_policy(&self, policy: &str) {
        match self.policy.lock() {
            Ok(mut p) => *p = policy.to_string(),
            Err(poisoned) => *poisoned.into_inner() = policy.to_string(),
        }
    }

    /// Keep a hint (bounded; expired ones are dropped first).
    pub fn add_hint(&self, hint: HintEntry, now_ms: u64) {
        let mut hints = match self.hints.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        hints.retain(|h| h.until_ms > now_ms);
        if hints.len() >= MAX_HINTS {
            hints.remove(0);
        }
        hints.push(hint);
    }

    /// Hints still in force at `now_ms`.
    pub fn hints(&self, now_ms: u64) -> Vec<HintEntry> {
        let hints = match self.hints.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        hints
            .iter()
            .filter(|h| h.until_ms > now_ms)
            .cloned()
            .collect()
    }

    pub fn password(&self) -> Option<Bytes> {
        match self.requirepass.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
