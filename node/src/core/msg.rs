//! What cores say to each other over the channel mesh.

use futures::channel::oneshot;

use crate::cmd::KeyRequest;
use crate::resp::Frame;
use crate::shard::fanout::{FanoutReply, FanoutReq};
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
}
