//! MULTI/EXEC across this node's cores: holds, checks, execution (decision
//! `transactions-across-cores`).
//!
//! A transaction holds every core its keys live on, in ascending core order (so two
//! transactions never wait for each other in a cycle). A held core finishes what it is
//! doing, then runs only the holder's requests: messages from other cores are deferred
//! (the receive loops keep taking them, never block), this core's own connections wait
//! in [`CoreCtx::wait_unheld`], and maintenance skips its turn. Under the holds every
//! core first checks — keys here, no fence, watched keys unchanged — and only when all
//! said yes is anything written. Then the holds are released and deferred messages run
//! in the order they came.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use super::msg::{CheckReq, CoreMsg, TxnCheck};
use super::CoreCtx;
use crate::cmd::args::now_ms;
use crate::cmd::KeyRequest;
use crate::resp::Frame;
use crate::router::table::Owner;
use crate::shard::fanout::{FanoutReply, FanoutReq};
use crate::shard::{Outcome, WatchToken};

/// How long a transaction waits for all its holds before it gives up (`-TRYAGAIN`).
const HOLD_WAIT: Duration = Duration::from_secs(2);

/// How long EXEC keeps retrying when its keys moved or are fenced before it gives up.
const BEGIN_RETRY_FOR: Duration = Duration::from_secs(5);

static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

/// Who holds this core, and what waits for the hold to end.
pub struct HoldState {
    holder: Option<u64>,
    /// Messages (and local hold requests) that came while the core was held, in order.
    /// Not empty only while held, or until the drain task has run them.
    deferred: VecDeque<Deferred>,
    /// This core's own tasks waiting for the hold to end.
    waiters: Vec<oneshot::Sender<()>>,
    /// Wakes the drain task after a release with deferred work.
    kick: mpsc::UnboundedSender<()>,
}

enum Deferred {
    Msg(CoreMsg),
    /// A transaction coordinated on this core asking for this core.
    Local {
        txn: u64,
        grant: oneshot::Sender<()>,
    },
}

impl Deferred {
    fn is_hold_of(&self, txn: u64) -> bool {
        match self {
            Deferred::Local { txn: t, .. } => *t == txn,
            Deferred::Msg(CoreMsg::Hold { txn: t, .. }) => *t == txn,
            Deferred::Msg(_) => false,
        }
    }
}

