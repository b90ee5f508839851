//! What nodes say to each other over the fabric's two-sided messages: key requests
//! for the owner to execute, cluster-wide questions (DBSIZE, SCAN, ...), and their
//! replies.
//!
//! A message is bincode (size-limited on decode) cut into chunks that fit the
//! fabric's largest message, each chunk prefixed by a 16-byte header:
//! `kind u8 | last u8 | 6 zero bytes | request id u64 LE`. Chunks of different
//! requests may interleave (several tasks share one connection); [`Reassembly`]
//! stitches them back together, bounded in bytes and in messages in flight, since a
//! peer controls what it sends.

use std::collections::HashMap;

use bincode::Options;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cmd::KeyRequest;
use crate::context::HintEntry;
use crate::core::remote::{Described, WireFragment};
use crate::resp::Frame;
use crate::shard::fanout::{FanoutReply, FanoutReq};
use crate::telemetry::access::TickSummary;

pub const CHUNK_HEADER: usize = 16;
pub const KIND_REQUEST: u8 = 1;
pub const KIND_REPLY: u8 = 2;

/// Partly received messages one connection may have open at once.
const MAX_PARTIAL: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("peer message: {0}")]
    Malformed(String),
    #[error("peer message of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("peer has {0} messages partly sent, over the limit")]
    TooManyPartial(usize),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Execute these key requests, routed with this version of the cluster table.
    Keys {
        cluster_version: u64,
        reqs: Vec<KeyRequest>,
    },
    /// Ask every core of the receiving node.
    Fanout(PeerFanout),
    /// Describe the region of the fragment holding this key, for one-sided reads.
    Describe {
        key: Bytes,
    },
    /// A core's access summary for the tick that just ended.
    Telemetry(TickSummary),
    /// Migration, asked of the target: pull this table fragment here.
    MigrateIn {
        fragment: u64,
    },
    /// Migration, asked of the source core: register and describe the regions holding
    /// `[lo, hi)`.
    Export {
        fragment: u64,
        lo: Bytes,
        hi: Option<Bytes>,
    },
    /// Migration: the current log tails of those regions, and the checksum of each
    /// log over `verify`'s `[from, to)` (one per region: the part the target has and
    /// has not proven yet), cut at the tail and after `migrate::CRC_STEP` bytes.
    Tails {
        lo: Bytes,
        hi: Option<Bytes>,
        verify: Vec<(u64, u64)>,
    },
    /// Migration: stop serving `[lo, hi)` (requests wait), retire its regions, and
    /// say their final tails and the checksums of their logs from `verified_to` to
    /// the final tails.
    Fence {
        fragment: u64,
        lo: Bytes,
        hi: Option<Bytes>,
        verified_to: Vec<u64>,
    },
    /// Migration aborted before the commit: serve `[lo, hi)` again.
    Unfence {
        fragment: u64,
    },
    /// Are you there? (A migration's source watching its target.)
    Ping,
    /// Which migrations to you are in flight?
    Migrations,
    /// Placement settings every member keeps, so whichever node leads has them.
    SetPolicy(String),
    Hint(HintEntry),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerFanout {
    DbSize,
    FlushAll,
    Keys(Bytes),
    ScanStep {
        after: Option<Bytes>,
        count: u64,
        pattern: Option<Bytes>,
        /// How long ago the scan started (an `Instant` does not cross machines).
        started_ms_ago: u64,
        /// SCAN ... TYPE t.
        #[serde(default)]
        type_filter: Option<crate::shard::fanout::ScanType>,
    },
}

impl PeerFanout {
    pub fn from_local(req: &FanoutReq) -> PeerFanout {
        match req {
            FanoutReq::DbSize => PeerFanout::DbSize,
            FanoutReq::FlushAll => PeerFanout::FlushAll,
            FanoutReq::Keys(p) => PeerFanout::Keys(p.clone()),
            FanoutReq::ScanStep {
                after,
                count,
                pattern,
                started,
                type_filter,
            } => PeerFanout::ScanStep {
                after: after.clone(),
                count: *count as u64,
                pattern: pattern.clone(),
                started_ms_ago: started.elapsed().as_millis() as u64,
                type_filter: *type_filter,
            },
        }
    }

