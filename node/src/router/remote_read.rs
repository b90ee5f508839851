//! GET of a key owned by another node, with one-sided READs of the owner's region: the
//! owner's CPU does no per-request work (on verbs; the TCP backend emulates READs with a
//! responder task on the owner).
//!
//! Per attempt (the protocol and why it is linearizable: `docs/decisions/0007-remote-reads.md`):
//! 1. one `read_batch` of [the key's bucket, then the header] — the fabric executes the ops
//!    of a batch in order on the owner, so the header is read *after* the slot;
//! 2. a retired, replaced or mismatched header → [`RemoteReadError::Retired`];
//! 3. for each slot whose tag matches, in slot order as the local probe: READ the record
//!    (a speculative 512 bytes, then the rest), validate it with the store's own decoder
//!    (`layout::decode_record`: length, flags, crc) and compare keys; an empty slot ends
//!    the probe (→ `Missing`), a full bucket without the key moves the probe to the next
//!    bucket (one more batch).
//!
//! A failed validation restarts the attempt from the bucket, up to [`MAX_ATTEMPTS`]
//! attempts (→ [`RemoteReadError::Torn`]); the same failure twice in a row at an unchanged
//! slot is not a race but damage (→ [`RemoteReadError::Corrupt`]): a published record is
//! never rewritten.
//!
//! Everything the peer returns is hostile input: every offset is checked against the log
//! and the region before it is used, and the only allocation a peer influences (the record
//! buffer) is bounded by the log tail, itself bounded by the region length.

use std::cell::RefCell;
use std::rc::Rc;

use augur_fabric::{
    Access, Connection, LocalMr, Op, Region, RemoteRegion, RemoteStatus, Transport,
};
use bytes::Bytes;

use crate::store::layout::{self, HeaderView};
use crate::store::Fragment;

/// Attempts of one GET before a record that keeps failing validation is reported torn.
pub const MAX_ATTEMPTS: usize = 8;
/// Bytes of a record fetched by the first READ; most records fit, longer ones take a
/// second READ for the rest.
pub const SPECULATIVE_READ: usize = 512;
/// Size of a reader's standing scratch region; a record longer than what fits after the
/// bucket and header gets a temporary registration of its own.
pub const SCRATCH_LEN: usize = 64 << 10;
/// Idle scratch regions kept for reuse (one is checked out per GET in flight).
const IDLE_SCRATCH: usize = 4;

/// Where each READ lands in a scratch region.
const BUCKET_AT: u64 = 0;
const HEADER_AT: u64 = layout::BUCKET_LEN as u64;
const RECORD_AT: u64 = HEADER_AT + layout::HEADER_LEN as u64;

/// What a reader knows about a remote fragment: its registered region and the header
/// fields it was described with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFragment {
    pub fragment_id: u64,
    pub region: RemoteRegion,
    pub bucket_count: u64,
    /// The header's generation when the descriptor was made.
    pub generation: u64,
}

impl RemoteFragment {
    /// The descriptor of `fragment`, whose region the owner registered as `region`.
    pub fn describe(fragment: &Fragment, region: RemoteRegion) -> RemoteFragment {
        RemoteFragment {
            fragment_id: fragment.id(),
            region,
            bucket_count: fragment.geometry().buckets as u64,
            generation: fragment.generation(),
        }
    }
}

/// The outcome of a remote GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteValue {
    Found {
        value: Bytes,
        expire_at_ms: Option<u64>,
    },
    /// Never written, deleted (tombstone) or expired at `now_ms`.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteReadError {
    /// The region was retired (a compaction or split replaced it), deregistered, or is not
    /// the one the descriptor was made for: refresh the descriptor and retry.
    #[error("remote region retired or replaced: refresh the descriptor")]
    Retired,
    /// Validation kept failing, each time differently, for [`MAX_ATTEMPTS`] attempts.
    #[error("remote record still torn after {MAX_ATTEMPTS} attempts")]
    Torn,
    /// Validation failed the same way twice at an unchanged slot, or the header is of a
    /// layout this reader does not know.
    #[error("remote region corrupt: {0}")]
    Corrupt(String),
    #[error("fabric: {0}")]
    Fabric(augur_fabric::Error),
    /// The key holds a hash: a one-sided read answers string reads only, so the
    /// caller sends the request to the owner instead.
    #[error("key holds a hash, not a string")]
    NotAString,
}

impl From<augur_fabric::Error> for RemoteReadError {
    fn from(e: augur_fabric::Error) -> Self {
        match e {
            // Deregistered, or registered again under a new generation: the descriptor
            // is stale, which is what `Retired` tells the caller.
            augur_fabric::Error::Remote(RemoteStatus::NoSuchRegion | RemoteStatus::BadKey) => {
                RemoteReadError::Retired
            }
            e => RemoteReadError::Fabric(e),
        }
    }
}

/// Why an attempt's bytes did not validate; compared between attempts to tell damage
/// (the same failure at the same slot) from a race.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    slot: u64,
    what: String,
}

/// How an attempt ended without a value.
enum Stop {
    Fatal(RemoteReadError),
    Retry(Failure),
}

impl From<augur_fabric::Error> for Stop {
    fn from(e: augur_fabric::Error) -> Self {
        Stop::Fatal(e.into())
    }
}

