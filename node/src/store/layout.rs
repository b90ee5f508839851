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
/// 2: flag bits 2 and 3 (hash header, hash field) and their value formats.
pub const LAYOUT_VERSION: u32 = 2;

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
/// The record is a hash's header: its value is [`HashHeader`] (unless a tombstone).
pub const FLAG_HASH: u16 = 4;
/// The record is one field of a hash: its key is [`field_key`], its value
/// `incarnation u64 | field value`. Part of the record's identity: a probe for a
/// field only matches field records and a probe for a key only non-field ones, so a
/// client key with the same bytes as a field key is a different entry.
pub const FLAG_FIELD: u16 = 8;
pub const KNOWN_FLAGS: u16 = FLAG_TOMBSTONE | FLAG_EXPIRES | FLAG_HASH | FLAG_FIELD;

/// A hash header's value: the incarnation (the version of the write that created the
/// hash; a field belongs to the hash only if it carries the same one, so DEL, expiry
/// or a SET over the hash drop every field at once) and the number of fields.
pub const HASH_HEADER_LEN: usize = 16;
/// A field record's value starts with the incarnation of the hash it belongs to.
pub const FIELD_PREFIX_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashHeader {
    pub incarnation: u64,
    pub fields: u64,
}

impl HashHeader {
    pub fn encode(&self) -> [u8; HASH_HEADER_LEN] {
        let mut out = [0u8; HASH_HEADER_LEN];
        out[..8].copy_from_slice(&self.incarnation.to_le_bytes());
        out[8..].copy_from_slice(&self.fields.to_le_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Option<HashHeader> {
        if value.len() != HASH_HEADER_LEN {
            return None;
        }
        Some(HashHeader {
            incarnation: u64_at(value, 0),
            fields: u64_at(value, 8),
        })
    }
}

/// The index key of field `field` of hash `key`: `u16 BE key length | key | field`.
/// Injective in (key, field); None if it would not fit a record's 16-bit key length.
pub fn field_key(key: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    let key_len = u16::try_from(key.len()).ok()?;
    if 2 + key.len() + field.len() > MAX_KEY_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(2 + key.len() + field.len());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(field);
    Some(out)
}

/// `(hash key, field)` of a field key; None if the length prefix does not fit.
pub fn split_field_key(composite: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes([*composite.first()?, *composite.get(1)?]) as usize;
    let rest = &composite[2..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// `(incarnation, field value)` of a live field record's value.
pub fn split_field_value(value: &[u8]) -> Option<(u64, &[u8])> {
    (value.len() >= FIELD_PREFIX_LEN).then(|| (u64_at(value, 0), &value[FIELD_PREFIX_LEN..]))
}

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

    /// A hash's header record (not a field, not a string).
    pub fn is_hash(&self) -> bool {
        self.flags & FLAG_HASH != 0
    }

    /// One field of a hash, stored under [`field_key`].
    pub fn is_field(&self) -> bool {
        self.flags & FLAG_FIELD != 0
    }

    /// The key that decides which fragment holds the record: a field goes with its
    /// hash, so a split at a client key can never separate a hash from its fields.
    /// (Checked well-formed by [`decode_record`].)
    pub fn route_key(&self) -> &[u8] {
        if self.is_field() {
            split_field_key(self.key).map_or(self.key, |(k, _)| k)
        } else {
            self.key
        }
    }

    /// The decoded header of a live hash record.
    pub fn hash_header(&self) -> Option<HashHeader> {
        (self.is_hash() && !self.is_tombstone())
            .then(|| HashHeader::decode(self.value))
            .flatten()
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
    #[error("record at {0} is a malformed hash header or field")]
    BadHash(usize),
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
    if flags & !KNOWN_FLAGS != 0 || flags & (FLAG_HASH | FLAG_FIELD) == FLAG_HASH | FLAG_FIELD {
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
    decode_record_checked(bytes, offset, true)
}

/// [`decode_record`] without the crc: for the owning core's own reads of records it
/// wrote itself or verified when they arrived (a copy, an import), which no
/// concurrent writer can tear. Bounds, lengths, flags and hash structure are still
/// checked, so garbage is still an error, never a panic.
pub fn decode_record_trusted(bytes: &[u8], offset: usize) -> Result<RecordView<'_>, RecordError> {
    decode_record_checked(bytes, offset, false)
}

fn decode_record_checked(
    bytes: &[u8],
    offset: usize,
    verify_crc: bool,
) -> Result<RecordView<'_>, RecordError> {
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
    if verify_crc && crc32c::crc32c(&record[record::VERSION..unpadded_end]) != head.crc {
        return Err(RecordError::BadCrc(offset));
    }
    let view = RecordView {
        len: head.len,
        version: head.version,
        flags: head.flags,
        expire_at_ms: expires.then(|| u64_at(record, RECORD_HEADER_LEN)),
        key: &record[key_start..value_start],
        value: &record[value_start..unpadded_end],
    };
    // Hash records carry structure every reader relies on: check it once, here.
    let live = !view.is_tombstone();
    let bad_hash = view.is_hash() && live && view.value.len() != HASH_HEADER_LEN;
    let bad_field = view.is_field()
        && (split_field_key(view.key).is_none() || (live && view.value.len() < FIELD_PREFIX_LEN));
    if bad_hash || bad_field {
        return Err(RecordError::BadHash(offset));
    }
    Ok(view)
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
    fn hash_records_are_checked_and_field_keys_are_injective() {
        let a = field_key(b"a", b"\0b").unwrap();
        let b = field_key(b"a\0", b"b").unwrap();
        assert_ne!(a, b);
        assert_eq!(split_field_key(&a), Some((&b"a"[..], &b"\0b"[..])));
        assert_eq!(split_field_key(b"\0\x09ab"), None, "length past the end");
        assert!(field_key(&[0u8; 40_000], &[0u8; 30_000]).is_none());
        let header = HashHeader {
            incarnation: 7,
            fields: 3,
        };
        let mut buf = vec![0u8; record_len(1, HASH_HEADER_LEN, false)];
        encode_record(&mut buf, 1, FLAG_HASH, None, b"h", &header.encode());
        assert_eq!(decode_record(&buf, 0).unwrap().hash_header(), Some(header));
        // A header of the wrong size, a field with a lying key, both flags at once.
        let mut buf = vec![0u8; record_len(1, 3, false)];
        encode_record(&mut buf, 1, FLAG_HASH, None, b"h", b"abc");
        assert_eq!(decode_record(&buf, 0).unwrap_err(), RecordError::BadHash(0));
        let mut buf = vec![0u8; record_len(3, 8, false)];
        encode_record(&mut buf, 1, FLAG_FIELD, None, b"\0\x05h", &[0; 8]);
        assert_eq!(decode_record(&buf, 0).unwrap_err(), RecordError::BadHash(0));
        encode_record(
            &mut buf,
            1,
            FLAG_FIELD | FLAG_HASH,
            None,
            b"\0\x01h",
            &[0; 8],
        );
        assert_eq!(
            decode_record(&buf, 0).unwrap_err(),
            RecordError::BadFlags(0)
        );
        let key = field_key(b"h", b"f").unwrap();
        let mut buf = vec![0u8; record_len(key.len(), 9, false)];
        encode_record(
            &mut buf,
            1,
            FLAG_FIELD,
            None,
            &key,
            &[5, 0, 0, 0, 0, 0, 0, 0, b'v'],
        );
        let r = decode_record(&buf, 0).unwrap();
        assert_eq!(r.route_key(), b"h");
        assert_eq!(split_field_value(r.value), Some((5, &b"v"[..])));
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
