//! What cores say to each other over the channel mesh.

use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::cmd::KeyRequest;
use crate::resp::Frame;
use crate::store::Fragment;

pub enum CoreMsg {
    /// Key requests for fragments the receiver owns; replies keep their index.
    Keys {
        reqs: Vec<(u32, KeyRequest)>,
        reply: oneshot::Sender<Vec<(u32, Frame)>>,
    },
    /// Take ownership of a fragment (rebalancing).
    Adopt(Box<Fragment>),
    Fanout {
        req: FanoutReq,
        reply: oneshot::Sender<FanoutReply>,
    },
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
    },
    Keys(Bytes),
}

#[derive(Debug)]
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
#[derive(Debug)]
pub struct FanoutReply {
    pub ranges: Vec<(Bytes, Option<Bytes>)>,
    pub body: FanoutBody,
}