impl From<RemoteReadError> for Stop {
    fn from(e: RemoteReadError) -> Self {
        Stop::Fatal(e)
    }
}

fn retry(slot: u64, what: impl Into<String>) -> Stop {
    Stop::Retry(Failure {
        slot,
        what: what.into(),
    })
}

/// The geometry of a remote fragment, checked once per GET.
struct Geometry {
    bucket_count: usize,
    log_start: usize,
    /// Bytes a READ may reach: the registered length.
    region_len: usize,
}

impl Geometry {
    fn of(frag: &RemoteFragment) -> Result<Geometry, RemoteReadError> {
        let bad = |what: &str| RemoteReadError::Corrupt(format!("descriptor: {what}"));
        let bucket_count = usize::try_from(frag.bucket_count)
            .ok()
            .filter(|b| b.is_power_of_two())
            .ok_or_else(|| bad("bucket count is not a power of two"))?;
        let region_len =
            usize::try_from(frag.region.len).map_err(|_| bad("region length overflows"))?;
        let log_start = bucket_count
            .checked_mul(layout::BUCKET_LEN)
            .and_then(|index| index.checked_add(layout::HEADER_LEN))
            .filter(|&start| start <= region_len)
            .ok_or_else(|| bad("index larger than the region"))?;
        Ok(Geometry {
            bucket_count,
            log_start,
            region_len,
        })
    }
}

/// Registers a local region with a transport, for use as a READ target.
type Registrar<M> = Box<dyn Fn(&Region) -> augur_fabric::Result<M>>;

/// Reads keys of remote fragments with one-sided READs. One per core; GETs may run
/// concurrently (each checks out its own scratch region).
pub struct RemoteReader<M> {
    /// Idle registered scratch regions of `SCRATCH_LEN` bytes.
    scratch: RefCell<Vec<M>>,
    /// Registers a local region with the transport the connections belong to.
    register: Registrar<M>,
}

impl<M: LocalMr> RemoteReader<M> {
    /// A reader whose scratch regions are registered with `transport` (the one whose
    /// connections [`RemoteReader::get`] will be given).
    pub fn new<T>(transport: Rc<T>) -> Result<RemoteReader<M>, RemoteReadError>
    where
        T: Transport<Mr = M> + 'static,
    {
        let reader = RemoteReader {
            scratch: RefCell::new(Vec::new()),
            register: Box::new(move |region: &Region| transport.register(region, Access::LOCAL)),
        };
        let first = reader.new_scratch(SCRATCH_LEN)?;
        reader.scratch.borrow_mut().push(first);
        Ok(reader)
    }

    fn new_scratch(&self, len: usize) -> augur_fabric::Result<M> {
        let region = Region::new("augur-remote-read", len)?;
        (self.register)(&region)
    }

    fn take_scratch(&self) -> augur_fabric::Result<M> {
        let idle = self.scratch.borrow_mut().pop();
        match idle {
            Some(m) => Ok(m),
            None => self.new_scratch(SCRATCH_LEN),
        }
    }

    /// Only after a GET whose READs all completed: a READ that failed may leave a
    /// sibling of its batch still landing in the scratch, so a failed GET drops its
    /// scratch (deregistering it) rather than handing it to the next GET.
    fn give_back(&self, m: M) {
        let mut idle = self.scratch.borrow_mut();
        if idle.len() < IDLE_SCRATCH {
            idle.push(m);
        }
    }

