//! A fragment: the keys in `[lo, hi)`, stored in one region.
//!
//! Single writer: only the core that owns a fragment touches it, so there are no locks.
//! A write appends a record to the log, then publishes it with one release store into
//! its index slot; a concurrent one-sided reader sees either the old or the new slot,
//! and checks the record's crc and key, so it never returns a torn value.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::hash::HashFields;
use super::layout::{self, header, RecordError, RecordView};
use super::region::Region;

pub type FragmentId = u64;

/// Index slots used before the index counts as full. Eight-slot buckets with linear
/// probing keep probes short well past this.
const MAX_LOAD: f64 = 0.9;
/// A torn read can only come from a concurrent writer; retry a few times before
/// calling the bytes corrupt.
const READ_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fragment full: {need} more bytes")]
    Full { need: usize },
    #[error("key is longer than {} bytes", layout::MAX_KEY_LEN)]
    KeyTooLong,
    #[error("corrupt region: {0}")]
    Corrupt(#[from] RecordError),
    #[error("fragment retired: a compaction or split replaced it")]
    Retired,
    #[error("bad region copy: {0}")]
    BadCopy(#[from] super::copy::CopyError),
    #[error("region allocation failed: {0}")]
    Alloc(#[from] std::io::Error),
    #[error("rebuild: {0}")]
    Rebuild(&'static str),
}

/// How many buckets and how many log bytes a region has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub buckets: usize,
    pub log_capacity: usize,
}

impl Geometry {
    /// A region of at most about `target_len` bytes whose index and log fill up at
    /// about the same time for records of `avg_record` bytes.
    pub fn sized_for(target_len: usize, avg_record: usize) -> Geometry {
        let avg = avg_record.clamp(32, 1 << 20) as f64;
        let keys = target_len as f64 / (avg + 8.0 / MAX_LOAD);
        let wanted_buckets = (keys / (layout::SLOTS_PER_BUCKET as f64 * MAX_LOAD)).max(8.0);
        // Round down so the region stays within the target.
        let buckets = 1usize << (usize::BITS - 1 - (wanted_buckets as usize).leading_zeros());
        let log_capacity = (Self::slot_capacity(buckets) as f64 * avg) as usize;
        Geometry {
            buckets,
            log_capacity,
        }
    }

    /// At least this geometry, grown (index by doubling) until it holds `keys` keys
    /// and `bytes` log bytes.
    pub fn with_room_for(mut self, keys: usize, bytes: usize) -> Geometry {
        while Self::slot_capacity(self.buckets) < keys {
            self.buckets *= 2;
        }
        self.log_capacity = self.log_capacity.max(bytes);
        self
    }

    pub(super) fn slot_capacity(buckets: usize) -> usize {
        (buckets as f64 * layout::SLOTS_PER_BUCKET as f64 * MAX_LOAD) as usize
    }

    /// Index slots this geometry may use before its index counts as full.
    pub fn slots(&self) -> usize {
        Self::slot_capacity(self.buckets)
    }

    pub fn region_len(&self) -> usize {
        layout::log_start(self.buckets) + self.log_capacity
    }
}

/// A record's length, flags, expiry and key, read without checking its crc: for
/// estimates that must not cost a pass over the values (split sizing). Never trusted
/// for data: whatever is copied is read with `read_record_verified`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peek<'a> {
    pub(super) len: usize,
    pub(super) flags: u16,
    pub(super) expire_at_ms: Option<u64>,
    pub(super) key: &'a [u8],
}

impl Peek<'_> {
    pub(super) fn is_field(&self) -> bool {
        self.flags & layout::FLAG_FIELD != 0
    }

    /// Not a tombstone and not expired at `now_ms`.
    pub(super) fn is_live(&self, now_ms: u64) -> bool {
        self.flags & layout::FLAG_TOMBSTONE == 0 && self.expire_at_ms.is_none_or(|t| t > now_ms)
    }

    /// As `RecordView::route_key`: a field goes with its hash.
    pub(super) fn route_key(&self) -> &[u8] {
        if self.is_field() {
            layout::split_field_key(self.key).map_or(self.key, |(k, _)| k)
        } else {
            self.key
        }
    }
}

/// Where a key's probe ended: the slot holding it, its record's offset and the record
/// (decoded once, here), if any; and the first free slot.
pub(super) struct Probe<'a> {
    pub(super) found: Option<(usize, usize, RecordView<'a>)>,
    free_slot: Option<usize>,
}

pub struct Fragment {
    pub(super) id: FragmentId,
    pub(super) lo: Bytes,
    pub(super) hi: Option<Bytes>,
    pub(super) region: Region,
    pub(super) bucket_mask: usize,
    pub(super) tail: usize,
    pub(super) epoch: u64,
    pub(super) next_seq: u64,
    pub(super) generation: u64,
    pub(super) used_slots: usize,
    pub(super) max_slots: usize,
    pub(super) live_keys: usize,
    pub(super) live_bytes: usize,
    /// `(expire_at_ms, record offset)` of records written with a TTL; entries whose
    /// record was since replaced are skipped when they come due.
    pub(super) expiries: BTreeSet<(u64, usize)>,
    /// Bumped on every change, so a cached key listing knows it is stale.
    pub(super) changes: u64,
    /// How many of `live_keys` are hash field records (not keys a client sees).
    pub(super) live_fields: usize,
    /// Each hash's current fields, for HGETALL/HSCAN without walking the index.
    /// Memory only: rebuilt from the region after every copy (`rebuild_hashes`).
    pub(super) hashes: HashMap<Bytes, HashFields>,
    /// Estimated heap bytes of `hashes`.
    pub(super) hash_heap_bytes: usize,
}

