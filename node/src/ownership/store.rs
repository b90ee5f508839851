//! Raft storage: the log + vote ([`LogStore`]) and the state machine ([`StateMachine`]) that
//! applies committed changes to the [`Table`] and publishes each new version lock-free.
//!
//! With a directory, everything raft must not forget is on disk before it is acknowledged:
//! `raft/log` is an append-only file of `len:u32 | crc32c:u32 | json` records (vote, entries,
//! truncations, purges), fsynced before `append`/`save_vote` complete; a torn tail (short or
//! bad-crc record) is cut off on load. `raft/snapshot` holds the last snapshot (same framing,
//! written to a temporary file, fsynced, renamed). The table itself is rebuilt on start from
//! the snapshot plus the committed log.
//!
//! File I/O is synchronous on the control thread's runtime: the control plane is small and
//! rare, and blocking it never blocks a data core.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use openraft::storage::SnapshotSignature;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::AnyError;
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::table::{Applied, Table, TableError};
use super::TypeConfig;

type NodeId = u64;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

fn vote_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

fn logs_err(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn write_snapshot_err(
    sig: Option<SnapshotSignature<NodeId>>,
    e: io::Error,
) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(sig, AnyError::new(&e)).into()
}

/// Largest record accepted when reading the log or snapshot file back.
const MAX_RECORD: usize = 256 << 20;
/// Rewrite the log file (live state only) at a purge once it has grown past this. Purges follow
/// snapshots, so the live part is at most a few thousand entries.
const COMPACT_AFTER_BYTES: u64 = 16 << 20;

/// One record of the log file.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    Entry(Entry<TypeConfig>),
    /// Entries with index >= this were deleted (a conflicting suffix).
    TruncateFrom(u64),
    /// Entries up to and including this id were purged (covered by a snapshot).
    Purge(LogId<NodeId>),
}

fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits `buf` into record payloads; returns them and the length of the intact prefix
/// (anything after it is a torn or corrupt tail).
fn unframe(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 8 {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        if len > MAX_RECORD || buf.len() - at - 8 < len {
            break;
        }
        let payload = &buf[at + 8..at + 8 + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        out.push(payload);
        at += 8 + len;
    }
    (out, at)
}

fn json<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(io::Error::other)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

struct LogFile {
    path: PathBuf,
    file: File,
    len: u64,
}

#[derive(Default)]
struct LogInner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    file: Option<LogFile>,
}

impl LogInner {
    /// Appends records and fsyncs them (when persistent) before returning.
    fn persist(&mut self, records: &[LogRecord], sync: bool) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&frame(&json(r)?)?);
        }
        f.file.write_all(&buf)?;
        if sync {
            f.file.sync_data()?;
        }
        f.len += buf.len() as u64;
        Ok(())
    }

    fn apply_record(&mut self, r: LogRecord) {
        match r {
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Committed(c) => self.committed = c,
            LogRecord::Entry(e) => {
                self.log.insert(e.log_id.index, e);
            }
            LogRecord::TruncateFrom(i) => {
                self.log.split_off(&i);
            }
            LogRecord::Purge(id) => {
                self.log = self.log.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
        }
    }

    /// Rewrites the file with only the live state, once the file has grown large.
    fn maybe_compact(&mut self) -> io::Result<()> {
        let Some(f) = self.file.as_ref() else {
            return Ok(());
        };
        if f.len < COMPACT_AFTER_BYTES {
            return Ok(());
        }
        let path = f.path.clone();
        let mut records = Vec::new();
        if let Some(v) = self.vote {
            records.push(LogRecord::Vote(v));
        }
        records.push(LogRecord::Committed(self.committed));
        if let Some(p) = self.last_purged {
            records.push(LogRecord::Purge(p));
        }
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&frame(&json(&r)?)?);
        }
        for e in self.log.values() {
            buf.extend_from_slice(&frame(&json(&LogRecord::Entry(e.clone()))?)?);
        }
        write_atomic(&path, &buf)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        self.file = Some(LogFile {
            path,
            file,
            len: buf.len() as u64,
        });
        Ok(())
    }
}

