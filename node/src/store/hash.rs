//! Hashes in a fragment (decision 0013): a header record under the hash's key
//! (`FLAG_HASH`: incarnation, field count; the key's expiry) and one record per field
//! (`FLAG_FIELD`) under `layout::field_key(key, field)`, whose value starts with the
//! incarnation of the hash it was written for. A field counts only while its
//! incarnation equals the header's, so DEL, expiry and SET over a hash drop all its
//! fields with one record; the stale field records are dropped by the next copy
//! (compaction, split). Fields route with their hash's key (`RecordView::route_key`),
//! so a split never separates them.
//!
//! Enumerating a hash (HGETALL, HSCAN) uses a memory-only set per hash of
//! `(xxh3(field), record offset)`, kept by `Fragment::write` and rebuilt from the
//! region after every copy: 16 bytes a field, the names and values stay in the region.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::fragment::{Fragment, StoreError};
use super::layout::{self, HashHeader, RecordView};

/// The current fields of one hash as `(xxh3(field), offset of its record)`, in that
/// order: HSCAN's cursor is an xxh3 position, stable under inserts and deletes.
#[derive(Debug, Default)]
pub struct HashFields {
    pub(super) incarnation: u64,
    pub(super) fields: BTreeSet<(u64, usize)>,
    /// Log offset of the last field record (write or delete) of this hash: a field
    /// write leaves the header as it was, so WATCH compares this too.
    pub(super) last_field_write: usize,
}

/// Heap bytes one field costs in [`HashFields`] (estimate for `used_memory`: a
/// 16-byte entry in B-tree nodes that are on average about two thirds full).
const FIELD_HEAP: usize = 24;

fn hash_heap(key: &[u8]) -> usize {
    key.len() + 96
}

/// A field's position in HSCAN order.
pub fn field_order(field: &[u8]) -> u64 {
    layout::key_hash(field)
}

/// What a key holds, for commands that care about its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashLookup {
    Missing,
    /// The key holds a string (hash commands answer WRONGTYPE).
    String,
    Hash(HashView),
}

/// A live hash's header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashView {
    pub header: HashHeader,
    pub expire_at_ms: Option<u64>,
}

/// Bytes of the record that stores `value` in field `field` of hash `key`.
pub fn field_record_len(key: &[u8], field: &[u8], value_len: usize) -> usize {
    layout::record_len(
        2 + key.len() + field.len(),
        layout::FIELD_PREFIX_LEN + value_len,
        false,
    )
}

pub fn header_record_len(key: &[u8], expires: bool) -> usize {
    layout::record_len(key.len(), layout::HASH_HEADER_LEN, expires)
}

impl Fragment {
    /// What `key` holds at `now_ms`: nothing, a string, or a hash (and its header).
    pub fn hash_at(&self, key: &[u8], now_ms: u64) -> Result<HashLookup, StoreError> {
        Ok(match self.get(key, now_ms)? {
            None => HashLookup::Missing,
            Some(r) => match r.hash_header() {
                Some(header) => HashLookup::Hash(HashView {
                    header,
                    expire_at_ms: r.expire_at_ms,
                }),
                None => HashLookup::String,
            },
        })
    }

    /// The value of `field` in the hash `key` whose header is `view`.
    pub fn hash_field(
        &self,
        key: &[u8],
        view: &HashView,
        field: &[u8],
    ) -> Result<Option<&[u8]>, StoreError> {
        let Some(composite) = layout::field_key(key, field) else {
            return Ok(None);
        };
        Ok(self
            .lookup_kind(&composite, true)?
            .filter(|r| !r.is_tombstone())
            .and_then(|r| {
                let value = r.value;
                layout::split_field_value(value)
            })
            .filter(|(incarnation, _)| *incarnation == view.header.incarnation)
            .map(|(_, v)| v))
    }

