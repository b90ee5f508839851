//! Who owns which key range: a core of this node, or another node of the cluster. One
//! table for the node, replaced whole on every change (split, move between cores, a new
//! cluster table); each core keeps an `Arc` snapshot and refreshes it when the version
//! moves, so routing a key costs one atomic load and a binary search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Who serves a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A core of this node.
    Core(usize),
    /// Another node of the cluster (by node id).
    Node(u64),
    /// Nobody yet: the cluster has not formed.
    Unassigned,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub version: u64,
    /// Version of the cluster ownership table this table was derived from (0 before
    /// the cluster formed); sent with requests to other nodes.
    pub cluster_version: u64,
    /// Sorted lower bounds; the first is the empty key, range i is
    /// `[bounds[i], bounds[i+1])`.
    bounds: Vec<Bytes>,
    owners: Vec<Owner>,
    /// For each range, the index (into `fragment_ids`) of the cluster fragment it is
    /// part of: what telemetry counts accesses against.
    fragments: Vec<u32>,
    fragment_ids: Arc<Vec<u64>>,
}

impl RouteTable {
    /// `cores` ranges cut at evenly spaced first bytes.
    pub fn initial(cores: usize) -> RouteTable {
        let bounds = (0..cores).map(|i| initial_range(i, cores).0).collect();
        RouteTable {
            version: 1,
            cluster_version: 0,
            bounds,
            owners: (0..cores).map(Owner::Core).collect(),
            fragments: (0..cores as u32).collect(),
            fragment_ids: Arc::new((0..cores as u64).collect()),
        }
    }

    /// A table from sorted, tiling ranges (`ranges[0].0` is the empty key, each range
    /// ends where the next begins), each with its owner and cluster fragment id.
    pub fn from_ranges(cluster_version: u64, ranges: Vec<(Bytes, Owner, u64)>) -> RouteTable {
        let ranges = if ranges.is_empty() {
            vec![(Bytes::new(), Owner::Unassigned, 0)]
        } else {
            ranges
        };
        let mut t = RouteTable {
            version: 1,
            cluster_version,
            bounds: Vec::with_capacity(ranges.len()),
            owners: Vec::with_capacity(ranges.len()),
            fragments: Vec::with_capacity(ranges.len()),
            fragment_ids: Arc::new(ranges.iter().map(|r| r.2).collect()),
        };
        for (i, (lo, owner, _)) in ranges.into_iter().enumerate() {
            t.bounds.push(lo);
            t.owners.push(owner);
            t.fragments.push(i as u32);
        }
        t
    }

    /// Follow a new version of the cluster table: other nodes' ranges get their
    /// owners, every table boundary becomes a route boundary, and every range is
    /// labelled with the cluster fragment holding it. Ranges this node owns keep
    /// their cores (and their finer local boundaries).
    pub fn follow_cluster(
        &mut self,
        cluster_version: u64,
        me: u64,
        fragments: &[(Bytes, Option<Bytes>, u64, u64)],
    ) {
        // Never go back to an older table: a route set after a newer commit (a
        // migration's install) must not be undone by a watcher holding an older copy.
        if cluster_version <= self.cluster_version {
            return;
        }
        for (lo, hi, owner, _) in fragments {
            self.add_boundary(lo);
            if *owner != me {
                self.set_owner(lo, hi.as_ref(), Owner::Node(*owner));
            } else if let Some(hi) = hi {
                self.add_boundary(hi);
            }
        }
        // A range the table names this node for while it routes elsewhere keeps its
        // route: taking a fragment over is the migration engine's step, not this one.
        let lows: Vec<&Bytes> = fragments.iter().map(|f| &f.0).collect();
        self.fragments = self
            .bounds
            .iter()
            .map(|b| lows.partition_point(|lo| *lo <= b).saturating_sub(1) as u32)
            .collect();
        self.fragment_ids = Arc::new(fragments.iter().map(|f| f.3).collect());
        self.cluster_version = cluster_version;
    }

    /// The owner of `key` and the index of its cluster fragment, by one search.
    pub fn locate(&self, key: &[u8]) -> (Owner, u32) {
        let i = self.index(key);
        (self.owners[i], self.fragments[i])
    }

    /// The cluster fragment id of a fragment index from [`RouteTable::locate`].
    pub fn fragment_id(&self, index: u32) -> u64 {
        self.fragment_ids.get(index as usize).copied().unwrap_or(0)
    }

    /// Cluster fragments the table knows.
    pub fn fragment_count(&self) -> usize {
        self.fragment_ids.len()
    }

    /// Replace this table's contents, keeping its version counting up.
    pub fn replace_with(&mut self, next: RouteTable) {
        let version = self.version;
        *self = next;
        self.version = version;
    }

    fn index(&self, key: &[u8]) -> usize {
        self.bounds
            .partition_point(|lo| &lo[..] <= key)
            .saturating_sub(1)
    }

    pub fn owner_of(&self, key: &[u8]) -> Owner {
        self.owners[self.index(key)]
    }

