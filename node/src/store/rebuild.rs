//! Rebuilding a fragment — a split or a compaction — in bounded slices while its old
//! region keeps serving reads and writes (issue #12, decision 0015).
//!
//! A rebuild remembers the source's log tail when it starts (`start_tail`), then:
//! 1. **survey** (splits only): reads the heads and keys (no values, no crc) of about
//!    [`SAMPLE`] live records at evenly spread index slots — a fair sample, since keys
//!    sit in slots by hash — picks the divider (the sample's median key) and sizes each
//!    half by what it will hold (usually one or two slices);
//! 2. **walk**: the source's index again, slot by slot, copying each key's current
//!    live record into the target holding its range; tombstones, expired records and
//!    fields of dead hashes are dropped, as `copy_range` drops them;
//! 3. **join**: hash fields the walk met before their hash's header go into the
//!    target's field sets;
//! 4. **catch-up**: every record appended to the source's log from `start_tail` on is
//!    applied to the targets in log order: overwrites, tombstones (of keys the target
//!    has), expiries' tombstones, hash headers and fields. The walk may already have
//!    copied a record written after `start_tail`; the catch-up applies it again after
//!    every older record of its key, so each key ends with its newest record (log
//!    order is version order within a region). Nobody reads the targets before the
//!    switch, so the older states they pass through are never seen.
//! 5. **ready**: a catch-up slice that reaches the source's current tail leaves nothing
//!    to apply; the caller swaps the targets in before anything else writes.
//!
//! A slice examines at most [`SLICE_RECORDS`] records and [`SLICE_SLOTS`] index slots,
//! and copies (or, in the survey, reads) at most [`SLICE_BYTES`] record bytes — or one
//! record, when a single record is larger than that.
//!
//! Everything is copied verbatim (same bytes, versions and crcs); each key takes its
//! first free slot on its probe when it first lands and later records of it take over
//! that slot, so a target's index is the replay of its own log, as for every other
//! write path (`store::copy` relies on it).

use bytes::Bytes;

use super::fragment::{Fragment, FragmentId, Geometry, Peek, StoreError};
use super::hash::field_order;
use super::layout::{self, header};

/// Most records one slice examines.
pub const SLICE_RECORDS: usize = 2048;
/// Most record bytes one slice copies (or reads, surveying), unless one record is
/// larger; then that record alone.
pub const SLICE_BYTES: usize = 256 << 10;
/// Most index slots one slice looks at (an empty one costs one 8-byte load).
pub const SLICE_SLOTS: usize = 8 * SLICE_RECORDS;
/// Live records the survey samples for the divider and the halves' sizes.
pub const SAMPLE: usize = 1024;
/// Records this large are not scaled up by the survey's estimate, but counted as
/// seen: one of them can make its half large all by itself.
const BIG_RECORD: usize = 64 << 10;

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Survey,
    Walk,
    Join,
    CatchUp,
}

/// What one slice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceWork {
    pub phase: Phase,
    /// Index slots looked at (survey, walk).
    pub slots: usize,
    /// Records examined (copied or not) or fields joined.
    pub records: usize,
    /// Record bytes copied into the targets (survey: head and key bytes read).
    pub bytes: usize,
}

pub enum Step {
    /// More slices to go.
    More(SliceWork),
    /// Caught up with the source's tail: nothing left to apply; swap now.
    Ready(SliceWork),
}

/// The fragments that replace the source.
#[derive(Debug)]
pub enum Rebuilt {
    Compacted(Box<Fragment>),
    Split {
        lower: Box<Fragment>,
        upper: Box<Fragment>,
        at: Bytes,
    },
}

struct Budget {
    slots: usize,
    records: usize,
    bytes: usize,
}

const SLICE: Budget = Budget {
    slots: SLICE_SLOTS,
    records: SLICE_RECORDS,
    bytes: SLICE_BYTES,
};

const UNBOUNDED: Budget = Budget {
    slots: usize::MAX,
    records: usize::MAX,
    bytes: usize::MAX,
};

/// What the survey learns from live records sampled at spread-out index slots: split
/// points (the client keys among them) and sizes (every record's route key and
/// length, large ones kept apart).
struct Survey {
    /// Index slots probed so far, in [`probe_order`].
    probes: usize,
    keys: Vec<Bytes>,
    small: Vec<(Bytes, usize)>,
    big: Vec<(Bytes, usize)>,
}

/// The `i`-th slot the survey probes, of `slots` (a power of two): an odd stride near
/// the golden ratio of the index, a permutation that spreads any prefix of it evenly
/// over the index (keys sit in slots by hash, so evenly spread slots are a fair
/// sample of the keys; probing them all is a full survey).
fn probe_order(i: usize, slots: usize) -> usize {
    let stride = ((slots as f64 * 0.618_033_988_75) as usize) | 1;
    i.wrapping_mul(stride) & (slots - 1)
}