/// The raft log and vote. Cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// An in-memory log, or the one in `dir/log` (created if missing, torn tail cut off).
    pub(crate) fn open(dir: Option<&Path>) -> io::Result<LogStore> {
        let mut inner = LogInner::default();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)?;
            let path = dir.join("log");
            let mut bytes = Vec::new();
            if path.exists() {
                File::open(&path)?.read_to_end(&mut bytes)?;
            }
            let (records, intact) = unframe(&bytes);
            for payload in records {
                let r: LogRecord = serde_json::from_slice(payload).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: undecodable record with a good crc: {e}",
                            path.display()
                        ),
                    )
                })?;
                inner.apply_record(r);
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)?;
            if intact < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    kept = intact,
                    dropped = bytes.len() - intact,
                    "raft log: cutting off a torn tail"
                );
                file.set_len(intact as u64)?;
                file.sync_all()?;
            }
            sync_dir(dir)?;
            inner.file = Some(LogFile {
                path,
                file,
                len: intact as u64,
            });
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner
            .persist(&[LogRecord::Vote(*vote)], true)
            .map_err(vote_err)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        let mut inner = self.lock();
        inner
            .persist(&[LogRecord::Committed(committed)], false)
            .map_err(logs_err)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        let mut inner = self.lock();
        if let Err(e) = inner.persist(&records, true) {
            let se = StorageIOError::write_logs(AnyError::new(&e)).into();
            callback.log_io_completed(Err(e));
            return Err(se);
        }
        for r in records {
            inner.apply_record(r);
        }
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        let r = LogRecord::TruncateFrom(log_id.index);
        inner.persist(&[r], true).map_err(logs_err)?;
        inner.apply_record(LogRecord::TruncateFrom(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner
            .persist(&[LogRecord::Purge(log_id)], true)
            .map_err(logs_err)?;
        inner.apply_record(LogRecord::Purge(log_id));
        inner.maybe_compact().map_err(logs_err)?;
        Ok(())
    }
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    table: Table,
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

struct SmInner {
    table: Table,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
}

/// Where the state machine publishes each new table for lock-free readers.
pub(crate) struct Published {
    /// The current table.
    pub table: ArcSwap<Table>,
    /// `table.applied` of the current table, stored after the table (Release).
    pub version: AtomicU64,
}

impl Published {
    pub(crate) fn new() -> Published {
        Published {
            table: ArcSwap::from_pointee(Table::new()),
            version: AtomicU64::new(0),
        }
    }

    fn publish(&self, table: &Table) {
        self.table.store(Arc::new(table.clone()));
        self.version.store(table.applied, Ordering::Release);
    }
}

/// The raft state machine around the [`Table`]. Cheap to clone (the snapshot builder is one).
#[derive(Clone)]
pub(crate) struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    published: Arc<Published>,
    snapshot_path: Option<PathBuf>,
}

