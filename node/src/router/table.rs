//! Which core owns which key range. One table for the node, replaced whole on every
//! change (split, move); each core keeps an `Arc` snapshot and refreshes it when the
//! version moves, so routing a key costs one atomic load and a binary search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub version: u64,
    /// Sorted lower bounds; the first is the empty key, range i is
    /// `[bounds[i], bounds[i+1])`.
    bounds: Vec<Bytes>,
    owners: Vec<usize>,
}

impl RouteTable {
    /// `cores` ranges cut at evenly spaced first bytes.
    pub fn initial(cores: usize) -> RouteTable {
        let bounds = (0..cores).map(|i| initial_range(i, cores).0).collect();
        RouteTable {
            version: 1,
            bounds,
            owners: (0..cores).collect(),
        }
    }

    fn index(&self, key: &[u8]) -> usize {
        self.bounds
            .partition_point(|lo| &lo[..] <= key)
            .saturating_sub(1)
    }

    pub fn core_for(&self, key: &[u8]) -> usize {
        self.owners[self.index(key)]
    }

    /// Make `at` a range boundary; the new range keeps the owner it had.
    pub fn add_boundary(&mut self, at: &Bytes) {
        let i = self.index(at);
        if self.bounds[i] != *at {
            self.bounds.insert(i + 1, at.clone());
            self.owners.insert(i + 1, self.owners[i]);
        }
    }

    /// Give `[lo, hi)` to `core`.
    pub fn set_owner(&mut self, lo: &Bytes, hi: Option<&Bytes>, core: usize) {
        self.add_boundary(lo);
        if let Some(hi) = hi {
            self.add_boundary(hi);
        }
        for i in 0..self.bounds.len() {
            let inside = self.bounds[i] >= *lo && hi.is_none_or(|hi| self.bounds[i] < *hi);
            if inside {
                self.owners[i] = core;
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
        assert_eq!(t.core_for(b""), 0);
        assert_eq!(t.core_for(b"key:1"), 0);
        assert_eq!(t.core_for(b"\xff"), 1);
        t.add_boundary(&Bytes::from("key:5"));
        assert_eq!(t.core_for(b"key:6"), 0);
        t.set_owner(&Bytes::from("key:5"), Some(&Bytes::from_static(b"\x80")), 1);
        assert_eq!(t.core_for(b"key:4"), 0);
        assert_eq!(t.core_for(b"key:5"), 1);
        assert_eq!(t.core_for(b"key:9"), 1);
        assert_eq!(t.ranges(), 3);
        let routes = Routes::new(t);
        let mut cache = RouteCache::new(&routes);
        routes.update(|t| t.set_owner(&Bytes::new(), None, 0));
        assert_eq!(cache.get(&routes).core_for(b"key:9"), 0);
    }
}