impl Survey {
    fn new() -> Survey {
        Survey {
            probes: 0,
            keys: Vec::with_capacity(SAMPLE),
            small: Vec::with_capacity(SAMPLE),
            big: Vec::new(),
        }
    }

    fn done(&self, slots: usize) -> bool {
        self.small.len() + self.big.len() >= SAMPLE || self.probes >= slots
    }

    fn observe(&mut self, p: &Peek<'_>) {
        // Only keys are split points (never a field key): a hash's fields route with
        // its key, so no split can separate them.
        if !p.is_field() {
            self.keys.push(Bytes::copy_from_slice(p.key));
        }
        let entry = (Bytes::copy_from_slice(p.route_key()), p.len);
        if p.len >= BIG_RECORD {
            self.big.push(entry);
        } else {
            self.small.push(entry);
        }
    }

    /// `[(keys, bytes) below at, (keys, bytes) from at on]`, estimated for a source
    /// holding `live_keys` records of `live_bytes`: the small records shared out as
    /// the sample shares them, the large ones seen exactly, an eighth more for the
    /// sample's error, and to each side whatever bytes the sample does not explain
    /// (large records it missed: they may be on either side, and a log's untouched
    /// tail costs address space, not memory).
    fn sides(&self, at: &[u8], live_keys: usize, live_bytes: usize) -> [(usize, usize); 2] {
        let mut sampled = [(0usize, 0usize); 2];
        for (k, len) in &self.small {
            let s = &mut sampled[usize::from(&k[..] >= at)];
            s.0 += 1;
            s.1 += len;
        }
        let (n, b) = (sampled[0].0 + sampled[1].0, sampled[0].1 + sampled[1].1);
        let small_count = live_keys.saturating_sub(self.big.len());
        let scale = |total: usize, part: usize, of: usize| {
            (total as u128 * part as u128)
                .checked_div(of as u128)
                .unwrap_or(0) as usize
        };
        let small_mass = scale(small_count, b, n);
        let mut out = [(0usize, 0usize); 2];
        for (side, s) in out.iter_mut().zip(sampled) {
            *side = (scale(small_count, s.0, n), scale(small_mass, s.1, b));
        }
        let mut big_bytes = 0;
        for (k, len) in &self.big {
            let side = &mut out[usize::from(&k[..] >= at)];
            side.0 += 1;
            side.1 += len;
            big_bytes += len;
        }
        let unseen = live_bytes.saturating_sub(small_mass + big_bytes);
        out.map(|(keys, bytes)| (keys + keys / 8 + 64, bytes + bytes / 8 + (4 << 10) + unseen))
    }
}

/// A hash field the walk copied before (or without) its header.
struct PendingField {
    target: usize,
    hash_key: Bytes,
    order: u64,
    offset: usize,
    incarnation: u64,
}

/// One fragment's rebuild in progress (see the module doc). Holds no borrow of the
/// source: every step is given it again, and [`Rebuild::is_for`] says whether it is
/// still the same region (same id, memory and generation, not retired).
pub struct Rebuild {
    id: FragmentId,
    identity: u64,
    generation: u64,
    start_tail: usize,
    target_len: usize,
    hugetlb: bool,
    /// The source's free log bytes and index slots at the start: the most the writes
    /// during the rebuild can add, which the targets must have room for.
    free_bytes: usize,
    free_slots: usize,
    /// The source's used index slots at the start (to see how fast writes fill it).
    start_used_slots: usize,
    upper_id: Option<FragmentId>,
    phase: Phase,
    /// Next index slot (survey, walk).
    cursor: usize,
    survey: Option<Survey>,
    at: Option<Bytes>,
    /// The compaction's one target, or the split's lower and upper halves; none
    /// during the survey.
    targets: Vec<Fragment>,
    pending: Vec<PendingField>,
    /// The source's log is applied to the targets up to here (catch-up).
    replayed: usize,
}

impl std::fmt::Debug for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .field("split", &self.upper_id.is_some())
            .field("start_tail", &self.start_tail)
            .field("replayed", &self.replayed)
            .finish()
    }
}

impl Rebuild {
    /// Start rebuilding `source`: a split if `upper_id` (the upper half's id) is given
    /// — a compaction after all if the survey finds fewer than two keys — else a
    /// compaction. Targets are sized from `target_len` (the node's region size) and
    /// what they will hold, with room for everything the source can still take.
    pub fn start(
        source: &Fragment,
        upper_id: Option<FragmentId>,
        target_len: usize,
        hugetlb: bool,
    ) -> Result<Rebuild, StoreError> {
        if source.is_retired() {
            return Err(StoreError::Retired);
        }
        let mut rebuild = Rebuild {
            id: source.id,
            identity: source.region.identity(),
            generation: source.generation,
            start_tail: source.tail,
            target_len,
            hugetlb,
            free_bytes: source.free_bytes(),
            free_slots: source.free_slots(),
            start_used_slots: source.used_slots,
            upper_id,
            phase: Phase::Survey,
            cursor: 0,
            survey: upper_id.map(|_| Survey::new()),
            at: None,
            targets: Vec::new(),
            pending: Vec::new(),
            replayed: source.tail,
        };
        if upper_id.is_none() {
            rebuild.plan_compaction(source)?;
        }
        Ok(rebuild)
    }

