//! Access statistics: a per-core recorder on the data path, folded once per tick into sparse
//! per-(fragment, node) time series and per-key-prefix write series over a sliding window.

use crate::hash::FxHashMap;
use std::collections::VecDeque;

/// Dense index of a fragment in the node's fragment table (assigned by the node).
pub type FragmentIndex = u32;
/// Cluster node id (small: the cluster has at most a few hundred nodes).
pub type NodeId = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
}

/// Counts for one (fragment, node) cell during one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessCounts {
    pub reads: u32,
    pub writes: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl AccessCounts {
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.reads == 0 && self.writes == 0
    }

    /// Operations of either kind.
    #[inline]
    pub fn accesses(&self) -> u64 {
        u64::from(self.reads) + u64::from(self.writes)
    }

    pub fn bytes(&self) -> u64 {
        self.read_bytes.saturating_add(self.write_bytes)
    }

    #[inline]
    fn add(&mut self, kind: AccessKind, bytes: u64) {
        match kind {
            AccessKind::Read => {
                self.reads = self.reads.saturating_add(1);
                self.read_bytes = self.read_bytes.saturating_add(bytes);
            }
            AccessKind::Write => {
                self.writes = self.writes.saturating_add(1);
                self.write_bytes = self.write_bytes.saturating_add(bytes);
            }
        }
    }

    fn merge(&mut self, other: &AccessCounts) {
        self.reads = self.reads.saturating_add(other.reads);
        self.writes = self.writes.saturating_add(other.writes);
        self.read_bytes = self.read_bytes.saturating_add(other.read_bytes);
        self.write_bytes = self.write_bytes.saturating_add(other.write_bytes);
    }
}

/// The recorder's cell: 16 bytes so four share a cache line (the table is random-accessed on
/// the data path). Bytes per tick per pair per core saturate at 4 GiB, far above any real tick.
#[derive(Clone, Copy, Debug, Default)]
struct RecorderCell {
    reads: u32,
    writes: u32,
    read_bytes: u32,
    write_bytes: u32,
}

impl RecorderCell {
    #[inline]
    fn is_zero(&self) -> bool {
        self.reads == 0 && self.writes == 0
    }

    #[inline]
    fn add(&mut self, kind: AccessKind, bytes: u32) {
        match kind {
            AccessKind::Read => {
                self.reads = self.reads.saturating_add(1);
                self.read_bytes = self.read_bytes.saturating_add(bytes);
            }
            AccessKind::Write => {
                self.writes = self.writes.saturating_add(1);
                self.write_bytes = self.write_bytes.saturating_add(bytes);
            }
        }
    }

    fn widen(self) -> AccessCounts {
        AccessCounts {
            reads: self.reads,
            writes: self.writes,
            read_bytes: u64::from(self.read_bytes),
            write_bytes: u64::from(self.write_bytes),
        }
    }
}

/// Up to 8 leading key bytes packed big-endian, plus the length actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPrefix {
    packed: u64,
    len: u8,
}

impl KeyPrefix {
    /// The first `min(len, 8, key.len())` bytes of `key`.
    pub fn of(key: &[u8], len: usize) -> Self {
        let used = len.min(8).min(key.len());
        let mut bytes = [0u8; 8];
        bytes[..used].copy_from_slice(&key[..used]);
        KeyPrefix {
            packed: u64::from_be_bytes(bytes),
            len: used as u8,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.packed.to_be_bytes()[..usize::from(self.len)].to_vec()
    }
}

/// Cells are indexed by u32 in the touched list; beyond that, events count as dropped.
fn table_size(fragments: usize, nodes: usize) -> usize {
    fragments.saturating_mul(nodes).min(u32::MAX as usize)
}

/// Per-core recorder: plain counters in a dense (fragment × node) table, no atomics and no
/// hashing, so recording is a bounds check, an index and two adds. Each core owns one and
/// hands it to the fold at the tick boundary.
#[derive(Clone, Debug)]
pub struct CoreRecorder {
    nodes: usize,
    cells: Vec<RecorderCell>,
    /// Cells that went from zero to non-zero this tick: the fold visits only these.
    touched: Vec<u32>,
    prefix_len: usize,
    prefixes: FxHashMap<KeyPrefix, AccessCounts>,
    /// Events for fragments or nodes outside the table (counted, never a panic).
    dropped: u64,
}

impl CoreRecorder {
    /// `prefix_len` (clamped to 0..=8) is how many leading key bytes `record_key` aggregates by.
    pub fn new(fragments: usize, nodes: usize, prefix_len: usize) -> Self {
        let nodes = nodes.max(1);
        CoreRecorder {
            nodes,
            cells: vec![RecorderCell::default(); table_size(fragments, nodes)],
            touched: Vec::new(),
            prefix_len: prefix_len.min(8),
            prefixes: FxHashMap::default(),
            dropped: 0,
        }
    }

