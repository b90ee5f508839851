//! A fragment rebuilt from a byte copy of its region (live migration, issue #9).
//!
//! The new owner B allocates an empty region of the source's length, READs the source
//! region's bytes `[0, tail)` into it (header, index, log), and after the source has
//! fenced writes re-reads the header, the whole index and the log appended since. Then
//! `Fragment::from_copy` turns those bytes into a fragment without replaying a write:
//! same offsets, same index, same records. The bytes came from a peer, so every field
//! is checked before it is trusted, in one pass over the log and one over the index.
//!
//! Live migration uses [`CopyBuilder`] instead: it never copies the index but rebuilds
//! it from the log as pieces arrive, and [`delta_crc`] proves log ranges equal, so the
//! work after the fence is proportional to the last delta (decision 0011).
//!
//! `Fragment::content_crc` lets both sides prove the copy exact: the source (fenced,
//! usually retired) and the copy give the same crc exactly when their headers (minus the
//! per-copy words, see `content_crc`), indexes and logs up to the tail are equal.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use bytes::Bytes;

use super::fragment::{Fragment, FragmentId, Geometry, StoreError};
use super::layout::{self, header, RecordError};
use super::region::Region;

/// What was wrong with a copied region. Named precisely: a bad copy is a bug or an
/// attack on the peer's side, and the operator needs to know which check it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("{0} bytes are fewer than a region header")]
    ShortHeader(usize),
    #[error("bad magic {0:#018x}")]
    BadMagic(u64),
    #[error("layout version {0}, this node reads {expected}", expected = layout::LAYOUT_VERSION)]
    BadLayoutVersion(u32),
    #[error("unknown state word {0}")]
    BadState(u32),
    #[error("header names fragment {found}, the copy was made for {expected}")]
    WrongFragment { expected: u64, found: u64 },
    #[error("header region length {header} is above the limit of {limit} bytes")]
    RegionTooLong { header: u64, limit: usize },
    #[error("bucket count {0} is not a non-zero power of two")]
    BadBucketCount(u64),
    #[error("an index of {buckets} buckets does not fit a region of {region_len} bytes")]
    IndexTooBig { buckets: u64, region_len: u64 },
    #[error("log tail {tail} lies outside the log [{log_start}, {region_len}]")]
    BadTail {
        tail: u64,
        log_start: usize,
        region_len: u64,
    },
    #[error("log is not a sequence of valid records: {0}")]
    BadLog(RecordError),
    #[error("record at {0} has non-zero padding")]
    BadPadding(usize),
    #[error("record at {offset} is from epoch {found}, after the region's epoch {epoch}")]
    FutureEpoch {
        offset: usize,
        found: u64,
        epoch: u64,
    },
    #[error("record at {0} used the last sequence number")]
    SequenceExhausted(usize),
    #[error("index uses {used} slots, more than its limit of {max}")]
    IndexOverloaded { used: usize, max: usize },
    #[error("slot {slot} points at {offset}, outside the log [{log_start}, {tail})")]
    SlotOutOfLog {
        slot: usize,
        offset: usize,
        log_start: usize,
        tail: usize,
    },
    #[error("slot {slot} points at {offset}, which is not a valid record: {error}")]
    SlotNotRecord {
        slot: usize,
        offset: usize,
        error: RecordError,
    },
    #[error("slot {slot}: its tag does not match its key's hash")]
    BadTag { slot: usize },
    #[error("slot {slot}: a probe from the key's home bucket {home} ends before reaching it")]
    Unreachable { slot: usize, home: usize },
    #[error("slot {slot} points at {offset}, not the newest record of its key in the log")]
    NotNewest { slot: usize, offset: usize },
    #[error("slot {slot}: its key is outside the fragment's range")]
    OutOfRange { slot: usize },
    #[error("{0} keys in the log have no index slot")]
    Unindexed(usize),
}

/// A copied region's header, checked on its own. A copier parses the first READ with it
/// to learn how long a region to allocate and which bytes to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyHeader {
    pub fragment_id: FragmentId,
    pub epoch: u64,
    pub generation: u64,
    pub bucket_count: usize,
    /// The source region's length: allocate at least this much.
    pub region_len: usize,
    pub log_start: usize,
    pub tail: usize,
    /// The source had retired its region when these bytes were read.
    pub retired: bool,
}

impl CopyHeader {
    /// Check the header at the start of `bytes` (at least `HEADER_LEN` of them): known
    /// magic, layout version and state, a power-of-two bucket count whose index fits
    /// the region, a region no longer than `max_region_len` (the caller's bound on
    /// what a peer may make it allocate), and a log tail inside the log.
    pub fn parse(bytes: &[u8], max_region_len: usize) -> Result<CopyHeader, CopyError> {
        let h = layout::decode_header(bytes).ok_or(CopyError::ShortHeader(bytes.len()))?;
        if h.magic != layout::MAGIC {
            return Err(CopyError::BadMagic(h.magic));
        }
        if h.layout_version != layout::LAYOUT_VERSION {
            return Err(CopyError::BadLayoutVersion(h.layout_version));
        }
        let retired = match h.state {
            layout::STATE_LIVE => false,
            layout::STATE_RETIRED => true,
            other => return Err(CopyError::BadState(other)),
        };
        let region_len = usize::try_from(h.region_len)
            .ok()
            .filter(|&len| len <= max_region_len)
            .ok_or(CopyError::RegionTooLong {
                header: h.region_len,
                limit: max_region_len,
            })?;
        if h.bucket_count == 0 || !h.bucket_count.is_power_of_two() {
            return Err(CopyError::BadBucketCount(h.bucket_count));
        }
        let too_big = CopyError::IndexTooBig {
            buckets: h.bucket_count,
            region_len: h.region_len,
        };
        let bucket_count = usize::try_from(h.bucket_count).map_err(|_| too_big.clone())?;
        let log_start = bucket_count
            .checked_mul(layout::BUCKET_LEN)
            .and_then(|index| index.checked_add(layout::HEADER_LEN))
            .filter(|&start| start <= region_len)
            .ok_or(too_big)?;
        let tail = usize::try_from(h.log_tail)
            .ok()
            .filter(|&tail| tail >= log_start && tail <= region_len)
            .ok_or(CopyError::BadTail {
                tail: h.log_tail,
                log_start,
                region_len: h.region_len,
            })?;
        Ok(CopyHeader {
            fragment_id: h.fragment_id,
            epoch: h.epoch,
            generation: h.generation,
            bucket_count,
            region_len,
            log_start,
            tail,
            retired,
        })
    }

    /// The index bytes, `[HEADER_LEN, log_start)`.
    pub fn index_range(&self) -> Range<usize> {
        layout::HEADER_LEN..self.log_start
    }
}