    /// The fields of the hash `key` whose header is `view`, as `(HSCAN position,
    /// record offset)` in HSCAN order; [`Fragment::hash_entry`] reads one.
    pub fn hash_entries(&self, key: &[u8], view: &HashView) -> Option<&BTreeSet<(u64, usize)>> {
        self.hashes
            .get(key)
            .filter(|h| h.incarnation == view.header.incarnation)
            .map(|h| &h.fields)
    }

    /// `(field, value)` of the field record at `offset` (from [`Fragment::hash_entries`]).
    pub fn hash_entry(&self, offset: usize) -> Result<(&[u8], &[u8]), StoreError> {
        let r = self.read_record(offset)?;
        let parts = r
            .is_field()
            .then(|| layout::split_field_key(r.key).zip(layout::split_field_value(r.value)));
        match parts.flatten() {
            Some(((_, field), (_, value))) => Ok((field, value)),
            None => Err(StoreError::Corrupt(layout::RecordError::BadHash(offset))),
        }
    }

    /// The incarnation a hash created now takes: the version of the next write, so
    /// every later creation of the same key gets a larger one.
    pub fn new_incarnation(&self) -> u64 {
        layout::version(self.epoch, self.next_seq)
    }

    /// Fail with `Full` (changing nothing) unless `bytes` more log bytes and
    /// `new_slots` more index slots fit: a command that writes several records
    /// checks first, so a retry after making room does not apply half of it twice.
    pub fn check_room(&self, bytes: usize, new_slots: usize) -> Result<(), StoreError> {
        if self.is_retired() {
            return Err(StoreError::Retired);
        }
        let slots_ok = self.used_slots + new_slots <= self.max_slots;
        if !slots_ok || !self.has_room(bytes, false) {
            return Err(StoreError::Full { need: bytes });
        }
        Ok(())
    }

    /// Write field `field` of hash `key` (incarnation `incarnation`). The header of
    /// that incarnation must be written first: it starts the hash's field set.
    pub fn put_field(
        &mut self,
        key: &[u8],
        incarnation: u64,
        field: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let composite = layout::field_key(key, field).ok_or(StoreError::KeyTooLong)?;
        let mut stored = Vec::with_capacity(layout::FIELD_PREFIX_LEN + value.len());
        stored.extend_from_slice(&incarnation.to_le_bytes());
        stored.extend_from_slice(value);
        self.write(&composite, &stored, layout::FLAG_FIELD, None)
    }

    /// Remove field `field` of hash `key` (the caller checked that it exists).
    pub fn delete_field(&mut self, key: &[u8], field: &[u8]) -> Result<(), StoreError> {
        let composite = layout::field_key(key, field).ok_or(StoreError::KeyTooLong)?;
        self.write(
            &composite,
            &[],
            layout::FLAG_FIELD | layout::FLAG_TOMBSTONE,
            None,
        )
    }

    /// Write the header of hash `key`; a header with no fields deletes the key.
    pub fn put_hash_header(
        &mut self,
        key: &[u8],
        header: HashHeader,
        expire_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        if header.fields == 0 {
            return self.write(key, &[], layout::FLAG_TOMBSTONE, None);
        }
        self.write(key, &header.encode(), layout::FLAG_HASH, expire_at_ms)
    }

    /// Give `key`'s live record (of any type) a new expiry, keeping its value and
    /// type. False if there is no live record.
    pub fn set_expiry(
        &mut self,
        key: &[u8],
        expire_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let Some(r) = self.get(key, now_ms)? else {
            return Ok(false);
        };
        let (value, flags) = (r.value.to_vec(), r.flags & layout::FLAG_HASH);
        self.write(key, &value, flags, expire_at_ms)?;
        Ok(true)
    }

    /// Where the last field record of hash `key` is in this region's log (None: not a
    /// hash here). Offsets only grow within a region; a compaction or split starts a
    /// new region (a new generation), so with the generation this marks field writes.
    pub fn hash_write_mark(&self, key: &[u8]) -> Option<usize> {
        self.hashes.get(key).map(|h| h.last_field_write)
    }