impl HoldState {
    /// A free core's hold state, and the receiving end of its drain kicks.
    pub fn new() -> (HoldState, mpsc::UnboundedReceiver<()>) {
        let (kick, kicks) = mpsc::unbounded();
        (
            HoldState {
                holder: None,
                deferred: VecDeque::new(),
                waiters: Vec::new(),
                kick,
            },
            kicks,
        )
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Run deferred messages after each release with some, until the next hold.
pub(super) async fn drain_task(ctx: std::rc::Rc<CoreCtx>, mut kicks: mpsc::UnboundedReceiver<()>) {
    while kicks.next().await.is_some() {
        drain(&ctx);
    }
}

fn drain(ctx: &std::rc::Rc<CoreCtx>) {
    loop {
        let next = {
            let mut hold = ctx.hold.borrow_mut();
            if hold.holder.is_some() {
                return;
            }
            match hold.deferred.pop_front() {
                Some(d) => d,
                None => {
                    hold.wake_waiters();
                    return;
                }
            }
        };
        match next {
            Deferred::Local { txn, grant } | Deferred::Msg(CoreMsg::Hold { txn, reply: grant }) => {
                // A dropped receiver: that transaction gave up waiting; skip it.
                if grant.send(()).is_ok() {
                    ctx.hold.borrow_mut().holder = Some(txn);
                    return;
                }
            }
            Deferred::Msg(msg) => super::handle_msg(ctx, msg),
        }
    }
}

/// A message from another core: transaction messages at once, the rest deferred
/// while the core is held. Never awaits.
pub(super) fn on_message(ctx: &std::rc::Rc<CoreCtx>, msg: CoreMsg) {
    match msg {
        CoreMsg::Release { txn } => ctx.release_hold(txn),
        CoreMsg::TxnCheck { txn, check, reply } => {
            let _ = reply.send(ctx.txn_check(txn, &check));
        }
        CoreMsg::TxnKeys { txn, reqs, reply } => {
            let _ = reply.send(ctx.txn_keys(txn, reqs));
        }
        CoreMsg::TxnFanout { txn, req, reply } => {
            let _ = reply.send(ctx.txn_fanout(txn, &req));
        }
        msg => {
            let mut hold = ctx.hold.borrow_mut();
            if hold.holder.is_some() || !hold.deferred.is_empty() {
                hold.deferred.push_back(Deferred::Msg(msg));
                return;
            }
            if let CoreMsg::Hold { txn, reply } = msg {
                if reply.send(()).is_ok() {
                    hold.holder = Some(txn);
                }
                return;
            }
            drop(hold);
            super::handle_msg(ctx, msg);
        }
    }
}

impl CoreCtx {
    /// Whether a transaction holds this core.
    pub fn is_held(&self) -> bool {
        self.hold.borrow().holder.is_some()
    }

    /// Wait until no transaction holds this core. Call right before touching the
    /// shard, with no await in between.
    pub async fn wait_unheld(&self) {
        loop {
            let rx = {
                let mut hold = self.hold.borrow_mut();
                if hold.holder.is_none() {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                hold.waiters.push(tx);
                rx
            };
            let _ = rx.await;
        }
    }

    /// Hold this core for `txn` now, or get a receiver that fires when it is granted.
    fn hold_local(&self, txn: u64) -> Option<oneshot::Receiver<()>> {
        let mut hold = self.hold.borrow_mut();
        if hold.holder.is_none() && hold.deferred.is_empty() {
            hold.holder = Some(txn);
            return None;
        }
        let (grant, rx) = oneshot::channel();
        hold.deferred.push_back(Deferred::Local { txn, grant });
        Some(rx)
    }

    /// End `txn`'s hold of this core, or its wait for one.
    fn release_hold(&self, txn: u64) {
        let mut hold = self.hold.borrow_mut();
        if hold.holder == Some(txn) {
            hold.holder = None;
            if hold.deferred.is_empty() {
                hold.wake_waiters();
            } else {
                let _ = hold.kick.unbounded_send(());
            }
        } else {
            hold.deferred.retain(|d| !d.is_hold_of(txn));
        }
    }

    fn txn_check(&self, txn: u64, check: &CheckReq) -> TxnCheck {
        if self.hold.borrow().holder != Some(txn) {
            return TxnCheck::NotHeld;
        }
        let fenced = |k: &Bytes| self.shared.is_fenced(k);
        if check
            .keys
            .iter()
            .chain(&check.also_fenced)
            .chain(check.watches.iter().map(|(k, _)| k))
            .any(fenced)
        {
            return TxnCheck::Fenced;
        }
        let shard = self.shard.borrow();
        if check.keys.iter().any(|k| !shard.holds_key(k)) {
            return TxnCheck::Misplaced;
        }
        let now = now_ms();
        let mut changed = false;
        for (key, token) in &check.watches {
            match shard.watch_token(key, now) {
                None => return TxnCheck::Misplaced,
                Some(t) => changed |= t != *token,
            }
        }
        if changed {
            TxnCheck::Changed
        } else {
            TxnCheck::Ok
        }
    }

    fn txn_keys(&self, txn: u64, reqs: Vec<(u32, KeyRequest)>) -> Vec<(u32, Frame)> {
        if self.hold.borrow().holder != Some(txn) {
            return reqs
                .into_iter()
                .map(|(i, _)| (i, Frame::error("ERR internal: transaction lost its hold")))
                .collect();
        }
        let now = now_ms();
        let mut shard = self.shard.borrow_mut();
        let out = reqs
            .into_iter()
            .map(|(i, req)| match shard.execute(&req, now) {
                Outcome::Done(f) => (i, f),
                Outcome::Forward(_) => (
                    i,
                    Frame::error("ERR internal: key left its core during the transaction"),
                ),
            })
            .collect();
        shard.publish_counters();
        out
    }

    fn txn_fanout(&self, txn: u64, req: &FanoutReq) -> Option<FanoutReply> {
        (self.hold.borrow().holder == Some(txn))
            .then(|| self.shard.borrow_mut().fanout(req, now_ms()))
    }

    /// Where `key` lives on this node, or the error to reply.
    fn core_of(&self, key: &[u8], what: &str) -> Result<usize, Frame> {
        match self.shared.routes.snapshot().owner_of(key) {
            Owner::Core(c) => Ok(c),
            Owner::Node(n) => Err(Frame::error(format!(
                "CROSSNODE {what} needs all its keys on the node serving the connection; key '{}' is on node {n}",
                String::from_utf8_lossy(&key[..key.len().min(128)])
            ))),
            Owner::Unassigned => Err(super::not_formed()),
        }
    }

    /// WATCH: the current token of each key.
    pub async fn watch_tokens(&self, keys: &[Bytes]) -> Result<Vec<WatchToken>, Frame> {
        let mut out: Vec<Option<WatchToken>> = vec![None; keys.len()];
        let deadline = Instant::now() + BEGIN_RETRY_FOR;
        loop {
            let mut by_core: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                if out[i].is_none() {
                    by_core
                        .entry(self.core_of(key, "WATCH")?)
                        .or_default()
                        .push(i);
                }
            }
            if by_core.is_empty() {
                return Ok(out.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                return Err(Frame::error(
                    "TRYAGAIN the watched keys' fragments are moving; retry shortly",
                ));
            }
            let mut waiting = Vec::new();
            for (core, idx) in &by_core {
                if *core == self.core {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                let msg = CoreMsg::Watch {
                    keys: idx.iter().map(|&i| keys[i].clone()).collect(),
                    reply: tx,
                };
                if self.senders.send_to(*core, msg).await.is_ok() {
                    waiting.push((idx, rx));
                }
            }
            if let Some(idx) = by_core.get(&self.core) {
                self.wait_unheld().await;
                let now = now_ms();
                let shard = self.shard.borrow();
                for &i in idx {
                    out[i] = shard.watch_token(&keys[i], now);
                }
            }
            for (idx, rx) in waiting {
                if let Ok(tokens) = rx.await {
                    for (&i, t) in idx.iter().zip(tokens) {
                        out[i] = t;
                    }
                }
            }
            if out.iter().any(Option::is_none) {
                // Some key's fragment moved between cores: route again.
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Answer a `Watch` message (not held: holds defer it).
    pub(super) fn watch_here(&self, keys: &[Bytes]) -> Vec<Option<WatchToken>> {
        let now = now_ms();
        let shard = self.shard.borrow();
        keys.iter().map(|k| shard.watch_token(k, now)).collect()
    }

    /// Start a transaction over the cores of `keys` (each request's routing key and
    /// its further keys, as MSETNX has) and `watches`: hold them, check them.
    ///
    /// With `every_core` (DBSIZE, FLUSHALL queued) all this node's cores are held, and
    /// their fragments must cover the key space (none in flight between cores).
    pub async fn begin_txn(
        &self,
        keys: &[(Bytes, Vec<Bytes>)],
        watches: &[(Bytes, WatchToken)],
        every_core: bool,
    ) -> Begin<'_> {
        let deadline = Instant::now() + BEGIN_RETRY_FOR;
        loop {
            let mut checks: BTreeMap<usize, CheckReq> = BTreeMap::new();
            let mut placement: HashMap<Bytes, usize> = HashMap::new();
            for (key, others) in keys {
                let core = match self.core_of(key, "EXEC") {
                    Ok(c) => c,
                    Err(e) => return Begin::Failed(e),
                };
                let check = checks.entry(core).or_default();
                if placement.insert(key.clone(), core).is_none() {
                    check.keys.push(key.clone());
                }
                check.also_fenced.extend(others.iter().cloned());
            }
            for (key, token) in watches {
                let core = match self.core_of(key, "EXEC") {
                    Ok(c) => c,
                    Err(e) => return Begin::Failed(e),
                };
                checks
                    .entry(core)
                    .or_default()
                    .watches
                    .push((key.clone(), *token));
            }
            if every_core {
                for core in 0..self.shared.core_count() {
                    checks.entry(core).or_default();
                }
            }
            let mut txn = Txn {
                ctx: self,
                id: NEXT_TXN.fetch_add(1, Ordering::Relaxed),
                held: Vec::new(),
                placement,
            };
            if !txn.hold_all(checks.keys().copied().collect()).await {
                txn.release().await;
                return Begin::Failed(Frame::error(
                    "TRYAGAIN the transaction's cores are busy; retry shortly",
                ));
            }
            let mut results = txn.check_all(checks).await;
            if every_core {
                // A fragment moving between cores is held by neither until its Adopt
                // (deferred under the hold) runs: count on nothing until it landed.
                let covered = match txn.fanout(&FanoutReq::DbSize).await {
                    Ok(replies) => super::covers_keyspace(&replies),
                    Err(_) => false,
                };
                if !covered {
                    results.push(TxnCheck::Misplaced);
                }
            }
            let verdict = if results.contains(&TxnCheck::Changed) {
                TxnCheck::Changed
            } else {
                results
                    .into_iter()
                    .find(|r| *r != TxnCheck::Ok)
                    .unwrap_or(TxnCheck::Ok)
            };
            match verdict {
                TxnCheck::Ok => return Begin::Held(txn),
                TxnCheck::Changed => {
                    txn.release().await;
                    return Begin::Changed;
                }
                TxnCheck::NotHeld => {
                    txn.release().await;
                    return Begin::Failed(Frame::error(
                        "TRYAGAIN the transaction lost its cores; retry",
                    ));
                }
                TxnCheck::Fenced | TxnCheck::Misplaced => {
                    txn.release().await;
                    if Instant::now() >= deadline {
                        return Begin::Failed(Frame::error(
                            "TRYAGAIN the transaction's fragments are moving; retry shortly",
                        ));
                    }
                    if verdict == TxnCheck::Fenced {
                        let all: Vec<(u32, KeyRequest)> = keys
                            .iter()
                            .flat_map(|(k, others)| std::iter::once(k).chain(others))
                            .chain(watches.iter().map(|(k, _)| k))
                            .map(|k| {
                                let op = crate::cmd::KeyOp::Exists;
                                (0, KeyRequest { key: k.clone(), op })
                            })
                            .collect();
                        self.wait_unfenced(&all).await;
                        self.shared.follow_table();
                    } else {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
    }
}

/// How `begin_txn` went.
pub enum Begin<'a> {
    /// Every core is held and checked: run the transaction, then release it.
    Held(Txn<'a>),
    /// A watched key changed: nothing runs (EXEC replies the null array).
    Changed,
    /// The reply to give instead (CROSSNODE, TRYAGAIN, CLUSTERDOWN).
    Failed(Frame),
}

/// A transaction holding its cores. Release it with [`Txn::release`]; dropping it
/// releases too, best effort.
pub struct Txn<'a> {
    ctx: &'a CoreCtx,
    id: u64,
    /// Cores held, ascending.
    held: Vec<usize>,
    /// Each request key's core, as checked.
    placement: HashMap<Bytes, usize>,
}

impl Txn<'_> {
    /// Hold `cores` (ascending), all within `HOLD_WAIT`; false if that failed (what was
    /// held is in `held`, for the caller to release).
    async fn hold_all(&mut self, cores: Vec<usize>) -> bool {
        let ctx = self.ctx;
        let deadline = Instant::now() + HOLD_WAIT;
        for core in cores {
            let rx = if core == ctx.core {
                match ctx.hold_local(self.id) {
                    None => {
                        self.held.push(core);
                        continue;
                    }
                    Some(rx) => rx,
                }
            } else {
                let (tx, rx) = oneshot::channel();
                let msg = CoreMsg::Hold {
                    txn: self.id,
                    reply: tx,
                };
                if ctx.senders.send_to(core, msg).await.is_err() {
                    return false;
                }
                rx
            };
            // From here on this core may grant the hold at any time: release it too.
            self.held.push(core);
            let left = deadline.saturating_duration_since(Instant::now());
            let granted = glommio::timer::timeout(left.max(Duration::from_millis(1)), async {
                Ok(rx.await.is_ok())
            })
            .await;
            if !matches!(granted, Ok(true)) {
                return false;
            }
        }
        true
    }

    async fn check_all(&self, checks: BTreeMap<usize, CheckReq>) -> Vec<TxnCheck> {
        let ctx = self.ctx;
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        let mut local = None;
        for (core, check) in checks {
            if core == ctx.core {
                local = Some(check);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let msg = CoreMsg::TxnCheck {
                txn: self.id,
                check,
                reply: tx,
            };
            if ctx.senders.send_to(core, msg).await.is_err() {
                out.push(TxnCheck::NotHeld);
                continue;
            }
            waiting.push(rx);
        }
        if let Some(check) = local {
            out.push(ctx.txn_check(self.id, &check));
        }
        for rx in waiting {
            out.push(rx.await.unwrap_or(TxnCheck::NotHeld));
        }
        out
    }

    /// A fan-out step on every held core (all of this node's, see `begin_txn`).
    pub async fn fanout(&self, req: &FanoutReq) -> Result<Vec<FanoutReply>, Frame> {
        let ctx = self.ctx;
        let mut waiting = Vec::new();
        let mut out = Vec::new();
        for &core in &self.held {
            if core == ctx.core {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let msg = CoreMsg::TxnFanout {
                txn: self.id,
                req: req.clone(),
                reply: tx,
            };
            if ctx.senders.send_to(core, msg).await.is_ok() {
                waiting.push(rx);
            }
        }
        let missing = || Frame::error("ERR internal: a held core did not answer");
        if self.held.contains(&ctx.core) {
            out.push(ctx.txn_fanout(self.id, req).ok_or_else(missing)?);
        }
        for rx in waiting {
            out.push(rx.await.ok().flatten().ok_or_else(missing)?);
        }
        if out.len() != self.held.len() {
            return Err(missing());
        }
        Ok(out)
    }

    /// Execute key requests under the holds; replies in request order.
    pub async fn run(&self, reqs: Vec<KeyRequest>) -> Vec<Frame> {
        let ctx = self.ctx;
        let n = reqs.len();
        let mut out: Vec<Option<Frame>> = vec![None; n];
        let mut by_core: BTreeMap<usize, Vec<(u32, KeyRequest)>> = BTreeMap::new();
        for (i, req) in reqs.into_iter().enumerate() {
            match self.placement.get(&req.key) {
                Some(&core) => by_core.entry(core).or_default().push((i as u32, req)),
                None => {
                    out[i] = Some(Frame::error(
                        "ERR internal: a key outside the transaction's checked set",
                    ))
                }
            }
        }
        let local = by_core.remove(&ctx.core);
        let mut waiting = Vec::new();
        for (core, reqs) in by_core {
            let indices: Vec<u32> = reqs.iter().map(|(i, _)| *i).collect();
            let (tx, rx) = oneshot::channel();
            let msg = CoreMsg::TxnKeys {
                txn: self.id,
                reqs,
                reply: tx,
            };
            if ctx.senders.send_to(core, msg).await.is_err() {
                tracing::error!(from = ctx.core, to = core, "mesh send failed in EXEC");
            }
            waiting.push((indices, rx));
        }
        let mut done = Vec::new();
        if let Some(reqs) = local {
            done.extend(ctx.txn_keys(self.id, reqs));
        }
        for (indices, rx) in waiting {
            match rx.await {
                Ok(replies) => done.extend(replies),
                Err(_) => done.extend(
                    indices
                        .into_iter()
                        .map(|i| (i, Frame::error("ERR internal: core did not answer"))),
                ),
            }
        }
        for (i, f) in done {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = Some(f);
            }
        }
        out.into_iter()
            .map(|f| f.unwrap_or_else(|| Frame::error("ERR internal: no reply")))
            .collect()
    }

    /// Release every hold (and every wait for one).
    pub async fn release(mut self) {
        let ctx = self.ctx;
        for core in std::mem::take(&mut self.held) {
            if core == ctx.core {
                ctx.release_hold(self.id);
            } else if ctx
                .senders
                .send_to(core, CoreMsg::Release { txn: self.id })
                .await
                .is_err()
            {
                tracing::error!(from = ctx.core, to = core, "cannot release a hold");
            }
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        // Only when the EXEC was abandoned half way (its task dropped): release without
        // waiting. A full channel leaves that core held, so say so loudly.
        for core in std::mem::take(&mut self.held) {
            if core == self.ctx.core {
                self.ctx.release_hold(self.id);
            } else if self
                .ctx
                .senders
                .try_send_to(core, CoreMsg::Release { txn: self.id })
                .is_err()
            {
                tracing::error!(core, "dropped transaction could not release its hold");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::table::initial_range;
    use augur_fabric::{AnyTransport, Backend, FabricConfig};
    use glommio::{LocalExecutorBuilder, Placement};
    use std::rc::Rc;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};

    /// Poll `cond` every millisecond for up to 10 s (the executor keeps running).
    async fn until(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            if Instant::now() > deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Core 1 is held (by a transaction that takes too long); core 0's transaction
    /// gives up after `HOLD_WAIT` and releases. Its pending hold request must be gone
    /// from core 1's queue: when core 1's hold ends, core 1 is free (not held by the
    /// transaction that gave up) and answers other cores again.
    #[test]
    fn a_transaction_that_gives_up_waiting_leaves_no_hold_behind() {
        let (shared, mesh) = crate::core::tests::two_cores();
        let barrier = Arc::new(Barrier::new(2));
        let done = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (shared, mesh) = (shared.clone(), mesh.clone());
                let (barrier, done, gave_up) = (barrier.clone(), done.clone(), gave_up.clone());
                LocalExecutorBuilder::new(Placement::Unbound)
                    .spawn(move || async move {
                        let (senders, mut receivers) = mesh.join().await.unwrap();
                        let me = senders.peer_id();
                        let fabric = AnyTransport::bind(
                            Backend::Tcp,
                            FabricConfig::new(b"hold-test-secret".to_vec()),
                            "127.0.0.1:0".parse().unwrap(),
                        )
                        .unwrap();
                        let (lo, hi) = initial_range(me, 2);
                        let ctx = Rc::new(
                            CoreCtx::new(shared.clone(), senders, Rc::new(fabric), vec![(lo, hi)])
                                .unwrap(),
                        );
                        for (_, rx) in receivers.streams() {
                            glommio::spawn_local(crate::core::receive_loop(ctx.clone(), rx))
                                .detach();
                        }
                        if let Some(kicks) = ctx.hold_kicks.borrow_mut().take() {
                            glommio::spawn_local(drain_task(ctx.clone(), kicks)).detach();
                        }
                        if me == 1 {
                            // Held by "transaction 0" (real ids start at 1) until core 0
                            // has given up. The executor keeps running meanwhile.
                            assert!(ctx.hold_local(0).is_none());
                            barrier.wait();
                            let pending_hold = || {
                                ctx.hold
                                    .borrow()
                                    .deferred
                                    .iter()
                                    .any(|d| matches!(d, Deferred::Msg(CoreMsg::Hold { .. })))
                            };
                            let queued = until(pending_hold).await;
                            let gave_up_seen = until(|| gave_up.load(Ordering::Relaxed)).await;
                            let withdrawn = until(|| !pending_hold()).await;
                            ctx.release_hold(0);
                            let free = !ctx.is_held();
                            // Keep this executor running while core 0 asks it something.
                            let finished = until(|| done.load(Ordering::Relaxed)).await;
                            queued && gave_up_seen && withdrawn && free && finished
                        } else {
                            barrier.wait();
                            let mut txn = Txn {
                                ctx: &ctx,
                                id: NEXT_TXN.fetch_add(1, Ordering::Relaxed),
                                held: Vec::new(),
                                placement: HashMap::new(),
                            };
                            let started = Instant::now();
                            let held = txn.hold_all(vec![0, 1]).await;
                            let waited = started.elapsed();
                            txn.release().await;
                            assert!(!held, "held a core another transaction holds");
                            assert!(waited >= HOLD_WAIT, "gave up after {waited:?}");
                            assert!(!ctx.is_held(), "its own core stayed held");
                            gave_up.store(true, Ordering::Relaxed);
                            // Core 1 frees itself: then a plain request is answered.
                            let (tx, rx) = oneshot::channel();
                            let msg = CoreMsg::Watch {
                                keys: vec![Bytes::from_static(b"\xf0k")],
                                reply: tx,
                            };
                            ctx.senders.send_to(1, msg).await.unwrap();
                            let answered =
                                glommio::timer::timeout(Duration::from_secs(10), async {
                                    Ok(rx.await.is_ok())
                                })
                                .await;
                            done.store(true, Ordering::Relaxed);
                            matches!(answered, Ok(true))
                        }
                    })
                    .unwrap()
            })
            .collect();
        let ok: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ok, [true, true]);
    }
}