    /// The same question for this node's cores. A peer's count is capped so it
    /// cannot make a core examine more than a client could ask for.
    pub fn into_local(self) -> FanoutReq {
        match self {
            PeerFanout::DbSize => FanoutReq::DbSize,
            PeerFanout::FlushAll => FanoutReq::FlushAll,
            PeerFanout::Keys(p) => FanoutReq::Keys(p),
            PeerFanout::ScanStep {
                after,
                count,
                pattern,
                started_ms_ago,
                type_filter,
            } => {
                let now = std::time::Instant::now();
                FanoutReq::ScanStep {
                    after,
                    count: count.clamp(1, 1 << 20) as usize,
                    pattern,
                    started: now
                        .checked_sub(std::time::Duration::from_millis(started_ms_ago))
                        .unwrap_or(now),
                    type_filter,
                }
            }
        }
    }
}

/// One local region of a migrating table fragment, as its source describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedRegion {
    pub lo: Bytes,
    pub hi: Option<Bytes>,
    pub region: WireFragment,
    pub region_len: u64,
    /// Where the log starts (the index ends).
    pub log_start: u64,
    pub tail: u64,
}

/// A region's state at some moment of a migration: its log tail, the generation of
/// the region (a compaction or split replaces it), and `crc`, the
/// `store::copy::delta_crc` of its log from where the target asked up to `crc_to`
/// (the tail, once fenced).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegionTail {
    pub generation: u64,
    pub tail: u64,
    pub crc: u32,
    pub crc_to: u64,
}

/// What a finished migration measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MigrationReport {
    pub fragment: u64,
    pub from: u64,
    pub to: u64,
    pub regions: u32,
    /// Bytes pulled with one-sided reads, copy and catch-up together.
    pub bytes: u64,
    pub copy_us: u64,
    pub catch_up_rounds: u32,
    /// From the fence to the commit: how long requests for the fragment waited.
    pub pause_us: u64,
    pub total_us: u64,
    /// Where the pause went, in order.
    pub pause: PauseParts,
}

/// The parts of a migration's write pause, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PauseParts {
    /// The `Fence` round trip: the source stops serving, retires its regions and
    /// checksums the log bytes the target has not yet proven.
    pub fence_us: u64,
    /// READs of the log appended since the last catch-up round.
    pub final_pull_us: u64,
    /// Checking and indexing those records, comparing checksums, finishing the fragments.
    pub verify_us: u64,
    /// The `SetOwner` proposal through the ownership table's Raft log (a quorum of
    /// voters appending and fsyncing it) until it is committed.
    pub commit_us: u64,
    /// Until this node's table shows the commit, then installing and routing.
    pub install_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum KeyReply {
    Done(Frame),
    /// The receiver does not own the key (any more): refresh the table, retry.
    Moved,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    Keys(Vec<KeyReply>),
    /// One answer per core of the receiving node.
    Fanout(Vec<FanoutReply>),
    Described(Described),
    Ack,
    Migrated(Result<MigrationReport, String>),
    Exported(Result<Vec<ExportedRegion>, String>),
    Tails(Result<Vec<RegionTail>, String>),
    Fenced(Result<Vec<RegionTail>, String>),
    Migrations(Vec<crate::telemetry::migrations::Progress>),
    /// The request could not be taken (malformed, over a limit).
    Refused(String),
}

fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit as u64)
        .reject_trailing_bytes()
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    bincode::DefaultOptions::new()
        .serialize(msg)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// Decode a message, allocating no more than `limit` bytes whatever the input says.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    options(limit)
        .deserialize(bytes)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// Cut `payload` into fabric messages of at most `max_message` bytes.
pub fn chunks(kind: u8, id: u64, payload: &[u8], max_message: usize) -> Vec<Vec<u8>> {
    let room = max_message.saturating_sub(CHUNK_HEADER).max(1);
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(room).collect()
    };
    let n = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut msg = Vec::with_capacity(CHUNK_HEADER + piece.len());
            msg.push(kind);
            msg.push(u8::from(i + 1 == n));
            msg.extend_from_slice(&[0; 6]);
            msg.extend_from_slice(&id.to_le_bytes());
            msg.extend_from_slice(piece);
            msg
        })
        .collect()
}