    /// Whether `key`'s current record is a hash header (perhaps expired): a memory
    /// lookup, so string commands check the type without another probe.
    pub fn holds_hash(&self, key: &[u8]) -> bool {
        !self.hashes.is_empty() && self.hashes.contains_key(key)
    }

    /// Heap bytes of the hashes' field sets.
    pub fn hash_heap_bytes(&self) -> usize {
        self.hash_heap_bytes
    }

    /// Keep the field sets in step with a record just written at `offset`, which
    /// replaced the key's record at `old` (if any).
    pub(super) fn track_hash(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u16,
        old: Option<usize>,
        offset: usize,
    ) {
        let tombstone = flags & layout::FLAG_TOMBSTONE != 0;
        if flags & layout::FLAG_FIELD != 0 {
            let Some((hash_key, field)) = layout::split_field_key(key) else {
                return;
            };
            let Some(h) = self.hashes.get_mut(hash_key) else {
                return;
            };
            h.last_field_write = h.last_field_write.max(offset);
            let order = field_order(field);
            if old.is_some_and(|o| h.fields.remove(&(order, o))) {
                self.hash_heap_bytes -= FIELD_HEAP;
            }
            if !tombstone
                && layout::split_field_value(value).map(|(i, _)| i) == Some(h.incarnation)
                && h.fields.insert((order, offset))
            {
                self.hash_heap_bytes += FIELD_HEAP;
            }
            return;
        }
        let header = (flags & layout::FLAG_HASH != 0 && !tombstone)
            .then(|| HashHeader::decode(value))
            .flatten();
        match header {
            Some(header) => {
                let same = self
                    .hashes
                    .get(key)
                    .is_some_and(|h| h.incarnation == header.incarnation);
                if !same {
                    self.drop_hash(key);
                    self.hashes.insert(
                        Bytes::copy_from_slice(key),
                        HashFields {
                            incarnation: header.incarnation,
                            fields: BTreeSet::new(),
                            last_field_write: offset,
                        },
                    );
                    self.hash_heap_bytes += hash_heap(key);
                }
            }
            None => self.drop_hash(key),
        }
    }

    /// Put the field record at `offset` into the set of hash `hash_key`, if that hash
    /// is here with incarnation `incarnation` (a rebuild's walk meets fields before
    /// their header as often as after it, and joins those afterwards).
    pub(super) fn join_field(
        &mut self,
        hash_key: &[u8],
        order: u64,
        offset: usize,
        incarnation: u64,
    ) {
        if let Some(h) = self.hashes.get_mut(hash_key) {
            if h.incarnation == incarnation {
                h.last_field_write = h.last_field_write.max(offset);
                if h.fields.insert((order, offset)) {
                    self.hash_heap_bytes += FIELD_HEAP;
                }
            }
        }
    }

    fn drop_hash(&mut self, key: &[u8]) {
        if self.hashes.is_empty() {
            return;
        }
        if let Some(h) = self.hashes.remove(key) {
            self.hash_heap_bytes -= hash_heap(key) + h.fields.len() * FIELD_HEAP;
        }
    }