/// What one pass over the log learns.
struct LogScan<'a> {
    /// Each key's newest record (the last one in log order): the one its slot must name.
    /// Keyed by (is a hash field, key): a field and a client key may share bytes.
    newest: HashMap<(bool, &'a [u8]), usize>,
    /// The highest version and where it is.
    max_version: Option<(u64, usize)>,
    records: u64,
}

/// Walk `[log_start, tail)` record by record: it must be exactly a sequence of valid
/// records (length, flags, crc, zero padding), ending at the tail.
fn scan_log(upto_tail: &[u8], log_start: usize) -> Result<LogScan<'_>, CopyError> {
    let mut scan = LogScan {
        newest: HashMap::new(),
        max_version: None,
        records: 0,
    };
    let mut offset = log_start;
    while offset < upto_tail.len() {
        let r = layout::decode_record(upto_tail, offset).map_err(CopyError::BadLog)?;
        // In bounds: decode_record checked that `[offset, offset + len)` is.
        let unpadded = offset + r.value_start() + r.value.len();
        let end = offset + r.len;
        if upto_tail[unpadded..end].iter().any(|&b| b != 0) {
            return Err(CopyError::BadPadding(offset));
        }
        scan.newest.insert((r.is_field(), r.key), offset);
        if scan.max_version.is_none_or(|(v, _)| r.version > v) {
            scan.max_version = Some((r.version, offset));
        }
        scan.records += 1;
        offset = end;
    }
    Ok(scan)
}

fn in_range(key: &[u8], lo: &[u8], hi: Option<&Bytes>) -> bool {
    key >= lo && hi.is_none_or(|hi| key < &hi[..])
}

/// The counters a fragment keeps in memory, rebuilt from its index.
#[derive(Default)]
struct IndexScan {
    used_slots: usize,
    live_keys: usize,
    live_bytes: usize,
    expiries: BTreeSet<(u64, usize)>,
}

/// Check every slot of the index and count what it holds. A used slot must name the
/// newest record of its key (so no key is indexed twice, and none points at a stale,
/// torn or made-up record), carry its key's tag, be reachable by the store's probe
/// from the key's home bucket (no empty slot in between), and the key must lie in
/// `[lo, hi)`. Every key in the log must have a slot.
fn scan_index<'a>(
    bytes: &'a [u8],
    h: &CopyHeader,
    mut log: LogScan<'a>,
    lo: &[u8],
    hi: Option<&Bytes>,
) -> Result<IndexScan, CopyError> {
    let slots = h.bucket_count * layout::SLOTS_PER_BUCKET;
    let slot_at = |p: usize| layout::u64_at(bytes, layout::HEADER_LEN + p * 8);
    let max = Geometry::slot_capacity(h.bucket_count);
    // Start right after an empty slot, so that `run` (the used slots since the last
    // empty one) is exact for every slot, wrap-around included. An index within its
    // load limit always has one.
    let first_empty = (0..slots)
        .find(|&p| slot_at(p) == 0)
        .ok_or(CopyError::IndexOverloaded { used: slots, max })?;
    let upto_tail = &bytes[..h.tail];
    let mut out = IndexScan::default();
    let mut run = 0usize;
    for step in 1..=slots {
        let p = (first_empty + step) % slots;
        let slot = slot_at(p);
        if slot == 0 {
            run = 0;
            continue;
        }
        let offset = layout::slot_offset(slot);
        if offset < h.log_start || offset >= h.tail {
            return Err(CopyError::SlotOutOfLog {
                slot: p,
                offset,
                log_start: h.log_start,
                tail: h.tail,
            });
        }
        let r =
            layout::decode_record(upto_tail, offset).map_err(|error| CopyError::SlotNotRecord {
                slot: p,
                offset,
                error,
            })?;
        let hash = layout::key_hash(r.key);
        if layout::slot_tag(slot) != layout::hash_tag(hash) {
            return Err(CopyError::BadTag { slot: p });
        }
        let home = layout::home_bucket(hash, h.bucket_count);
        let distance = (p + slots - home * layout::SLOTS_PER_BUCKET) % slots;
        if distance > run {
            return Err(CopyError::Unreachable { slot: p, home });
        }
        // Removed once claimed: a second slot for the same key finds nothing.
        if log.newest.remove(&(r.is_field(), r.key)) != Some(offset) {
            return Err(CopyError::NotNewest { slot: p, offset });
        }
        if !in_range(r.route_key(), lo, hi) {
            return Err(CopyError::OutOfRange { slot: p });
        }
        out.used_slots += 1;
        if !r.is_tombstone() {
            out.live_keys += 1;
            out.live_bytes += r.len;
            if let Some(t) = r.expire_at_ms {
                out.expiries.insert((t, offset));
            }
        }
        run += 1;
    }
    if out.used_slots > max {
        return Err(CopyError::IndexOverloaded {
            used: out.used_slots,
            max,
        });
    }
    if !log.newest.is_empty() {
        return Err(CopyError::Unindexed(log.newest.len()));
    }
    Ok(out)
}

impl Fragment {
    /// A fragment over `region`, whose bytes `[0, tail)` a peer copied from fragment
    /// `id`'s region (the header's log tail; bytes past it are never read). Nothing is
    /// replayed: the copy keeps the source's offsets, index, records, epoch and
    /// generation. Every field is validated first (see `CopyError`); then the header's
    /// state is set live and its region length to this region's (which may be longer
    /// than the source's, e.g. rounded up to huge pages).
    ///
    /// Rebuilt in memory: used slots, live keys and bytes and the expiry queue from the
    /// index (so stale expiry entries the source still carried are gone); the next
    /// sequence number from the highest version in the log (one past it, or 1 if the
    /// log has none of the region's epoch); `changes` is the number of records in the
    /// log, which only grows for a given generation, so a key listing cached for an
    /// earlier copy of this fragment is never mistaken for current.
    ///
    /// Cost: one pass over the log (crc of every record) and one over the index, and a
    /// map of the distinct keys in the log (borrowed, about 40 bytes each).
    pub fn from_copy(
        mut region: Region,
        id: FragmentId,
        lo: Bytes,
        hi: Option<Bytes>,
    ) -> Result<Fragment, StoreError> {
        let h = CopyHeader::parse(region.bytes(), region.len())?;
        if h.fragment_id != id {
            return Err(CopyError::WrongFragment {
                expected: id,
                found: h.fragment_id,
            }
            .into());
        }
        let bytes = region.bytes();
        let log = scan_log(&bytes[..h.tail], h.log_start)?;
        let records = log.records;
        let max_version = log.max_version;
        let counted = scan_index(bytes, &h, log, &lo, hi.as_ref())?;
        let next_seq = next_seq_after(max_version, h.epoch)?;
        if h.region_len != region.len() {
            region.store_release(header::REGION_LEN, region.len() as u64);
        }
        region.store_release_u32(header::STATE, layout::STATE_LIVE);
        let mut fragment = Fragment {
            id,
            lo,
            hi,
            region,
            bucket_mask: h.bucket_count - 1,
            tail: h.tail,
            epoch: h.epoch,
            next_seq,
            generation: h.generation,
            used_slots: counted.used_slots,
            max_slots: Geometry::slot_capacity(h.bucket_count),
            live_keys: counted.live_keys,
            live_bytes: counted.live_bytes,
            expiries: counted.expiries,
            changes: records,
            live_fields: 0,
            hashes: HashMap::new(),
            hash_heap_bytes: 0,
        };
        fragment.rebuild_hashes()?;
        Ok(fragment)
    }

