//! Byte layout of a region: `header | index | log`. Documented byte by byte in
//! `docs/layout.md`; this file is the single source of truth for the offsets.
//!
//! Everything is little-endian. Only three fields are ever written concurrently with a
//! reader (a one-sided remote READ or a crash-surviving mapping): the header's log tail
//! and the index slots, each published by one 8-byte release store, and the header's
//! state, set once (live → retired) by one 4-byte release store.
//!
//! The decoders here take plain byte slices so that the local path (the mapping) and the
//! remote path (bytes a peer returned over the fabric) share them; they treat their input
//! as hostile: they never panic and never index out of bounds.

/// `b"AUGURRG1"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"AUGURRG1");
pub const LAYOUT_VERSION: u32 = 1;

/// The header is one cache line.
pub const HEADER_LEN: usize = 64;
pub mod header {
    pub const MAGIC: usize = 0; // u64
    pub const LAYOUT_VERSION: usize = 8; // u32
    pub const STATE: usize = 12; // u32, STATE_LIVE or STATE_RETIRED
    pub const FRAGMENT_ID: usize = 16; // u64
    pub const EPOCH: usize = 24; // u64
    pub const LOG_TAIL: usize = 32; // u64, absolute offset of the first free log byte
    pub const BUCKET_COUNT: usize = 40; // u64, a power of two
    pub const REGION_LEN: usize = 48; // u64
    pub const GENERATION: usize = 56; // u64, bumped by every compaction/split copy
}

/// The region holds the fragment's current data.
pub const STATE_LIVE: u32 = 0;
/// A compaction or split replaced this region: its contents may be stale. Set before
/// any write goes to the replacement, never cleared.
pub const STATE_RETIRED: u32 = 1;

/// The header's fields, decoded from its 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView {
    pub magic: u64,
    pub layout_version: u32,
    pub state: u32,
    pub fragment_id: u64,
    pub epoch: u64,
    pub log_tail: u64,
    pub bucket_count: u64,
    pub region_len: u64,
    pub generation: u64,
}

/// Decode a header from the first 64 bytes of `bytes`; None if there are fewer. No
/// field is validated: that is the caller's business (it knows what it expects).
pub fn decode_header(bytes: &[u8]) -> Option<HeaderView> {
    let b = bytes.get(..HEADER_LEN)?;
    Some(HeaderView {
        magic: u64_at(b, header::MAGIC),
        layout_version: u32_at(b, header::LAYOUT_VERSION),
        state: u32_at(b, header::STATE),
        fragment_id: u64_at(b, header::FRAGMENT_ID),
        epoch: u64_at(b, header::EPOCH),
        log_tail: u64_at(b, header::LOG_TAIL),
        bucket_count: u64_at(b, header::BUCKET_COUNT),
        region_len: u64_at(b, header::REGION_LEN),
        generation: u64_at(b, header::GENERATION),
    })
}

/// One bucket is one 64-byte cache line of eight 8-byte slots.
pub const BUCKET_LEN: usize = 64;
pub const SLOTS_PER_BUCKET: usize = 8;
/// A slot is `tag:16 | offset:48`; 0 means empty (no record lives at offset 0).
pub const OFFSET_MASK: u64 = (1 << 48) - 1;

pub fn log_start(bucket_count: usize) -> usize {
    HEADER_LEN + bucket_count * BUCKET_LEN
}

/// Absolute offset of bucket `bucket`.
pub fn bucket_offset(bucket: usize) -> usize {
    HEADER_LEN + bucket * BUCKET_LEN
}

/// The bucket a key's probe starts at; `bucket_count` is a power of two.
pub fn home_bucket(hash: u64, bucket_count: usize) -> usize {
    hash as usize & (bucket_count - 1)
}

/// The tag stored in a slot for a key of this hash: its top 16 bits.
pub fn hash_tag(hash: u64) -> u16 {
    (hash >> 48) as u16
}

pub fn slot_value(tag: u16, offset: usize) -> u64 {
    ((tag as u64) << 48) | (offset as u64 & OFFSET_MASK)
}

pub fn slot_tag(slot: u64) -> u16 {
    (slot >> 48) as u16
}

pub fn slot_offset(slot: u64) -> usize {
    (slot & OFFSET_MASK) as usize
}