impl std::fmt::Debug for Fragment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fragment")
            .field("id", &self.id)
            .field("lo", &self.lo)
            .field("hi", &self.hi)
            .field("live_keys", &self.live_keys)
            .field("used_bytes", &self.used_bytes())
            .finish()
    }
}

impl Fragment {
    /// An empty fragment for `[lo, hi)` in a fresh region.
    pub fn create(
        id: FragmentId,
        lo: Bytes,
        hi: Option<Bytes>,
        geometry: Geometry,
        epoch: u64,
        hugetlb: bool,
    ) -> Result<Fragment, StoreError> {
        let mut region = Region::create(geometry.region_len(), hugetlb)?;
        let log_start = layout::log_start(geometry.buckets);
        let words = [
            (header::MAGIC, layout::MAGIC),
            (header::LAYOUT_VERSION, layout::LAYOUT_VERSION as u64),
            (header::FRAGMENT_ID, id),
            (header::EPOCH, epoch),
            (header::BUCKET_COUNT, geometry.buckets as u64),
            (header::REGION_LEN, region.len() as u64),
            (header::GENERATION, 0),
            (header::LOG_TAIL, log_start as u64),
        ];
        for (at, value) in words {
            region.store_release(at, value);
        }
        Ok(Fragment {
            id,
            lo,
            hi,
            region,
            bucket_mask: geometry.buckets - 1,
            tail: log_start,
            epoch,
            next_seq: 1,
            generation: 0,
            used_slots: 0,
            max_slots: Geometry::slot_capacity(geometry.buckets),
            live_keys: 0,
            live_bytes: 0,
            expiries: BTreeSet::new(),
            changes: 0,
            live_fields: 0,
            hashes: HashMap::new(),
            hash_heap_bytes: 0,
        })
    }