/// A complete message: its kind, request id and bytes.
pub struct Whole {
    pub kind: u8,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// Stitches chunks back into messages, refusing more than `limit` bytes in one
/// message or in all partly received ones together.
pub struct Reassembly {
    limit: usize,
    held: usize,
    partial: HashMap<(u8, u64), Vec<u8>>,
}

impl Reassembly {
    pub fn new(limit: usize) -> Reassembly {
        Reassembly {
            limit,
            held: 0,
            partial: HashMap::new(),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Whole>, WireError> {
        if chunk.len() < CHUNK_HEADER {
            return Err(WireError::Malformed(format!(
                "chunk of {} bytes is shorter than its header",
                chunk.len()
            )));
        }
        let kind = chunk[0];
        if kind != KIND_REQUEST && kind != KIND_REPLY {
            return Err(WireError::Malformed(format!("unknown chunk kind {kind}")));
        }
        let last = match chunk[1] {
            0 => false,
            1 => true,
            other => return Err(WireError::Malformed(format!("bad last flag {other}"))),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&chunk[8..16]);
        let id = u64::from_le_bytes(id);
        let body = &chunk[CHUNK_HEADER..];
        let key = (kind, id);
        let Some(mut buf) = self.partial.remove(&key) else {
            if last {
                return Ok(Some(Whole {
                    kind,
                    id,
                    payload: body.to_vec(),
                }));
            }
            if self.partial.len() >= MAX_PARTIAL {
                return Err(WireError::TooManyPartial(self.partial.len()));
            }
            self.admit(body.len())?;
            self.partial.insert(key, body.to_vec());
            return Ok(None);
        };
        self.held -= buf.len();
        self.admit(buf.len() + body.len())?;
        buf.extend_from_slice(body);
        if last {
            self.held -= buf.len();
            return Ok(Some(Whole {
                kind,
                id,
                payload: buf,
            }));
        }
        self.partial.insert(key, buf);
        Ok(None)
    }

    /// Account for a partly received message of `len` bytes (its earlier size was
    /// already taken off `held`).
    fn admit(&mut self, len: usize) -> Result<(), WireError> {
        let held = self.held + len;
        if len > self.limit || held > self.limit.saturating_mul(2) {
            return Err(WireError::TooLarge(len, self.limit));
        }
        self.held = held;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::KeyOp;

    #[test]
    fn messages_round_trip_through_interleaved_chunks() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let a = PeerRequest::Keys {
            cluster_version: 3,
            reqs: vec![KeyRequest {
                key: Bytes::from_static(b"k"),
                op: KeyOp::Set {
                    value: big.clone(),
                    ttl: crate::cmd::keyop::Ttl::Clear,
                    cond: crate::cmd::keyop::SetCond::Always,
                    get: false,
                },
            }],
        };
        let b = PeerRequest::Fanout(PeerFanout::DbSize);
        let ca = chunks(KIND_REQUEST, 1, &encode(&a).unwrap(), 1000);
        let cb = chunks(KIND_REQUEST, 2, &encode(&b).unwrap(), 1000);
        assert!(ca.len() > 10 && cb.len() == 1);
        let mut r = Reassembly::new(1 << 20);
        let mut done = Vec::new();
        // b's only chunk arrives in the middle of a's.
        for (i, c) in ca.iter().enumerate() {
            if i == 3 {
                done.extend(r.push(&cb[0]).unwrap());
            }
            done.extend(r.push(c).unwrap());
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].id, 2);
        let back: PeerRequest = decode(&done[1].payload, 1 << 20).unwrap();
        match back {
            PeerRequest::Keys { reqs, .. } => match &reqs[0].op {
                KeyOp::Set { value, .. } => assert_eq!(value, &big),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(r.held, 0);
    }

    #[test]
    fn hostile_chunks_are_refused_not_buffered() {
        let mut r = Reassembly::new(4096);
        assert!(r.push(&[1, 0, 0]).is_err());
        assert!(r.push(&[9; 16]).is_err());
        let mut chunk = vec![KIND_REQUEST, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0];
        chunk.extend_from_slice(&[0; 3000]);
        assert!(r.push(&chunk).unwrap().is_none());
        // The same message growing past the limit is refused.
        assert!(matches!(r.push(&chunk), Err(WireError::TooLarge(..))));
        // Too many messages left open is refused.
        let mut r = Reassembly::new(1 << 20);
        let mut err = None;
        for id in 0..(MAX_PARTIAL as u64 + 1) {
            let mut c = vec![KIND_REQUEST, 0, 0, 0, 0, 0, 0, 0];
            c.extend_from_slice(&id.to_le_bytes());
            if let Err(e) = r.push(&c) {
                err = Some(e);
            }
        }
        assert!(matches!(err, Some(WireError::TooManyPartial(_))));
    }

    #[test]
    fn decode_is_bounded_whatever_the_length_prefix_says() {
        // A Keys request claiming 2^60 requests must fail, not allocate.
        let mut evil = vec![0u8]; // variant 0 = Keys
        evil.push(1); // cluster_version varint
        evil.push(255); // u64 varint marker
        evil.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<PeerRequest>(&evil, 1 << 16).is_err());
        for junk in [&b""[..], b"\x05", b"\x00\x01", &[0xff; 40][..]] {
            assert!(decode::<PeerRequest>(junk, 1 << 16).is_err());
        }
    }
}