/// Hash used for bucket choice and tags. Fixed (seedless) because a remote reader must
/// compute the same bucket as the writer.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Record header, 24 bytes, then an optional 8-byte expiry, key, value, zero padding to 8.
pub const RECORD_HEADER_LEN: usize = 24;
pub mod record {
    pub const LEN: usize = 0; // u32, whole record including padding
    pub const CRC: usize = 4; // u32, crc32c of bytes [8, unpadded end)
    pub const VERSION: usize = 8; // u64, epoch:24 | seq:40
    pub const KEY_LEN: usize = 16; // u16
    pub const FLAGS: usize = 18; // u16
    pub const VALUE_LEN: usize = 20; // u32
    pub const EXPIRY: usize = 24; // u64 unix ms, present iff FLAG_EXPIRES
}
pub const FLAG_TOMBSTONE: u16 = 1;
pub const FLAG_EXPIRES: u16 = 2;
pub const KNOWN_FLAGS: u16 = FLAG_TOMBSTONE | FLAG_EXPIRES;

/// Largest key the u16 length field can hold.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

pub const SEQ_BITS: u32 = 40;
pub fn version(epoch: u64, seq: u64) -> u64 {
    (epoch << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// Total length of a record with these parts, padded to 8 bytes.
pub fn record_len(key_len: usize, value_len: usize, expires: bool) -> usize {
    let raw = RECORD_HEADER_LEN + if expires { 8 } else { 0 } + key_len + value_len;
    (raw + 7) & !7
}

/// A decoded view of one record, borrowing the region bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub len: usize,
    pub version: u64,
    pub flags: u16,
    pub expire_at_ms: Option<u64>,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl RecordView<'_> {
    /// Where the value starts, relative to the record's first byte.
    pub fn value_start(&self) -> usize {
        RECORD_HEADER_LEN + if self.expire_at_ms.is_some() { 8 } else { 0 } + self.key.len()
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_at_ms, Some(t) if t <= now_ms)
    }
}

/// Why bytes at an offset are not a valid record: torn, stale or corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record at {0} runs past the end of the log")]
    OutOfBounds(usize),
    #[error("record at {0} has an inconsistent length")]
    BadLength(usize),
    #[error("record at {0} has unknown flags")]
    BadFlags(usize),
    #[error("record at {0} fails its crc32c check")]
    BadCrc(usize),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The fixed fields of a record, checked for consistency with each other (flags known,
/// `len` equal to the padded size the lengths and flags imply) but not yet against the
/// bytes that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub len: usize,
    pub crc: u32,
    pub version: u64,
    pub key_len: usize,
    pub flags: u16,
    pub value_len: usize,
}

/// Decode the 24-byte head of the record at `offset` of `bytes`. A remote reader uses
/// it to learn a record's length from a speculative first READ before fetching the rest.
pub fn decode_record_head(bytes: &[u8], offset: usize) -> Result<RecordHead, RecordError> {
    let head = offset
        .checked_add(RECORD_HEADER_LEN)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(RecordError::OutOfBounds(offset))?;
    let len = u32_at(head, record::LEN) as usize;
    let key_len = u16_at(head, record::KEY_LEN) as usize;
    let flags = u16_at(head, record::FLAGS);
    let value_len = u32_at(head, record::VALUE_LEN) as usize;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(RecordError::BadFlags(offset));
    }
    if len != record_len(key_len, value_len, flags & FLAG_EXPIRES != 0) {
        return Err(RecordError::BadLength(offset));
    }
    Ok(RecordHead {
        len,
        crc: u32_at(head, record::CRC),
        version: u64_at(head, record::VERSION),
        key_len,
        flags,
        value_len,
    })
}

/// Decode and verify the record starting at `offset` of `bytes`, which must end where
/// valid data ends (the log tail). Never panics on garbage.
pub fn decode_record(bytes: &[u8], offset: usize) -> Result<RecordView<'_>, RecordError> {
    let head = decode_record_head(bytes, offset)?;
    let record = offset
        .checked_add(head.len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(RecordError::OutOfBounds(offset))?;
    // In bounds: `len` equals the padded size of exactly these parts.
    let expires = head.flags & FLAG_EXPIRES != 0;
    let key_start = RECORD_HEADER_LEN + if expires { 8 } else { 0 };
    let value_start = key_start + head.key_len;
    let unpadded_end = value_start + head.value_len;
    if crc32c::crc32c(&record[record::VERSION..unpadded_end]) != head.crc {
        return Err(RecordError::BadCrc(offset));
    }
    Ok(RecordView {
        len: head.len,
        version: head.version,
        flags: head.flags,
        expire_at_ms: expires.then(|| u64_at(record, RECORD_HEADER_LEN)),
        key: &record[key_start..value_start],
        value: &record[value_start..unpadded_end],
    })
}

