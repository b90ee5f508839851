//! One core's share of the node: the fragments it owns (and is the only writer to),
//! plus where it sent the ones it gave away. Everything here runs on that core's
//! executor, so there are no locks on the data path.

pub mod fanout;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;

use crate::cmd::keyop::{SetCond, Ttl};
use crate::cmd::{self, KeyOp, KeyRequest};
use crate::resp::Frame;
use crate::router::table::{Owner, Routes};
use crate::store::reap::drop_later;
use crate::store::rebuild::Step;
use crate::store::{Fragment, FragmentId, Geometry, Rebuild, Rebuilt, SliceWork, StoreError};
use crate::telemetry::stats::{self, bump, set, CoreStats};
use fanout::{FanoutBody, FanoutReply, FanoutReq, ScanType};

/// What a shard needs from the node: where routes and counters are published, how
/// fragments are made, and nothing else.
#[derive(Clone)]
pub struct ShardEnv {
    pub cores: usize,
    pub routes: Arc<Routes>,
    pub stats: Arc<[CoreStats]>,
    /// Node-wide fragment id allocator.
    pub fragment_ids: Arc<AtomicU64>,
    pub geometry: Geometry,
    pub region_size: u64,
    pub hugepages: bool,
}

impl ShardEnv {
    fn next_fragment_id(&self) -> FragmentId {
        self.fragment_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Split points kept for the cluster table; beyond this they are dropped (the table
/// stays coarser, which is safe).
const MAX_PENDING_TABLE_SPLITS: usize = 1024;

/// Fragments of one core rebuilt (split or compacted in slices) at once; each holds
/// fresh regions while it runs. Others past the line wait for a turn (decision 0015).
const MAX_REBUILDS: usize = 2;

/// Regions whose incremental rebuild failed, remembered so that it is not tried again
/// at every write; the synchronous path rebuilds them when they fill.
const MAX_REFUSED: usize = 64;

/// What became of a key request given to this core.
/// MSETNX's refusal when its keys are not all on one core (Redis Cluster's code).
const MSETNX_SPANS: &str =
    "CROSSSLOT MSETNX keys must all be on one core to be set atomically; these span cores or nodes";

pub enum Outcome {
    Done(Frame),
    /// The key's fragment lives on another core now; send the request there.
    Forward(usize),
}

/// FLUSHALLs this process has done (every core's flush bumps it). A flush starts the
/// fragments' versions again from `(1, 1)`, so a record's version alone cannot tell a
/// key written after a flush from the one watched before it; this count can.
static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// What WATCH remembers of a key, compared again at EXEC: the key's current record
/// version (tombstones included, so a deleted key differs from one never written) and
/// whether it was live, plus the flush count. Any write, delete, expiry or FLUSHALL in
/// between changes it (decision `transactions-across-cores`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchToken {
    flushes: u64,
    /// `(version, live)` of the key's current record; `None` when it has none.
    record: Option<(u64, bool)>,
    /// For a hash, `(region generation, log offset of its last field record)`: writing
    /// a field leaves the header's version as it was.
    hash_fields: Option<(u64, usize)>,
}

/// A sorted listing of a fragment's keys, reused by SCAN steps while valid.
struct KeyListing {
    built: Instant,
    last_used: Instant,
    changes: u64,
    generation: u64,
    /// Estimated heap bytes of `keys`, counted in `used_memory`.
    bytes: usize,
    keys: Arc<Vec<Bytes>>,
}

/// How long SCAN key listings are kept, and how many bytes of them a core keeps. A
/// dropped listing costs only a rebuild: a scan stays correct without it.
#[derive(Debug, Clone, Copy)]
pub struct ListingLimits {
    pub idle: Duration,
    pub max_bytes: usize,
}

impl Default for ListingLimits {
    fn default() -> Self {
        ListingLimits {
            idle: Duration::from_secs(30),
            max_bytes: 64 << 20,
        }
    }
}

/// Heap bytes a listing of `keys` holds: each key's bytes, its `Bytes` handle and
/// its allocation's overhead.
fn listing_bytes(keys: &[Bytes]) -> usize {
    keys.iter()
        .map(|k| k.len() + std::mem::size_of::<Bytes>() + 16)
        .sum::<usize>()
        + 64
}

/// Sums over a core's fragments that INFO and maxmemory read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    keys: u64,
    used: u64,
    mapped: u64,
    expiring: u64,
}

impl Totals {
    fn of(f: &Fragment) -> Totals {
        Totals {
            keys: f.key_count() as u64,
            used: (f.used_bytes() + f.hash_heap_bytes()) as u64,
            mapped: f.region_len() as u64,
            expiring: f.expiring() as u64,
        }
    }

    /// These totals after one fragment went from `before` to `after`.
    fn moved(self, before: Totals, after: Totals) -> Totals {
        let step = |total: u64, b: u64, a: u64| (total + a).saturating_sub(b);
        Totals {
            keys: step(self.keys, before.keys, after.keys),
            used: step(self.used, before.used, after.used),
            mapped: step(self.mapped, before.mapped, after.mapped),
            expiring: step(self.expiring, before.expiring, after.expiring),
        }
    }
}

pub struct Shard {
    pub core: usize,
    /// Kept exact by `execute` and `recount`; published by `publish_counters`.
    totals: std::cell::Cell<Totals>,
    env: ShardEnv,
    fragments: BTreeMap<Bytes, Fragment>,
    /// Incremental rebuilds in progress, by the `lo` of the fragment they replace.
    rebuilds: BTreeMap<Bytes, Rebuild>,
    /// Fragments past the rebuild line waiting for a turn.
    rebuild_queue: VecDeque<Bytes>,
    /// The rebuild that ran the last slice (they take turns).
    rebuild_turn: Option<Bytes>,
    /// Region identities whose incremental rebuild failed.
    rebuild_refused: HashSet<u64>,
    /// Wakes the core's rebuild task when there is work for it.
    rebuild_waker: AtomicWaker,
    /// Ranges given to other cores: lo → (hi, core).
    forwarded: BTreeMap<Bytes, (Option<Bytes>, usize)>,
    listings: HashMap<FragmentId, KeyListing>,
    /// Sum of the listings' `bytes`.
    listing_bytes: usize,
    pub listing_limits: ListingLimits,
    /// Split points not yet proposed to the cluster table.
    table_splits: Vec<Bytes>,
    hits: u64,
    misses: u64,
    expired: u64,
    splits: u64,
    compactions: u64,
}

impl Shard {
    /// The shard for `core`, owning the ranges the initial route table gives it.
    pub fn new(
        core: usize,
        env: ShardEnv,
        ranges: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Shard, StoreError> {
        let mut fragments = BTreeMap::new();
        for (lo, hi) in ranges {
            let id = env.next_fragment_id();
            let fragment = Fragment::create(id, lo.clone(), hi, env.geometry, 1, env.hugepages)?;
            fragments.insert(lo, fragment);
        }
        let shard = Shard {
            core,
            totals: Default::default(),
            env,
            fragments,
            rebuilds: BTreeMap::new(),
            rebuild_queue: VecDeque::new(),
            rebuild_turn: None,
            rebuild_refused: HashSet::new(),
            rebuild_waker: AtomicWaker::new(),
            forwarded: BTreeMap::new(),
            listings: HashMap::new(),
            listing_bytes: 0,
            listing_limits: ListingLimits::default(),
            table_splits: Vec::new(),
            hits: 0,
            misses: 0,
            expired: 0,
            splits: 0,
            compactions: 0,
        };
        shard.publish_stats();
        Ok(shard)
    }

    /// The fragment holding `key`, if this core has it.
    pub fn fragment_for(&self, key: &[u8]) -> Option<&Fragment> {
        self.fragments.get(&self.locate(key)?)
    }

    /// The region generation and identity of fragment `id`, if this core holds it.
    pub fn region_of(&self, id: FragmentId) -> Option<(u64, u64)> {
        self.fragments
            .values()
            .find(|f| f.id() == id)
            .map(|f| (f.generation(), f.region().identity()))
    }

    /// Where a key this core does not hold went (another core of this node).
    pub fn forwarded_to(&self, key: &[u8]) -> Option<usize> {
        self.forward_target(key)
    }

    fn locate(&self, key: &[u8]) -> Option<Bytes> {
        self.fragments
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, f)| f.contains(key))
            .map(|(lo, _)| lo.clone())
    }

