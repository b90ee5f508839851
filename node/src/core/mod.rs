//! The per-core runtime: a core's context (its shard, its route snapshot, its end of
//! the channel mesh), the loop that answers other cores, and periodic maintenance.
//!
//! A key request reaches [`CoreCtx::run_keys`] from a connection; the route snapshot
//! says which core owns the key; local ones run at once on this core's shard, the rest
//! travel one message per core over the mesh ([`msg::CoreMsg`]).

pub mod msg;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};

use crate::cmd::args::now_ms;
use crate::cmd::KeyRequest;
use crate::context::NodeShared;
use crate::resp::Frame;
use crate::router::table::RouteCache;
use crate::shard::fanout::{FanoutReply, FanoutReq};
use crate::shard::{Outcome, Shard, ShardEnv};
use crate::telemetry::stats;
use msg::CoreMsg;

/// One core's context, shared by its tasks (all on the same thread).
pub struct CoreCtx {
    pub core: usize,
    pub shared: Arc<NodeShared>,
    pub shard: RefCell<Shard>,
    senders: Senders<CoreMsg>,
    routes: RefCell<RouteCache>,
}

impl CoreCtx {
    /// This core's context, owning the ranges the initial route table gives it.
    pub fn new(shared: Arc<NodeShared>, senders: Senders<CoreMsg>) -> Result<CoreCtx, String> {
        let core = senders.peer_id();
        let env = ShardEnv {
            cores: shared.core_count(),
            routes: shared.routes.clone(),
            stats: shared.stats.clone(),
            fragment_ids: shared.fragment_ids.clone(),
            geometry: shared.default_geometry(),
            region_size: shared.config.region_size,
            hugepages: shared.config.hugepages,
        };
        let shard = Shard::new(core, env).map_err(|e| format!("core {core}: {e}"))?;
        Ok(CoreCtx {
            core,
            routes: RefCell::new(RouteCache::new(&shared.routes)),
            shared,
            shard: RefCell::new(shard),
            senders,
        })
    }

    /// Start the tasks that answer other cores and keep the shard tidy.
    pub fn spawn_background(ctx: &Rc<CoreCtx>, receivers: Vec<ConnectedReceiver<CoreMsg>>) {
        for rx in receivers {
            glommio::spawn_local(receive_loop(ctx.clone(), rx)).detach();
        }
        glommio::spawn_local(maintenance(ctx.clone())).detach();
    }
}

type Batches = BTreeMap<usize, Vec<(u32, KeyRequest)>>;

impl CoreCtx {
    /// Execute key requests, local ones at once and the rest one message per core;
    /// replies come back in request order.
    pub async fn run_keys(&self, reqs: Vec<KeyRequest>) -> Vec<Frame> {
        let now = now_ms();
        let mut out: Vec<Option<Frame>> = vec![None; reqs.len()];
        let mut remote = Batches::new();
        {
            let mut routes = self.routes.borrow_mut();
            let table = routes.get(&self.shared.routes);
            let mut shard = self.shard.borrow_mut();
            for (i, req) in reqs.into_iter().enumerate() {
                let core = table.core_for(&req.key);
                if core != self.core {
                    remote.entry(core).or_default().push((i as u32, req));
                    continue;
                }
                match shard.execute(&req, now) {
                    Outcome::Done(f) => out[i] = Some(f),
                    Outcome::Forward(c) => remote.entry(c).or_default().push((i as u32, req)),
                }
            }
            shard.publish_stats();
        }
        if !remote.is_empty() {
            for (i, f) in self.send_keys(remote).await {
                if let Some(slot) = out.get_mut(i as usize) {
                    *slot = Some(f);
                }
            }
        }
        out.into_iter()
            .map(|f| f.unwrap_or_else(|| Frame::error("ERR internal: a core did not answer")))
            .collect()
    }

    async fn send_keys(&self, batches: Batches) -> Vec<(u32, Frame)> {
        let mut waiting = Vec::with_capacity(batches.len());
        for (core, reqs) in batches {
            stats::bump(&self.shared.stats[self.core].cross_core, reqs.len() as u64);
            let (tx, rx) = oneshot::channel();
            let indices: Vec<u32> = reqs.iter().map(|(i, _)| *i).collect();
            if self
                .senders
                .send_to(core, CoreMsg::Keys { reqs, reply: tx })
                .await
                .is_err()
            {
                tracing::error!(from = self.core, to = core, "mesh send failed");
            }
            waiting.push((indices, rx));
        }
        let mut out = Vec::new();
        for (indices, rx) in waiting {
            match rx.await {
                Ok(replies) => out.extend(replies),
                Err(_) => out.extend(
                    indices
                        .into_iter()
                        .map(|i| (i, Frame::error("ERR internal: core did not answer"))),
                ),
            }
        }
        out
    }