    /// The ranges and their owners, in key order.
    pub fn ranges_with_owners(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>, Owner)> {
        self.bounds
            .iter()
            .enumerate()
            .map(|(i, lo)| (lo, self.bounds.get(i + 1), self.owners[i]))
    }

    /// Make `at` a range boundary; the new range keeps the owner it had.
    pub fn add_boundary(&mut self, at: &Bytes) {
        let i = self.index(at);
        if self.bounds[i] != *at {
            self.bounds.insert(i + 1, at.clone());
            self.owners.insert(i + 1, self.owners[i]);
            self.fragments.insert(i + 1, self.fragments[i]);
        }
    }

    /// Give `[lo, hi)` to `owner`.
    pub fn set_owner(&mut self, lo: &Bytes, hi: Option<&Bytes>, owner: Owner) {
        self.add_boundary(lo);
        if let Some(hi) = hi {
            self.add_boundary(hi);
        }
        for i in 0..self.bounds.len() {
            let inside = self.bounds[i] >= *lo && hi.is_none_or(|hi| self.bounds[i] < *hi);
            if inside {
                self.owners[i] = owner;
            }
        }
    }

    pub fn ranges(&self) -> usize {
        self.bounds.len()
    }
}

/// Core `core`'s first range, `[lo, hi)`, cut at evenly spaced first bytes.
pub fn initial_range(core: usize, cores: usize) -> (Bytes, Option<Bytes>) {
    let bound = |i: usize| Bytes::from(vec![(i * 256 / cores) as u8]);
    let lo = if core == 0 { Bytes::new() } else { bound(core) };
    (lo, (core + 1 < cores).then(|| bound(core + 1)))
}

pub struct Routes {
    version: AtomicU64,
    table: Mutex<Arc<RouteTable>>,
}

impl Routes {
    pub fn new(table: RouteTable) -> Routes {
        Routes {
            version: AtomicU64::new(table.version),
            table: Mutex::new(Arc::new(table)),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<RouteTable> {
        match self.table.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Change the table; readers see the new one from their next refresh.
    pub fn update(&self, change: impl FnOnce(&mut RouteTable)) {
        let mut guard = match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = RouteTable::clone(&guard);
        change(&mut next);
        next.version += 1;
        let version = next.version;
        *guard = Arc::new(next);
        self.version.store(version, Ordering::Release);
    }
}

/// A core's snapshot of the routes.
pub struct RouteCache {
    table: Arc<RouteTable>,
}

impl RouteCache {
    pub fn new(routes: &Routes) -> RouteCache {
        RouteCache {
            table: routes.snapshot(),
        }
    }

    pub fn get(&mut self, routes: &Routes) -> &RouteTable {
        if routes.version() != self.table.version {
            self.table = routes.snapshot();
        }
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_owners() {
        let mut t = RouteTable::initial(2);
        assert_eq!(t.owner_of(b""), Owner::Core(0));
        assert_eq!(t.owner_of(b"key:1"), Owner::Core(0));
        assert_eq!(t.owner_of(b"\xff"), Owner::Core(1));
        t.add_boundary(&Bytes::from("key:5"));
        assert_eq!(t.owner_of(b"key:6"), Owner::Core(0));
        let to_core1 = Owner::Core(1);
        t.set_owner(
            &Bytes::from("key:5"),
            Some(&Bytes::from_static(b"\x80")),
            to_core1,
        );
        assert_eq!(t.owner_of(b"key:4"), Owner::Core(0));
        assert_eq!(t.owner_of(b"key:5"), Owner::Core(1));
        assert_eq!(t.owner_of(b"key:9"), Owner::Core(1));
        assert_eq!(t.ranges(), 3);
        let routes = Routes::new(t);
        let mut cache = RouteCache::new(&routes);
        routes.update(|t| t.set_owner(&Bytes::new(), None, Owner::Node(7)));
        assert_eq!(cache.get(&routes).owner_of(b"key:9"), Owner::Node(7));
    }

    #[test]
    fn following_the_cluster_table_keeps_local_boundaries_and_relabels() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut t = RouteTable::from_ranges(
            1,
            vec![(b(""), Owner::Core(0), 10), (b("m"), Owner::Node(2), 11)],
        );
        t.add_boundary(&b("f")); // a local split
                                 // The table split our fragment at "f" (new id 12) and node 2's at "t" (13).
        let table = vec![
            (b(""), Some(b("f")), 1, 10),
            (b("f"), Some(b("m")), 1, 12),
            (b("m"), Some(b("t")), 2, 11),
            (b("t"), None, 2, 13),
        ];
        t.follow_cluster(5, 1, &table);
        assert_eq!(t.cluster_version, 5);
        let at = |k: &str| {
            let (owner, i) = t.locate(k.as_bytes());
            (owner, t.fragment_id(i))
        };
        assert_eq!(at("a"), (Owner::Core(0), 10));
        assert_eq!(at("g"), (Owner::Core(0), 12));
        assert_eq!(at("n"), (Owner::Node(2), 11));
        assert_eq!(at("z"), (Owner::Node(2), 13));
        assert_eq!(t.fragment_count(), 4);
    }
}