    /// Whether a record belongs to live data at `now_ms`: anything but a field of a
    /// hash that is gone, expired or of another incarnation.
    pub(super) fn field_is_current(
        &self,
        r: &RecordView<'_>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        if !r.is_field() || r.is_tombstone() {
            return Ok(true);
        }
        let (Some((key, _)), Some((incarnation, _))) = (
            layout::split_field_key(r.key),
            layout::split_field_value(r.value),
        ) else {
            return Ok(false);
        };
        Ok(matches!(
            self.hash_at(key, now_ms)?,
            HashLookup::Hash(v) if v.header.incarnation == incarnation
        ))
    }

    /// Recount field records and rebuild the field sets from the region (after
    /// a copy). Expired hashes keep their sets until their header is removed.
    pub(super) fn rebuild_hashes(&mut self) -> Result<(), StoreError> {
        let mut hashes: HashMap<Bytes, HashFields> = HashMap::new();
        let mut fields: Vec<(Bytes, u64, usize, u64)> = Vec::new();
        let mut live_fields = 0;
        self.for_each_current(|offset, r| {
            if r.is_tombstone() {
                return;
            }
            if let Some(header) = r.hash_header() {
                hashes.insert(
                    Bytes::copy_from_slice(r.key),
                    HashFields {
                        incarnation: header.incarnation,
                        fields: BTreeSet::new(),
                        last_field_write: offset,
                    },
                );
            } else if r.is_field() {
                live_fields += 1;
                if let (Some((k, f)), Some((i, _))) = (
                    layout::split_field_key(r.key),
                    layout::split_field_value(r.value),
                ) {
                    fields.push((Bytes::copy_from_slice(k), field_order(f), offset, i));
                }
            }
        })?;
        let mut heap: usize = hashes.keys().map(|k| hash_heap(k)).sum();
        for (key, order, offset, incarnation) in fields {
            if let Some(h) = hashes.get_mut(&key[..]) {
                // Deleting a field rewrites the header (the count changes), so the live
                // records' offsets are enough to mark the last field write.
                h.last_field_write = h.last_field_write.max(offset);
                if h.incarnation == incarnation && h.fields.insert((order, offset)) {
                    heap += FIELD_HEAP;
                }
            }
        }
        self.hashes = hashes;
        self.live_fields = live_fields;
        self.hash_heap_bytes = heap;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fragment::tests::frag;

    fn make_hash(f: &mut Fragment, key: &[u8], n: usize, expire: Option<u64>) -> HashView {
        let incarnation = f.new_incarnation();
        let header = HashHeader {
            incarnation,
            fields: n as u64,
        };
        f.put_hash_header(key, header, expire).unwrap();
        for i in 0..n {
            f.put_field(key, incarnation, format!("f{i}").as_bytes(), b"v")
                .unwrap();
        }
        HashView {
            header,
            expire_at_ms: expire,
        }
    }

    #[test]
    fn fields_are_not_keys_and_die_with_their_hash() {
        let mut f = frag(1 << 20);
        let view = make_hash(&mut f, b"h", 3, None);
        f.put(b"s", b"x", None).unwrap();
        assert_eq!(f.key_count(), 2);
        assert_eq!(f.live_keys(), 5);
        assert_eq!(
            f.sorted_keys(0).unwrap(),
            vec![Bytes::from("h"), Bytes::from("s")]
        );
        assert_eq!(f.hash_field(b"h", &view, b"f1").unwrap(), Some(&b"v"[..]));
        assert_eq!(f.hash_entries(b"h", &view).unwrap().len(), 3);
        // A client key with a field key's bytes is a different entry.
        let composite = layout::field_key(b"h", b"f1").unwrap();
        assert!(f.get(&composite, 0).unwrap().is_none());
        f.put(&composite, b"client", None).unwrap();
        assert_eq!(f.hash_field(b"h", &view, b"f1").unwrap(), Some(&b"v"[..]));
        assert_eq!(f.get(&composite, 0).unwrap().unwrap().value, b"client");
        // DEL: one tombstone, and the fields are gone with it.
        assert!(f.delete(b"h", 0).unwrap());
        assert_eq!(f.hash_at(b"h", 0).unwrap(), HashLookup::Missing);
        assert!(f.hash_entries(b"h", &view).is_none());
        // Recreated: the old fields do not come back.
        let again = make_hash(&mut f, b"h", 1, None);
        assert!(again.header.incarnation > view.header.incarnation);
        assert_eq!(f.hash_field(b"h", &again, b"f2").unwrap(), None);
        assert_eq!(f.hash_entries(b"h", &again).unwrap().len(), 1);
        // The stale field records go at the next compaction; live data stays.
        let c = f.compact(1 << 20, 0, 0, false).unwrap();
        assert_eq!(c.live_keys(), 2 + 1 + 1, "h, s, the client key, one field");
        assert_eq!(c.key_count(), 3);
        let view = match c.hash_at(b"h", 0).unwrap() {
            HashLookup::Hash(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.hash_field(b"h", &view, b"f0").unwrap(), Some(&b"v"[..]));
        assert_eq!(c.hash_entries(b"h", &view).unwrap().len(), 1);
        assert_eq!(c.hash_heap_bytes(), f.hash_heap_bytes());
    }

    #[test]
    fn expiry_and_set_over_a_hash_drop_its_fields() {
        let mut f = frag(1 << 20);
        let view = make_hash(&mut f, b"t", 2, Some(100));
        assert!(matches!(f.hash_at(b"t", 99).unwrap(), HashLookup::Hash(_)));
        assert_eq!(f.hash_at(b"t", 100).unwrap(), HashLookup::Missing);
        assert_eq!(f.expire_due(100, 10).unwrap(), 1);
        assert!(f.hash_entries(b"t", &view).is_none());
        let view = make_hash(&mut f, b"u", 2, None);
        f.put(b"u", b"now a string", None).unwrap();
        assert_eq!(f.hash_at(b"u", 0).unwrap(), HashLookup::String);
        assert!(f.hash_entries(b"u", &view).is_none());
        assert_eq!(f.hash_heap_bytes(), 0);
        // EXPIRE keeps the type.
        make_hash(&mut f, b"v", 1, None);
        assert!(f.set_expiry(b"v", Some(500), 0).unwrap());
        assert!(
            matches!(f.hash_at(b"v", 0).unwrap(), HashLookup::Hash(v) if v.expire_at_ms == Some(500))
        );
    }

    #[test]
    fn a_split_keeps_every_hash_whole() {
        let mut f = frag(4 << 20);
        for i in 0..200 {
            let key = format!("key:{i:04}");
            if i % 10 == 0 {
                make_hash(&mut f, key.as_bytes(), 50, None);
            } else {
                f.put(key.as_bytes(), b"v", None).unwrap();
            }
        }
        let at = f.split_key(0).unwrap().unwrap();
        let (lo, hi) = f.split(at, 2, 4 << 20, 0, false).unwrap();
        assert_eq!(lo.key_count() + hi.key_count(), 200);
        assert_eq!(lo.live_keys() + hi.live_keys(), 200 + 20 * 50);
        for part in [&lo, &hi] {
            for key in part.sorted_keys(0).unwrap() {
                if let HashLookup::Hash(v) = part.hash_at(&key, 0).unwrap() {
                    let entries = part.hash_entries(&key, &v).unwrap();
                    assert_eq!(entries.len(), 50);
                    for (order, offset) in entries {
                        let (name, value) = part.hash_entry(*offset).unwrap();
                        assert_eq!(*order, field_order(name));
                        assert_eq!(part.hash_field(&key, &v, name).unwrap(), Some(value));
                    }
                }
            }
        }
    }

    #[test]
    fn compaction_makes_room_for_many_records_at_once() {
        let f = frag(16 << 10);
        let (fields, bytes) = (5000, 5000 * field_record_len(b"h", b"field:0000", 1));
        assert!(f.check_room(bytes, fields + 1).is_err());
        let c = f.compact(16 << 10, bytes, 0, false).unwrap();
        assert!(c.check_room(bytes, fields + 1).is_ok());
    }

    #[test]
    fn check_room_counts_slots_and_bytes() {
        let f = frag(64 << 10);
        assert!(f.check_room(100, 1).is_ok());
        assert!(matches!(
            f.check_room(1 << 20, 1),
            Err(StoreError::Full { .. })
        ));
        assert!(matches!(
            f.check_room(8, 1 << 20),
            Err(StoreError::Full { .. })
        ));
    }
}