    /// `(tail, crc32c of the region bytes [0, tail))`, for proving a copy exact. The
    /// header's `state` (the source is retired by then, the copy is live) and
    /// `region_len` (the copy's region may be longer) are read as zero; every other
    /// header word (magic, layout version, fragment id, epoch, log tail, bucket count,
    /// generation), the whole index and the log up to the tail are covered, so any
    /// difference there changes the crc (crc32c catches every error burst of up to 32
    /// bits, so certainly any one changed byte).
    pub fn content_crc(&self) -> (usize, u32) {
        let bytes = &self.region.bytes()[..self.tail];
        let mut head = [0u8; layout::HEADER_LEN];
        head.copy_from_slice(&bytes[..layout::HEADER_LEN]);
        head[header::STATE..header::STATE + 4].fill(0);
        head[header::REGION_LEN..header::REGION_LEN + 8].fill(0);
        let crc = crc32c::crc32c(&head);
        (
            self.tail,
            crc32c::crc32c_append(crc, &bytes[layout::HEADER_LEN..]),
        )
    }

    /// Absolute offset of the first unwritten log byte (= `used_bytes`): a copier
    /// reads `[0, log_tail)`.
    pub fn log_tail(&self) -> usize {
        self.tail
    }

    /// Absolute offset where the log starts (the index ends).
    pub fn log_start(&self) -> usize {
        layout::log_start(self.bucket_mask + 1)
    }

    /// The index bytes, `[HEADER_LEN, log_start)`: slots change in place, so a byte
    /// copier must re-read all of them after the source is fenced (`CopyBuilder`
    /// rebuilds them from the log instead).
    pub fn index_range(&self) -> Range<usize> {
        layout::HEADER_LEN..self.log_start()
    }
}

/// The header bytes a migration's checksums cover: every word but the ones that
/// differ between a source and its copy by design — `state` (retired vs live),
/// `region_len` (the copy's region may be longer) — and the log tail, which each
/// checksum names separately.
fn masked_header(bytes: &[u8]) -> Option<[u8; layout::HEADER_LEN]> {
    let mut head = [0u8; layout::HEADER_LEN];
    head.copy_from_slice(bytes.get(..layout::HEADER_LEN)?);
    head[header::STATE..header::STATE + 4].fill(0);
    head[header::REGION_LEN..header::REGION_LEN + 8].fill(0);
    head[header::LOG_TAIL..header::LOG_TAIL + 8].fill(0);
    Some(head)
}

/// `crc32c(masked header ++ bytes[from, to))`: what both sides of a migration compute
/// for the log bytes one catch-up round (or the fence) covers. The log below a tail
/// never changes (append-only; compaction and split write a new region with a new
/// generation), so the rounds' ranges tile `[log_start, final tail)` and together prove
/// the whole log equal, while each costs only its own delta. None if the range is not
/// inside `bytes` past the header.
pub fn delta_crc(bytes: &[u8], from: usize, to: usize) -> Option<u32> {
    let head = masked_header(bytes)?;
    if from < layout::HEADER_LEN || from > to {
        return None;
    }
    let delta = bytes.get(from..to)?;
    Some(crc32c::crc32c_append(crc32c::crc32c(&head), delta))
}

impl Fragment {
    /// [`delta_crc`] of this fragment's log `[from, to)`; None unless
    /// `log_start <= from <= to <= tail`.
    pub fn log_delta_crc(&self, from: usize, to: usize) -> Option<u32> {
        if from < self.log_start() || to > self.tail {
            return None;
        }
        delta_crc(self.region.bytes(), from, to)
    }
}

/// A fragment being rebuilt from a copy of its header and log that arrives in pieces
/// (live migration): the index is not copied but built here, record by record, as the
/// log comes in, exactly as the source's writes built theirs (each key's slot is its
/// first free slot on the probe from its home bucket, when the key first appears in the
/// log; later records of the key take over that slot). The store keeps that invariant
/// on every path — `write`, `adopt_record` (compaction, split) and `from_copy` —
/// so the rebuilt index equals the source's byte for byte, and the work at the handoff
/// is proportional to the log appended since the last round, not to the fragment.
///
/// Every record is checked as `from_copy` checks it (length, flags, crc, zero padding,
/// epoch, key range, index load); the bytes came from a peer.
pub struct CopyBuilder {
    region: Region,
    id: FragmentId,
    lo: Bytes,
    hi: Option<Bytes>,
    header: CopyHeader,
    /// The log is checked and indexed up to here (a record boundary).
    scanned: usize,
    used_slots: usize,
    max_slots: usize,
    live_keys: usize,
    live_bytes: usize,
    expiries: BTreeSet<(u64, usize)>,
    records: u64,
    max_version: Option<(u64, usize)>,
}

impl std::fmt::Debug for CopyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyBuilder")
            .field("id", &self.id)
            .field("scanned", &self.scanned)
            .field("records", &self.records)
            .finish()
    }
}

impl CopyBuilder {
    /// Start rebuilding fragment `id` over `region`, whose first `HEADER_LEN` bytes hold
    /// the source's header (checked here); the index bytes are cleared, since they are
    /// built here and not copied.
    pub fn new(
        mut region: Region,
        id: FragmentId,
        lo: Bytes,
        hi: Option<Bytes>,
    ) -> Result<CopyBuilder, CopyError> {
        let h = CopyHeader::parse(region.bytes(), region.len())?;
        if h.fragment_id != id {
            return Err(CopyError::WrongFragment {
                expected: id,
                found: h.fragment_id,
            });
        }
        region.bytes_mut()[h.index_range()].fill(0);
        Ok(CopyBuilder {
            region,
            id,
            lo,
            hi,
            header: h,
            scanned: h.log_start,
            used_slots: 0,
            max_slots: Geometry::slot_capacity(h.bucket_count),
            live_keys: 0,
            live_bytes: 0,
            expiries: BTreeSet::new(),
            records: 0,
            max_version: None,
        })
    }

    pub fn header(&self) -> &CopyHeader {
        &self.header
    }