fn read_snapshot_file(path: &Path) -> io::Result<Option<SnapshotFile>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let (records, _) = unframe(&bytes);
    let Some(payload) = records.first() else {
        // Written atomically, so a bad file is damage, not a crash mid-write.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: damaged snapshot", path.display()),
        ));
    };
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl StateMachine {
    /// A state machine starting from the snapshot in `dir/snapshot` (if any), publishing to
    /// `published`.
    pub(crate) fn open(dir: Option<&Path>, published: Arc<Published>) -> io::Result<StateMachine> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d)?;
        }
        let snapshot_path = dir.map(|d| d.join("snapshot"));
        let mut inner = SmInner {
            table: Table::new(),
            last_applied: None,
            membership: Membership::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        if let Some(path) = &snapshot_path {
            if let Some(file) = read_snapshot_file(path)? {
                let data = json(&file.table)?;
                inner.table = file.table;
                inner.last_applied = file.meta.last_log_id;
                inner.membership = file.meta.last_membership.clone();
                inner.snapshot = Some(StoredSnapshot {
                    meta: file.meta,
                    data,
                });
            }
        }
        published.publish(&inner.table);
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(inner)),
            published,
            snapshot_path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_snapshot(&self, snap: &StoredSnapshot, table: &Table) -> io::Result<()> {
        let Some(path) = &self.snapshot_path else {
            return Ok(());
        };
        let file = SnapshotFile {
            meta: snap.meta.clone(),
            table: table.clone(),
        };
        write_atomic(path, &frame(&json(&file)?)?)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (snap, table) = {
            let mut inner = self.lock();
            inner.snapshots_built += 1;
            let data = json(&inner.table).map_err(|e| write_snapshot_err(None, e))?;
            let id = match inner.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
                None => format!("none-{}", inner.snapshots_built),
            };
            let snap = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                    snapshot_id: id,
                },
                data,
            };
            inner.snapshot = Some(snap.clone());
            (snap, inner.table.clone())
        };
        self.save_snapshot(&snap, &table)
            .map_err(|e| write_snapshot_err(Some(snap.meta.signature()), e))?;
        Ok(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(snap.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<Result<Applied, TableError>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let mut replies = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            inner.last_applied = Some(entry.log_id);
            let reply = match &entry.payload {
                EntryPayload::Blank => {
                    inner.table.set_applied(index);
                    Ok(Applied {
                        index,
                        touched: Vec::new(),
                    })
                }
                EntryPayload::Membership(m) => {
                    inner.table.set_voters(index, m.voter_ids().collect());
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Ok(Applied {
                        index,
                        touched: Vec::new(),
                    })
                }
                EntryPayload::Normal(change) => {
                    let r = inner.table.apply_at(index, change);
                    if let Err(e) = &r {
                        tracing::info!(index, ?change, error = %e, "ownership: change refused");
                    }
                    r
                }
            };
            replies.push(reply);
        }
        self.published.publish(&inner.table);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut table: Table = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        if let Some(l) = meta.last_log_id {
            table.applied = l.index;
        }
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&snap, &table)
            .map_err(|e| write_snapshot_err(Some(meta.signature()), e))?;
        let mut inner = self.lock();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.table = table;
        inner.snapshot = Some(snap);
        self.published.publish(&inner.table);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(super::super::table::Change::Expect {
                size: index as u32,
            }),
        }
    }

    fn write_entries(store: &LogStore, entries: Vec<Entry<TypeConfig>>) {
        let mut inner = store.lock();
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        inner.persist(&records, true).unwrap();
        for r in records {
            inner.apply_record(r);
        }
    }

    #[test]
    fn log_survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(Some(dir.path())).unwrap();
            write_entries(&store, (1..=5).map(|i| entry(1, i)).collect());
            let mut inner = store.lock();
            let v = Vote::new(3, 2);
            inner.persist(&[LogRecord::Vote(v)], true).unwrap();
            inner
                .persist(
                    &[
                        LogRecord::TruncateFrom(5),
                        LogRecord::Purge(entry(1, 1).log_id),
                    ],
                    true,
                )
                .unwrap();
        }
        // Simulate a crash mid-append: half a record at the end.
        let path = dir.path().join("log");
        let good_len = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let rec = frame(&json(&LogRecord::Entry(entry(1, 6))).unwrap()).unwrap();
        f.write_all(&rec[..rec.len() / 2]).unwrap();
        drop(f);

        let store = LogStore::open(Some(dir.path())).unwrap();
        let inner = store.lock();
        assert_eq!(inner.vote, Some(Vote::new(3, 2)));
        assert_eq!(inner.log.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(inner.last_purged, Some(entry(1, 1).log_id));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    }

    #[test]
    fn a_flipped_bit_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(Some(dir.path())).unwrap();
            write_entries(&store, (1..=3).map(|i| entry(1, i)).collect());
        }
        let path = dir.path().join("log");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let store = LogStore::open(Some(dir.path())).unwrap();
        assert_eq!(store.lock().log.len(), 2);
    }

    #[test]
    fn compaction_keeps_the_live_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(Some(dir.path())).unwrap();
        write_entries(&store, (1..=10).map(|i| entry(1, i)).collect());
        {
            let mut inner = store.lock();
            inner.apply_record(LogRecord::Purge(entry(1, 6).log_id));
            // Pretend the file grew past the threshold.
            if let Some(f) = inner.file.as_mut() {
                f.len = COMPACT_AFTER_BYTES;
            }
            inner.maybe_compact().unwrap();
        }
        drop(store);
        let store = LogStore::open(Some(dir.path())).unwrap();
        let inner = store.lock();
        assert_eq!(
            inner.log.keys().copied().collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        assert_eq!(inner.last_purged, Some(entry(1, 6).log_id));
    }

    #[test]
    fn unframe_rejects_oversized_lengths() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        assert_eq!(unframe(&bytes), (Vec::<&[u8]>::new(), 0));
    }
}