    /// Grow the table when the node creates fragments (splits); existing counts are kept.
    pub fn ensure_fragments(&mut self, fragments: usize) {
        let needed = table_size(fragments, self.nodes);
        if needed > self.cells.len() {
            self.cells.resize(needed, RecorderCell::default());
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The hot path: one access of `bytes` by a client of `node` to `fragment`.
    #[inline]
    pub fn record(&mut self, fragment: FragmentIndex, node: NodeId, kind: AccessKind, bytes: u32) {
        let node = usize::from(node);
        let index = fragment as usize * self.nodes + node;
        if node >= self.nodes {
            self.dropped += 1;
            return;
        }
        match self.cells.get_mut(index) {
            Some(cell) => {
                if cell.is_zero() {
                    self.touched.push(index as u32);
                }
                cell.add(kind, bytes);
            }
            None => self.dropped += 1,
        }
    }

    /// Key-prefix aggregation for write-pattern analysis; costs a hash lookup, so the node
    /// calls it for writes (or a sample of accesses), not necessarily every read.
    pub fn record_key(&mut self, key: &[u8], kind: AccessKind, bytes: u32) {
        let prefix = KeyPrefix::of(key, self.prefix_len);
        self.prefixes
            .entry(prefix)
            .or_default()
            .add(kind, u64::from(bytes));
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Take this tick's per-prefix write and read counts (from `record_key`).
    pub fn drain_prefixes(&mut self) -> Vec<(KeyPrefix, AccessCounts)> {
        self.prefixes.drain().collect()
    }

    /// Take this tick's counts, leaving the recorder zeroed; calls `sink` once per non-zero cell.
    pub fn drain(&mut self, mut sink: impl FnMut(FragmentIndex, NodeId, AccessCounts)) {
        for &index in &self.touched {
            let index = index as usize;
            if let Some(cell) = self.cells.get_mut(index) {
                let counts = std::mem::take(cell).widen();
                sink(
                    (index / self.nodes) as FragmentIndex,
                    (index % self.nodes) as NodeId,
                    counts,
                );
            }
        }
        self.touched.clear();
    }
}

/// A fixed-length window of per-tick samples with the current (open) tick.
#[derive(Clone, Debug)]
pub struct Series {
    window: VecDeque<AccessCounts>,
    current: AccessCounts,
    nonzero_in_window: usize,
}

impl Series {
    fn new(capacity: usize) -> Self {
        Series {
            window: VecDeque::with_capacity(capacity),
            current: AccessCounts::default(),
            nonzero_in_window: 0,
        }
    }

    fn close_tick(&mut self, capacity: usize) {
        if self.window.len() == capacity {
            if let Some(old) = self.window.pop_front() {
                if !old.is_zero() {
                    self.nonzero_in_window -= 1;
                }
            }
        }
        let sample = std::mem::take(&mut self.current);
        if !sample.is_zero() {
            self.nonzero_in_window += 1;
        }
        self.window.push_back(sample);
    }

    /// Samples oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &AccessCounts> {
        self.window.iter()
    }

    /// The most recently closed tick.
    pub fn latest(&self) -> AccessCounts {
        self.window.back().copied().unwrap_or_default()
    }

    pub fn total(&self) -> AccessCounts {
        let mut total = AccessCounts::default();
        for sample in &self.window {
            total.merge(sample);
        }
        total
    }

    fn is_idle(&self) -> bool {
        self.nonzero_in_window == 0 && self.current.is_zero()
    }
}

/// Sliding-window statistics, sparse: a (fragment, node) pair exists only while it had at least
/// one access inside the window.
#[derive(Clone, Debug)]
pub struct AccessStats {
    window: usize,
    ticks: u64,
    pairs: FxHashMap<(FragmentIndex, NodeId), Series>,
    prefixes: FxHashMap<KeyPrefix, Series>,
}

impl AccessStats {
    /// `window` ticks of history (at least 1).
    pub fn new(window: usize) -> Self {
        AccessStats {
            window: window.max(1),
            ticks: 0,
            pairs: FxHashMap::default(),
            prefixes: FxHashMap::default(),
        }
    }

    /// Move one core's counts into the open tick. Call for every core, then `close_tick`.
    pub fn fold(&mut self, recorder: &mut CoreRecorder) {
        let window = self.window;
        let pairs = &mut self.pairs;
        recorder.drain(|fragment, node, counts| {
            pairs
                .entry((fragment, node))
                .or_insert_with(|| Series::new(window))
                .current
                .merge(&counts);
        });
        for (prefix, counts) in recorder.prefixes.drain() {
            self.prefixes
                .entry(prefix)
                .or_insert_with(|| Series::new(window))
                .current
                .merge(&counts);
        }
    }

    /// Add counts for one (fragment, node) cell to the open tick directly, for callers that
    /// already aggregated them (a cluster's per-tick telemetry) rather than recording accesses.
    pub fn add(&mut self, fragment: FragmentIndex, node: NodeId, counts: AccessCounts) {
        if counts.is_zero() {
            return;
        }
        let window = self.window;
        self.pairs
            .entry((fragment, node))
            .or_insert_with(|| Series::new(window))
            .current
            .merge(&counts);
    }

    /// Drop every series of `fragment` (it was merged away or its index is being reused).
    pub fn forget_fragment(&mut self, fragment: FragmentIndex) {
        self.pairs.retain(|(f, _), _| *f != fragment);
    }

    /// Close the tick: append the open sample to every live series and forget idle ones.
    pub fn close_tick(&mut self) {
        let window = self.window;
        self.pairs.retain(|_, series| {
            series.close_tick(window);
            !series.is_idle()
        });
        self.prefixes.retain(|_, series| {
            series.close_tick(window);
            !series.is_idle()
        });
        self.ticks += 1;
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Live (fragment, node) series.
    pub fn pairs(&self) -> impl Iterator<Item = (&(FragmentIndex, NodeId), &Series)> {
        self.pairs.iter()
    }

    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    pub fn series(&self, fragment: FragmentIndex, node: NodeId) -> Option<&Series> {
        self.pairs.get(&(fragment, node))
    }

    /// Key prefixes by writes over the window, most written first (ties by prefix order).
    pub fn top_write_prefixes(&self, limit: usize) -> Vec<(KeyPrefix, u64)> {
        let mut ranked: Vec<(KeyPrefix, u64)> = self
            .prefixes
            .iter()
            .map(|(prefix, series)| (*prefix, u64::from(series.total().writes)))
            .filter(|(_, writes)| *writes > 0)
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fold_sums_cores_and_keeps_pairs_sparse() {
        let mut stats = AccessStats::new(4);
        let mut core_a = CoreRecorder::new(10, 4, 2);
        let mut core_b = CoreRecorder::new(10, 4, 2);
        core_a.record(3, 1, AccessKind::Read, 100);
        core_a.record(3, 1, AccessKind::Write, 10);
        core_b.record(3, 1, AccessKind::Read, 100);
        core_b.record(9, 0, AccessKind::Write, 5);
        stats.fold(&mut core_a);
        stats.fold(&mut core_b);
        stats.close_tick();
        assert_eq!(stats.pair_count(), 2);
        let latest = stats.series(3, 1).map(Series::latest).unwrap_or_default();
        assert_eq!(
            latest,
            AccessCounts {
                reads: 2,
                writes: 1,
                read_bytes: 200,
                write_bytes: 10
            }
        );
    }

    #[test]
    fn idle_pairs_leave_after_the_window() {
        let mut stats = AccessStats::new(3);
        let mut core = CoreRecorder::new(4, 2, 1);
        core.record(1, 1, AccessKind::Read, 1);
        stats.fold(&mut core);
        stats.close_tick();
        for _ in 0..2 {
            stats.fold(&mut core);
            stats.close_tick();
            assert_eq!(stats.pair_count(), 1);
        }
        stats.fold(&mut core);
        stats.close_tick();
        assert_eq!(stats.pair_count(), 0);
    }

    #[test]
    fn out_of_range_events_are_dropped_not_panics() {
        let mut core = CoreRecorder::new(2, 2, 1);
        core.record(2, 0, AccessKind::Read, 1);
        core.record(0, 2, AccessKind::Read, 1);
        core.record(u32::MAX, u16::MAX, AccessKind::Write, u32::MAX);
        assert_eq!(core.dropped(), 3);
    }

    #[test]
    fn prefixes_rank_writes() {
        let mut stats = AccessStats::new(5);
        let mut core = CoreRecorder::new(1, 1, 3);
        for _ in 0..5 {
            core.record_key(b"usr:1234", AccessKind::Write, 8);
        }
        core.record_key(b"log:9", AccessKind::Write, 8);
        core.record_key(b"log:9", AccessKind::Read, 8);
        core.record_key(b"x", AccessKind::Write, 1);
        stats.fold(&mut core);
        stats.close_tick();
        let top = stats.top_write_prefixes(2);
        assert_eq!(top[0].0.bytes(), b"usr".to_vec());
        assert_eq!(top[0].1, 5);
        assert_eq!(top[1].1, 1);
    }

    proptest! {
        /// Whatever is recorded comes out of the fold, summed per pair.
        #[test]
        fn fold_preserves_totals(events in proptest::collection::vec((0u32..20, 0u16..5, any::<bool>(), 0u32..1000), 0..300)) {
            let mut core = CoreRecorder::new(20, 5, 2);
            let mut expected: FxHashMap<(u32, u16), u64> = FxHashMap::default();
            for &(fragment, node, is_write, bytes) in &events {
                let kind = if is_write { AccessKind::Write } else { AccessKind::Read };
                core.record(fragment, node, kind, bytes);
                *expected.entry((fragment, node)).or_default() += 1;
            }
            let mut stats = AccessStats::new(2);
            stats.fold(&mut core);
            stats.close_tick();
            prop_assert_eq!(stats.pair_count(), expected.len());
            for ((fragment, node), count) in expected {
                let series = stats.series(fragment, node);
                prop_assert_eq!(series.map(|s| s.latest().accesses()), Some(count));
            }
        }
    }
}