    /// The log is checked and indexed up to this offset.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// The region's bytes, e.g. to write a pulled piece of the log into.
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// [`delta_crc`] of this copy's bytes `[from, to)`.
    pub fn delta_crc(&self, from: usize, to: usize) -> Option<u32> {
        if from < self.header.log_start {
            return None;
        }
        delta_crc(self.region.bytes(), from, to)
    }

    /// Check and index every whole record in `[scanned, upto)`; a record cut by `upto`
    /// waits for the next call, so pieces may end anywhere. Returns the new `scanned`.
    pub fn extend(&mut self, upto: usize) -> Result<usize, CopyError> {
        let upto = upto.min(self.region.len());
        while self.scanned + layout::RECORD_HEADER_LEN <= upto {
            let offset = self.scanned;
            let head = layout::decode_record_head(self.region.bytes(), offset)
                .map_err(CopyError::BadLog)?;
            let end = offset
                .checked_add(head.len)
                .filter(|&end| end <= self.region.len())
                .ok_or(CopyError::BadLog(RecordError::OutOfBounds(offset)))?;
            if end > upto {
                break;
            }
            self.index_record(offset, end)?;
            self.scanned = end;
        }
        Ok(self.scanned)
    }

    fn index_record(&mut self, offset: usize, end: usize) -> Result<(), CopyError> {
        let bytes = self.region.bytes();
        let r = layout::decode_record(&bytes[..end], offset).map_err(CopyError::BadLog)?;
        let unpadded = offset + r.value_start() + r.value.len();
        if bytes[unpadded..end].iter().any(|&b| b != 0) {
            return Err(CopyError::BadPadding(offset));
        }
        let hash = layout::key_hash(r.key);
        let tag = layout::hash_tag(hash);
        let slots = self.header.bucket_count * layout::SLOTS_PER_BUCKET;
        let home = layout::home_bucket(hash, self.header.bucket_count) * layout::SLOTS_PER_BUCKET;
        // The store's probe: slot by slot from the home bucket's first, wrapping; the
        // key's slot, or the first empty one (slots are never emptied).
        let mut target = None;
        for step in 0..slots {
            let p = (home + step) % slots;
            let slot = layout::u64_at(bytes, layout::HEADER_LEN + p * 8);
            if slot == 0 {
                target = Some((p, None));
                break;
            }
            if layout::slot_tag(slot) == tag {
                let old_offset = layout::slot_offset(slot);
                // Indexed records were checked when they came in, and lie below `offset`.
                let old = layout::decode_record(&bytes[..offset], old_offset)
                    .map_err(CopyError::BadLog)?;
                if old.key == r.key && old.is_field() == r.is_field() {
                    let old_live = !old.is_tombstone();
                    target = Some((p, Some((old_offset, old.len, old_live, old.expire_at_ms))));
                    break;
                }
            }
        }
        let Some((p, old)) = target else {
            return Err(CopyError::IndexOverloaded {
                used: slots,
                max: self.max_slots,
            });
        };
        if old.is_none() {
            if self.used_slots >= self.max_slots {
                return Err(CopyError::IndexOverloaded {
                    used: self.used_slots + 1,
                    max: self.max_slots,
                });
            }
            if !in_range(r.route_key(), &self.lo, self.hi.as_ref()) {
                return Err(CopyError::OutOfRange { slot: p });
            }
        }
        let (len, live, expiry, version) = (r.len, !r.is_tombstone(), r.expire_at_ms, r.version);
        if let Some((old_offset, old_len, old_live, old_expiry)) = old {
            if old_live {
                self.live_keys -= 1;
                self.live_bytes -= old_len;
                if let Some(t) = old_expiry {
                    self.expiries.remove(&(t, old_offset));
                }
            }
        } else {
            self.used_slots += 1;
        }
        if live {
            self.live_keys += 1;
            self.live_bytes += len;
            if let Some(t) = expiry {
                self.expiries.insert((t, offset));
            }
        }
        if self.max_version.is_none_or(|(v, _)| version > v) {
            self.max_version = Some((version, offset));
        }
        self.records += 1;
        self.region
            .store_release(layout::HEADER_LEN + p * 8, layout::slot_value(tag, offset));
        Ok(())
    }

    /// The fragment, once the log is scanned exactly up to `tail` (the source's final
    /// tail): the header takes this tail, this region's length and the live state.
    pub fn finish(mut self, tail: usize) -> Result<Fragment, StoreError> {
        if tail > self.region.len() || tail < self.header.log_start {
            return Err(CopyError::BadTail {
                tail: tail as u64,
                log_start: self.header.log_start,
                region_len: self.region.len() as u64,
            }
            .into());
        }
        self.extend(tail)?;
        if self.scanned != tail {
            // A record runs past the tail.
            return Err(CopyError::BadLog(RecordError::OutOfBounds(self.scanned)).into());
        }
        let h = self.header;
        let next_seq = next_seq_after(self.max_version, h.epoch)?;
        let region_len = self.region.len();
        self.region.store_release(header::LOG_TAIL, tail as u64);
        self.region
            .store_release(header::REGION_LEN, region_len as u64);
        self.region
            .store_release_u32(header::STATE, layout::STATE_LIVE);
        let mut fragment = Fragment {
            id: self.id,
            lo: self.lo,
            hi: self.hi,
            region: self.region,
            bucket_mask: h.bucket_count - 1,
            tail,
            epoch: h.epoch,
            next_seq,
            generation: h.generation,
            used_slots: self.used_slots,
            max_slots: self.max_slots,
            live_keys: self.live_keys,
            live_bytes: self.live_bytes,
            expiries: self.expiries,
            changes: self.records,
            live_fields: 0,
            hashes: HashMap::new(),
            hash_heap_bytes: 0,
        };
        fragment.rebuild_hashes()?;
        Ok(fragment)
    }
}