    /// Whether `source` is still the region this rebuild copies: same fragment, same
    /// memory, same generation, not retired (a fence, a flush, a move, a drop or a
    /// synchronous split or compaction replaced or retired it: the rebuild is stale).
    pub fn is_for(&self, source: &Fragment) -> bool {
        source.id == self.id
            && source.region.identity() == self.identity
            && source.generation == self.generation
            && source.tail >= self.replayed
            && !source.is_retired()
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The divider, once the survey chose one.
    pub fn split_at(&self) -> Option<&Bytes> {
        self.at.as_ref()
    }

    /// Whether the targets exist (the survey, if any, is done).
    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The source's log tail when the rebuild started.
    pub fn start_tail(&self) -> usize {
        self.start_tail
    }

    /// Whether the writes since the start are filling the source's room faster than
    /// the rebuild progresses: the copy should be done before half the room is gone,
    /// and the catch-up should not trail by more than a slice (or at all once half
    /// the room is gone). The caller then runs more than one slice per turn, so that
    /// a busy fragment's rebuild keeps pace with its writers instead of letting the
    /// region fill (which stalls every client of the core until it is finished).
    pub fn behind(&self, source: &Fragment) -> bool {
        let bytes =
            (source.tail.saturating_sub(self.start_tail)) as f64 / self.free_bytes.max(1) as f64;
        let slots = source.used_slots.saturating_sub(self.start_used_slots) as f64
            / self.free_slots.max(1) as f64;
        let fill = bytes.max(slots);
        let slots_total = source.slot_count().max(1) as f64;
        let progress = match self.phase {
            Phase::Survey => 0.0,
            Phase::Walk => self.cursor as f64 / slots_total,
            Phase::Join | Phase::CatchUp => 1.0,
        };
        if progress < 1.0 {
            return progress < (2.0 * fill).min(1.0);
        }
        source.tail.saturating_sub(self.replayed) > SLICE_BYTES || fill > 0.5
    }

    /// One slice of work (see the module doc for its bounds).
    pub fn step(&mut self, source: &Fragment, now_ms: u64) -> Result<Step, StoreError> {
        self.step_within(source, now_ms, &SLICE)
    }

    /// Do all the rest at once (the caller's region is full, or the last slice said
    /// `Ready`) and hand over the targets, which continue the source's sequence numbers.
    pub fn finish(mut self, source: &Fragment, now_ms: u64) -> Result<Rebuilt, StoreError> {
        if !self.is_for(source) {
            return Err(StoreError::Rebuild("the source changed under the rebuild"));
        }
        while let Step::More(_) = self.step_within(source, now_ms, &UNBOUNDED)? {}
        for t in &mut self.targets {
            t.next_seq = source.next_seq;
        }
        let mut targets = self.targets.into_iter();
        match (self.at, targets.next(), targets.next(), targets.next()) {
            (None, Some(f), None, None) => Ok(Rebuilt::Compacted(Box::new(f))),
            (Some(at), Some(lower), Some(upper), None) => Ok(Rebuilt::Split {
                lower: Box::new(lower),
                upper: Box::new(upper),
                at,
            }),
            _ => Err(StoreError::Rebuild("targets do not match the plan")),
        }
    }

    fn step_within(
        &mut self,
        source: &Fragment,
        now_ms: u64,
        budget: &Budget,
    ) -> Result<Step, StoreError> {
        let mut work = SliceWork {
            phase: self.phase,
            slots: 0,
            records: 0,
            bytes: 0,
        };
        match self.phase {
            Phase::Survey => {
                if self.survey_slice(source, now_ms, budget, &mut work) {
                    self.plan_targets(source)?;
                }
            }
            Phase::Walk => {
                if self.walk_slice(source, now_ms, budget, &mut work)? {
                    self.phase = Phase::Join;
                }
            }
            Phase::Join => {
                if self.join_slice(budget, &mut work) {
                    self.phase = Phase::CatchUp;
                }
            }
            Phase::CatchUp => {
                if self.catch_up_slice(source, budget, &mut work)? {
                    return Ok(Step::Ready(work));
                }
            }
        }
        Ok(Step::More(work))
    }

    /// Sample records at spread-out slots until there are enough or every slot has
    /// been probed; true when done.
    fn survey_slice(
        &mut self,
        source: &Fragment,
        now_ms: u64,
        budget: &Budget,
        work: &mut SliceWork,
    ) -> bool {
        let Some(survey) = self.survey.as_mut() else {
            return true;
        };
        let total = source.slot_count();
        while !survey.done(total) {
            if work.slots >= budget.slots || work.records >= budget.records {
                return false;
            }
            let slot = source.slot(probe_order(survey.probes, total));
            if slot != 0 {
                if let Some(p) = source.peek(layout::slot_offset(slot)) {
                    let read = layout::RECORD_HEADER_LEN + p.key.len();
                    if work.bytes > 0 && work.bytes + read > budget.bytes {
                        return false;
                    }
                    work.bytes += read;
                    if p.is_live(now_ms) {
                        survey.observe(&p);
                    }
                }
                work.records += 1;
            }
            work.slots += 1;
            survey.probes += 1;
        }
        true
    }

    fn geometry(&self, source: &Fragment, keys: usize, bytes: usize) -> Geometry {
        // Room for a quarter more keys than it gets and twice its bytes (so the next
        // rebuild comes only after as much again has been written: copying stays
        // proportional to writing, even for a fragment grown by one huge value), plus
        // everything the source may still take while this rebuild runs; the catch-up
        // can copy a record the walk already copied, hence the free bytes once more
        // within the doubled share.
        Geometry::sized_for(self.target_len, source.average_record()).with_room_for(
            keys + keys / 4 + self.free_slots + 16,
            2 * bytes + self.free_bytes + (64 << 10),
        )
    }

    fn target(
        &self,
        source: &Fragment,
        id: FragmentId,
        lo: Bytes,
        hi: Option<Bytes>,
        geometry: Geometry,
    ) -> Result<Fragment, StoreError> {
        let mut out = Fragment::create(id, lo, hi, geometry, source.epoch, self.hugetlb)?;
        out.generation = source.generation + 1;
        out.region.store_release(header::GENERATION, out.generation);
        Ok(out)
    }

    fn plan_compaction(&mut self, source: &Fragment) -> Result<(), StoreError> {
        let geometry = self.geometry(source, source.live_keys, source.live_bytes);
        let target = self.target(
            source,
            source.id,
            source.lo.clone(),
            source.hi.clone(),
            geometry,
        )?;
        self.targets = vec![target];
        self.upper_id = None;
        self.cursor = 0;
        self.phase = Phase::Walk;
        Ok(())
    }

    /// After the survey: the divider and the halves, or a compaction after all.
    fn plan_targets(&mut self, source: &Fragment) -> Result<(), StoreError> {
        let Some(mut survey) = self.survey.take() else {
            return self.plan_compaction(source);
        };
        survey.keys.sort_unstable();
        survey.keys.dedup();
        let (Some(upper_id), true) = (self.upper_id, survey.keys.len() >= 2) else {
            return self.plan_compaction(source);
        };
        // Strictly above the smallest sampled key, so both halves hold keys.
        let at = survey.keys[survey.keys.len() / 2].clone();
        let [(lower_keys, lower_bytes), (upper_keys, upper_bytes)] =
            survey.sides(&at, source.live_keys, source.live_bytes);
        let lower = self.target(
            source,
            source.id,
            source.lo.clone(),
            Some(at.clone()),
            self.geometry(source, lower_keys, lower_bytes),
        )?;
        let upper = self.target(
            source,
            upper_id,
            at.clone(),
            source.hi.clone(),
            self.geometry(source, upper_keys, upper_bytes),
        )?;
        self.targets = vec![lower, upper];
        self.at = Some(at);
        self.cursor = 0;
        self.phase = Phase::Walk;
        Ok(())
    }

    fn target_for(&self, route_key: &[u8]) -> usize {
        match &self.at {
            Some(at) if route_key >= &at[..] => 1,
            _ => 0,
        }
    }

    /// Copy current live records from slot `cursor` on; true when every slot is done.
    fn walk_slice(
        &mut self,
        source: &Fragment,
        now_ms: u64,
        budget: &Budget,
        work: &mut SliceWork,
    ) -> Result<bool, StoreError> {
        let total = source.slot_count();
        while self.cursor < total {
            if work.slots >= budget.slots || work.records >= budget.records {
                return Ok(false);
            }
            let slot = source.slot(self.cursor);
            if slot == 0 {
                work.slots += 1;
                self.cursor += 1;
                continue;
            }
            let offset = layout::slot_offset(slot);
            let r = source.read_record_verified(offset)?;
            // Fields of a deleted, expired or overwritten hash are dropped here, as in
            // `copy_range`.
            let copy = !r.is_tombstone()
                && !r.is_expired(now_ms)
                && source.field_is_current(&r, now_ms)?;
            if copy && work.bytes > 0 && work.bytes + r.len > budget.bytes {
                return Ok(false);
            }
            work.slots += 1;
            work.records += 1;
            self.cursor += 1;
            if !copy {
                continue;
            }
            let t = self.target_for(r.route_key());
            let target = &mut self.targets[t];
            let (at, old) = target.place_record(&source.log()[offset..offset + r.len], &r)?;
            work.bytes += r.len;
            if r.is_field() {
                let parts = layout::split_field_key(r.key).zip(layout::split_field_value(r.value));
                if let Some(((hash_key, field), (incarnation, _))) = parts {
                    if target.hashes.contains_key(hash_key) {
                        target.track_hash(r.key, r.value, r.flags, old, at);
                    } else {
                        self.pending.push(PendingField {
                            target: t,
                            hash_key: Bytes::copy_from_slice(hash_key),
                            order: field_order(field),
                            offset: at,
                            incarnation,
                        });
                    }
                }
            } else if r.is_hash() || old.is_some() {
                target.track_hash(r.key, r.value, r.flags, old, at);
            }
        }
        Ok(true)
    }

    /// Join fields the walk met before their header; true when none is left. Before
    /// any catch-up, so the offsets joined are still their keys' current records.
    fn join_slice(&mut self, budget: &Budget, work: &mut SliceWork) -> bool {
        let n = self.pending.len().min(budget.records);
        let from = self.pending.len() - n;
        for p in self.pending.drain(from..) {
            if let Some(target) = self.targets.get_mut(p.target) {
                target.join_field(&p.hash_key, p.order, p.offset, p.incarnation);
            }
            work.records += 1;
        }
        self.pending.is_empty()
    }

    /// Apply the source's records from `replayed` on, in log order; true when caught
    /// up with its tail.
    fn catch_up_slice(
        &mut self,
        source: &Fragment,
        budget: &Budget,
        work: &mut SliceWork,
    ) -> Result<bool, StoreError> {
        while self.replayed < source.tail {
            if work.records >= budget.records {
                return Ok(false);
            }
            let offset = self.replayed;
            let r = source.read_record_verified(offset)?;
            if work.bytes > 0 && work.bytes + r.len > budget.bytes {
                return Ok(false);
            }
            work.records += 1;
            let t = self.target_for(r.route_key());
            let target = &mut self.targets[t];
            // A tombstone matters only to a key the target has; the rest (keys the
            // walk dropped) have nothing to shadow.
            let applies = !r.is_tombstone() || target.lookup_kind(r.key, r.is_field())?.is_some();
            if applies {
                let (at, old) = target.place_record(&source.log()[offset..offset + r.len], &r)?;
                target.track_hash(r.key, r.value, r.flags, old, at);
                work.bytes += r.len;
            }
            self.replayed += r.len;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fragment::tests::frag;
    use crate::store::hash::HashLookup;
    use crate::store::layout::HashHeader;

    /// Everything a client can see of `f` at `now`: each live key's type, value and
    /// expiry; each hash's fields.
    /// Key, value (or "(hash)"), expiry, the hash's `field=value`s.
    type Contents = Vec<(Bytes, Vec<u8>, Option<u64>, Vec<Vec<u8>>)>;

    fn contents(parts: &[&Fragment], now: u64) -> Contents {
        let mut out = Vec::new();
        for f in parts {
            for key in f.sorted_keys(now).unwrap() {
                let r = f.get(&key, now).unwrap().unwrap();
                // A hash's header value holds its incarnation, which depends on the
                // sequence numbers the fragment has used: compare its fields instead.
                let value = match r.is_hash() {
                    true => b"(hash)".to_vec(),
                    false => r.value.to_vec(),
                };
                let expiry = r.expire_at_ms;
                let mut fields = Vec::new();
                if let HashLookup::Hash(view) = f.hash_at(&key, now).unwrap() {
                    let entries = f.hash_entries(&key, &view).cloned().unwrap_or_default();
                    for (_, offset) in entries {
                        let (name, v) = f.hash_entry(offset).unwrap();
                        fields.push([name, b"=", v].concat());
                    }
                    fields.sort();
                    // The set must hold exactly the fields a lookup finds.
                    assert_eq!(fields.len() as u64, view.header.fields, "{key:?} in {f:?}");
                }
                out.push((key, value, expiry, fields));
            }
        }
        out.sort();
        out
    }

    fn rebuilt_parts(done: &Rebuilt) -> Vec<&Fragment> {
        match done {
            Rebuilt::Compacted(f) => vec![&**f],
            Rebuilt::Split { lower, upper, .. } => vec![&**lower, &**upper],
        }
    }

    fn hset(f: &mut Fragment, key: &[u8], fields: &[(&[u8], &[u8])], now: u64) {
        let (incarnation, mut count, expiry) = match f.hash_at(key, now).unwrap() {
            HashLookup::Hash(v) => (v.header.incarnation, v.header.fields, v.expire_at_ms),
            _ => (f.new_incarnation(), 0, None),
        };
        let view = crate::store::HashView {
            header: HashHeader {
                incarnation,
                fields: count,
            },
            expire_at_ms: expiry,
        };
        let new = fields
            .iter()
            .filter(|(name, _)| f.hash_field(key, &view, name).unwrap().is_none())
            .count() as u64;
        count += new;
        f.put_hash_header(
            key,
            HashHeader {
                incarnation,
                fields: count,
            },
            expiry,
        )
        .unwrap();
        for (name, value) in fields {
            f.put_field(key, incarnation, name, value).unwrap();
        }
    }

    /// Slices, with `between` run after each, until ready; then the switch. Checks
    /// every slice's bounds.
    fn run(
        rebuild: &mut Option<Rebuild>,
        source: &mut Fragment,
        now: u64,
        mut between: impl FnMut(&mut Fragment, usize),
    ) -> Rebuilt {
        let mut i = 0;
        // One record larger than a slice's bytes goes alone.
        let mut largest = 0;
        source
            .for_each_current(|_, r| largest = largest.max(r.len))
            .unwrap();
        loop {
            let rb = rebuild.as_mut().unwrap();
            assert!(rb.is_for(source));
            let work = match rb.step(source, now).unwrap() {
                Step::Ready(w) => {
                    check_bounds(&w, largest);
                    return rebuild.take().unwrap().finish(source, now).unwrap();
                }
                Step::More(w) => w,
            };
            check_bounds(&work, largest);
            between(source, i);
            i += 1;
            assert!(i < 100_000, "the rebuild never converged");
        }
    }

    fn check_bounds(w: &SliceWork, largest_record: usize) {
        assert!(w.records <= SLICE_RECORDS, "{w:?}");
        assert!(w.slots <= SLICE_SLOTS, "{w:?}");
        assert!(w.bytes <= SLICE_BYTES.max(largest_record), "{w:?}");
    }

    #[test]
    fn compaction_in_slices_keeps_every_write_made_meanwhile() {
        let mut f = frag(4 << 20);
        let mut i = 0u32;
        while !f.past_rebuild_line() {
            f.put(format!("k{}", i % 3000).as_bytes(), &i.to_le_bytes(), None)
                .unwrap();
            i += 1;
        }
        let mut rb = Some(Rebuild::start(&f, None, 4 << 20, false).unwrap());
        assert_eq!(rb.as_ref().unwrap().phase(), Phase::Walk);
        // Between slices: overwrites, deletes, new keys, expiring keys.
        let done = run(&mut rb, &mut f, 10, |f, n| {
            let n = n as u32;
            f.put(format!("k{}", n * 7 % 3000).as_bytes(), b"over", None)
                .unwrap();
            f.delete(format!("k{}", n * 13 % 3000).as_bytes(), 10)
                .unwrap();
            f.put(format!("new{n}").as_bytes(), b"n", Some(1000))
                .unwrap();
        });
        let parts = rebuilt_parts(&done);
        assert_eq!(parts.len(), 1);
        let c = parts[0];
        assert_eq!(contents(&[c], 10), contents(&[&f], 10));
        assert_eq!(contents(&[c], 2000), contents(&[&f], 2000));
        assert_eq!(c.live_keys(), f.live_keys() - dead_live(&f, 10));
        assert_eq!(c.next_seq, f.next_seq);
        assert_eq!(c.generation(), f.generation() + 1);
        assert!(c.used_bytes() < f.used_bytes());
        assert!(!c.past_rebuild_line());
        // The copy is a valid region by the migration's checks.
        let copy = crate::store::copy::tests::copy_of(c).unwrap();
        assert_eq!(copy.content_crc(), c.content_crc());
    }

    /// Records the source still counts as live that a copy drops (expired at `now`).
    fn dead_live(f: &Fragment, now: u64) -> usize {
        let mut n = 0;
        f.for_each_current(|_, r| {
            if !r.is_tombstone() && r.is_expired(now) {
                n += 1;
            }
        })
        .unwrap();
        n
    }

    #[test]
    fn split_in_slices_sizes_halves_by_their_bytes() {
        let mut f = frag(4 << 20);
        for i in 0..2000u32 {
            f.put(format!("key:{i:06}").as_bytes(), b"v", None).unwrap();
        }
        // A large value high in the key space: its half must be sized for it.
        let big = vec![7u8; 1 << 20];
        f.put(b"key:999999", &big, None).unwrap();
        let mut rb = Some(Rebuild::start(&f, Some(9), 4 << 20, false).unwrap());
        assert_eq!(rb.as_ref().unwrap().phase(), Phase::Survey);
        let done = run(&mut rb, &mut f, 0, |f, n| {
            f.put(format!("key:{:06}", n * 37 % 2000).as_bytes(), b"w", None)
                .unwrap();
        });
        let Rebuilt::Split { lower, upper, at } = &done else {
            panic!("not a split");
        };
        let (lower, upper): (&Fragment, &Fragment) = (lower, upper);
        assert!(&at[..] > b"key:000000".as_slice());
        assert_eq!(upper.id(), 9);
        assert_eq!(lower.id(), f.id());
        assert_eq!(contents(&[lower, upper], 0), contents(&[&f], 0));
        for k in lower.sorted_keys(0).unwrap() {
            assert!(k < at);
        }
        assert!(lower.live_keys() > 700 && upper.live_keys() > 700);
        assert!(upper.get(b"key:999999", 0).unwrap().unwrap().value == &big[..]);
        // Each half has room for as much again as it holds.
        for half in [lower, upper] {
            assert!(half.free_bytes() >= half.live_bytes(), "{half:?}");
        }
    }

    #[test]
    fn a_record_larger_than_a_slice_goes_alone() {
        let mut f = frag(4 << 20);
        f.put(b"a", &vec![1u8; SLICE_BYTES * 2], None).unwrap();
        f.put(b"b", b"small", None).unwrap();
        let mut rb = Rebuild::start(&f, None, 4 << 20, false).unwrap();
        let mut biggest = 0;
        while let Step::More(w) = rb.step(&f, 0).unwrap() {
            biggest = biggest.max(w.bytes);
        }
        assert!(biggest > SLICE_BYTES && biggest < SLICE_BYTES * 2 + 64);
        let Rebuilt::Compacted(c) = rb.finish(&f, 0).unwrap() else {
            panic!("not a compaction");
        };
        assert_eq!(
            c.get(b"a", 0).unwrap().unwrap().value.len(),
            SLICE_BYTES * 2
        );
    }

    #[test]
    fn a_replaced_or_retired_source_is_refused() {
        let mut f = frag(1 << 20);
        f.put(b"a", b"1", None).unwrap();
        let rb = Rebuild::start(&f, None, 1 << 20, false).unwrap();
        let compacted = f.compact(1 << 20, 0, 0, false).unwrap();
        assert!(!rb.is_for(&compacted), "another region");
        assert!(rb.is_for(&f));
        f.retire();
        assert!(!rb.is_for(&f), "retired");
        assert!(matches!(rb.finish(&f, 0), Err(StoreError::Rebuild(_))));
        assert!(matches!(
            Rebuild::start(&f, None, 1 << 20, false),
            Err(StoreError::Retired)
        ));
    }

    #[test]
    fn hashes_written_during_a_rebuild_keep_their_fields() {
        let mut f = frag(4 << 20);
        for h in 0..40u32 {
            let key = format!("h{h:03}");
            let fields: Vec<(Vec<u8>, Vec<u8>)> = (0..30)
                .map(|i| (format!("f{i}").into_bytes(), b"v".to_vec()))
                .collect();
            let fields: Vec<(&[u8], &[u8])> =
                fields.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            hset(&mut f, key.as_bytes(), &fields, 0);
            f.put(format!("s{h:03}").as_bytes(), b"string", None)
                .unwrap();
        }
        for split in [false, true] {
            let mut src = crate::store::copy::tests::copy_of(&f).unwrap();
            let upper = split.then_some(77);
            let mut rb = Some(Rebuild::start(&src, upper, 4 << 20, false).unwrap());
            let done = run(&mut rb, &mut src, 0, |f, n| {
                let h = format!("h{:03}", n % 40);
                match n % 5 {
                    // A new field, an overwritten one.
                    0 | 1 => hset(f, h.as_bytes(), &[(b"new", b"x"), (b"f1", b"y")], 0),
                    // Deleted and created again: the old fields must not come back.
                    2 => {
                        f.delete(h.as_bytes(), 0).unwrap();
                        hset(f, h.as_bytes(), &[(b"again", b"z")], 0);
                    }
                    // A string over a hash.
                    3 => f.put(h.as_bytes(), b"now a string", None).unwrap(),
                    _ => hset(f, format!("s{:03}", n % 40).as_bytes(), &[(b"x", b"y")], 0),
                }
            });
            let parts = rebuilt_parts(&done);
            assert_eq!(parts.len(), if split { 2 } else { 1 });
            assert_eq!(contents(&parts, 0), contents(&[&src], 0), "split {split}");
            let heap: usize = parts.iter().map(|p| p.hash_heap_bytes()).sum();
            let sync = src.compact(4 << 20, 0, 0, false).unwrap();
            assert_eq!(heap, sync.hash_heap_bytes(), "split {split}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, usize, Option<u64>),
            Delete(u8),
            HSet(u8, u8),
            HDel(u8, u8),
            Expire(u64),
            /// Run this many slices of the rebuild.
            Slices(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => (any::<u8>(), 0usize..400, proptest::option::of(1u64..100))
                    .prop_map(|(k, n, t)| Op::Put(k, n, t)),
                2 => any::<u8>().prop_map(Op::Delete),
                2 => (any::<u8>(), 0u8..8).prop_map(|(k, f)| Op::HSet(k, f)),
                1 => (any::<u8>(), 0u8..8).prop_map(|(k, f)| Op::HDel(k, f)),
                1 => (1u64..50).prop_map(Op::Expire),
                3 => (1u8..4).prop_map(Op::Slices),
            ]
        }

        fn key(k: u8) -> Vec<u8> {
            format!("key-{k:03}").into_bytes()
        }

        fn apply(f: &mut Fragment, op: &Op, now: &mut u64) {
            match op {
                Op::Put(k, n, ttl) => {
                    let v = vec![*k; *n];
                    f.put(&key(*k), &v, ttl.map(|t| *now + t)).unwrap();
                }
                Op::Delete(k) => {
                    f.delete(&key(*k), *now).unwrap();
                }
                Op::HSet(k, field) => {
                    let name = [b'f', b'0' + field];
                    hset(f, &key(*k), &[(&name, &[*k, *field])], *now);
                }
                Op::HDel(k, field) => {
                    let name = [b'f', b'0' + field];
                    if let HashLookup::Hash(v) = f.hash_at(&key(*k), *now).unwrap() {
                        if f.hash_field(&key(*k), &v, &name).unwrap().is_some() {
                            f.delete_field(&key(*k), &name).unwrap();
                            let header = HashHeader {
                                incarnation: v.header.incarnation,
                                fields: v.header.fields - 1,
                            };
                            f.put_hash_header(&key(*k), header, v.expire_at_ms).unwrap();
                        }
                    }
                }
                Op::Expire(dt) => {
                    *now += dt;
                    f.expire_due(*now, usize::MAX).unwrap();
                }
                Op::Slices(_) => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            /// Any writes before and between any slices: the rebuilt fragments hold
            /// exactly what the source holds at the switch, and a valid region each.
            #[test]
            fn rebuilt_fragments_agree_with_their_source(
                before in proptest::collection::vec(op(), 0..300),
                during in proptest::collection::vec(op(), 0..300),
                split in any::<bool>(),
            ) {
                // Roomy enough that nothing fills (the rebuild's own sizing is tested
                // by the rest), small enough that a few slices get through the walk.
                let mut f = frag(1 << 20);
                let mut now = 1;
                for op in &before {
                    apply(&mut f, op, &mut now);
                }
                let upper = split.then_some(5);
                let mut rb = Rebuild::start(&f, upper, 1 << 20, false).unwrap();
                let mut ready = false;
                for op in &during {
                    if let Op::Slices(n) = op {
                        for _ in 0..*n {
                            if ready {
                                break;
                            }
                            prop_assert!(rb.is_for(&f));
                            match rb.step(&f, now).unwrap() {
                                Step::Ready(w) => { check_bounds(&w, 400 + 64); ready = true; }
                                Step::More(w) => check_bounds(&w, 400 + 64),
                            }
                        }
                        if ready {
                            // The caller swaps at once; here the test keeps writing to
                            // the source, which `finish` then catches up with.
                            ready = false;
                        }
                    } else {
                        apply(&mut f, op, &mut now);
                    }
                }
                let done = rb.finish(&f, now).unwrap();
                let parts = rebuilt_parts(&done);
                prop_assert_eq!(contents(&parts, now), contents(&[&f], now));
                prop_assert_eq!(contents(&parts, now + 200), contents(&[&f], now + 200));
                for p in &parts {
                    prop_assert_eq!(p.next_seq, f.next_seq);
                    let copy = crate::store::copy::tests::copy_of(p).unwrap();
                    prop_assert_eq!(copy.content_crc(), p.content_crc());
                    prop_assert_eq!(copy.live_keys(), p.live_keys());
                    prop_assert_eq!(copy.live_bytes(), p.live_bytes());
                }
                if let Rebuilt::Split { lower, upper, at } = &done {
                    prop_assert!(lower.hi() == Some(at) && upper.lo() == at);
                    for k in lower.sorted_keys(now).unwrap() {
                        prop_assert!(k < *at);
                    }
                }
                // Writes to the rebuilt fragments behave as on the source.
                let mut parts: Vec<Fragment> = match done {
                    Rebuilt::Compacted(c) => vec![*c],
                    Rebuilt::Split { lower, upper, .. } => vec![*lower, *upper],
                };
                for op in &before {
                    let k = match op {
                        Op::Put(k, ..) | Op::Delete(k) | Op::HSet(k, _) | Op::HDel(k, _) => key(*k),
                        _ => continue,
                    };
                    let mut now_f = now;
                    let mut now_p = now;
                    apply(&mut f, op, &mut now_f);
                    let p = parts.iter_mut().find(|p| p.contains(&k)).unwrap();
                    apply(p, op, &mut now_p);
                }
                let refs: Vec<&Fragment> = parts.iter().collect();
                prop_assert_eq!(contents(&refs, now), contents(&[&f], now));
            }
        }
    }
}