    fn forward_target(&self, key: &[u8]) -> Option<usize> {
        let via_pointer = self
            .forwarded
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, (hi, _))| hi.as_ref().is_none_or(|hi| key < &hi[..]))
            .map(|(_, (_, core))| *core);
        via_pointer.or_else(|| match self.env.routes.snapshot().owner_of(key) {
            Owner::Core(core) if core != self.core => Some(core),
            _ => None,
        })
    }

    /// Whether `key` is in a fragment this core holds (a transaction checks this
    /// under its hold: a request for a key elsewhere would be forwarded).
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.locate(key).is_some()
    }

    /// The WATCH token of `key`, or `None` when this core does not hold its fragment.
    pub fn watch_token(&self, key: &[u8], now: u64) -> Option<WatchToken> {
        let fragment = self.fragments.get(&self.locate(key)?)?;
        let record = match fragment.lookup_any(key) {
            Ok(r) => r.map(|r| (r.version, !r.is_tombstone() && !r.is_expired(now))),
            // Unreadable (corrupt): a version no write makes; EXEC aborts unless the
            // record is still unreadable then.
            Err(_) => Some((u64::MAX, false)),
        };
        let hash_fields = fragment
            .hash_write_mark(key)
            .map(|mark| (fragment.generation(), mark));
        Some(WatchToken {
            flushes: FLUSHES.load(Ordering::Acquire),
            record,
            hash_fields,
        })
    }

    /// Execute one key request here, or say where it must go.
    pub fn execute(&mut self, req: &KeyRequest, now: u64) -> Outcome {
        if let KeyOp::MSetNx { first, pairs } = &req.op {
            if self.locate(&req.key).is_some() {
                return Outcome::Done(self.msetnx(&req.key, first, pairs, now));
            }
        }
        for _attempt in 0..4 {
            // One search, no clone of the bound: the fragment whose range holds the key.
            let fragment = self
                .fragments
                .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(&req.key[..])))
                .next_back()
                .map(|(_, f)| f)
                .filter(|f| f.contains(&req.key));
            let Some(fragment) = fragment else {
                return match self.forward_target(&req.key) {
                    Some(core) => Outcome::Forward(core),
                    None => Outcome::Done(Frame::error("ERR internal: no fragment holds this key")),
                };
            };
            let before = Totals::of(fragment);
            let result = cmd::apply(fragment, &req.key, &req.op, now);
            self.totals
                .set(self.totals.get().moved(before, Totals::of(fragment)));
            let past_line = fragment.past_rebuild_line();
            // The bound is cloned only when a rebuild or `make_room` needs it.
            let lo = (past_line || result.is_err()).then(|| fragment.lo().clone());
            if let Some(lo) = lo.as_ref().filter(|_| past_line) {
                self.queue_rebuild(lo);
            }
            match result {
                Ok(reply) => {
                    if matches!(req.op, KeyOp::Get) {
                        if matches!(reply, Frame::Null) {
                            self.misses += 1;
                        } else {
                            self.hits += 1;
                        }
                    }
                    return Outcome::Done(reply);
                }
                Err(StoreError::Full { need }) => {
                    let Some(lo) = lo else { break };
                    let made = self.make_room(&lo, need, now);
                    // Fragments were replaced: count them afresh (rare).
                    self.recount();
                    if let Err(e) = made {
                        tracing::error!(core = self.core, "cannot make room in fragment: {e}");
                        return Outcome::Done(Frame::error(format!("ERR {e}")));
                    }
                }
                Err(e) => {
                    tracing::error!(core = self.core, "store error: {e}");
                    return Outcome::Done(Frame::error(format!("ERR {e}")));
                }
            }
        }
        Outcome::Done(Frame::error("ERR internal: no room after compaction"))
    }

    /// MSETNX, all or nothing: every key must be in a fragment on this core (the
    /// core runs one request at a time, so nothing interleaves); if none exists all
    /// are set, and if a set fails the ones already made are removed again (they
    /// were all absent before).
    fn msetnx(&mut self, key: &Bytes, first: &Bytes, pairs: &[(Bytes, Bytes)], now: u64) -> Frame {
        let all: Vec<(&Bytes, &Bytes)> = std::iter::once((key, first))
            .chain(pairs.iter().map(|(k, v)| (k, v)))
            .collect();
        if all.iter().any(|(k, _)| self.locate(k).is_none()) {
            return Frame::error(MSETNX_SPANS);
        }
        for (k, _) in &all {
            let exists = KeyRequest {
                key: (*k).clone(),
                op: KeyOp::Exists,
            };
            match self.execute(&exists, now) {
                Outcome::Done(Frame::Integer(0)) => {}
                Outcome::Done(Frame::Integer(_)) => return Frame::Integer(0),
                Outcome::Done(other) => return other,
                Outcome::Forward(_) => return Frame::error(MSETNX_SPANS),
            }
        }
        let mut written: Vec<Bytes> = Vec::with_capacity(all.len());
        for (k, v) in &all {
            let set = KeyRequest {
                key: (*k).clone(),
                op: KeyOp::Set {
                    value: (*v).clone(),
                    ttl: Ttl::Clear,
                    cond: SetCond::Always,
                    get: false,
                },
            };
            let failure = match self.execute(&set, now) {
                Outcome::Done(f) if !f.is_error() => {
                    written.push(set.key);
                    continue;
                }
                Outcome::Done(e) => e,
                Outcome::Forward(_) => Frame::error(MSETNX_SPANS),
            };
            for k in written {
                let undo = KeyRequest {
                    key: k,
                    op: KeyOp::Del,
                };
                if let Outcome::Done(Frame::Error(e)) = self.execute(&undo, now) {
                    tracing::error!(core = self.core, "MSETNX rollback failed: {e:?}");
                }
            }
            return failure;
        }
        Frame::Integer(1)
    }

    /// A fragment is full: a write waits for a split or compaction here, on the request
    /// path (a stall, counted). If one is already in progress for it, finish that one;
    /// else split it if it has outgrown half a region (and the record is not itself
    /// bigger than half a region: a split cannot make room for that), else compact it
    /// into a region sized by what it holds plus `need`.
    fn make_room(&mut self, lo: &Bytes, need: usize, now: u64) -> Result<(), StoreError> {
        bump(&self.env.stats[self.core].rebuild_stalls, 1);
        if self.finish_rebuild_now(lo, now) {
            return Ok(());
        }
        self.abandon_rebuild(lo);
        let Some(fragment) = self.fragments.get(lo) else {
            return Ok(());
        };
        let target = self.env.region_size as usize;
        let hugetlb = self.env.hugepages;
        let half = self.env.geometry.log_capacity / 2;
        if need <= half && fragment.live_bytes() + need > half {
            if let Some(at) = fragment.split_key(now)? {
                return self.split_at(lo, at, need, now);
            }
        }
        let compacted = fragment.compact(target, need, now, hugetlb)?;
        if let Some(old) = self.fragments.insert(lo.clone(), compacted) {
            old.retire();
            drop_later(old);
        }
        self.compactions += 1;
        Ok(())
    }

    /// Split the fragment starting at `lo` at key `at`, each half with room for `need`
    /// more bytes; the cluster table is told later ([`Shard::take_table_splits`]).
    fn split_at(&mut self, lo: &Bytes, at: Bytes, need: usize, now: u64) -> Result<(), StoreError> {
        self.abandon_rebuild(lo);
        let Some(fragment) = self.fragments.get(lo) else {
            return Ok(());
        };
        let upper_id = self.env.next_fragment_id();
        let (lower, upper) = fragment.split_with_room(
            at.clone(),
            upper_id,
            self.env.region_size as usize,
            need,
            now,
            self.env.hugepages,
        )?;
        self.install_split(lo, lower, upper, at);
        Ok(())
    }

    /// Put the halves of a split in place of the fragment at `lo`.
    fn install_split(&mut self, lo: &Bytes, lower: Fragment, upper: Fragment, at: Bytes) {
        tracing::debug!(
            core = self.core,
            lower = lower.live_keys(),
            upper = upper.live_keys(),
            "split fragment"
        );
        self.drop_listing(lower.id());
        // Retire the replaced region before any write reaches its successor, so a
        // remote reader holding its descriptor refreshes (decision 0007).
        if let Some(old) = self.fragments.insert(lo.clone(), lower) {
            old.retire();
            drop_later(old);
        }
        self.fragments.insert(at.clone(), upper);
        self.env.routes.update(|t| t.add_boundary(&at));
        if self.table_splits.len() < MAX_PENDING_TABLE_SPLITS {
            self.table_splits.push(at);
        }
        self.splits += 1;
    }

    /// Put what a rebuild made in place of the fragment at `lo`, in one step.
    fn install_rebuilt(&mut self, lo: &Bytes, done: Rebuilt) {
        match done {
            Rebuilt::Compacted(fragment) => {
                if let Some(old) = self.fragments.insert(lo.clone(), *fragment) {
                    old.retire();
                    drop_later(old);
                }
                self.compactions += 1;
            }
            Rebuilt::Split { lower, upper, at } => self.install_split(lo, *lower, *upper, at),
        }
        // Fragments were replaced: the running totals are counted afresh.
        self.recount();
    }

    // ---- incremental rebuilds (decision 0015) ------------------------------------

    /// The fragment at `lo` is past the rebuild line: queue it for an incremental
    /// rebuild (unless it has one, waits for one, or failed one) and wake the task.
    fn queue_rebuild(&mut self, lo: &Bytes) {
        if self.rebuilds.contains_key(lo) || self.rebuild_queue.contains(lo) {
            return;
        }
        let refused = self
            .fragments
            .get(lo)
            .is_none_or(|f| self.rebuild_refused.contains(&f.region().identity()));
        if refused {
            return;
        }
        self.rebuild_queue.push_back(lo.clone());
        self.rebuild_waker.wake();
    }

    /// Whether the core's rebuild task has anything to do.
    pub fn rebuild_pending(&self) -> bool {
        !self.rebuilds.is_empty() || !self.rebuild_queue.is_empty()
    }

    /// Whether a rebuild trails the writes filling its fragment ([`Rebuild::behind`]):
    /// its next slice should follow at once.
    pub fn rebuild_behind(&self) -> bool {
        self.rebuilds.iter().any(|(lo, rebuild)| {
            self.fragments
                .get(lo)
                .is_some_and(|f| rebuild.is_for(f) && rebuild.behind(f))
        })
    }

    /// Ready when [`Shard::step_rebuild`] has work; else wakes `cx` when it gets some.
    pub fn poll_rebuild_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rebuild_pending() {
            return Poll::Ready(());
        }
        self.rebuild_waker.register(cx.waker());
        if self.rebuild_pending() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Run one slice of one rebuild (they take turns), starting queued ones first; a
    /// rebuild that caught up is swapped in within the same call. What the slice did,
    /// or None when none ran (nothing to do, or the rebuild was abandoned or failed).
    /// The core's rebuild task calls this between client batches.
    pub fn step_rebuild(&mut self, now: u64) -> Option<SliceWork> {
        self.start_rebuilds();
        let lo = self
            .rebuild_turn
            .as_ref()
            .and_then(|last| {
                self.rebuilds
                    .range::<Bytes, _>((Bound::Excluded(last), Bound::Unbounded))
                    .next()
            })
            .or_else(|| self.rebuilds.iter().next())
            .map(|(lo, _)| lo.clone())?;
        self.rebuild_turn = Some(lo.clone());
        let mut rebuild = self.rebuilds.remove(&lo)?;
        let step = self
            .fragments
            .get(&lo)
            .filter(|f| rebuild.is_for(f))
            .map(|source| rebuild.step(source, now));
        let work = match step {
            None => {
                tracing::debug!(core = self.core, "rebuild abandoned: its fragment changed");
                None
            }
            Some(Ok(Step::More(work))) => {
                self.rebuilds.insert(lo, rebuild);
                Some(work)
            }
            Some(Ok(Step::Ready(work))) => {
                // Nothing left to apply: swap now, before any other write.
                let done = match self.fragments.get(&lo) {
                    Some(source) => rebuild.finish(source, now),
                    None => Err(StoreError::Rebuild("the fragment went away")),
                };
                match done {
                    Ok(done) => self.install_rebuilt(&lo, done),
                    Err(e) => {
                        tracing::warn!(core = self.core, "incremental rebuild failed: {e}");
                        self.refuse_rebuild(&lo);
                    }
                }
                Some(work)
            }
            Some(Err(e)) => {
                tracing::warn!(core = self.core, "incremental rebuild failed: {e}");
                self.refuse_rebuild(&lo);
                None
            }
        };
        if work.is_some() {
            bump(&self.env.stats[self.core].rebuild_slices, 1);
        }
        self.rebuilds_changed();
        work
    }

    /// Start queued rebuilds while there is a free turn: a split if the fragment's
    /// live data is past a quarter of a fresh region (what `make_room` decides with the
    /// quarter a rebuild leaves free as `need`), else a compaction.
    fn start_rebuilds(&mut self) {
        while self.rebuilds.len() < MAX_REBUILDS {
            let Some(lo) = self.rebuild_queue.pop_front() else {
                break;
            };
            let Some(fragment) = self.fragments.get(&lo) else {
                continue;
            };
            if self.rebuilds.contains_key(&lo)
                || !fragment.past_rebuild_line()
                || fragment.is_retired()
                || self.rebuild_refused.contains(&fragment.region().identity())
            {
                continue;
            }
            let g = self.env.geometry;
            let split = fragment.live_bytes() + g.log_capacity / 4 > g.log_capacity / 2
                || fragment.live_keys() + g.slots() / 4 > g.slots() / 2;
            let upper_id = split.then(|| self.env.next_fragment_id());
            let target = self.env.region_size as usize;
            match Rebuild::start(fragment, upper_id, target, self.env.hugepages) {
                Ok(rebuild) => {
                    tracing::debug!(core = self.core, split, "incremental rebuild started");
                    self.rebuilds.insert(lo, rebuild);
                }
                Err(e) => {
                    tracing::warn!(core = self.core, "cannot start a rebuild: {e}");
                    self.refuse_rebuild(&lo);
                }
            }
        }
        self.rebuilds_changed();
    }

    /// The fragment at `lo` is full: if a rebuild of it is under way (its targets
    /// made), finish it now and swap. True if it did.
    fn finish_rebuild_now(&mut self, lo: &Bytes, now: u64) -> bool {
        let Some(rebuild) = self.rebuilds.remove(lo) else {
            return false;
        };
        self.rebuilds_changed();
        let done = match self.fragments.get(lo) {
            Some(source) if rebuild.is_for(source) && rebuild.has_targets() => {
                rebuild.finish(source, now)
            }
            _ => return false,
        };
        match done {
            Ok(done) => {
                self.install_rebuilt(lo, done);
                true
            }
            Err(e) => {
                tracing::warn!(core = self.core, "finishing a rebuild failed: {e}");
                self.refuse_rebuild(lo);
                false
            }
        }
    }

    /// Do not try an incremental rebuild of the region at `lo` again.
    fn refuse_rebuild(&mut self, lo: &Bytes) {
        if self.rebuild_refused.len() >= MAX_REFUSED {
            let live: HashSet<u64> = self
                .fragments
                .values()
                .map(|f| f.region().identity())
                .collect();
            self.rebuild_refused.retain(|id| live.contains(id));
        }
        if let Some(f) = self.fragments.get(lo) {
            self.rebuild_refused.insert(f.region().identity());
        }
    }

    /// Forget any rebuild of the fragment at `lo` (it is being replaced, moved,
    /// dropped or flushed): its targets are freed and nothing is swapped in.
    fn abandon_rebuild(&mut self, lo: &[u8]) {
        if let Some(rebuild) = self.rebuilds.remove(lo) {
            tracing::debug!(core = self.core, "rebuild abandoned");
            drop_later(rebuild);
        }
        self.rebuild_queue.retain(|q| &q[..] != lo);
        self.rebuilds_changed();
    }

    fn rebuilds_changed(&self) {
        set(
            &self.env.stats[self.core].rebuilds_active,
            self.rebuilds.len() as u64,
        );
    }

    /// Split points the cluster table has not been told about yet.
    pub fn take_table_splits(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.table_splits)
    }

    #[cfg(test)]
    fn take_table_splits_len(&self) -> usize {
        self.table_splits.len()
    }

    /// The fragments that make up `[lo, hi)`, in key order, if this core holds all of
    /// that range and nothing else of it is elsewhere.
    pub fn fragments_tiling(&self, lo: &[u8], hi: Option<&[u8]>) -> Option<Vec<&Fragment>> {
        let inside: Vec<&Fragment> = self
            .fragments
            .range::<[u8], _>((Bound::Included(lo), Bound::Unbounded))
            .map(|(_, f)| f)
            .take_while(|f| hi.is_none_or(|h| &f.lo()[..] < h))
            .collect();
        let mut expect: Option<&[u8]> = Some(lo);
        for f in &inside {
            if expect != Some(&f.lo()[..]) {
                return None;
            }
            expect = f.hi().map(|h| &h[..]);
        }
        (expect == hi && !inside.is_empty()).then_some(inside)
    }

    /// Give up `[lo, hi)`: its fragments now live on another node. Returns how many
    /// were dropped (their memory goes when the last peer registration does).
    pub fn drop_range(&mut self, lo: &[u8], hi: Option<&[u8]>) -> usize {
        let gone: Vec<Bytes> = self
            .fragments
            .range::<[u8], _>((Bound::Included(lo), Bound::Unbounded))
            .map(|(k, _)| k.clone())
            .take_while(|k| hi.is_none_or(|h| &k[..] < h))
            .collect();
        for k in &gone {
            self.abandon_rebuild(k);
            if let Some(f) = self.fragments.remove(k) {
                self.drop_listing(f.id());
                drop_later(f);
            }
        }
        self.publish_stats();
        gone.len()
    }

    /// After an aborted handover: replace each retired region in `[lo, hi)` by a
    /// fresh copy (a compaction), so the fragment takes writes again.
    pub fn renew_retired(&mut self, lo: &[u8], hi: Option<&[u8]>, now: u64) {
        let retired: Vec<Bytes> = self
            .fragments
            .range::<[u8], _>((Bound::Included(lo), Bound::Unbounded))
            .take_while(|(k, _)| hi.is_none_or(|h| &k[..] < h))
            .filter(|(_, f)| f.is_retired())
            .map(|(k, _)| k.clone())
            .collect();
        for k in retired {
            self.abandon_rebuild(&k);
            let renewed = self
                .fragments
                .get(&k)
                .map(|f| f.compact(self.env.region_size as usize, 0, now, self.env.hugepages));
            match renewed {
                Some(Ok(fresh)) => {
                    if let Some(old) = self.fragments.insert(k, fresh) {
                        drop_later(old);
                    }
                    self.compactions += 1;
                }
                Some(Err(e)) => tracing::error!(core = self.core, "cannot renew a region: {e}"),
                None => {}
            }
        }
        self.publish_stats();
    }

    /// `(lo, used bytes)` of every fragment this core holds.
    pub fn sizes(&self) -> Vec<(Bytes, u64)> {
        self.fragments
            .iter()
            .map(|(lo, f)| (lo.clone(), f.used_bytes() as u64))
            .collect()
    }

    /// Local fragment boundaries strictly inside `(lo, hi)`.
    pub fn boundaries_within(&self, lo: &[u8], hi: Option<&[u8]>) -> Vec<Bytes> {
        self.fragments
            .keys()
            .filter(|b| &b[..] > lo && hi.is_none_or(|h| &b[..] < h))
            .cloned()
            .collect()
    }

    /// Split the fragment holding `key` at its median key (a load split). Returns
    /// whether it split.
    pub fn split_hot(&mut self, key: &[u8], now: u64) -> Result<bool, StoreError> {
        let Some(lo) = self.locate(key) else {
            return Ok(false);
        };
        let Some(at) = self
            .fragments
            .get(&lo)
            .map(|f| f.split_key(now))
            .transpose()?
        else {
            return Ok(false);
        };
        match at {
            Some(at) if at != lo => {
                let split = self.split_at(&lo, at, 0, now);
                self.publish_stats();
                split?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Active expiry: remove due keys, a bounded number per fragment per call; drop
    /// SCAN listings idle for too long.
    pub fn expire_due(&mut self, now: u64) {
        self.tidy_listings(Instant::now());
        for fragment in self.fragments.values_mut() {
            match fragment.expire_due(now, 200) {
                Ok(n) => self.expired += n as u64,
                Err(e) => tracing::error!(core = self.core, "active expiry: {e}"),
            }
        }
        self.publish_stats();
    }

    /// Count this core's fragments afresh and publish everything: after changes to
    /// which fragments there are (splits, moves, flushes) and on the maintenance tick.
    pub fn publish_stats(&self) {
        self.recount();
        self.publish_counters();
    }

    /// Walk every fragment for the running totals (which `execute` keeps by delta).
    fn recount(&self) {
        let mut totals = Totals::default();
        for f in self.fragments.values() {
            totals = totals.moved(Totals::default(), Totals::of(f));
        }
        self.totals.set(totals);
    }

    /// Publish the running totals and counters for INFO, /metrics, maxmemory and
    /// rebalancing: O(1), done after every batch (walking every fragment after every
    /// batch was measurable, `docs/perf.md`).
    pub fn publish_counters(&self) {
        let s = &self.env.stats[self.core];
        let totals = self.totals.get();
        set(&s.keys, totals.keys);
        // SCAN listings are memory the node holds too (as Redis's used_memory counts
        // everything): they count against maxmemory.
        set(&s.used_bytes, totals.used + self.listing_bytes as u64);
        set(&s.region_bytes, totals.mapped);
        set(&s.expiring, totals.expiring);
        set(&s.fragments, self.fragments.len() as u64);
        set(&s.hits, self.hits);
        set(&s.misses, self.misses);
        set(&s.expired, self.expired);
        set(&s.splits, self.splits);
        set(&s.compactions, self.compactions);
    }

    /// If this core holds clearly more bytes than the lightest core, pick a fragment
    /// to give it: the largest that does not overshoot the midpoint.
    pub fn pick_fragment_to_move(&mut self) -> Option<(usize, Fragment)> {
        if self.fragments.len() < 2 {
            return None;
        }
        let used: Vec<u64> = self
            .env
            .stats
            .iter()
            .map(|s| stats::get(&s.used_bytes))
            .collect();
        let (target, &lightest) = used.iter().enumerate().min_by_key(|(_, u)| **u)?;
        let mine = used[self.core];
        if target == self.core || mine <= lightest + self.env.region_size {
            return None;
        }
        let gap = (mine - lightest) / 2;
        let lo = self
            .fragments
            .iter()
            .filter(|(_, f)| (f.used_bytes() as u64) <= gap)
            .max_by_key(|(_, f)| f.used_bytes())
            .map(|(lo, _)| lo.clone())?;
        self.abandon_rebuild(&lo);
        let fragment = self.fragments.remove(&lo)?;
        Some((target, fragment))
    }

    /// The fragment was handed to `core`: requests for it go there from now on.
    pub fn moved(&mut self, id: FragmentId, lo: Bytes, hi: Option<Bytes>, core: usize) {
        self.forwarded.insert(lo, (hi, core));
        self.drop_listing(id);
        bump(&self.env.stats[self.core].moves_out, 1);
        self.publish_stats();
    }

    /// The move did not happen: keep the fragment.
    pub fn keep(&mut self, fragment: Fragment) {
        self.fragments.insert(fragment.lo().clone(), fragment);
        self.publish_stats();
    }

    /// Take ownership of a fragment another core gave us.
    pub fn adopt(&mut self, fragment: Fragment) {
        let lo = fragment.lo().clone();
        let hi = fragment.hi().cloned();
        let inside = |k: &Bytes| *k >= lo && hi.as_ref().is_none_or(|h| k < h);
        self.forwarded.retain(|k, _| !inside(k));
        self.abandon_rebuild(&lo);
        self.fragments.insert(lo.clone(), fragment);
        let core = self.core;
        self.env
            .routes
            .update(|t| t.set_owner(&lo, hi.as_ref(), Owner::Core(core)));
        self.publish_stats();
    }

    fn ranges(&self) -> Vec<(Bytes, Option<Bytes>)> {
        self.fragments
            .values()
            .map(|f| (f.lo().clone(), f.hi().cloned()))
            .collect()
    }

    /// Answer a fan-out request for the fragments held here.
    pub fn fanout(&mut self, req: &FanoutReq, now: u64) -> FanoutReply {
        let body = match req {
            FanoutReq::DbSize => {
                FanoutBody::Count(self.fragments.values().map(|f| f.key_count() as u64).sum())
            }
            FanoutReq::FlushAll => {
                self.flush();
                FanoutBody::Done
            }
            FanoutReq::Keys(pattern) => FanoutBody::Keys(self.matching_keys(pattern, now)),
            FanoutReq::ScanStep {
                after,
                count,
                pattern,
                started,
                type_filter,
            } => self.scan_step(
                after.as_ref(),
                *count,
                pattern.as_ref(),
                (*started, *type_filter),
                now,
            ),
        };
        FanoutReply {
            ranges: self.ranges(),
            body,
        }
    }

    fn flush(&mut self) {
        FLUSHES.fetch_add(1, Ordering::AcqRel);
        drop_later(std::mem::take(&mut self.rebuilds));
        self.rebuild_queue.clear();
        self.rebuilds_changed();
        let geometry = self.env.geometry;
        let hugetlb = self.env.hugepages;
        for fragment in self.fragments.values_mut() {
            match Fragment::create(
                fragment.id(),
                fragment.lo().clone(),
                fragment.hi().cloned(),
                geometry,
                1,
                hugetlb,
            ) {
                Ok(empty) => {
                    let old = std::mem::replace(fragment, empty);
                    old.retire();
                    drop_later(old);
                }
                Err(e) => tracing::error!(core = self.core, "flush: cannot allocate region: {e}"),
            }
        }
        self.listings.clear();
        self.listing_bytes = 0;
        self.publish_stats();
    }

    fn listing(
        &mut self,
        lo: &Bytes,
        started: Instant,
        now: u64,
    ) -> Result<Arc<Vec<Bytes>>, StoreError> {
        let Some(fragment) = self.fragments.get(lo) else {
            return Ok(Arc::new(Vec::new()));
        };
        let id = fragment.id();
        if let Some(l) = self.listings.get_mut(&id) {
            // A listing is good for a scan if nothing changed since it was built, or
            // it was built after the scan started (a key present for the whole scan
            // is then in it).
            let same = l.changes == fragment.changes() && l.generation == fragment.generation();
            if same || l.built >= started {
                l.last_used = Instant::now();
                return Ok(l.keys.clone());
            }
        }
        let (changes, generation) = (fragment.changes(), fragment.generation());
        let keys = Arc::new(fragment.sorted_keys(now)?);
        self.drop_listing(id);
        let bytes = listing_bytes(&keys);
        self.make_listing_room(bytes);
        let built = Instant::now();
        self.listings.insert(
            id,
            KeyListing {
                built,
                last_used: built,
                changes,
                generation,
                bytes,
                keys: keys.clone(),
            },
        );
        self.listing_bytes += bytes;
        Ok(keys)
    }

    fn drop_listing(&mut self, id: FragmentId) {
        if let Some(l) = self.listings.remove(&id) {
            self.listing_bytes = self.listing_bytes.saturating_sub(l.bytes);
        }
    }

    /// Evict the least recently used listings until `incoming` more bytes fit the cap
    /// (one listing larger than the cap is still kept, alone: without it a scan of its
    /// fragment would rebuild it at every step).
    fn make_listing_room(&mut self, incoming: usize) {
        while !self.listings.is_empty()
            && self.listing_bytes + incoming > self.listing_limits.max_bytes
        {
            let Some(oldest) = self
                .listings
                .iter()
                .min_by_key(|(_, l)| l.last_used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.drop_listing(oldest);
        }
    }

    /// Drop listings no SCAN step has used for `listing_limits.idle`.
    pub fn tidy_listings(&mut self, now: Instant) {
        let idle = self.listing_limits.idle;
        let stale: Vec<FragmentId> = self
            .listings
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_used) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.drop_listing(id);
        }
    }

    /// Bytes of SCAN listings this core holds.
    pub fn scan_listing_bytes(&self) -> usize {
        self.listing_bytes
    }

    fn scan_step(
        &mut self,
        after: Option<&Bytes>,
        count: usize,
        pattern: Option<&Bytes>,
        (started, type_filter): (Instant, Option<ScanType>),
        now: u64,
    ) -> FanoutBody {
        let candidates: Vec<Bytes> = self
            .fragments
            .values()
            .filter(|f| match (after, f.hi()) {
                (Some(a), Some(hi)) => hi > a,
                _ => true,
            })
            .map(|f| f.lo().clone())
            .collect();
        let mut keys = Vec::new();
        let mut examined = 0;
        for lo in candidates {
            let listing = match self.listing(&lo, started, now) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(core = self.core, "scan: {e}");
                    continue;
                }
            };
            let start = after.map_or(0, |a| listing.partition_point(|k| k <= a));
            let Some(fragment) = self.fragments.get(&lo) else {
                continue;
            };
            for key in &listing[start..] {
                examined += 1;
                let wanted = pattern.is_none_or(|p| crate::glob::matches(p, key));
                let holds = |r: &crate::store::RecordView<'_>| match type_filter {
                    None => true,
                    Some(ScanType::Hash) => r.is_hash(),
                    Some(ScanType::String) => !r.is_hash(),
                    Some(ScanType::Other) => false,
                };
                if wanted && matches!(fragment.get(key, now), Ok(Some(r)) if holds(&r)) {
                    keys.push(key.clone());
                }
                if examined >= count {
                    return FanoutBody::Scan {
                        keys,
                        frontier: Some(key.clone()),
                    };
                }
            }
        }
        FanoutBody::Scan {
            keys,
            frontier: None,
        }
    }

    fn matching_keys(&mut self, pattern: &Bytes, now: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        for fragment in self.fragments.values() {
            let result = fragment.for_each_current(|_, r| {
                if !r.is_tombstone()
                    && !r.is_expired(now)
                    && !r.is_field()
                    && crate::glob::matches(pattern, r.key)
                {
                    out.push(Bytes::copy_from_slice(r.key));
                }
            });
            if let Err(e) = result {
                tracing::error!(core = self.core, "keys: {e}");
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::table::RouteTable;
    use crate::store::rebuild::Phase;
    use crate::store::Geometry;
    use std::collections::BTreeSet;

    /// A one-core shard over four fragments, with `per` keys in each.
    fn shard_with_keys(per: usize) -> (Shard, BTreeSet<Bytes>) {
        let env = ShardEnv {
            cores: 1,
            routes: Arc::new(Routes::new(RouteTable::initial(1))),
            stats: Arc::from(vec![CoreStats::default()]),
            fragment_ids: Arc::new(AtomicU64::new(0)),
            geometry: Geometry::sized_for(4 << 20, 72),
            region_size: 4 << 20,
            hugepages: false,
        };
        let cut = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let ranges = vec![
            (Bytes::new(), Some(cut("k1"))),
            (cut("k1"), Some(cut("k2"))),
            (cut("k2"), Some(cut("k3"))),
            (cut("k3"), None),
        ];
        let mut shard = Shard::new(0, env, ranges).unwrap();
        let mut keys = BTreeSet::new();
        for f in 0..4 {
            for i in 0..per {
                let key = Bytes::from(format!("k{f}:{i:06}"));
                set(&mut shard, &key);
                keys.insert(key);
            }
        }
        (shard, keys)
    }

    fn set(shard: &mut Shard, key: &Bytes) {
        let req = KeyRequest {
            key: key.clone(),
            op: KeyOp::SetNx(Bytes::from_static(b"v")),
        };
        assert!(matches!(shard.execute(&req, 1), Outcome::Done(_)));
    }

    fn done(o: Outcome) -> Frame {
        match o {
            Outcome::Done(f) => f,
            Outcome::Forward(c) => panic!("forwarded to {c}"),
        }
    }

    /// WATCH tokens: reads leave them, every kind of change moves them. (Only the
    /// record part is compared where nothing flushed: other tests in this process
    /// may flush at any time, which moves the shared flush count.)
    #[test]
    fn watch_tokens_change_with_every_write_and_only_then() {
        let (mut shard, _) = shard_with_keys(0);
        let key = Bytes::from_static(b"k1:w");
        let run = |shard: &mut Shard, op: KeyOp, now: u64| {
            done(shard.execute(
                &KeyRequest {
                    key: key.clone(),
                    op,
                },
                now,
            ))
        };
        let token = |shard: &Shard, now: u64| shard.watch_token(&key, now).unwrap();
        let absent = token(&shard, 1);
        assert_eq!(absent.record, None);
        run(&mut shard, KeyOp::Get, 1);
        assert_eq!(token(&shard, 1).record, absent.record, "a read moved it");
        let set = |v: &'static [u8]| KeyOp::Set {
            value: Bytes::from_static(v),
            ttl: Ttl::Keep,
            cond: SetCond::Always,
            get: false,
        };
        run(&mut shard, set(b"a"), 1);
        let written = token(&shard, 1);
        assert_ne!(written.record, absent.record);
        run(&mut shard, set(b"a"), 1);
        let same_value = token(&shard, 1);
        assert_ne!(same_value.record, written.record, "a rewrite is a change");
        run(&mut shard, KeyOp::Del, 1);
        let deleted = token(&shard, 1);
        assert_ne!(deleted.record, same_value.record);
        assert_ne!(
            deleted.record, absent.record,
            "deleted differs from never set"
        );
        run(
            &mut shard,
            KeyOp::Set {
                value: Bytes::from_static(b"t"),
                ttl: Ttl::At(100),
                cond: SetCond::Always,
                get: false,
            },
            1,
        );
        assert_ne!(
            token(&shard, 50).record,
            token(&shard, 200).record,
            "expiry is a change"
        );
        // A flush starts versions again; the flush count tells the tokens apart.
        let before = token(&shard, 1);
        shard.flush();
        run(&mut shard, set(b"t"), 1);
        assert!(token(&shard, 1).flushes > before.flushes);
        assert_ne!(token(&shard, 1), before);
    }

    #[test]
    fn watch_tokens_see_a_hash_field_overwritten_or_deleted() {
        use crate::cmd::hash::{HashOp, SetReply};
        let (mut shard, _) = shard_with_keys(0);
        let key = Bytes::from_static(b"k1:h");
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let run = |shard: &mut Shard, op: HashOp| {
            done(shard.execute(
                &KeyRequest {
                    key: key.clone(),
                    op: KeyOp::Hash(op),
                },
                1,
            ))
        };
        let hset = |f: &'static str, v: &'static str| HashOp::Set {
            pairs: vec![(b(f), b(v))],
            reply: SetReply::Added,
        };
        run(&mut shard, hset("f", "1"));
        run(&mut shard, hset("g", "1"));
        let before = shard.watch_token(&key, 1).unwrap();
        run(&mut shard, HashOp::Get(b("f")));
        assert_eq!(
            shard.watch_token(&key, 1).unwrap(),
            before,
            "a read moved it"
        );
        // Same field count: the header is not rewritten, yet it is a change.
        run(&mut shard, hset("f", "2"));
        let overwritten = shard.watch_token(&key, 1).unwrap();
        assert_ne!(overwritten, before, "an overwritten field went unseen");
        run(&mut shard, HashOp::Del(vec![b("g")]));
        assert_ne!(shard.watch_token(&key, 1).unwrap(), overwritten);
    }

    #[test]
    fn msetnx_across_fragments_is_all_or_nothing() {
        let (mut shard, _) = shard_with_keys(1);
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let msetnx = |pairs: &[(&str, &str)]| KeyRequest {
            key: b(pairs[0].0),
            op: KeyOp::MSetNx {
                first: b(pairs[0].1),
                pairs: pairs[1..].iter().map(|(k, v)| (b(k), b(v))).collect(),
            },
        };
        let get = |shard: &mut Shard, k: &str| {
            done(shard.execute(
                &KeyRequest {
                    key: b(k),
                    op: KeyOp::Get,
                },
                1,
            ))
        };
        // Keys in three of the four fragments, none existing: all set.
        let fresh = msetnx(&[("a", "1"), ("k1x", "2"), ("zz", "3")]);
        assert_eq!(done(shard.execute(&fresh, 1)), Frame::Integer(1));
        assert_eq!(get(&mut shard, "k1x"), Frame::bulk("2"));
        assert_eq!(get(&mut shard, "zz"), Frame::bulk("3"));
        // One exists (a key written by the helper): nothing is set.
        let blocked = msetnx(&[("b", "1"), ("k2:000000", "x"), ("yy", "3")]);
        assert_eq!(done(shard.execute(&blocked, 1)), Frame::Integer(0));
        assert_eq!(get(&mut shard, "b"), Frame::Null);
        assert_eq!(get(&mut shard, "yy"), Frame::Null);
        assert_eq!(get(&mut shard, "k2:000000"), Frame::bulk("v"));
        // The same key twice: the last value wins, as in Redis.
        let twice = msetnx(&[("c", "1"), ("c", "2")]);
        assert_eq!(done(shard.execute(&twice, 1)), Frame::Integer(1));
        assert_eq!(get(&mut shard, "c"), Frame::bulk("2"));
    }

    /// A SCAN of up to `max_steps` steps of `count` keys, starting after `from`;
    /// `between` runs between steps. Stops early (abandons the scan) at `max_steps`.
    fn scan_steps(
        shard: &mut Shard,
        from: Option<Bytes>,
        count: usize,
        max_steps: usize,
        mut between: impl FnMut(&mut Shard),
    ) -> Vec<Bytes> {
        let started = Instant::now();
        let mut after = from;
        let mut out = Vec::new();
        for _ in 0..max_steps {
            let FanoutBody::Scan { keys, frontier } =
                shard.scan_step(after.as_ref(), count, None, (started, None), 1)
            else {
                panic!("not a scan reply");
            };
            out.extend(keys);
            match frontier {
                Some(f) => after = Some(f),
                None => return out,
            }
            between(shard);
        }
        out
    }

    fn full_scan(shard: &mut Shard, count: usize, between: impl FnMut(&mut Shard)) -> Vec<Bytes> {
        scan_steps(shard, None, count, usize::MAX, between)
    }

    fn used_bytes(shard: &Shard) -> u64 {
        stats::get(&shard.env.stats[0].used_bytes)
    }

    #[test]
    fn scan_listings_are_capped_counted_and_expire() {
        let (mut shard, keys) = shard_with_keys(500);
        shard.publish_stats();
        let data_only = used_bytes(&shard);
        let one = listing_bytes(&keys.iter().take(500).cloned().collect::<Vec<_>>());
        shard.listing_limits.max_bytes = one * 2;
        // Many scans started and abandoned after a step or two, anywhere in the key
        // space, with writes between them so each builds fresh listings.
        for round in 0..200 {
            let from = Bytes::from(format!("k{}:{:06}", round % 4, round * 7 % 500));
            scan_steps(&mut shard, Some(from), 300, 1 + round % 2, |_| {});
            set(&mut shard, &Bytes::from(format!("k{}:x{round}", round % 4)));
            assert!(
                shard.scan_listing_bytes() <= one * 2 + 4096,
                "{} bytes of listings, cap {}",
                shard.scan_listing_bytes(),
                one * 2
            );
        }
        assert!(shard.listings.len() <= 2);
        shard.publish_stats();
        let with_listings = used_bytes(&shard);
        assert!(with_listings >= data_only + shard.scan_listing_bytes() as u64);
        assert!(shard.scan_listing_bytes() > 0);
        // Idle listings go.
        shard.tidy_listings(Instant::now() + shard.listing_limits.idle);
        assert_eq!(shard.scan_listing_bytes(), 0);
        assert!(shard.listings.is_empty());
        shard.publish_stats();
        assert!(used_bytes(&shard) < with_listings);
    }

    #[test]
    fn scan_completes_when_its_listings_are_evicted() {
        let (mut shard, keys) = shard_with_keys(300);
        // Evict everything between steps, and write (so a listing built before the
        // scan would be stale anyway): every key present throughout comes back.
        let mut n = 0;
        let got = full_scan(&mut shard, 37, |s| {
            s.tidy_listings(Instant::now() + Duration::from_secs(3600));
            n += 1;
            set(s, &Bytes::from(format!("k2:new{n}")));
        });
        assert!(n > 20, "scan took {n} steps");
        let got: BTreeSet<Bytes> = got.into_iter().collect();
        let missing: Vec<_> = keys.difference(&got).collect();
        assert!(missing.is_empty(), "missing {missing:?}");
        // And with a cap smaller than one listing: each is rebuilt as needed.
        shard.listing_limits.max_bytes = 1;
        let got: BTreeSet<Bytes> = full_scan(&mut shard, 50, |_| {}).into_iter().collect();
        assert!(keys.is_subset(&got));
        assert!(shard.listings.len() <= 1);
    }

    // ---- incremental rebuilds (decision 0015) ------------------------------------

    /// A one-core shard holding the whole key space in one fragment, with regions of
    /// `region_size` (16 MiB is the node's default).
    fn one_fragment_shard(region_size: usize, cores: usize) -> Shard {
        let env = ShardEnv {
            cores,
            routes: Arc::new(Routes::new(RouteTable::initial(1))),
            stats: Arc::from((0..cores).map(|_| CoreStats::default()).collect::<Vec<_>>()),
            fragment_ids: Arc::new(AtomicU64::new(0)),
            geometry: Geometry::sized_for(region_size, 72),
            region_size: region_size as u64,
            hugepages: false,
        };
        Shard::new(0, env, vec![(Bytes::new(), None)]).unwrap()
    }

    fn run_op(shard: &mut Shard, key: &Bytes, op: KeyOp) -> Frame {
        done(shard.execute(
            &KeyRequest {
                key: key.clone(),
                op,
            },
            1,
        ))
    }

    fn put(shard: &mut Shard, key: &Bytes, value: Bytes) {
        let set = KeyOp::Set {
            value,
            ttl: Ttl::Clear,
            cond: SetCond::Always,
            get: false,
        };
        assert_eq!(run_op(shard, key, set), Frame::ok());
    }

    fn get(shard: &mut Shard, key: &Bytes) -> Frame {
        run_op(shard, key, KeyOp::Get)
    }

    fn stat(shard: &Shard, field: impl Fn(&CoreStats) -> &AtomicU64) -> u64 {
        stats::get(field(&shard.env.stats[shard.core]))
    }

    /// 32-byte values, as `redis-benchmark -d 32`.
    fn value(i: u64) -> Bytes {
        Bytes::from(format!("{i:032}"))
    }

    /// Writes to a fragment past three quarters of a full 16 MiB region, then its
    /// rebuild one slice at a time, and between every two slices client requests: new
    /// keys, overwrites, deletes, and GETs of old and new keys, each checked against a
    /// model. Every GET comes between two slices — it waits for one slice at most —
    /// and every slice keeps to its bounds. `distinct`: how many keys the filling
    /// writes cycle through (few: a compaction; all distinct: a split); the rebuild
    /// must take at least `min_slices`.
    fn rebuild_at_the_limit(distinct: u64, min_slices: usize) -> Shard {
        use crate::store::rebuild::{SLICE_BYTES, SLICE_RECORDS, SLICE_SLOTS};
        let mut shard = one_fragment_shard(16 << 20, 1);
        let mut model: HashMap<Bytes, Option<Bytes>> = HashMap::new();
        let key = |i: u64| Bytes::from(format!("key:{i:08}"));
        let mut i = 0u64;
        while !shard.rebuild_pending() {
            let k = key(i % distinct);
            put(&mut shard, &k, value(i));
            model.insert(k, Some(value(i)));
            i += 1;
        }
        let source = shard.fragment_for(b"key:").unwrap();
        let (generation, identity) = (source.generation(), source.region().identity());
        assert!(source.region_len() > 9 << 20, "a full-size region");
        assert!(source.used_bytes() > source.region_len() / 2);
        let mut slices = 0;
        let mut n = 0u64;
        while shard.rebuild_pending() {
            let Some(work) = shard.step_rebuild(1) else {
                continue;
            };
            slices += 1;
            assert!(work.records <= SLICE_RECORDS, "{work:?}");
            assert!(work.slots <= SLICE_SLOTS, "{work:?}");
            assert!(work.bytes <= SLICE_BYTES, "{work:?}");
            // Clients between two slices: a new key, an overwrite, a delete, reads.
            for _ in 0..4 {
                let new = Bytes::from(format!("new:{n:06}"));
                put(&mut shard, &new, value(n));
                model.insert(new, Some(value(n)));
                let old = key(n * 7919 % i.min(distinct));
                put(&mut shard, &old, value(n + 1_000_000));
                model.insert(old, Some(value(n + 1_000_000)));
                let gone = key(n * 104_729 % i.min(distinct));
                run_op(&mut shard, &gone, KeyOp::Del);
                model.insert(gone, None);
                n += 1;
            }
            for probe in [
                key(n * 31 % i.min(distinct)),
                key(n * 7919 % i.min(distinct)),
                key((n - 1) * 7919 % i.min(distinct)),
                key((n - 1) * 104_729 % i.min(distinct)),
                Bytes::from(format!("new:{:06}", n - 1)),
                Bytes::from(format!("new:{:06}", n / 2)),
            ] {
                let expected = match model.get(&probe).cloned().flatten() {
                    Some(v) => Frame::Bulk(v),
                    None => Frame::Null,
                };
                assert_eq!(
                    get(&mut shard, &probe),
                    expected,
                    "{probe:?} after {slices} slices"
                );
            }
            if shard.rebuild_pending() {
                // Still served by the old region, live.
                let f = shard.fragment_for(b"key:").unwrap();
                assert_eq!(
                    (f.generation(), f.region().identity()),
                    (generation, identity)
                );
                assert!(!f.is_retired());
            }
        }
        assert!(slices >= min_slices, "{slices} slices: not incremental");
        assert_eq!(stat(&shard, |s| &s.rebuild_stalls), 0);
        assert_eq!(stat(&shard, |s| &s.rebuilds_active), 0);
        let f = shard.fragment_for(b"key:").unwrap();
        assert_eq!(f.generation(), generation + 1, "swapped in");
        for (k, v) in &model {
            let expected = v.clone().map_or(Frame::Null, Frame::Bulk);
            assert_eq!(get(&mut shard, k), expected, "{k:?} after the switch");
        }
        shard
    }

    #[test]
    fn a_full_region_splits_in_slices_while_serving_between_them() {
        // 88k keys, 6 MiB: a walk slice per 2048 keys at least.
        let shard = rebuild_at_the_limit(u64::MAX, 88_000 / 2048);
        assert_eq!((shard.splits, shard.compactions), (1, 0));
        assert_eq!(shard.fragments.len(), 2);
        assert_eq!(shard.take_table_splits_len(), 1);
    }

    #[test]
    fn a_full_region_compacts_in_slices_while_serving_between_them() {
        // 25k live keys in a log of 6 MiB of overwrites: the walk copies 1.8 MiB.
        let shard = rebuild_at_the_limit(25_000, 25_000 / 2048);
        assert_eq!((shard.splits, shard.compactions), (0, 1));
        assert_eq!(shard.fragments.len(), 1);
        let f = shard.fragment_for(b"key:").unwrap();
        assert!(!f.past_rebuild_line());
    }

    /// A fragment past the line with its rebuild `slices` slices in.
    fn rebuilding(region_size: usize, cores: usize, slices: usize) -> (Shard, Vec<Bytes>) {
        let mut shard = one_fragment_shard(region_size, cores);
        let mut keys = Vec::new();
        while !shard.rebuild_pending() {
            let k = Bytes::from(format!("key:{:08}", keys.len()));
            put(&mut shard, &k, value(keys.len() as u64));
            keys.push(k);
        }
        for _ in 0..slices {
            assert!(shard.step_rebuild(1).is_some());
        }
        assert!(shard.rebuild_pending(), "still in progress");
        (shard, keys)
    }

    fn rebuild_phase(shard: &Shard) -> Option<Phase> {
        shard.rebuilds.values().next().map(|r| r.phase())
    }

    #[test]
    fn a_large_value_lands_in_any_phase_of_a_rebuild() {
        let big = Bytes::from(vec![b'x'; 10 << 20]);
        let big_key = Bytes::from_static(b"key:big");
        for phase in [Phase::Survey, Phase::Walk, Phase::CatchUp] {
            let (mut shard, mut keys) = rebuilding(1 << 20, 1, 0);
            shard.start_rebuilds();
            while rebuild_phase(&shard) != Some(phase) {
                assert!(shard.step_rebuild(1).is_some(), "{phase:?} never came");
            }
            // Writes the catch-up has to apply.
            for i in 0..10 {
                let k = Bytes::from(format!("key:late:{i}"));
                put(&mut shard, &k, value(keys.len() as u64));
                keys.push(k);
            }
            put(&mut shard, &big_key, big.clone());
            assert!(stat(&shard, |s| &s.rebuild_stalls) >= 1, "a counted stall");
            assert!(shard.rebuilds.is_empty(), "{phase:?}: finished or replaced");
            assert_eq!(get(&mut shard, &big_key), Frame::Bulk(big.clone()));
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(
                    get(&mut shard, k),
                    Frame::Bulk(value(i as u64)),
                    "{phase:?}"
                );
            }
            for k in keys.iter().chain([&big_key]) {
                let deleted = run_op(&mut shard, k, KeyOp::Del);
                assert_eq!(deleted, Frame::Integer(1), "{phase:?} {k:?}");
            }
            let total: usize = shard.fragments.values().map(|f| f.key_count()).sum();
            assert_eq!(total, 0);
            put(&mut shard, &Bytes::from_static(b"after"), value(1));
        }
    }

    #[test]
    fn a_rebuild_is_abandoned_when_its_fragment_is_flushed_dropped_retired_or_split() {
        let (mut shard, _) = rebuilding(1 << 20, 1, 1);
        shard.flush();
        assert!(!shard.rebuild_pending());
        assert_eq!(stat(&shard, |s| &s.rebuilds_active), 0);
        assert_eq!(
            get(&mut shard, &Bytes::from_static(b"key:00000001")),
            Frame::Null
        );

        let (mut shard, _) = rebuilding(1 << 20, 1, 1);
        assert_eq!(shard.drop_range(b"", None), 1);
        assert!(!shard.rebuild_pending());

        // A fence retires the region: the next slice notices and drops the rebuild.
        let (mut shard, keys) = rebuilding(1 << 20, 1, 1);
        shard.fragment_for(b"key:").unwrap().retire();
        assert!(shard.step_rebuild(1).is_none());
        assert!(!shard.rebuild_pending());
        assert!(
            shard.fragment_for(b"key:").unwrap().is_retired(),
            "nothing swapped in"
        );
        assert_eq!(get(&mut shard, &keys[5]), Frame::Bulk(value(5)));

        // A load split (synchronous) replaces the fragment first.
        let (mut shard, keys) = rebuilding(1 << 20, 1, 1);
        assert!(shard.split_hot(b"key:", 1).unwrap());
        assert!(shard.rebuilds.is_empty());
        assert_eq!(shard.splits, 1);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(get(&mut shard, k), Frame::Bulk(value(i as u64)));
        }
    }

    #[test]
    fn a_rebuild_is_abandoned_when_its_fragment_moves_to_another_core() {
        let (mut shard, _) = rebuilding(1 << 20, 2, 1);
        // A second fragment, so that one can move; the core looks heavy.
        shard.split_hot(b"key:", 1).unwrap();
        let mut i = 0;
        while !shard.rebuild_pending() {
            put(
                &mut shard,
                &Bytes::from(format!("key:more:{i:06}")),
                value(i),
            );
            i += 1;
        }
        shard.step_rebuild(1);
        assert_eq!(shard.rebuilds.len(), 1);
        stats::set(&shard.env.stats[0].used_bytes, 1 << 40);
        let (_, fragment) = shard.pick_fragment_to_move().unwrap();
        assert!(shard.rebuilds.is_empty(), "the move abandons the rebuild");
        assert!(shard.step_rebuild(1).is_none());
        // The move failed: the fragment is back, and a later write rebuilds it.
        shard.keep(fragment);
        assert!(!shard.rebuild_pending());
        put(&mut shard, &Bytes::from_static(b"key:more:again"), value(0));
        assert!(shard.rebuild_pending());
        while shard.rebuild_pending() {
            shard.step_rebuild(1);
        }
        assert_eq!(
            get(&mut shard, &Bytes::from_static(b"key:more:again")),
            Frame::Bulk(value(0))
        );
    }
}
