//! Byte layout of a region: `header | index | log`. Documented byte by byte in
//! `docs/layout.md`; this file is the single source of truth for the offsets.
//!
//! Everything is little-endian. Only two words are ever written concurrently with a
//! reader (a one-sided remote READ or a crash-surviving mapping): the header's log tail
//! and the index slots, each published by one 8-byte release store.

/// `b"AUGURRG1"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"AUGURRG1");
pub const LAYOUT_VERSION: u32 = 1;

/// The header is one cache line.
pub const HEADER_LEN: usize = 64;
pub mod header {
    pub const MAGIC: usize = 0; // u64
    pub const LAYOUT_VERSION: usize = 8; // u32
    pub const FRAGMENT_ID: usize = 16; // u64
    pub const EPOCH: usize = 24; // u64
    pub const LOG_TAIL: usize = 32; // u64, absolute offset of the first free log byte
    pub const BUCKET_COUNT: usize = 40; // u64, a power of two
    pub const REGION_LEN: usize = 48; // u64
    pub const GENERATION: usize = 56; // u64, bumped by every compaction/split copy
}

/// One bucket is one 64-byte cache line of eight 8-byte slots.
pub const BUCKET_LEN: usize = 64;
pub const SLOTS_PER_BUCKET: usize = 8;
/// A slot is `tag:16 | offset:48`; 0 means empty (no record lives at offset 0).
pub const OFFSET_MASK: u64 = (1 << 48) - 1;

pub fn log_start(bucket_count: usize) -> usize {
    HEADER_LEN + bucket_count * BUCKET_LEN
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

/// Decode and verify the record starting at `offset` of `bytes`, which must end where
/// valid data ends (the log tail). Never panics on garbage.
pub fn decode_record(bytes: &[u8], offset: usize) -> Result<RecordView<'_>, RecordError> {
    let head_end = offset
        .checked_add(RECORD_HEADER_LEN)
        .ok_or(RecordError::OutOfBounds(offset))?;
    if head_end > bytes.len() {
        return Err(RecordError::OutOfBounds(offset));
    }
    let len = u32_at(bytes, offset + record::LEN) as usize;
    let crc = u32_at(bytes, offset + record::CRC);
    let version = u64_at(bytes, offset + record::VERSION);
    let key_len = u16_at(bytes, offset + record::KEY_LEN) as usize;
    let flags = u16_at(bytes, offset + record::FLAGS);
    let value_len = u32_at(bytes, offset + record::VALUE_LEN) as usize;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(RecordError::BadFlags(offset));
    }
    let expires = flags & FLAG_EXPIRES != 0;
    if len != record_len(key_len, value_len, expires) {
        return Err(RecordError::BadLength(offset));
    }
    let end = offset
        .checked_add(len)
        .ok_or(RecordError::OutOfBounds(offset))?;
    if end > bytes.len() {
        return Err(RecordError::OutOfBounds(offset));
    }
    let body_start = offset + RECORD_HEADER_LEN;
    let key_start = body_start + if expires { 8 } else { 0 };
    let value_start = key_start + key_len;
    let unpadded_end = value_start + value_len;
    if crc32c::crc32c(&bytes[offset + record::VERSION..unpadded_end]) != crc {
        return Err(RecordError::BadCrc(offset));
    }
    Ok(RecordView {
        len,
        version,
        flags,
        expire_at_ms: expires.then(|| u64_at(bytes, body_start)),
        key: &bytes[key_start..value_start],
        value: &bytes[value_start..unpadded_end],
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
}