    /// The value of `key` in the remote fragment `frag` at time `now_ms`.
    pub async fn get<C: Connection<Mr = M>>(
        &self,
        conn: &C,
        frag: &RemoteFragment,
        key: &[u8],
        now_ms: u64,
    ) -> Result<RemoteValue, RemoteReadError> {
        if key.len() > layout::MAX_KEY_LEN {
            return Ok(RemoteValue::Missing); // the owner refuses to store such a key
        }
        let geometry = Geometry::of(frag)?;
        let scratch = self.take_scratch()?;
        let mut previous: Option<Failure> = None;
        for _ in 0..MAX_ATTEMPTS {
            match self
                .attempt(conn, frag, &geometry, &scratch, key, now_ms)
                .await
            {
                Ok(value) => {
                    self.give_back(scratch);
                    return Ok(value);
                }
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Retry(failure)) => {
                    if previous.as_ref() == Some(&failure) {
                        self.give_back(scratch);
                        return Err(RemoteReadError::Corrupt(failure.what));
                    }
                    tracing::debug!(
                        fragment = frag.fragment_id,
                        "remote read retried: {}",
                        failure.what
                    );
                    previous = Some(failure);
                }
            }
        }
        self.give_back(scratch);
        Err(RemoteReadError::Torn)
    }

    async fn attempt<C: Connection<Mr = M>>(
        &self,
        conn: &C,
        frag: &RemoteFragment,
        geometry: &Geometry,
        scratch: &M,
        key: &[u8],
        now_ms: u64,
    ) -> Result<RemoteValue, Stop> {
        let hash = layout::key_hash(key);
        let tag = layout::hash_tag(hash);
        let mut bucket = layout::home_bucket(hash, geometry.bucket_count);
        for _ in 0..geometry.bucket_count {
            let (slots, tail) = self
                .read_bucket_and_header(conn, frag, geometry, scratch, bucket)
                .await?;
            for slot in slots {
                if slot == 0 {
                    // Slots are never emptied: the key is not further along.
                    return Ok(RemoteValue::Missing);
                }
                if layout::slot_tag(slot) != tag {
                    continue;
                }
                let record = self
                    .read_record(conn, frag, geometry, scratch, slot, tail)
                    .await?;
                let view = layout::decode_record(&record, 0)
                    .map_err(|e| retry(slot, format!("slot {slot:#x}: {e}")))?;
                if view.key != key || view.is_field() {
                    continue; // another key with the same tag, or a hash field
                }
                if view.is_tombstone() || view.is_expired(now_ms) {
                    return Ok(RemoteValue::Missing);
                }
                if view.is_hash() {
                    // Not a string: the owner answers (WRONGTYPE, TYPE, ...).
                    return Err(Stop::Fatal(RemoteReadError::NotAString));
                }
                let expire_at_ms = view.expire_at_ms;
                let value = view.value_start()..view.value_start() + view.value.len();
                return Ok(RemoteValue::Found {
                    value: Bytes::from(record).slice(value),
                    expire_at_ms,
                });
            }
            bucket = (bucket + 1) & (geometry.bucket_count - 1);
        }
        Ok(RemoteValue::Missing) // every slot taken, none ours
    }

    /// READs bucket `bucket`, then the header, in one batch; returns the bucket's slots
    /// and the log tail once the header says the region is still the fragment's.
    async fn read_bucket_and_header<C: Connection<Mr = M>>(
        &self,
        conn: &C,
        frag: &RemoteFragment,
        geometry: &Geometry,
        scratch: &M,
        bucket: usize,
    ) -> Result<([u64; layout::SLOTS_PER_BUCKET], usize), Stop> {
        let ops = [
            Op {
                remote: frag.region,
                remote_offset: layout::bucket_offset(bucket) as u64,
                len: layout::BUCKET_LEN as u64,
                local: scratch,
                local_offset: BUCKET_AT,
            },
            Op {
                remote: frag.region,
                remote_offset: 0,
                len: layout::HEADER_LEN as u64,
                local: scratch,
                local_offset: HEADER_AT,
            },
        ];
        conn.read_batch(&ops).await?;
        let mut bytes = [0u8; layout::BUCKET_LEN + layout::HEADER_LEN];
        scratch.region().read_at(BUCKET_AT, &mut bytes)?;
        let (bucket_bytes, header_bytes) = bytes.split_at(layout::BUCKET_LEN);
        let header = layout::decode_header(header_bytes)
            .ok_or_else(|| RemoteReadError::Corrupt("short header".into()))?;
        let tail = check_header(frag, geometry, &header)?;
        let mut slots = [0u64; layout::SLOTS_PER_BUCKET];
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = layout::u64_at(bucket_bytes, i * 8);
        }
        Ok((slots, tail))
    }

    /// READs the record `slot` points at, whole, into a buffer of its exact length.
    async fn read_record<C: Connection<Mr = M>>(
        &self,
        conn: &C,
        frag: &RemoteFragment,
        geometry: &Geometry,
        scratch: &M,
        slot: u64,
        tail: usize,
    ) -> Result<Vec<u8>, Stop> {
        let offset = layout::slot_offset(slot);
        // Records start 8-aligned inside the log and end at or before the tail, which
        // the header (read after the slot) shows as it was when the slot was published
        // or later.
        if offset < geometry.log_start
            || !offset.is_multiple_of(8)
            || offset + layout::RECORD_HEADER_LEN > tail
        {
            return Err(retry(
                slot,
                format!(
                    "slot {slot:#x} points outside the log [{}, {tail})",
                    geometry.log_start
                ),
            ));
        }
        let available = tail - offset;
        let first = available.min(SPECULATIVE_READ);
        conn.read(
            &frag.region,
            offset as u64,
            first as u64,
            scratch,
            RECORD_AT,
        )
        .await?;
        let mut head = [0u8; SPECULATIVE_READ];
        let head = &mut head[..first];
        scratch.region().read_at(RECORD_AT, head)?;
        let record_head = layout::decode_record_head(head, 0)
            .map_err(|e| retry(slot, format!("slot {slot:#x}: {e}")))?;
        let len = record_head.len;
        if len > available {
            return Err(retry(
                slot,
                format!("slot {slot:#x}: record of {len} bytes runs past the log tail {tail}"),
            ));
        }
        // Bounded: len <= tail - offset <= region length.
        let mut record = vec![0u8; len];
        let have = first.min(len);
        record[..have].copy_from_slice(&head[..have]);
        if len > first {
            let rest = &mut record[first..];
            let remote_offset = (offset + first) as u64;
            if RECORD_AT as usize + rest.len() <= scratch.region().len() {
                conn.read(
                    &frag.region,
                    remote_offset,
                    rest.len() as u64,
                    scratch,
                    RECORD_AT,
                )
                .await?;
                scratch.region().read_at(RECORD_AT, rest)?;
            } else {
                // A value this large is rare: register a region just for it.
                let large = self.new_scratch(rest.len())?;
                conn.read(&frag.region, remote_offset, rest.len() as u64, &large, 0)
                    .await?;
                large.region().read_at(0, rest)?;
            }
        }
        Ok(record)
    }
}