/// Encode a record into `out` (exactly `record_len(..)` bytes long).
pub fn encode_record(
    out: &mut [u8],
    version: u64,
    flags: u16,
    expire_at_ms: Option<u64>,
    key: &[u8],
    value: &[u8],
) {
    let expires = expire_at_ms.is_some();
    let flags = if expires {
        flags | FLAG_EXPIRES
    } else {
        flags & !FLAG_EXPIRES
    };
    let len = record_len(key.len(), value.len(), expires);
    debug_assert_eq!(out.len(), len);
    out[record::LEN..record::LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[record::VERSION..record::VERSION + 8].copy_from_slice(&version.to_le_bytes());
    out[record::KEY_LEN..record::KEY_LEN + 2].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[record::FLAGS..record::FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
    out[record::VALUE_LEN..record::VALUE_LEN + 4]
        .copy_from_slice(&(value.len() as u32).to_le_bytes());
    let mut at = RECORD_HEADER_LEN;
    if let Some(t) = expire_at_ms {
        out[at..at + 8].copy_from_slice(&t.to_le_bytes());
        at += 8;
    }
    out[at..at + key.len()].copy_from_slice(key);
    at += key.len();
    out[at..at + value.len()].copy_from_slice(value);
    at += value.len();
    out[at..].fill(0);
    let crc = crc32c::crc32c(&out[record::VERSION..at]);
    out[record::CRC..record::CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_flipped_byte_is_rejected() {
        let len = record_len(3, 5, true);
        assert_eq!(len % 8, 0);
        let mut buf = vec![0u8; len];
        encode_record(&mut buf, version(2, 7), 0, Some(1234), b"abc", b"hello");
        let r = decode_record(&buf, 0).expect("valid record");
        assert_eq!((r.key, r.value), (&b"abc"[..], &b"hello"[..]));
        assert_eq!(r.expire_at_ms, Some(1234));
        assert_eq!(r.version, version(2, 7));
        for i in 0..RECORD_HEADER_LEN + 8 + 8 {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode_record(&bad, 0).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn truncated_record_is_out_of_bounds() {
        let mut buf = vec![0u8; record_len(1, 1, false)];
        encode_record(&mut buf, 1, 0, None, b"k", b"v");
        assert!(matches!(
            decode_record(&buf[..buf.len() - 8], 0),
            Err(RecordError::OutOfBounds(0))
        ));
    }

    #[test]
    fn value_start_points_at_the_value() {
        for expiry in [None, Some(9)] {
            let mut buf = vec![0u8; record_len(3, 4, expiry.is_some())];
            encode_record(&mut buf, 1, 0, expiry, b"key", b"vvvv");
            let r = decode_record(&buf, 0).expect("valid record");
            assert_eq!(&buf[r.value_start()..r.value_start() + 4], b"vvvv");
        }
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]
            /// Bytes from a peer or a damaged region: decoding returns, never panics,
            /// and whatever it accepts lies inside the input and passes its crc.
            #[test]
            fn decoders_never_panic_on_garbage(
                mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
                offset in 0usize..700,
                len_hint in any::<u32>(),
                small_lengths in any::<bool>(),
            ) {
                if small_lengths && bytes.len() >= offset.saturating_add(RECORD_HEADER_LEN) {
                    // Make the length fields plausible so that the crc path is reached too.
                    let key_len = (len_hint % 64) as usize;
                    let value_len = (len_hint as usize >> 8) % 256;
                    let len = record_len(key_len, value_len, false) as u32;
                    bytes[offset..offset + 4].copy_from_slice(&len.to_le_bytes());
                    bytes[offset + 16..offset + 18].copy_from_slice(&(key_len as u16).to_le_bytes());
                    bytes[offset + 18..offset + 20].copy_from_slice(&0u16.to_le_bytes());
                    bytes[offset + 20..offset + 24].copy_from_slice(&(value_len as u32).to_le_bytes());
                }
                let _ = decode_header(&bytes);
                let _ = decode_record_head(&bytes, offset);
                if let Ok(r) = decode_record(&bytes, offset) {
                    prop_assert!(offset + r.len <= bytes.len());
                    let start = offset + record::VERSION;
                    let end = offset + r.value_start() + r.value.len();
                    let crc = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
                    prop_assert_eq!(crc32c::crc32c(&bytes[start..end]), crc);
                }
                let _ = decode_record(&bytes, usize::MAX - 3);
            }
        }
    }
}
