//! A fragment rebuilt from a byte copy of its region (live migration, issue #9).
//!
//! The new owner B allocates an empty region of the source's length, READs the source
//! region's bytes `[0, tail)` into it (header, index, log), and after the source has
//! fenced writes re-reads the header, the whole index and the log appended since. Then
//! `Fragment::from_copy` turns those bytes into a fragment without replaying a write:
//! same offsets, same index, same records. The bytes came from a peer, so every field
//! is checked before it is trusted, in one pass over the log and one over the index.
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
    newest: HashMap<&'a [u8], usize>,
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
        scan.newest.insert(r.key, offset);
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
fn scan_index(
    bytes: &[u8],
    h: &CopyHeader,
    mut log: LogScan<'_>,
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
        if log.newest.remove(r.key) != Some(offset) {
            return Err(CopyError::NotNewest { slot: p, offset });
        }
        if !in_range(r.key, lo, hi) {
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
        let seq_mask = (1u64 << layout::SEQ_BITS) - 1;
        let next_seq = match max_version {
            Some((v, offset)) if v >> layout::SEQ_BITS > h.epoch => {
                return Err(CopyError::FutureEpoch {
                    offset,
                    found: v >> layout::SEQ_BITS,
                    epoch: h.epoch,
                }
                .into())
            }
            Some((v, offset)) if v >> layout::SEQ_BITS == h.epoch => {
                if v & seq_mask == seq_mask {
                    return Err(CopyError::SequenceExhausted(offset).into());
                }
                (v & seq_mask) + 1
            }
            _ => 1,
        };
        if h.region_len != region.len() {
            region.store_release(header::REGION_LEN, region.len() as u64);
        }
        region.store_release_u32(header::STATE, layout::STATE_LIVE);
        Ok(Fragment {
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
        })
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

    /// The index bytes, `[HEADER_LEN, log_start)`: a copier re-reads all of them after
    /// the source is fenced, since any slot may have changed.
    pub fn index_range(&self) -> Range<usize> {
        layout::HEADER_LEN..self.log_start()
    }
}