/// The sequence number a copy continues with: one past the highest of the region's
/// epoch in its log, 1 if there is none; a record from a later epoch or with the last
/// sequence number makes the copy invalid.
fn next_seq_after(max_version: Option<(u64, usize)>, epoch: u64) -> Result<u64, CopyError> {
    let seq_mask = (1u64 << layout::SEQ_BITS) - 1;
    match max_version {
        Some((v, offset)) if v >> layout::SEQ_BITS > epoch => Err(CopyError::FutureEpoch {
            offset,
            found: v >> layout::SEQ_BITS,
            epoch,
        }),
        Some((v, offset)) if v >> layout::SEQ_BITS == epoch => {
            if v & seq_mask == seq_mask {
                return Err(CopyError::SequenceExhausted(offset));
            }
            Ok((v & seq_mask) + 1)
        }
        _ => Ok(1),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frag(id: FragmentId, target: usize) -> Fragment {
        Fragment::create(
            id,
            Bytes::new(),
            None,
            Geometry::sized_for(target, 64),
            3,
            false,
        )
        .expect("fragment")
    }

    /// What a copier does: a fresh region of the source's length, its bytes `[0, tail)`.
    fn copy_region(src: &Fragment) -> Region {
        let mut region = Region::create(src.region_len(), false).expect("region");
        let tail = src.log_tail();
        region.bytes_mut()[..tail].copy_from_slice(&src.region().bytes()[..tail]);
        region
    }

    pub(in crate::store) fn copy_of(src: &Fragment) -> Result<Fragment, StoreError> {
        Fragment::from_copy(
            copy_region(src),
            src.id(),
            src.lo().clone(),
            src.hi().cloned(),
        )
    }

    /// Current records with an expiry: what the copy's expiry queue holds.
    fn current_expiring(f: &Fragment) -> usize {
        let mut n = 0;
        f.for_each_current(|_, r| {
            if !r.is_tombstone() && r.expire_at_ms.is_some() {
                n += 1;
            }
        })
        .unwrap();
        n
    }

    /// The copy answers every key exactly as the source does and keeps the same counters.
    fn assert_same(src: &Fragment, copy: &Fragment, now: u64) {
        let mut keys = Vec::new();
        src.for_each_current(|_, r| keys.push(r.key.to_vec()))
            .unwrap();
        assert_eq!(keys.len(), src.used_slots);
        for k in &keys {
            let (a, b) = (src.lookup_any(k).unwrap(), copy.lookup_any(k).unwrap());
            let (a, b) = (a.expect("in source"), b.expect("in copy"));
            assert_eq!(
                (a.value, a.version, a.flags, a.expire_at_ms),
                (b.value, b.version, b.flags, b.expire_at_ms)
            );
            assert_eq!(
                src.get(k, now).unwrap().map(|r| r.value),
                copy.get(k, now).unwrap().map(|r| r.value)
            );
        }
        assert_eq!(
            src.sorted_keys(now).unwrap(),
            copy.sorted_keys(now).unwrap()
        );
        assert_eq!(src.live_keys(), copy.live_keys());
        assert_eq!(src.live_bytes(), copy.live_bytes());
        assert_eq!(src.used_bytes(), copy.used_bytes());
        assert_eq!(src.used_slots, copy.used_slots);
        assert_eq!(src.max_slots, copy.max_slots);
        assert_eq!(src.geometry(), copy.geometry());
        assert_eq!(src.generation(), copy.generation());
        assert_eq!(src.epoch, copy.epoch);
        assert_eq!(current_expiring(src), copy.expiring());
        assert!(copy.expiring() <= src.expiring());
        assert_eq!(src.content_crc(), copy.content_crc());
        assert!(!copy.is_retired());
    }

    /// A fragment with overwrites, deletes, expiring keys and an expired-and-removed one.
    fn busy(id: FragmentId) -> Fragment {
        let mut f = frag(id, 1 << 20);
        for i in 0..300u32 {
            let ttl = (i % 5 == 0).then_some(1_000 + u64::from(i));
            f.put(format!("k{i:04}").as_bytes(), &i.to_le_bytes(), ttl)
                .unwrap();
        }
        for i in (0..300u32).step_by(7) {
            f.put(format!("k{i:04}").as_bytes(), b"again", None)
                .unwrap();
        }
        for i in (0..300u32).step_by(11) {
            f.delete(format!("k{i:04}").as_bytes(), 0).unwrap();
        }
        f.put(b"short-lived", b"x", Some(10)).unwrap();
        assert_eq!(f.expire_due(10, 1).unwrap(), 1);
        f
    }

    #[test]
    fn copy_answers_like_the_source_and_keeps_working() {
        let src = busy(4);
        let mut copy = copy_of(&src).unwrap();
        assert_same(&src, &copy, 0);
        assert_same(&src, &copy, 1_100);
        assert_eq!(copy.next_seq, src.next_seq, "no record was compacted away");
        assert_eq!(copy.id(), 4);

        // Writes go on: overwrite, new key, delete, expire.
        copy.put(b"k0001", b"new", None).unwrap();
        copy.put(b"fresh", b"v", Some(2_000)).unwrap();
        assert!(copy.delete(b"k0002", 0).unwrap());
        assert_eq!(copy.get(b"k0001", 0).unwrap().unwrap().value, b"new");
        let v_new = copy.lookup_any(b"fresh").unwrap().unwrap().version;
        assert!(v_new > src.lookup_any(b"k0299").unwrap().unwrap().version);
        assert_eq!(copy.live_keys(), src.live_keys());
        let due = copy.expire_due(1_500, usize::MAX).unwrap();
        assert!(due > 0);
        assert!(copy.get(b"k0005", 1_500).unwrap().is_none());
        assert_eq!(copy.get(b"fresh", 1_500).unwrap().unwrap().value, b"v");

        // Compaction and split of the copy work and keep its data.
        let c = copy.compact(1 << 20, 0, 1_500, false).unwrap();
        assert_eq!(
            c.sorted_keys(1_500).unwrap(),
            copy.sorted_keys(1_500).unwrap()
        );
        assert_eq!(c.generation(), 1);
        let at = copy.split_key(1_500).unwrap().unwrap();
        let (lo, hi) = copy.split(at, 9, 1 << 20, 1_500, false).unwrap();
        assert_eq!(
            lo.live_keys() + hi.live_keys(),
            copy.sorted_keys(1_500).unwrap().len()
        );
    }

    #[test]
    fn copies_of_compacted_and_split_fragments() {
        let src = busy(5);
        let compacted = src.compact(1 << 20, 0, 0, false).unwrap();
        let copy = copy_of(&compacted).unwrap();
        assert_same(&compacted, &copy, 0);
        assert_eq!(copy.expiring(), compacted.expiring(), "no stale entries");
        assert_eq!(copy.generation(), 1);

        let at = src.split_key(0).unwrap().unwrap();
        let (lower, upper) = src.split(at.clone(), 6, 1 << 20, 0, false).unwrap();
        for half in [&lower, &upper] {
            let mut copy = copy_of(half).unwrap();
            assert_same(half, &copy, 0);
            copy.put(b"zz-after", b"v", None).unwrap();
        }
        // The upper half's range is enforced: its bytes are not a copy of `[lo, at)`.
        let wrong = Fragment::from_copy(copy_region(&upper), 6, Bytes::new(), Some(at));
        assert!(matches!(
            wrong,
            Err(StoreError::BadCopy(CopyError::OutOfRange { .. }))
        ));
        let wrong_id = Fragment::from_copy(copy_region(&upper), 5, Bytes::new(), None);
        assert!(matches!(
            wrong_id,
            Err(StoreError::BadCopy(CopyError::WrongFragment {
                expected: 5,
                found: 6
            }))
        ));
    }

    #[test]
    fn copy_of_a_retired_source_is_live_with_the_same_crc() {
        let src = busy(7);
        src.retire();
        let copy = copy_of(&src).unwrap();
        assert!(!copy.is_retired());
        let h = layout::decode_header(copy.region().bytes()).unwrap();
        assert_eq!(h.state, layout::STATE_LIVE);
        assert_eq!(src.content_crc(), copy.content_crc());
        // A longer region (hugetlb rounding) is fine; the header follows the region.
        let mut long = Region::create(src.region_len() + 4096, false).unwrap();
        let tail = src.log_tail();
        long.bytes_mut()[..tail].copy_from_slice(&src.region().bytes()[..tail]);
        let copy = Fragment::from_copy(long, 7, Bytes::new(), None).unwrap();
        assert_eq!(copy.region_len(), src.region_len() + 4096);
        let h = layout::decode_header(copy.region().bytes()).unwrap();
        assert_eq!(h.region_len as usize, copy.region_len());
        assert_eq!(src.content_crc(), copy.content_crc());
    }

    #[test]
    fn empty_fragment_copies() {
        let src = frag(1, 64 << 10);
        let mut copy = copy_of(&src).unwrap();
        assert_same(&src, &copy, 0);
        assert_eq!(copy.next_seq, 1);
        copy.put(b"a", b"1", None).unwrap();
        assert_eq!(copy.live_keys(), 1);
    }

    #[test]
    fn copier_layout_accessors() {
        let src = busy(2);
        let h = CopyHeader::parse(src.region().bytes(), usize::MAX).unwrap();
        assert_eq!(h.tail, src.log_tail());
        assert_eq!(h.log_start, src.log_start());
        assert_eq!(h.index_range(), src.index_range());
        assert_eq!(h.region_len, src.region_len());
        assert_eq!(src.index_range().start, layout::HEADER_LEN);
        assert_eq!(src.index_range().end, src.log_start());
        assert!(!h.retired);
        assert!(matches!(
            CopyHeader::parse(src.region().bytes(), src.region_len() - 1),
            Err(CopyError::RegionTooLong { .. })
        ));
        assert!(matches!(
            CopyHeader::parse(&src.region().bytes()[..63], usize::MAX),
            Err(CopyError::ShortHeader(63))
        ));
    }

    #[test]
    fn content_crc_changes_with_any_index_or_log_byte() {
        let src = busy(3);
        let mut copy = copy_of(&src).unwrap();
        let (tail, crc) = src.content_crc();
        // A used slot, an empty slot, a record header, a value byte, padding.
        let mut used = None;
        let mut empty = None;
        for p in 0..src.geometry().buckets * layout::SLOTS_PER_BUCKET {
            let at = layout::HEADER_LEN + 8 * p;
            match layout::u64_at(src.region().bytes(), at) {
                0 => empty = empty.or(Some(at)),
                _ => used = used.or(Some(at)),
            }
        }
        let log = src.log_start();
        for at in [
            used.unwrap() + 2,
            empty.unwrap() + 7,
            log,
            log + 30,
            tail - 1,
            header::EPOCH,
            header::GENERATION,
        ] {
            copy.region.bytes_mut()[at] ^= 0x40;
            assert_ne!(copy.content_crc(), (tail, crc), "byte {at}");
            copy.region.bytes_mut()[at] ^= 0x40;
            assert_eq!(copy.content_crc(), (tail, crc));
        }
    }

    fn set_word(region: &mut Region, at: usize, value: u64) {
        region.bytes_mut()[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn copy_err(region: Region, src: &Fragment) -> CopyError {
        match Fragment::from_copy(region, src.id(), src.lo().clone(), src.hi().cloned()) {
            Err(StoreError::BadCopy(e)) => e,
            Err(e) => panic!("not a copy error: {e}"),
            Ok(_) => panic!("bad copy accepted"),
        }
    }

    #[test]
    fn lying_headers_are_refused() {
        let src = busy(8);
        let tail = src.log_tail() as u64;
        let buckets = src.geometry().buckets as u64;
        let len = src.region_len() as u64;
        let cases: Vec<(usize, u64)> = vec![
            (header::MAGIC, 7),
            (header::LOG_TAIL, tail - 8),
            (header::LOG_TAIL, tail + 8),
            (header::LOG_TAIL, len + 8),
            (header::LOG_TAIL, 8),
            (header::LOG_TAIL, u64::MAX),
            (header::BUCKET_COUNT, buckets * 2),
            (header::BUCKET_COUNT, buckets / 2),
            (header::BUCKET_COUNT, buckets + 1),
            (header::BUCKET_COUNT, 0),
            (header::BUCKET_COUNT, 1 << 62),
            (header::REGION_LEN, len + 1),
            (header::REGION_LEN, tail - 1),
            (header::FRAGMENT_ID, 99),
            (header::EPOCH, 2),
        ];
        for (at, value) in cases {
            let mut r = copy_region(&src);
            set_word(&mut r, at, value);
            let e = copy_err(r, &src);
            assert!(!e.to_string().is_empty(), "{at}={value}: {e}");
        }
        let mut r = copy_region(&src);
        r.bytes_mut()[header::LAYOUT_VERSION] = 9;
        assert_eq!(copy_err(r, &src), CopyError::BadLayoutVersion(9));
        let mut r = copy_region(&src);
        r.bytes_mut()[header::STATE] = 2;
        assert_eq!(copy_err(r, &src), CopyError::BadState(2));
    }

    #[test]
    fn truncated_copies_are_refused() {
        let src = busy(9);
        let tail = src.log_tail();
        // The copier stopped early: the header claims bytes that are still zero.
        for missing in [8, 64, 4096] {
            let mut r = copy_region(&src);
            r.bytes_mut()[tail - missing..tail].fill(0);
            copy_err(r, &src);
        }
        // The tail moved back to every record boundary: some slot then points past it.
        let mut boundaries = Vec::new();
        let mut at = src.log_start();
        while at < tail {
            boundaries.push(at);
            at += layout::decode_record(&src.region().bytes()[..tail], at)
                .unwrap()
                .len;
        }
        for b in boundaries.into_iter().step_by(17) {
            let mut r = copy_region(&src);
            set_word(&mut r, header::LOG_TAIL, b as u64);
            copy_err(r, &src);
        }
    }

    #[test]
    fn stale_or_duplicate_slots_are_refused() {
        let mut src = frag(1, 64 << 10);
        src.put(b"a", b"old", None).unwrap();
        let old = src.log_start();
        src.put(b"a", b"new", None).unwrap();
        src.put(b"b", b"v", None).unwrap();
        let slot_of = |f: &Fragment, key: &[u8]| {
            (0..f.geometry().buckets * layout::SLOTS_PER_BUCKET)
                .map(|p| layout::HEADER_LEN + 8 * p)
                .find(|&at| {
                    let s = layout::u64_at(f.region().bytes(), at);
                    s != 0
                        && layout::decode_record(f.region().bytes(), layout::slot_offset(s))
                            .unwrap()
                            .key
                            == key
                })
                .unwrap()
        };
        let a_slot = slot_of(&src, b"a");
        let a_tag = layout::hash_tag(layout::key_hash(b"a"));
        // Pointing `a` back at its stale record.
        let mut r = copy_region(&src);
        set_word(&mut r, a_slot, layout::slot_value(a_tag, old));
        assert!(matches!(copy_err(r, &src), CopyError::NotNewest { .. }));
        // `a` indexed twice: the second slot is the one after it.
        let mut r = copy_region(&src);
        let a_value = layout::u64_at(src.region().bytes(), a_slot);
        let next = if layout::u64_at(src.region().bytes(), a_slot + 8) == 0 {
            a_slot + 8
        } else {
            a_slot + 16
        };
        set_word(&mut r, next, a_value);
        assert!(matches!(copy_err(r, &src), CopyError::NotNewest { .. }));
        // `b` lost its slot.
        let mut r = copy_region(&src);
        set_word(&mut r, slot_of(&src, b"b"), 0);
        assert_eq!(copy_err(r, &src), CopyError::Unindexed(1));
        // `b` moved to a slot its probe never reaches (the bucket before its home).
        let b_slot = slot_of(&src, b"b");
        let b_value = layout::u64_at(src.region().bytes(), b_slot);
        let buckets = src.geometry().buckets;
        let home = layout::home_bucket(layout::key_hash(b"b"), buckets);
        let before = layout::bucket_offset((home + buckets - 1) % buckets) + 7 * 8;
        let mut r = copy_region(&src);
        set_word(&mut r, b_slot, 0);
        set_word(&mut r, before, b_value);
        assert!(matches!(copy_err(r, &src), CopyError::Unreachable { .. }));
    }

    /// What a migration target does: the header, then the log in pieces ending at
    /// `cuts` (any offsets), each scanned as it lands, then the rest up to the tail.
    fn built_copy(src: &Fragment, cuts: &[usize]) -> Result<Fragment, StoreError> {
        let mut region = Region::create(src.region_len(), false).expect("region");
        let from = src.region().bytes();
        region.bytes_mut()[..layout::HEADER_LEN].copy_from_slice(&from[..layout::HEADER_LEN]);
        let mut b = CopyBuilder::new(region, src.id(), src.lo().clone(), src.hi().cloned())?;
        let tail = src.log_tail();
        let mut at = src.log_start();
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.clamp(at, tail)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([tail]) {
            b.region_mut().bytes_mut()[at..cut].copy_from_slice(&from[at..cut]);
            at = cut;
            assert!(b.extend(cut)? <= cut);
        }
        b.finish(tail)
    }

    #[test]
    fn built_copy_equals_the_source_byte_for_byte() {
        let src = busy(4);
        let copy = built_copy(&src, &[]).unwrap();
        // Same index bytes, not only the same answers: the crc covers the whole index.
        assert_same(&src, &copy, 0);
        assert_same(&src, &copy, 1_100);
        assert_eq!(copy.next_seq, src.next_seq);
        assert_eq!(copy.changes(), copy_of(&src).unwrap().changes());
        let compacted = src.compact(1 << 20, 0, 0, false).unwrap();
        assert_same(&compacted, &built_copy(&compacted, &[]).unwrap(), 0);
        let at = src.split_key(0).unwrap().unwrap();
        let (lower, upper) = src.split(at.clone(), 6, 1 << 20, 0, false).unwrap();
        for half in [&lower, &upper] {
            assert_same(half, &built_copy(half, &[]).unwrap(), 0);
        }
        // The range is enforced on every key of the log.
        let wrong = CopyBuilder::new(copy_region(&upper), 6, Bytes::new(), Some(at))
            .and_then(|mut b| b.extend(upper.log_tail()).map(|_| ()));
        assert!(matches!(wrong, Err(CopyError::OutOfRange { .. })));
        let empty = frag(1, 64 << 10);
        assert_same(&empty, &built_copy(&empty, &[]).unwrap(), 0);
    }

    #[test]
    fn delta_crcs_tile_the_log_and_see_a_changed_byte() {
        let mut src = busy(3);
        let mut copy = CopyBuilder::new(copy_region(&src), 3, Bytes::new(), None).unwrap();
        let (start, t1) = (src.log_start(), src.log_tail());
        copy.extend(t1).unwrap();
        assert_eq!(src.log_delta_crc(start, t1), copy.delta_crc(start, t1));
        for i in 0..50u32 {
            src.put(format!("late{i}").as_bytes(), b"v", None).unwrap();
        }
        let t2 = src.log_tail();
        copy.region_mut().bytes_mut()[t1..t2].copy_from_slice(&src.region().bytes()[t1..t2]);
        copy.extend(t2).unwrap();
        assert_eq!(src.log_delta_crc(t1, t2), copy.delta_crc(t1, t2));
        // Retiring (state) does not change it; ranges outside the log are refused.
        src.retire();
        assert_eq!(src.log_delta_crc(t1, t2), copy.delta_crc(t1, t2));
        assert_eq!(src.log_delta_crc(start - 8, t2), None);
        assert_eq!(src.log_delta_crc(t1, t2 + 8), None);
        assert_eq!(src.log_delta_crc(t2, t1), None);
        // A changed log byte of the delta, or a changed header word, shows.
        let good = copy.delta_crc(t1, t2);
        for at in [
            t1,
            t2 - 1,
            header::EPOCH,
            header::GENERATION,
            header::FRAGMENT_ID,
        ] {
            copy.region_mut().bytes_mut()[at] ^= 1;
            assert_ne!(copy.delta_crc(t1, t2), good, "byte {at}");
            copy.region_mut().bytes_mut()[at] ^= 1;
        }
        let copy = copy.finish(t2).unwrap();
        src.region
            .store_release_u32(header::STATE, layout::STATE_LIVE);
        assert_same(&src, &copy, 0);
    }

    #[test]
    fn builder_refuses_bad_tails_and_torn_logs() {
        let src = busy(9);
        let tail = src.log_tail();
        // A tail inside a record, past the region, before the log.
        for bad in [tail - 8, src.region_len() + 8, src.log_start() - 8] {
            let mut b = CopyBuilder::new(copy_region(&src), 9, Bytes::new(), None).unwrap();
            b.extend(tail).unwrap();
            assert!(b.finish(bad).is_err(), "tail {bad}");
        }
        // Zeroed log bytes (a piece that never arrived).
        let mut r = copy_region(&src);
        r.bytes_mut()[tail - 64..tail].fill(0);
        let b = CopyBuilder::new(r, 9, Bytes::new(), None).unwrap();
        assert!(matches!(b.finish(tail), Err(StoreError::BadCopy(_))));
        assert!(matches!(
            CopyBuilder::new(copy_region(&src), 8, Bytes::new(), None),
            Err(CopyError::WrongFragment { .. })
        ));
    }

    mod props {
        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, Vec<u8>, Option<u64>),
            Delete(u8),
            Expire(u64),
            Compact,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200), proptest::option::of(1u64..100))
                    .prop_map(|(k, v, t)| Op::Put(k, v, t)),
                2 => any::<u8>().prop_map(Op::Delete),
                1 => (1u64..100).prop_map(Op::Expire),
                1 => Just(Op::Compact),
            ]
        }

        fn key(k: u8) -> Vec<u8> {
            format!("key-{k:03}").into_bytes()
        }

        /// Apply `op` to `f`; a full fragment is compacted first, as a shard does.
        fn apply(f: &mut Fragment, op: &Op, now: &mut u64) {
            for _ in 0..2 {
                let done = match op {
                    Op::Put(k, v, ttl) => f.put(&key(*k), v, ttl.map(|t| *now + t)),
                    Op::Delete(k) => f.delete(&key(*k), *now).map(|_| ()),
                    Op::Expire(dt) => {
                        *now += dt;
                        f.expire_due(*now, usize::MAX).map(|_| ())
                    }
                    Op::Compact => {
                        *f = f.compact(64 << 10, 0, *now, false).unwrap();
                        Ok(())
                    }
                };
                match done {
                    Ok(()) => return,
                    Err(StoreError::Full { need }) => {
                        *f = f.compact(64 << 10, need, *now, false).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("no room after compaction");
        }

        fn source(ops: &[Op]) -> (Fragment, u64) {
            let mut f = frag(1, 64 << 10);
            let mut now = 0;
            for op in ops {
                apply(&mut f, op, &mut now);
            }
            (f, now)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn copies_behave_like_their_source(
                ops in proptest::collection::vec(op(), 0..300),
                more in proptest::collection::vec(op(), 0..100),
            ) {
                let (mut src, mut now) = source(&ops);
                let mut copy = copy_of(&src).unwrap();
                assert_same(&src, &copy, now);
                // The same further operations leave both answering alike.
                let mut now_copy = now;
                for op in &more {
                    apply(&mut src, op, &mut now);
                    apply(&mut copy, op, &mut now_copy);
                }
                prop_assert_eq!(src.sorted_keys(now).unwrap(), copy.sorted_keys(now).unwrap());
                for k in 0..=255u8 {
                    let k = key(k);
                    prop_assert_eq!(
                        src.get(&k, now).unwrap().map(|r| (r.value.to_vec(), r.expire_at_ms)),
                        copy.get(&k, now).unwrap().map(|r| (r.value.to_vec(), r.expire_at_ms))
                    );
                }
                prop_assert_eq!(src.live_keys(), copy.live_keys());
                prop_assert_eq!(src.live_bytes(), copy.live_bytes());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Pieces ending anywhere give the same fragment as one pass, and the same
            /// bytes as the source (index included).
            #[test]
            fn built_in_pieces_equals_the_source(
                ops in proptest::collection::vec(op(), 0..300),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            ) {
                let (src, now) = source(&ops);
                let span = src.log_tail() - src.log_start() + 1;
                let cuts: Vec<usize> =
                    cuts.iter().map(|c| src.log_start() + c.index(span)).collect();
                let whole = built_copy(&src, &[]).unwrap();
                let pieces = built_copy(&src, &cuts).unwrap();
                assert_same(&src, &pieces, now);
                prop_assert_eq!(whole.content_crc(), pieces.content_crc());
                prop_assert_eq!(whole.next_seq, pieces.next_seq);
                prop_assert_eq!(whole.changes(), pieces.changes());
                prop_assert_eq!(whole.expiring(), pieces.expiring());
            }

            /// Any one changed log byte fails the record checks or the delta crc.
            #[test]
            fn one_changed_log_byte_is_seen(
                ops in proptest::collection::vec(op(), 1..150),
                pick in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let (src, _) = source(&ops);
                let (start, tail) = (src.log_start(), src.log_tail());
                prop_assume!(tail > start);
                let at = start + pick.index(tail - start);
                let mut r = copy_region(&src);
                r.bytes_mut()[at] ^= flip;
                let b = CopyBuilder::new(r, 1, Bytes::new(), None).unwrap();
                let crc_differs = b.delta_crc(start, tail) != src.log_delta_crc(start, tail);
                prop_assert!(crc_differs);
                prop_assert!(b.finish(tail).is_err() || crc_differs);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any one changed byte in the index or the log is refused, never a panic.
            #[test]
            fn one_changed_byte_is_refused(
                ops in proptest::collection::vec(op(), 1..150),
                pick in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let (src, _) = source(&ops);
                let at = layout::HEADER_LEN + pick.index(src.log_tail() - layout::HEADER_LEN);
                let mut r = copy_region(&src);
                r.bytes_mut()[at] ^= flip;
                let result = Fragment::from_copy(r, 1, Bytes::new(), None);
                prop_assert!(
                    matches!(result, Err(StoreError::BadCopy(_))),
                    "byte {} ^ {:#x} accepted", at, flip
                );
            }

            /// Random garbage over a stretch of the region (header included), and a random
            /// tail: refused or, if accepted, consistent; never a panic.
            #[test]
            fn garbage_never_panics(
                ops in proptest::collection::vec(op(), 0..100),
                start in any::<prop::sample::Index>(),
                garbage in proptest::collection::vec(any::<u8>(), 1..256),
                tail in proptest::option::of(any::<u64>()),
            ) {
                let (src, now) = source(&ops);
                let mut r = copy_region(&src);
                let at = start.index(src.log_tail());
                let end = (at + garbage.len()).min(r.len());
                r.bytes_mut()[at..end].copy_from_slice(&garbage[..end - at]);
                if let Some(t) = tail {
                    set_word(&mut r, header::LOG_TAIL, t);
                }
                let changed = r.bytes()[..src.log_tail()] != src.region().bytes()[..src.log_tail()];
                match Fragment::from_copy(r, 1, Bytes::new(), None) {
                    Ok(copy) => {
                        // Only a change the checks cannot see (a header word like the
                        // generation, or bytes rewritten to their own value) passes, and
                        // then the copy is self-consistent.
                        prop_assert!(copy.sorted_keys(now).is_ok());
                        if !changed {
                            prop_assert_eq!(copy.content_crc(), src.content_crc());
                        } else if at >= layout::HEADER_LEN {
                            prop_assert!(false, "changed index/log bytes accepted at {}", at);
                        }
                    }
                    Err(StoreError::BadCopy(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                }
            }
        }
    }
}
