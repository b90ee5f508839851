//! Questions asked of every core (DBSIZE, FLUSHALL, SCAN, KEYS) and their answers.

use std::time::Instant;

use bytes::Bytes;

/// SCAN's TYPE option: which kind of value a returned key must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScanType {
    String,
    Hash,
    /// A type augur does not store (list, set, ...): no key matches.
    Other,
}

impl ScanType {
    pub fn parse(name: &[u8]) -> ScanType {
        if name.eq_ignore_ascii_case(b"string") {
            ScanType::String
        } else if name.eq_ignore_ascii_case(b"hash") {
            ScanType::Hash
        } else {
            ScanType::Other
        }
    }
}

#[derive(Debug, Clone)]
pub enum FanoutReq {
    DbSize,
    FlushAll,
    ScanStep {
        after: Option<Bytes>,
        count: usize,
        pattern: Option<Bytes>,
        started: Instant,
        /// SCAN ... TYPE t; None: any type.
        type_filter: Option<ScanType>,
    },
    Keys(Bytes),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum FanoutBody {
    Count(u64),
    Done,
    /// Matching keys (sorted) and the last key examined, or None if every key after
    /// the cursor was examined.
    Scan {
        keys: Vec<Bytes>,
        frontier: Option<Bytes>,
    },
    Keys(Vec<Bytes>),
}

/// A fan-out answer with the key ranges the core held when answering, so the asker
/// can tell a complete answer from one that missed a fragment in flight.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FanoutReply {
    pub ranges: Vec<(Bytes, Option<Bytes>)>,
    pub body: FanoutBody,
}