/// Is this header still that of the fragment the descriptor was made for, and live?
/// Returns its log tail, checked against the geometry.
fn check_header(
    frag: &RemoteFragment,
    geometry: &Geometry,
    header: &HeaderView,
) -> Result<usize, Stop> {
    if header.magic != layout::MAGIC
        || header.state != layout::STATE_LIVE
        || header.fragment_id != frag.fragment_id
        || header.generation != frag.generation
        || header.bucket_count != frag.bucket_count
    {
        return Err(Stop::Fatal(RemoteReadError::Retired));
    }
    if header.layout_version != layout::LAYOUT_VERSION {
        return Err(Stop::Fatal(RemoteReadError::Corrupt(format!(
            "unknown layout version {}",
            header.layout_version
        ))));
    }
    let limit = geometry.region_len as u64;
    if header.region_len > limit {
        return Err(Stop::Fatal(RemoteReadError::Corrupt(format!(
            "header region length {} exceeds the registered {limit}",
            header.region_len
        ))));
    }
    match usize::try_from(header.log_tail) {
        Ok(tail) if tail >= geometry.log_start && header.log_tail <= header.region_len => Ok(tail),
        _ => Err(retry(
            0,
            format!(
                "log tail {} outside [{}, {}]",
                header.log_tail, geometry.log_start, header.region_len
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Instant;

    use augur_fabric::tcp::{TcpConnection, TcpMr, TcpTransport};
    use augur_fabric::FabricConfig;
    use glommio::LocalExecutorBuilder;

    use crate::store::Geometry;

    const SECRET: &[u8] = b"augur remote-read test secret 0123456789";

    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::default()
            .spawn(f)
            .expect("glommio executor")
            .join()
            .expect("test body");
    }

    /// The owner's and the reader's transports on loopback, connected: (owner, reader,
    /// the reader's connection to the owner, the owner's end).
    async fn cluster() -> (TcpTransport, Rc<TcpTransport>, TcpConnection, TcpConnection) {
        let lo = "127.0.0.1:0".parse().expect("addr");
        let owner = TcpTransport::bind(FabricConfig::new(SECRET), lo).expect("owner");
        let reader = Rc::new(TcpTransport::bind(FabricConfig::new(SECRET), lo).expect("reader"));
        let (c, o) =
            futures_lite::future::zip(reader.connect(owner.local_addr()), owner.accept()).await;
        (owner, reader, c.expect("connect"), o.expect("accept"))
    }

    /// What the owner node does to serve a fragment: map the memfd again, register it.
    fn export(owner: &TcpTransport, frag: &Fragment) -> (Region, TcpMr, RemoteFragment) {
        let file = frag.export_fd().expect("export_fd");
        let region = Region::from_file(file, frag.region_len()).expect("fabric mapping");
        let mr = owner.register(&region, Access::READ).expect("register");
        let desc = RemoteFragment::describe(frag, mr.descriptor());
        (region, mr, desc)
    }

    fn fragment(buckets: usize, log_capacity: usize) -> Fragment {
        let geometry = Geometry {
            buckets,
            log_capacity,
        };
        Fragment::create(7, Bytes::new(), None, geometry, 3, false).expect("fragment")
    }

    /// What the local path says, in the remote reader's terms.
    fn local(frag: &Fragment, key: &[u8], now: u64) -> RemoteValue {
        match frag.get(key, now).expect("local get") {
            Some(r) => RemoteValue::Found {
                value: Bytes::copy_from_slice(r.value),
                expire_at_ms: r.expire_at_ms,
            },
            None => RemoteValue::Missing,
        }
    }

    fn found(value: &[u8], expire_at_ms: Option<u64>) -> RemoteValue {
        RemoteValue::Found {
            value: Bytes::copy_from_slice(value),
            expire_at_ms,
        }
    }

    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn every_kind_of_key_reads_as_locally() {
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            // 16 buckets, 128 slots: 110 keys overflow some home buckets into the next.
            let mut f = fragment(16, 8 << 20);
            let now = 1_000;
            let sizes = [
                0,
                1,
                7,
                487,
                488,
                489,
                4096,
                65_000,
                65_536,
                70_000,
                1 << 20,
            ];
            for (i, &n) in sizes.iter().enumerate() {
                f.put(format!("size:{n}").as_bytes(), &pattern(i as u64, n), None)
                    .unwrap();
            }
            for i in 0..80u32 {
                f.put(format!("small:{i}").as_bytes(), &i.to_le_bytes(), None)
                    .unwrap();
            }
            f.put(b"ttl:future", b"later", Some(now + 1)).unwrap();
            f.put(b"ttl:past", b"gone", Some(now)).unwrap();
            f.put(b"ttl:long-past", b"gone", Some(1)).unwrap();
            for i in 0..10u32 {
                f.put(format!("deleted:{i}").as_bytes(), b"x", None)
                    .unwrap();
                assert!(f.delete(format!("deleted:{i}").as_bytes(), now).unwrap());
            }
            let mut per_bucket = [0usize; 16];
            f.for_each_current(|_, r| {
                per_bucket[layout::home_bucket(layout::key_hash(r.key), 16)] += 1;
            })
            .unwrap();
            assert!(
                per_bucket.iter().any(|&n| n > layout::SLOTS_PER_BUCKET),
                "some probe must leave its home bucket: {per_bucket:?}"
            );

            let (_region, _mr, desc) = export(&owner, &f);
            let reader = RemoteReader::new(rt).expect("reader");
            let mut keys: Vec<Vec<u8>> = Vec::new();
            f.for_each_current(|_, r| keys.push(r.key.to_vec()))
                .unwrap();
            keys.push(b"never-written".to_vec());
            keys.push(vec![b'x'; layout::MAX_KEY_LEN + 1]);
            let mut found_count = 0;
            for key in &keys {
                let got = reader
                    .get(&conn, &desc, key, now)
                    .await
                    .expect("remote get");
                assert_eq!(
                    got,
                    local(&f, key, now),
                    "key {:?}",
                    String::from_utf8_lossy(key)
                );
                found_count += matches!(got, RemoteValue::Found { .. }) as usize;
            }
            assert_eq!(found_count, sizes.len() + 80 + 1);
            assert_eq!(
                reader
                    .get(&conn, &desc, b"size:1048576", now)
                    .await
                    .unwrap(),
                found(&pattern(10, 1 << 20), None)
            );
            assert_eq!(
                reader.get(&conn, &desc, b"ttl:future", now).await.unwrap(),
                found(b"later", Some(now + 1))
            );
            assert_eq!(
                reader
                    .get(&conn, &desc, b"ttl:future", now + 1)
                    .await
                    .unwrap(),
                RemoteValue::Missing
            );

            // Concurrent GETs on one reader: each takes its own scratch.
            let gets = keys
                .iter()
                .map(|k| reader.get(&conn, &desc, k, now))
                .collect::<Vec<_>>();
            let results = futures::future::join_all(gets).await;
            for (key, got) in keys.iter().zip(results) {
                assert_eq!(got.expect("concurrent get"), local(&f, key, now));
            }
        });
    }

    #[test]
    fn overwrites_are_seen_at_once() {
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let mut f = fragment(64, 1 << 20);
            f.put(b"k", b"first", None).unwrap();
            let (_region, _mr, desc) = export(&owner, &f);
            let reader = RemoteReader::new(rt).expect("reader");
            assert_eq!(
                reader.get(&conn, &desc, b"k", 0).await.unwrap(),
                found(b"first", None)
            );
            for i in 0..200u32 {
                let v = pattern(u64::from(i), (i as usize * 37) % 900);
                f.put(b"k", &v, None).unwrap();
                assert_eq!(
                    reader.get(&conn, &desc, b"k", 0).await.unwrap(),
                    found(&v, None)
                );
            }
            f.delete(b"k", 0).unwrap();
            assert_eq!(
                reader.get(&conn, &desc, b"k", 0).await.unwrap(),
                RemoteValue::Missing
            );
            f.put(b"k", b"back", Some(50)).unwrap();
            assert_eq!(
                reader.get(&conn, &desc, b"k", 0).await.unwrap(),
                found(b"back", Some(50))
            );
        });
    }

    #[test]
    fn retired_or_replaced_regions_say_so() {
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let mut f = fragment(64, 1 << 20);
            f.put(b"k", b"old", None).unwrap();
            let (_region, old_mr, old) = export(&owner, &f);
            let reader = RemoteReader::new(rt).expect("reader");
            assert_eq!(
                reader.get(&conn, &old, b"k", 0).await.unwrap(),
                found(b"old", None)
            );

            // A compaction replaces the region: retire the old one first, then write.
            let mut c = f.compact(1 << 20, 0, 0, false).unwrap();
            f.retire();
            c.put(b"k", b"new", None).unwrap();
            let e = reader.get(&conn, &old, b"k", 0).await.expect_err("stale");
            assert!(matches!(e, RemoteReadError::Retired), "{e}");
            let (_r2, _mr2, new) = export(&owner, &c);
            assert_eq!(new.generation, 1);
            assert_eq!(
                reader.get(&conn, &new, b"k", 0).await.unwrap(),
                found(b"new", None)
            );

            // A descriptor that does not match the header.
            for wrong in [
                RemoteFragment {
                    generation: 0,
                    ..new
                },
                RemoteFragment {
                    fragment_id: 8,
                    ..new
                },
                RemoteFragment {
                    bucket_count: new.bucket_count * 2,
                    ..new
                },
            ] {
                let e = reader
                    .get(&conn, &wrong, b"k", 0)
                    .await
                    .expect_err("mismatch");
                assert!(matches!(e, RemoteReadError::Retired), "{e}");
            }
            // After the grace period the old registration goes: still `Retired`.
            drop(old_mr);
            let e = reader
                .get(&conn, &old, b"k", 0)
                .await
                .expect_err("deregistered");
            assert!(matches!(e, RemoteReadError::Retired), "{e}");
        });
    }

    #[test]
    fn damaged_records_are_reported_never_returned() {
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let mut f = fragment(64, 1 << 20);
            let value = pattern(1, 300);
            f.put(b"key", &value, Some(u64::MAX)).unwrap();
            let big = pattern(2, 100_000);
            f.put(b"big", &big, None).unwrap();
            let (region, _mr, desc) = export(&owner, &f);
            let reader = RemoteReader::new(rt).expect("reader");
            let start = layout::log_start(64) as u64;
            let big_start = start + layout::record_len(3, 300, true) as u64;
            // Every byte of the small record (padding aside), and some of the big one's:
            // in the head, in the speculative part, in the second READ's part.
            let mut targets: Vec<(u64, &[u8])> = (0..(24 + 8 + 3 + 300))
                .map(|i| (start + i, &b"key"[..]))
                .collect();
            for i in [0, 4, 16, 20, 30, 511, 512, 513, 60_000, 99_999] {
                targets.push((big_start + i, &b"big"[..]));
            }
            for (at, key) in targets {
                let mut byte = [0u8];
                region.read_at(at, &mut byte).unwrap();
                region.write_at(at, &[byte[0] ^ 0x41]).unwrap();
                match reader.get(&conn, &desc, key, 0).await {
                    Err(RemoteReadError::Corrupt(_) | RemoteReadError::Torn) => {}
                    // A flipped key byte can turn it into another key; then ours is
                    // absent, which is what the local path says too.
                    Ok(RemoteValue::Missing) => {
                        assert!(!matches!(f.get(key, 0), Ok(Some(_))), "flip at {at}");
                    }
                    other => panic!("flip at {at} of {key:?}: {other:?}"),
                }
                region.write_at(at, &byte).unwrap();
            }
            assert_eq!(
                reader.get(&conn, &desc, b"key", 0).await.unwrap(),
                found(&value, Some(u64::MAX))
            );
            assert_eq!(
                reader.get(&conn, &desc, b"big", 0).await.unwrap(),
                found(&big, None)
            );
        });
    }

    /// A peer (or a broken owner) that returns arbitrary index and log bytes behind a
    /// valid header: the reader never panics and never finds a value that was not put.
    #[test]
    fn hostile_region_never_yields_a_value() {
        use rand::{Rng, SeedableRng};
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let buckets = 4usize;
            let len = 16 << 10;
            let region = Region::new("hostile", len).expect("region");
            let mr = owner.register(&region, Access::READ).expect("register");
            let desc = RemoteFragment {
                fragment_id: 9,
                region: mr.descriptor(),
                bucket_count: buckets as u64,
                generation: 2,
            };
            let reader = RemoteReader::new(rt).expect("reader");
            let key = b"victim";
            let hash = layout::key_hash(key);
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
            let log_start = layout::log_start(buckets);
            let mut outcomes = [0usize; 3];
            for case in 0..400 {
                let mut bytes = vec![0u8; len];
                rng.fill(&mut bytes[..]);
                let tail = match case % 4 {
                    0 => rng.gen::<u64>(),
                    1 => len as u64,
                    _ => rng.gen_range(log_start as u64..=len as u64),
                };
                let header = [
                    (layout::header::MAGIC, layout::MAGIC),
                    (
                        layout::header::LAYOUT_VERSION,
                        u64::from(layout::LAYOUT_VERSION),
                    ),
                    (layout::header::FRAGMENT_ID, 9),
                    (layout::header::LOG_TAIL, tail),
                    (layout::header::BUCKET_COUNT, buckets as u64),
                    (layout::header::REGION_LEN, len as u64),
                    (layout::header::GENERATION, 2),
                ];
                for (at, v) in header {
                    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                if case % 3 == 0 {
                    // Empty slots end probes; random ones rarely carry our tag.
                    bytes[layout::HEADER_LEN..log_start].fill(0);
                }
                // Slots with our tag pointing anywhere, often at plausible offsets.
                for s in 0..buckets * layout::SLOTS_PER_BUCKET {
                    if rng.gen_bool(0.3) {
                        let offset = match rng.gen_range(0..3) {
                            0 => rng.gen::<u64>() as usize,
                            1 => rng.gen_range(0..len),
                            _ => log_start + 8 * rng.gen_range(0..(len - log_start) / 8),
                        };
                        let slot = layout::slot_value(layout::hash_tag(hash), offset);
                        let at = layout::HEADER_LEN + s * 8;
                        bytes[at..at + 8].copy_from_slice(&slot.to_le_bytes());
                    }
                }
                // Sometimes a plausible record head (right lengths, our key, bad crc).
                if case % 2 == 0 {
                    let at = log_start + 8 * rng.gen_range(0..64);
                    let vlen: u32 = rng.gen_range(0..4000);
                    let rlen = layout::record_len(key.len(), vlen as usize, false) as u32;
                    bytes[at..at + 4].copy_from_slice(&rlen.to_le_bytes());
                    bytes[at + 16..at + 18].copy_from_slice(&(key.len() as u16).to_le_bytes());
                    bytes[at + 18..at + 20].copy_from_slice(&0u16.to_le_bytes());
                    bytes[at + 20..at + 24].copy_from_slice(&vlen.to_le_bytes());
                    bytes[at + 24..at + 24 + key.len()].copy_from_slice(key);
                    let slot = layout::slot_value(layout::hash_tag(hash), at);
                    let home = layout::bucket_offset(layout::home_bucket(hash, buckets));
                    bytes[home..home + 8].copy_from_slice(&slot.to_le_bytes());
                }
                region.write_at(0, &bytes).unwrap();
                let outcome = reader.get(&conn, &desc, key, 0).await;
                match outcome {
                    Ok(RemoteValue::Found { .. }) => panic!("case {case}: found a value"),
                    Ok(RemoteValue::Missing) => outcomes[0] += 1,
                    Err(RemoteReadError::Corrupt(_)) => outcomes[1] += 1,
                    Err(RemoteReadError::Torn) => outcomes[2] += 1,
                    Err(e) => panic!("case {case}: unexpected {e}"),
                }
            }
            // Both ways out must be taken: probes that end empty and damage detected.
            assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
        });
    }

    /// A slot that changes under every attempt (as if writers kept publishing records
    /// that never validate) is a race, not damage: the reader retries, then gives up
    /// with `Torn`.
    #[test]
    fn ever_changing_slot_gives_up_as_torn() {
        use std::cell::Cell;
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let buckets = 4usize;
            let len = 1 << 20;
            let region = Region::new("racing", len).expect("region");
            let header = [
                (layout::header::MAGIC, layout::MAGIC),
                (
                    layout::header::LAYOUT_VERSION,
                    u64::from(layout::LAYOUT_VERSION),
                ),
                (layout::header::FRAGMENT_ID, 5),
                (layout::header::LOG_TAIL, len as u64),
                (layout::header::BUCKET_COUNT, buckets as u64),
                (layout::header::REGION_LEN, len as u64),
            ];
            for (at, v) in header {
                region.write_at(at as u64, &v.to_le_bytes()).unwrap();
            }
            region
                .fill(
                    layout::log_start(buckets) as u64,
                    (len - layout::log_start(buckets)) as u64,
                    0xA5,
                )
                .unwrap();
            let mr = owner.register(&region, Access::READ).expect("register");
            let desc = RemoteFragment {
                fragment_id: 5,
                region: mr.descriptor(),
                bucket_count: buckets as u64,
                generation: 0,
            };
            let key = b"racy";
            let hash = layout::key_hash(key);
            let home = layout::bucket_offset(layout::home_bucket(hash, buckets)) as u64;
            let done = Rc::new(Cell::new(false));
            let writer = {
                let (region, done) = (region.clone(), done.clone());
                glommio::spawn_local(async move {
                    // Runnable whenever the reader waits for the network, so each attempt
                    // sees a slot value no earlier attempt saw (they never repeat: past
                    // the log's end they point outside it, another torn-looking failure).
                    let deadline = Instant::now() + std::time::Duration::from_secs(30);
                    let mut k = 0usize;
                    while !done.get() && Instant::now() < deadline {
                        let offset = layout::log_start(buckets) + 8 * k;
                        let slot = layout::slot_value(layout::hash_tag(hash), offset);
                        region.write_at(home, &slot.to_le_bytes()).unwrap();
                        k += 1;
                        // Leave the task queue so that the reactor runs (a plain yield
                        // would keep the queue busy and starve the network).
                        glommio::executor().yield_task_queue_now().await;
                    }
                    k
                })
            };
            let reader = RemoteReader::new(rt).expect("reader");
            let got = reader.get(&conn, &desc, key, 0).await;
            done.set(true);
            let published = writer.await;
            assert!(
                matches!(got, Err(RemoteReadError::Torn)),
                "{got:?} after {published} slot changes"
            );
        });
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, usize, Option<u64>),
            Delete(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (any::<u8>(), 0usize..2000, proptest::option::of(1u64..200))
                    .prop_map(|(k, n, t)| Op::Put(k, n, t)),
                1 => any::<u8>().prop_map(Op::Delete),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            /// Random puts and deletes on the owner; then a remote GET of every key ever
            /// touched (and some never touched) equals the local `Fragment::get`.
            #[test]
            fn remote_get_equals_local_get(
                ops in proptest::collection::vec(op(), 1..300),
                now in 0u64..200,
            ) {
                run(move || async move {
                    let (owner, rt, conn, _o) = cluster().await;
                    let mut f = fragment(64, 4 << 20);
                    let (_region, _mr, desc) = export(&owner, &f);
                    let reader = RemoteReader::new(rt).expect("reader");
                    for (i, op) in ops.iter().enumerate() {
                        match *op {
                            Op::Put(k, n, t) => f
                                .put(format!("k{k}").as_bytes(), &pattern(i as u64, n), t)
                                .unwrap(),
                            Op::Delete(k) => {
                                f.delete(format!("k{k}").as_bytes(), now).unwrap();
                            }
                        }
                    }
                    for k in 0..=255u16 {
                        let key = format!("k{k}");
                        let got = reader.get(&conn, &desc, key.as_bytes(), now).await.unwrap();
                        assert_eq!(got, local(&f, key.as_bytes(), now), "key {key}");
                    }
                });
            }
        }
    }

    /// 10k keys of 12 bytes with 32-byte values, and the keys.
    fn latency_fragment() -> (Fragment, Vec<Vec<u8>>) {
        let mut f = fragment(1 << 12, 16 << 20);
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key:{i:08}").into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            f.put(k, &pattern(i as u64, 32), None).unwrap();
        }
        (f, keys)
    }

    fn quantiles(mut ns: Vec<u64>) -> (u64, u64) {
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
        (at(0.5), at(0.99))
    }

    /// Sequential remote GETs of every key, then as many bare 64-byte READs: the
    /// nanoseconds of each.
    async fn time_remote_gets(
        rt: Rc<TcpTransport>,
        conn: &TcpConnection,
        desc: &RemoteFragment,
        keys: &[Vec<u8>],
    ) -> (Vec<u64>, Vec<u64>) {
        let reader = RemoteReader::new(rt.clone()).expect("reader");
        let mut remote_ns = Vec::with_capacity(keys.len());
        for k in keys {
            let t = Instant::now();
            let r = reader.get(conn, desc, k, 0).await.unwrap();
            remote_ns.push(t.elapsed().as_nanos() as u64);
            assert!(matches!(r, RemoteValue::Found { .. }));
        }
        // The floor: one bare 64-byte READ round trip on the same connection.
        let scratch = Region::new("probe", 4096).expect("region");
        let scratch = rt.register(&scratch, Access::LOCAL).expect("register");
        let mut read_ns = Vec::with_capacity(keys.len());
        for _ in keys {
            let t = Instant::now();
            conn.read(&desc.region, 0, 64, &scratch, 0).await.unwrap();
            read_ns.push(t.elapsed().as_nanos() as u64);
        }
        (remote_ns, read_ns)
    }

    /// Owner and reader on one executor (one thread).
    /// `cargo test -p augur-node --lib remote_read_latency -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn remote_read_latency_one_executor() {
        run(|| async {
            let (owner, rt, conn, _o) = cluster().await;
            let (f, keys) = latency_fragment();
            let (_region, _mr, desc) = export(&owner, &f);
            let mut local_ns = Vec::with_capacity(keys.len());
            for k in &keys {
                let t = Instant::now();
                let r = f.get(k, 0).unwrap();
                local_ns.push(t.elapsed().as_nanos() as u64);
                assert!(r.is_some());
            }
            let (remote_ns, read_ns) = time_remote_gets(rt, &conn, &desc, &keys).await;
            let (l50, l99) = quantiles(local_ns);
            let (r50, r99) = quantiles(remote_ns);
            let (b50, b99) = quantiles(read_ns);
            println!(
                "one executor, 10k sequential GETs, 12 B keys, 32 B values: local \
                 Fragment::get p50 {l50} ns p99 {l99} ns; remote GET over the TCP fabric p50 \
                 {r50} ns p99 {r99} ns; one bare 64 B READ p50 {b50} ns p99 {b99} ns"
            );
        });
    }

    /// Owner and reader on two executors (two threads), as two nodes would be; the
    /// descriptor travels as a fabric message.
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn remote_read_latency_two_executors() {
        let lo: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let owner = LocalExecutorBuilder::default()
            .name("owner")
            .spawn(move || async move {
                let t = TcpTransport::bind(FabricConfig::new(SECRET), lo).expect("owner");
                addr_tx.send(t.local_addr()).expect("hand out the address");
                let conn = t.accept().await.expect("accept");
                let (f, keys) = latency_fragment();
                let (_region, _mr, desc) = export(&t, &f);
                let mut msg = desc.region.encode().to_vec();
                for word in [desc.fragment_id, desc.bucket_count, desc.generation] {
                    msg.extend_from_slice(&word.to_le_bytes());
                }
                conn.send(&msg).await.expect("send descriptor");
                conn.recv().await.expect("reader done");
                keys
            })
            .expect("owner executor");
        let addr = addr_rx.recv().expect("owner address");
        let reader = LocalExecutorBuilder::default()
            .name("reader")
            .spawn(move || async move {
                let rt =
                    Rc::new(TcpTransport::bind(FabricConfig::new(SECRET), lo).expect("reader"));
                let conn = rt.connect(addr).await.expect("connect");
                let msg = conn.recv().await.expect("descriptor");
                let word = |i: usize| layout::u64_at(&msg, RemoteRegion::WIRE_LEN + 8 * i);
                let desc = RemoteFragment {
                    region: RemoteRegion::decode(&msg[..RemoteRegion::WIRE_LEN]).expect("region"),
                    fragment_id: word(0),
                    bucket_count: word(1),
                    generation: word(2),
                };
                let keys: Vec<Vec<u8>> = (0..10_000u32)
                    .map(|i| format!("key:{i:08}").into_bytes())
                    .collect();
                let times = time_remote_gets(rt, &conn, &desc, &keys).await;
                conn.send(b"done").await.expect("done");
                times
            })
            .expect("reader executor");
        let (remote_ns, read_ns) = reader.join().expect("reader");
        assert_eq!(owner.join().expect("owner").len(), 10_000);
        let (r50, r99) = quantiles(remote_ns);
        let (b50, b99) = quantiles(read_ns);
        println!(
            "two executors, 10k sequential GETs, 12 B keys, 32 B values: remote GET over the \
             TCP fabric p50 {r50} ns p99 {r99} ns; one bare 64 B READ p50 {b50} ns p99 {b99} ns"
        );
    }
}