    pub fn id(&self) -> FragmentId {
        self.id
    }
    pub fn lo(&self) -> &Bytes {
        &self.lo
    }
    pub fn hi(&self) -> Option<&Bytes> {
        self.hi.as_ref()
    }
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.lo[..] && self.hi.as_ref().is_none_or(|hi| key < &hi[..])
    }
    /// Index entries whose current record is a value (expired ones included until
    /// removed): keys and hash fields.
    pub fn live_keys(&self) -> usize {
        self.live_keys
    }
    /// Keys a client sees (DBSIZE): `live_keys` without hash fields.
    pub fn key_count(&self) -> usize {
        self.live_keys - self.live_fields
    }
    /// Bytes of the records behind `live_keys`.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }
    /// Region bytes in use: header, whole index and the log up to its tail.
    pub fn used_bytes(&self) -> usize {
        self.tail
    }
    pub fn region_len(&self) -> usize {
        self.region.len()
    }
    pub fn region(&self) -> &Region {
        &self.region
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn changes(&self) -> u64 {
        self.changes
    }
    pub fn geometry(&self) -> Geometry {
        Geometry {
            buckets: self.bucket_mask + 1,
            log_capacity: self.region.len() - layout::log_start(self.bucket_mask + 1),
        }
    }

    fn slot_pos(&self, bucket: usize, slot: usize) -> usize {
        layout::bucket_offset(bucket) + slot * 8
    }

    /// A second handle (dup) of the region's memfd, for the node to map again as an
    /// `augur_fabric::Region` and register for one-sided remote READs.
    ///
    /// Safe to hand out: the second mapping shares this one's pages (`MAP_SHARED` of one
    /// memfd), so remote readers see every write, published by the same release stores a
    /// local reader relies on; the memfd's size is sealed, so the other handle cannot
    /// truncate the pages under this mapping; the pages live until the last mapping or
    /// handle goes, so the fabric may keep serving (a retired) region after this fragment
    /// is dropped. The one rule for the holder: register it for remote READ only and never
    /// write through it, since this fragment is the single writer.
    pub fn export_fd(&self) -> std::io::Result<std::fs::File> {
        self.region.export_file()
    }

    /// Mark the region retired: a compaction or split has replaced it. The node calls this
    /// on the old fragment before any write goes to its replacement, so a remote reader
    /// holding a stale descriptor sees the marker (it reads the header after the index)
    /// and refreshes instead of returning a value that may since have been overwritten.
    /// Writes to a retired fragment are refused. Never undone.
    pub fn retire(&self) {
        self.region
            .store_release_u32(header::STATE, layout::STATE_RETIRED);
    }

    pub fn is_retired(&self) -> bool {
        self.region.load_acquire_u32(header::STATE) == layout::STATE_RETIRED
    }

    /// The log as far as it is written: decoding never reads past the tail.
    pub(super) fn log(&self) -> &[u8] {
        &self.region.bytes()[..self.tail]
    }

    /// A record of this core's own log: no crc check (decision 0016); this core is
    /// its only writer, so nothing can tear it under us.
    pub(super) fn read_record(&self, offset: usize) -> Result<RecordView<'_>, StoreError> {
        layout::decode_record_trusted(self.log(), offset).map_err(StoreError::Corrupt)
    }

    /// A record checked against its crc, for copies (compaction, split): corruption
    /// is caught where a record moves, not carried into the next region.
    pub(super) fn read_record_verified(&self, offset: usize) -> Result<RecordView<'_>, StoreError> {
        let mut last = RecordError::OutOfBounds(offset);
        for _ in 0..READ_RETRIES {
            match layout::decode_record(self.log(), offset) {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(StoreError::Corrupt(last))
    }

    /// The record at `offset`, unchecked (see [`Peek`]); None if its head is not
    /// self-consistent or it runs past the tail.
    pub(super) fn peek(&self, offset: usize) -> Option<Peek<'_>> {
        let log = self.log();
        let head = layout::decode_record_head(log, offset).ok()?;
        let expires = head.flags & layout::FLAG_EXPIRES != 0;
        let expiry_at = offset + layout::RECORD_HEADER_LEN;
        let key_start = expiry_at + if expires { 8 } else { 0 };
        let key = log.get(key_start..key_start.checked_add(head.key_len)?)?;
        let expire_at_ms = match expires {
            true => Some(layout::u64_at(log.get(expiry_at..expiry_at + 8)?, 0)),
            false => None,
        };
        Some(Peek {
            len: head.len,
            flags: head.flags,
            expire_at_ms,
            key,
        })
    }

    /// Number of index slots (used or not).
    pub(super) fn slot_count(&self) -> usize {
        (self.bucket_mask + 1) * layout::SLOTS_PER_BUCKET
    }

    /// Index slot number `n` (0..`slot_count`), as published.
    pub(super) fn slot(&self, n: usize) -> u64 {
        self.region.load_acquire(layout::HEADER_LEN + n * 8)
    }

    /// Whether the log or the index is three quarters full: the point at which a core
    /// starts rebuilding the fragment (split or compaction) in slices, early enough
    /// that the rebuild usually finishes before either fills (decision 0015).
    pub fn past_rebuild_line(&self) -> bool {
        let log_start = layout::log_start(self.bucket_mask + 1);
        let used = self.tail - log_start;
        let capacity = self.region.len() - log_start;
        used * 4 >= capacity * 3 || self.used_slots * 4 >= self.max_slots * 3
    }

    /// Log bytes left before the region is full.
    pub fn free_bytes(&self) -> usize {
        self.region.len() - self.tail
    }

    /// Index slots left before the index counts as full.
    pub fn free_slots(&self) -> usize {
        self.max_slots.saturating_sub(self.used_slots)
    }

    /// `field`: look for a hash field record (else a key's): the kind is part of the
    /// identity, as a client key may have the same bytes as a field key.
    pub(super) fn probe(
        &self,
        key: &[u8],
        hash: u64,
        field: bool,
    ) -> Result<Probe<'_>, StoreError> {
        let tag = layout::hash_tag(hash);
        let mut bucket = layout::home_bucket(hash, self.bucket_mask + 1);
        for _ in 0..=self.bucket_mask {
            for s in 0..layout::SLOTS_PER_BUCKET {
                let pos = self.slot_pos(bucket, s);
                let slot = self.region.load_acquire(pos);
                if slot == 0 {
                    // Slots are never emptied, so the key cannot be further along.
                    return Ok(Probe {
                        found: None,
                        free_slot: Some(pos),
                    });
                }
                if layout::slot_tag(slot) == tag {
                    let offset = layout::slot_offset(slot);
                    let r = self.read_record(offset)?;
                    if r.key == key && r.is_field() == field {
                        return Ok(Probe {
                            found: Some((pos, offset, r)),
                            free_slot: None,
                        });
                    }
                }
            }
            bucket = (bucket + 1) & self.bucket_mask;
        }
        Ok(Probe {
            found: None,
            free_slot: None,
        })
    }

    /// The current record of `key`, tombstones and expired records included.
    pub fn lookup_any(&self, key: &[u8]) -> Result<Option<RecordView<'_>>, StoreError> {
        self.lookup_kind(key, false)
    }

    /// The current record of `key` (a field key if `field`), tombstones included.
    pub(super) fn lookup_kind(
        &self,
        key: &[u8],
        field: bool,
    ) -> Result<Option<RecordView<'_>>, StoreError> {
        Ok(self
            .probe(key, layout::key_hash(key), field)?
            .found
            .map(|(_, _, r)| r))
    }

    /// The live value record of `key` at time `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<RecordView<'_>>, StoreError> {
        Ok(self
            .lookup_any(key)?
            .filter(|r| !r.is_tombstone() && !r.is_expired(now_ms)))
    }

    /// Would a record of `len` bytes for a new key fit right now?
    pub(super) fn has_room(&self, len: usize, new_slot: bool) -> bool {
        self.tail + len <= self.region.len() && (!new_slot || self.used_slots < self.max_slots)
    }

    pub(super) fn write(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u16,
        expire_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        if key.len() > layout::MAX_KEY_LEN {
            return Err(StoreError::KeyTooLong);
        }
        if self.is_retired() {
            // The replacement region is authoritative; this write would be lost.
            return Err(StoreError::Retired);
        }
        let hash = layout::key_hash(key);
        let field = flags & layout::FLAG_FIELD != 0;
        let probe = self.probe(key, hash, field)?;
        // What is needed of the old record, so the probe's borrow ends here.
        let found = probe
            .found
            .map(|(pos, offset, r)| (pos, offset, !r.is_tombstone(), r.len));
        let len = layout::record_len(key.len(), value.len(), expire_at_ms.is_some());
        if !self.has_room(len, found.is_none()) {
            return Err(StoreError::Full { need: len });
        }
        let slot_pos = match (found, probe.free_slot) {
            (Some((pos, _, old_live, old_len)), _) => {
                if old_live {
                    self.uncount_live(old_len, field);
                }
                pos
            }
            (None, Some(pos)) => {
                self.used_slots += 1;
                pos
            }
            (None, None) => return Err(StoreError::Full { need: len }),
        };
        let offset = self.tail;
        let version = layout::version(self.epoch, self.next_seq);
        self.next_seq += 1;
        layout::encode_record(
            &mut self.region.bytes_mut()[offset..offset + len],
            version,
            flags,
            expire_at_ms,
            key,
            value,
        );
        self.tail += len;
        self.region
            .store_release(header::LOG_TAIL, self.tail as u64);
        self.region
            .store_release(slot_pos, layout::slot_value(layout::hash_tag(hash), offset));
        if flags & layout::FLAG_TOMBSTONE == 0 {
            self.live_keys += 1;
            self.live_bytes += len;
            if field {
                self.live_fields += 1;
            }
        }
        if let Some(t) = expire_at_ms {
            self.expiries.insert((t, offset));
        }
        self.changes += 1;
        self.track_hash(key, value, flags, found.map(|(_, old, ..)| old), offset);
        Ok(())
    }

    /// Set `key` to `value`, with an absolute expiry in unix ms or none.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.write(key, value, 0, expire_at_ms)
    }

    /// Delete `key`; true if it held a live value at `now_ms`.
    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> Result<bool, StoreError> {
        let was_live = match self.lookup_any(key)? {
            None => return Ok(false),
            Some(r) if r.is_tombstone() => return Ok(false),
            Some(r) => !r.is_expired(now_ms),
        };
        self.write(key, &[], layout::FLAG_TOMBSTONE, None)?;
        Ok(was_live)
    }

    /// Remove keys whose expiry has passed, at most `budget` of them; returns how many.
    /// Stops early (leaving the rest for compaction) if the log is full.
    pub fn expire_due(&mut self, now_ms: u64, budget: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        while removed < budget {
            let Some(&(at, offset)) = self.expiries.first() else {
                break;
            };
            if at > now_ms {
                break;
            }
            let r = self.read_record(offset)?;
            let (key, kind) = (Bytes::copy_from_slice(r.key), r.flags & layout::FLAG_FIELD);
            let current = self.probe(&key, layout::key_hash(&key), kind != 0)?.found;
            if current.map(|(_, o, _)| o) == Some(offset) {
                match self.write(&key, &[], layout::FLAG_TOMBSTONE | kind, None) {
                    Ok(()) => removed += 1,
                    Err(StoreError::Full { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
            self.expiries.pop_first();
        }
        Ok(removed)
    }

    /// Number of pending expiry entries (for INFO's `expires`; may include stale ones).
    pub fn expiring(&self) -> usize {
        self.expiries.len()
    }

    /// Visit every current record (one per key ever written since the last copy).
    pub fn for_each_current(
        &self,
        mut f: impl FnMut(usize, RecordView<'_>),
    ) -> Result<(), StoreError> {
        for bucket in 0..=self.bucket_mask {
            for s in 0..layout::SLOTS_PER_BUCKET {
                let slot = self.region.load_acquire(self.slot_pos(bucket, s));
                if slot != 0 {
                    let offset = layout::slot_offset(slot);
                    f(offset, self.read_record(offset)?);
                }
            }
        }
        Ok(())
    }

    /// All live keys at `now_ms`, sorted (hash fields are not keys).
    pub fn sorted_keys(&self, now_ms: u64) -> Result<Vec<Bytes>, StoreError> {
        let mut keys = Vec::with_capacity(self.key_count());
        self.for_each_current(|_, r| {
            if !r.is_tombstone() && !r.is_expired(now_ms) && !r.is_field() {
                keys.push(Bytes::copy_from_slice(r.key));
            }
        })?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Copy the live records of `[lo, hi)` into a fresh fragment: the same bytes,
    /// versions and crcs, without tombstones, expired or replaced records.
    fn copy_range(
        &self,
        id: FragmentId,
        lo: Bytes,
        hi: Option<Bytes>,
        geometry: Geometry,
        now_ms: u64,
        hugetlb: bool,
    ) -> Result<Fragment, StoreError> {
        let mut out = Fragment::create(id, lo, hi, geometry, self.epoch, hugetlb)?;
        out.next_seq = self.next_seq;
        out.generation = self.generation + 1;
        out.region.store_release(header::GENERATION, out.generation);
        let mut failure = None;
        self.for_each_current(|offset, r| {
            if failure.is_some()
                || r.is_tombstone()
                || r.is_expired(now_ms)
                || !out.contains(r.route_key())
            {
                return;
            }
            // Fields of a deleted, expired or overwritten hash are dropped here: the
            // copy is where DEL's O(1) logical delete is paid for in bytes.
            match self.field_is_current(&r, now_ms) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    failure = Some(e);
                    return;
                }
            }
            // Checked against its crc whenever a record moves (local reads skip it).
            let r = match self.read_record_verified(offset) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e);
                    return;
                }
            };
            if let Err(e) = out.adopt_record(&self.log()[offset..offset + r.len], r) {
                failure = Some(e);
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => {
                out.rebuild_hashes()?;
                Ok(out)
            }
        }
    }

    /// A live record of `len` bytes (a hash field if `field`) stopped being current.
    fn uncount_live(&mut self, len: usize, field: bool) {
        self.live_keys -= 1;
        self.live_bytes -= len;
        if field {
            self.live_fields -= 1;
        }
    }

    /// Append encoded record bytes to the log and point `slot_pos` at them. The tail
    /// is published before the slot, so a reader never follows a slot past the tail.
    fn append_encoded(&mut self, bytes: &[u8], slot_pos: usize, hash: u64) -> usize {
        let offset = self.tail;
        self.region.bytes_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.tail += bytes.len();
        self.region
            .store_release(header::LOG_TAIL, self.tail as u64);
        self.region
            .store_release(slot_pos, layout::slot_value(layout::hash_tag(hash), offset));
        offset
    }

    /// Append an already encoded record verbatim (compaction, split, migration).
    fn adopt_record(&mut self, bytes: &[u8], r: RecordView<'_>) -> Result<(), StoreError> {
        let hash = layout::key_hash(r.key);
        let probe = self.probe(r.key, hash, r.is_field())?;
        let Some(slot_pos) = probe.free_slot.filter(|_| probe.found.is_none()) else {
            return Err(StoreError::Full { need: bytes.len() });
        };
        if !self.has_room(bytes.len(), true) {
            return Err(StoreError::Full { need: bytes.len() });
        }
        let offset = self.append_encoded(bytes, slot_pos, hash);
        self.used_slots += 1;
        self.live_keys += 1;
        self.live_bytes += bytes.len();
        if let Some(t) = r.expire_at_ms {
            self.expiries.insert((t, offset));
        }
        Ok(())
    }

    /// Append an already encoded record verbatim as its key's current record, taking
    /// over the key's slot if it has one here (an incremental rebuild's copy and
    /// catch-up, which may apply several records of one key). Keeps the counters,
    /// the expiry queue and `changes`, not the hash field sets (the caller does, see
    /// `track_hash`). Returns the record's offset here and the one it replaced.
    pub(super) fn place_record(
        &mut self,
        bytes: &[u8],
        r: &RecordView<'_>,
    ) -> Result<(usize, Option<usize>), StoreError> {
        let hash = layout::key_hash(r.key);
        let field = r.is_field();
        let probe = self.probe(r.key, hash, field)?;
        // What is needed of the replaced record, so the probe's borrow ends here.
        let found = probe
            .found
            .map(|(pos, old, replaced)| (pos, old, !replaced.is_tombstone(), replaced.len));
        if !self.has_room(bytes.len(), found.is_none()) {
            return Err(StoreError::Full { need: bytes.len() });
        }
        let (slot_pos, old) = match (found, probe.free_slot) {
            (Some((pos, old, live, len)), _) => {
                if live {
                    self.uncount_live(len, field);
                }
                (pos, Some(old))
            }
            (None, Some(pos)) => {
                self.used_slots += 1;
                (pos, None)
            }
            (None, None) => return Err(StoreError::Full { need: bytes.len() }),
        };
        let offset = self.append_encoded(bytes, slot_pos, hash);
        if !r.is_tombstone() {
            self.live_keys += 1;
            self.live_bytes += bytes.len();
            if field {
                self.live_fields += 1;
            }
        }
        if let Some(t) = r.expire_at_ms {
            self.expiries.insert((t, offset));
        }
        self.changes += 1;
        Ok((offset, old))
    }

    /// A compacted copy with room for at least `need` more bytes, in a region sized
    /// from `target_len` and the records' average size.
    pub fn compact(
        &self,
        target_len: usize,
        need: usize,
        now_ms: u64,
        hugetlb: bool,
    ) -> Result<Fragment, StoreError> {
        // A fragment is compacted (not split) only while its live data fits in half
        // a region, so the default geometry has room to spare; only a fragment that
        // cannot split (one huge value) grows, to twice what it must hold.
        let geometry = Geometry::sized_for(target_len, self.average_record()).with_room_for(
            // `need` may be many records (an HSET of many fields): a record is at
            // least 32 bytes, so this many slots always suffice for it.
            2 * (self.live_keys + 1) + need / 32,
            2 * (self.live_bytes + need),
        );
        self.copy_range(
            self.id,
            self.lo.clone(),
            self.hi.clone(),
            geometry,
            now_ms,
            hugetlb,
        )
    }

    pub(super) fn average_record(&self) -> usize {
        self.live_bytes.checked_div(self.live_keys).unwrap_or(64)
    }

    /// The key to split at: the median of a sample of live keys, strictly above the
    /// smallest sampled key so both halves are non-empty. None with fewer than 2 keys.
    pub fn split_key(&self, now_ms: u64) -> Result<Option<Bytes>, StoreError> {
        const SAMPLE: usize = 1024;
        let stride = (self.key_count() / SAMPLE).max(1);
        let mut seen = 0usize;
        let mut sample = Vec::with_capacity(SAMPLE.min(self.live_keys));
        // Only keys are split points (never a field key): a hash's fields route with
        // its key, so no split can separate them.
        self.for_each_current(|_, r| {
            if !r.is_tombstone() && !r.is_expired(now_ms) && !r.is_field() {
                if seen.is_multiple_of(stride) {
                    sample.push(Bytes::copy_from_slice(r.key));
                }
                seen += 1;
            }
        })?;
        if sample.len() < 2 {
            return Ok(None);
        }
        sample.sort_unstable();
        Ok(Some(sample[sample.len() / 2].clone()))
    }

    /// Split at `at` into `[lo, at)` (keeping this id) and `[at, hi)` (id `upper_id`),
    /// each in a fresh region sized from `target_len`.
    pub fn split(
        &self,
        at: Bytes,
        upper_id: FragmentId,
        target_len: usize,
        now_ms: u64,
        hugetlb: bool,
    ) -> Result<(Fragment, Fragment), StoreError> {
        self.split_with_room(at, upper_id, target_len, 0, now_ms, hugetlb)
    }

    /// `split`, each half with room for `need` more bytes besides what it holds.
    ///
    /// Each half is sized by what it really holds (one pass over the record heads and
    /// keys, no values): room for a quarter more keys than it gets, and twice its
    /// bytes. A large value makes its half large and the other small; a hash's fields
    /// all go to the side of its key. Halves of an ordinary fragment (a median split,
    /// small records) get the default geometry, as before.
    pub fn split_with_room(
        &self,
        at: Bytes,
        upper_id: FragmentId,
        target_len: usize,
        need: usize,
        now_ms: u64,
        hugetlb: bool,
    ) -> Result<(Fragment, Fragment), StoreError> {
        let [(lower_keys, lower_bytes), (upper_keys, upper_bytes)] =
            self.measure_sides(&at, now_ms);
        let base = Geometry::sized_for(target_len, self.average_record());
        let side =
            |keys: usize, bytes: usize| base.with_room_for(keys + keys / 4 + 1, 2 * bytes + need);
        let lower = self.copy_range(
            self.id,
            self.lo.clone(),
            Some(at.clone()),
            side(lower_keys, lower_bytes),
            now_ms,
            hugetlb,
        )?;
        let upper = self.copy_range(
            upper_id,
            at,
            self.hi.clone(),
            side(upper_keys, upper_bytes),
            now_ms,
            hugetlb,
        )?;
        Ok((lower, upper))
    }

    /// `(live records, their bytes)` below `at` and from `at` on, by route key, at
    /// `now_ms` (fields of dead hashes counted too: an overestimate is harmless).
    fn measure_sides(&self, at: &[u8], now_ms: u64) -> [(usize, usize); 2] {
        let mut sides = [(0, 0); 2];
        for n in 0..self.slot_count() {
            let slot = self.slot(n);
            if slot == 0 {
                continue;
            }
            if let Some(p) = self.peek(layout::slot_offset(slot)) {
                if p.is_live(now_ms) {
                    let side = &mut sides[usize::from(p.route_key() >= at)];
                    side.0 += 1;
                    side.1 += p.len;
                }
            }
        }
        sides
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store) fn frag(target: usize) -> Fragment {
        Fragment::create(
            1,
            Bytes::new(),
            None,
            Geometry::sized_for(target, 64),
            1,
            false,
        )
        .expect("fragment")
    }

    #[test]
    fn append_lookup_overwrite_delete() {
        let mut f = frag(1 << 20);
        f.put(b"a", b"1", None).unwrap();
        f.put(b"b", b"2", None).unwrap();
        assert_eq!(f.get(b"a", 0).unwrap().unwrap().value, b"1");
        f.put(b"a", b"one", None).unwrap();
        assert_eq!(f.get(b"a", 0).unwrap().unwrap().value, b"one");
        assert_eq!(f.live_keys(), 2);
        assert!(f.delete(b"a", 0).unwrap());
        assert!(!f.delete(b"a", 0).unwrap());
        assert!(f.get(b"a", 0).unwrap().is_none());
        assert_eq!(f.live_keys(), 1);
        assert!(f.get(b"zzz", 0).unwrap().is_none());
    }

    #[test]
    fn expiry_lazy_and_active() {
        let mut f = frag(1 << 20);
        f.put(b"t", b"v", Some(100)).unwrap();
        f.put(b"p", b"v", None).unwrap();
        assert!(f.get(b"t", 99).unwrap().is_some());
        assert!(f.get(b"t", 100).unwrap().is_none(), "lazy expiry hides it");
        assert_eq!(f.live_keys(), 2, "not yet removed");
        assert_eq!(f.expire_due(100, 10).unwrap(), 1);
        assert_eq!(f.live_keys(), 1);
        // A rewrite without TTL makes the old expiry entry stale: nothing removed.
        f.put(b"u", b"v", Some(200)).unwrap();
        f.put(b"u", b"w", None).unwrap();
        assert_eq!(f.expire_due(300, 10).unwrap(), 0);
        assert_eq!(f.get(b"u", 300).unwrap().unwrap().value, b"w");
    }

    #[test]
    fn fills_then_compacts_keeping_live_data() {
        let mut f = frag(64 << 10);
        let mut written = 0u32;
        // Overwrite a small key set until the log is full.
        loop {
            let k = format!("k{}", written % 50);
            match f.put(k.as_bytes(), &written.to_le_bytes(), None) {
                Ok(()) => written += 1,
                Err(StoreError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(written > 50);
        let c = f.compact(64 << 10, 64, 0, false).unwrap();
        assert!(c.used_bytes() < f.used_bytes() / 2);
        assert_eq!(c.live_keys(), 50);
        for i in 0..50u32 {
            let last = (0..written).rev().find(|w| w % 50 == i).unwrap();
            let k = format!("k{i}");
            assert_eq!(
                c.get(k.as_bytes(), 0).unwrap().unwrap().value,
                last.to_le_bytes()
            );
        }
        assert_eq!(c.generation(), 1);
    }

    #[test]
    fn split_partitions_keys_at_median() {
        let mut f = frag(4 << 20);
        for i in 0..2000u32 {
            f.put(format!("key:{i:06}").as_bytes(), b"v", None).unwrap();
        }
        f.delete(b"key:000001", 0).unwrap();
        let at = f.split_key(0).unwrap().unwrap();
        let (lo, hi) = f.split(at.clone(), 2, 4 << 20, 0, false).unwrap();
        assert_eq!(lo.live_keys() + hi.live_keys(), 1999);
        assert!(
            lo.live_keys() > 700 && hi.live_keys() > 700,
            "median-ish split"
        );
        assert_eq!(hi.lo(), &at);
        for k in lo.sorted_keys(0).unwrap() {
            assert!(k < at);
        }
        for k in hi.sorted_keys(0).unwrap() {
            assert!(k >= at);
        }
        assert!(lo.get(b"key:000001", 0).unwrap().is_none());
    }

    #[test]
    fn retire_sets_the_header_state_and_refuses_writes() {
        let mut f = frag(1 << 20);
        f.put(b"a", b"1", None).unwrap();
        let h = layout::decode_header(f.region().bytes()).unwrap();
        assert_eq!(h.state, layout::STATE_LIVE);
        assert_eq!(h.layout_version, layout::LAYOUT_VERSION);
        assert!(!f.is_retired());
        let c = f.compact(1 << 20, 0, 0, false).unwrap();
        f.retire();
        assert!(f.is_retired());
        let h = layout::decode_header(f.region().bytes()).unwrap();
        assert_eq!(h.state, layout::STATE_RETIRED);
        assert_eq!(
            h.layout_version,
            layout::LAYOUT_VERSION,
            "neighbour untouched"
        );
        assert!(matches!(f.put(b"a", b"2", None), Err(StoreError::Retired)));
        assert!(matches!(f.delete(b"a", 0), Err(StoreError::Retired)));
        assert_eq!(
            f.get(b"a", 0).unwrap().unwrap().value,
            b"1",
            "still readable"
        );
        assert!(!c.is_retired(), "the copy is live");
    }

    #[test]
    fn export_fd_maps_the_same_pages() {
        use std::os::unix::fs::FileExt;
        let mut f = frag(1 << 20);
        let file = f.export_fd().unwrap();
        f.put(b"k", b"value", None).unwrap();
        let mut head = [0u8; layout::HEADER_LEN];
        file.read_exact_at(&mut head, 0).unwrap();
        let h = layout::decode_header(&head).unwrap();
        assert_eq!(h.magic, layout::MAGIC);
        assert_eq!(h.log_tail as usize, f.used_bytes());
        let start = layout::log_start(f.geometry().buckets);
        let mut rec = vec![0u8; f.used_bytes() - start];
        file.read_exact_at(&mut rec, start as u64).unwrap();
        assert_eq!(layout::decode_record(&rec, 0).unwrap().value, b"value");
    }

    /// Local reads skip the crc (the core wrote the bytes itself), so a flipped value
    /// byte is caught where the record moves: a compaction refuses to carry it into
    /// a new region, and a remote reader's decode rejects it. A flipped length or
    /// flags byte is still an error on the local read.
    #[test]
    fn flipped_byte_in_region_is_caught_where_the_record_moves() {
        let mut f = frag(1 << 20);
        f.put(b"key", b"value", None).unwrap();
        let start = layout::log_start(f.geometry().buckets);
        // Flip one value byte of the record in place.
        f.region.bytes_mut()[start + layout::RECORD_HEADER_LEN + 4] ^= 1;
        assert!(matches!(
            f.compact(1 << 20, 0, 0, false),
            Err(StoreError::Corrupt(_))
        ));
        assert!(layout::decode_record(&f.region.bytes()[..f.used_bytes()], start).is_err());
        // A flipped flags byte makes the record unreadable even locally.
        f.region.bytes_mut()[start + layout::RECORD_HEADER_LEN + 4] ^= 1;
        f.region.bytes_mut()[start + layout::record::FLAGS + 1] ^= 0x80;
        assert!(matches!(f.get(b"key", 0), Err(StoreError::Corrupt(_))));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, Vec<u8>, Option<u64>),
            Delete(u8),
            Expire(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300), proptest::option::of(1u64..100))
                    .prop_map(|(k, v, t)| Op::Put(k, v, t)),
                2 => any::<u8>().prop_map(Op::Delete),
                1 => (1u64..100).prop_map(Op::Expire),
            ]
        }

        fn key(k: u8) -> Vec<u8> {
            format!("key-{k:03}").into_bytes()
        }

        /// Apply `f`; when the fragments are full, do what a shard does (split if
        /// big, else compact) and retry.
        fn with_room(
            parts: &mut Vec<Fragment>,
            k: &[u8],
            next_id: &mut u64,
            mut f: impl FnMut(&mut Fragment) -> Result<(), StoreError>,
        ) {
            for _ in 0..4 {
                let i = parts
                    .iter()
                    .position(|p| p.contains(k))
                    .expect("some fragment holds every key");
                match f(&mut parts[i]) {
                    Ok(()) => return,
                    Err(StoreError::Full { need }) => {
                        let frag = parts.remove(i);
                        let target = 16 << 10;
                        let half = Geometry::sized_for(target, 64).log_capacity / 2;
                        let at = if frag.live_bytes() + need > half {
                            frag.split_key(0).unwrap()
                        } else {
                            None
                        };
                        match at {
                            Some(at) => {
                                *next_id += 1;
                                let (a, b) = frag.split(at, *next_id, target, 0, false).unwrap();
                                parts.push(a);
                                parts.push(b);
                            }
                            None => parts.push(frag.compact(target, need, 0, false).unwrap()),
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no room after making room");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn fragments_agree_with_a_map(ops in proptest::collection::vec(op(), 1..400)) {
                let mut parts = vec![Fragment::create(1, Bytes::new(), None, Geometry::sized_for(16 << 10, 64), 1, false).unwrap()];
                let mut model: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)> = BTreeMap::new();
                let mut next_id = 1;
                let mut now = 0u64;
                for op in ops {
                    match op {
                        Op::Put(k, v, ttl) => {
                            let k = key(k);
                            let at = ttl.map(|t| now + t);
                            with_room(&mut parts, &k, &mut next_id, |f| f.put(&k, &v, at));
                            model.insert(k, (v, at));
                        }
                        Op::Delete(k) => {
                            let k = key(k);
                            let live = model.get(&k).is_some_and(|(_, at)| at.is_none_or(|t| t > now));
                            let mut deleted = false;
                            with_room(&mut parts, &k, &mut next_id, |f| f.delete(&k, now).map(|d| deleted = d));
                            prop_assert_eq!(deleted, live);
                            model.remove(&k);
                        }
                        Op::Expire(dt) => {
                            now += dt;
                            for p in parts.iter_mut() {
                                p.expire_due(now, usize::MAX).unwrap();
                            }
                        }
                    }
                }
                let mut seen = Vec::new();
                for p in &parts {
                    seen.extend(p.sorted_keys(now).unwrap());
                }
                seen.sort();
                let expected: Vec<Vec<u8>> = model
                    .iter()
                    .filter(|(_, (_, at))| at.is_none_or(|t| t > now))
                    .map(|(k, _)| k.clone())
                    .collect();
                prop_assert_eq!(seen.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), expected);
                for (k, (v, at)) in &model {
                    let p = parts.iter().find(|p| p.contains(k)).unwrap();
                    let got = p.get(k, now).unwrap();
                    if at.is_none_or(|t| t > now) {
                        let r = got.expect("live key readable");
                        prop_assert_eq!(r.value, &v[..]);
                        prop_assert_eq!(r.expire_at_ms, *at);
                    } else {
                        prop_assert!(got.is_none());
                    }
                }
            }
        }
    }

    #[test]
    fn geometry_stays_within_target_and_grows_for_headroom() {
        let g = Geometry::sized_for(16 << 20, 72);
        assert!(g.region_len() <= 16 << 20 && g.region_len() > 7 << 20);
        assert_eq!(g.with_room_for(1000, 1000), g, "already roomy enough");
        let big = g.with_room_for(2_000_000, 200 << 20);
        assert!(Geometry::slot_capacity(big.buckets) >= 2_000_000);
        assert!(
            Geometry::slot_capacity(big.buckets / 2) < 2_000_000,
            "grown no more than needed"
        );
        assert!(big.log_capacity >= 200 << 20);
    }
}
