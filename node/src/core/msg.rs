//! What cores say to each other over the channel mesh.

use bytes::Bytes;
use futures::channel::oneshot;

use crate::cmd::KeyRequest;
use crate::resp::Frame;
use crate::shard::fanout::{FanoutReply, FanoutReq};
use crate::shard::WatchToken;
use crate::store::Fragment;

pub enum CoreMsg {
    /// Key requests for fragments the receiver owns; replies keep their index. A
    /// request whose key is fenced (its fragment is handing over to another node) comes
    /// back unexecuted, for the sender to route again.
    Keys {
        reqs: Vec<(u32, KeyRequest)>,
        reply: oneshot::Sender<Vec<(u32, Result<Frame, KeyRequest>)>>,
    },
    /// Take ownership of a fragment (rebalancing).
    Adopt(Box<Fragment>),
    Fanout {
        req: FanoutReq,
        reply: oneshot::Sender<FanoutReply>,
    },
    /// WATCH: the tokens of these keys (`None`: not on this core).
    Watch {
        keys: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Option<WatchToken>>>,
    },
    /// Transaction `txn` asks to hold this core (see `core::txn`); the reply comes when
    /// it is granted, after the hold that is in force now is released.
    Hold {
        txn: u64,
        reply: oneshot::Sender<()>,
    },
    /// The end of `txn`'s hold, or of its wait for one. Never deferred.
    Release { txn: u64 },
    /// Under `txn`'s hold: are these requests' keys here, unfenced, and the watched
    /// keys unchanged?
    TxnCheck {
        txn: u64,
        check: CheckReq,
        reply: oneshot::Sender<TxnCheck>,
    },
    /// Under `txn`'s hold: a fan-out step (DBSIZE, FLUSHALL); `None` if not held.
    TxnFanout {
        txn: u64,
        req: FanoutReq,
        reply: oneshot::Sender<Option<FanoutReply>>,
    },
    /// Under `txn`'s hold: execute these in order.
    TxnKeys {
        txn: u64,
        reqs: Vec<(u32, KeyRequest)>,
        reply: oneshot::Sender<Vec<(u32, Frame)>>,
    },
}

/// What a held core checks for a transaction before anything is written.
#[derive(Debug, Default)]
pub struct CheckReq {
    /// Keys the transaction's requests are routed to this core by.
    pub keys: Vec<Bytes>,
    /// Further keys of those requests (MSETNX's others): only checked for fences.
    pub also_fenced: Vec<Bytes>,
    /// Watched keys on this core and their tokens from WATCH.
    pub watches: Vec<(Bytes, WatchToken)>,
}

/// A held core's answer to `TxnCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCheck {
    Ok,
    /// A key's fragment is not on this core (it moved before the hold).
    Misplaced,
    /// A key's fragment is fenced for a handover to another node.
    Fenced,
    /// A watched key changed since WATCH.
    Changed,
    /// The core is not held by this transaction (it gave up waiting).
    NotHeld,
}