    /// Ask every core (this one included), until the answers cover the whole key
    /// space: a fragment moving between cores is briefly held by neither.
    pub async fn fanout(&self, req: FanoutReq) -> Vec<FanoutReply> {
        let mut attempt = 0;
        loop {
            let mut waiting = Vec::new();
            for core in (0..self.shared.core_count()).filter(|&c| c != self.core) {
                let (tx, rx) = oneshot::channel();
                let msg = CoreMsg::Fanout {
                    req: req.clone(),
                    reply: tx,
                };
                if self.senders.send_to(core, msg).await.is_ok() {
                    waiting.push(rx);
                }
            }
            let local = self.shard.borrow_mut().fanout(&req, now_ms());
            let mut replies = vec![local];
            for rx in waiting {
                if let Ok(r) = rx.await {
                    replies.push(r);
                }
            }
            attempt += 1;
            if covers_keyspace(&replies) || attempt >= 200 {
                if attempt >= 200 {
                    tracing::warn!("fan-out answers did not cover the key space");
                }
                return replies;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn covers_keyspace(replies: &[FanoutReply]) -> bool {
    let mut ranges: Vec<&(Bytes, Option<Bytes>)> = replies.iter().flat_map(|r| &r.ranges).collect();
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expect = Some(Bytes::new());
    for (lo, hi) in ranges {
        if expect.as_ref() != Some(lo) {
            return false;
        }
        expect = hi.clone();
    }
    expect.is_none()
}

async fn receive_loop(ctx: Rc<CoreCtx>, rx: ConnectedReceiver<CoreMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            CoreMsg::Keys { reqs, reply } => {
                let now = now_ms();
                let mut out = Vec::with_capacity(reqs.len());
                let mut forward = Batches::new();
                {
                    let mut shard = ctx.shard.borrow_mut();
                    for (i, req) in reqs {
                        match shard.execute(&req, now) {
                            Outcome::Done(f) => out.push((i, f)),
                            Outcome::Forward(c) => forward.entry(c).or_default().push((i, req)),
                        }
                    }
                    shard.publish_stats();
                }
                if !forward.is_empty() {
                    out.extend(ctx.send_keys(forward).await);
                }
                let _ = reply.send(out);
            }
            CoreMsg::Adopt(fragment) => ctx.shard.borrow_mut().adopt(*fragment),
            CoreMsg::Fanout { req, reply } => {
                let answer = ctx.shard.borrow_mut().fanout(&req, now_ms());
                let _ = reply.send(answer);
            }
        }
    }
}

/// Periodic per-core work: active expiry, then rebalancing by bytes held.
async fn maintenance(ctx: Rc<CoreCtx>) {
    let interval = Duration::from_millis(ctx.shared.config.expiry_interval_ms.max(1));
    loop {
        glommio::timer::sleep(interval).await;
        let mut shard = ctx.shard.borrow_mut();
        shard.expire_due(now_ms());
        shard.publish_stats();
        let Some((target, fragment)) = shard.pick_fragment_to_move() else {
            continue;
        };
        let (id, lo, hi) = (fragment.id(), fragment.lo().clone(), fragment.hi().cloned());
        // try_send: the Adopt must be queued before any request we forward for this
        // range, and nothing else may run in between.
        match ctx
            .senders
            .try_send_to(target, CoreMsg::Adopt(Box::new(fragment)))
        {
            Ok(()) => {
                tracing::debug!(from = ctx.core, to = target, id, "moved fragment");
                shard.moved(id, lo, hi, target);
            }
            Err(GlommioError::WouldBlock(ResourceType::Channel(CoreMsg::Adopt(f))))
            | Err(GlommioError::Closed(ResourceType::Channel(CoreMsg::Adopt(f)))) => shard.keep(*f),
            Err(e) => tracing::error!(
                core = ctx.core,
                "fragment move failed and the fragment is lost: {e}"
            ),
        }
    }
}
