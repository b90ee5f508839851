//! The per-core runtime: a core's context (its shard, its route snapshot, its end of
//! the channel mesh), the loop that answers other cores, and periodic maintenance.
//!
//! A key request reaches [`CoreCtx::run_keys`] from a connection; the route snapshot
//! says which core owns the key; local ones run at once on this core's shard, the rest
//! travel one message per core over the mesh ([`msg::CoreMsg`]).

pub mod msg;
pub mod peers;
pub mod remote;
pub mod txn;
pub mod wire;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use augur_fabric::{AnyMr, AnyTransport};
use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};

use crate::cmd::args::now_ms;
use crate::cmd::KeyRequest;
use crate::context::NodeShared;
use crate::ownership::{Change, FragmentState};
use crate::resp::Frame;
use crate::router::remote_read::{RemoteFragment, RemoteReadError, RemoteReader};
use crate::router::table::{Owner, RouteCache};
use crate::shard::fanout::{FanoutReply, FanoutReq};
use crate::shard::{Outcome, Shard, ShardEnv};
use crate::telemetry::access::{AccessRecorder, Resources, TickSummary};
use crate::telemetry::resources;
use crate::telemetry::stats;
use msg::CoreMsg;
use peers::Peers;
use remote::{Described, Descriptors, Exports, WireFragment};
use wire::{KeyReply, PeerFanout, PeerReply, PeerRequest};

/// One core's context, shared by its tasks (all on the same thread).
pub struct CoreCtx {
    pub core: usize,
    pub shared: Arc<NodeShared>,
    pub shard: RefCell<Shard>,
    senders: Senders<CoreMsg>,
    routes: RefCell<RouteCache>,
    /// Links to other nodes, over this core's fabric endpoint.
    pub peers: Rc<Peers>,
    /// Regions this core lets peers read.
    pub exports: Exports,
    /// Descriptors of other nodes' regions this core reads.
    descriptors: Descriptors,
    reader: RemoteReader<AnyMr>,
    /// This core's clients' accesses in the current telemetry tick.
    access: RefCell<AccessRecorder>,
    /// Which transaction holds this core, and what waits for it (`txn`).
    hold: RefCell<txn::HoldState>,
    /// Taken by the task that runs deferred messages after a hold.
    hold_kicks: RefCell<Option<futures::channel::mpsc::UnboundedReceiver<()>>>,
}

impl CoreCtx {
    /// This core's context, owning the fragments `ranges`.
    pub fn new(
        shared: Arc<NodeShared>,
        senders: Senders<CoreMsg>,
        fabric: Rc<AnyTransport>,
        ranges: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<CoreCtx, String> {
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
        let shard = Shard::new(core, env, ranges).map_err(|e| format!("core {core}: {e}"))?;
        let max_reply = (shared
            .max_bulk_len
            .load(std::sync::atomic::Ordering::Relaxed) as usize)
            .max(PEER_BATCH_BYTES)
            .saturating_mul(2);
        let reader = RemoteReader::new(fabric.clone())
            .map_err(|e| format!("core {core}: remote reader: {e}"))?;
        let fragments = shared.routes.snapshot().fragment_count();
        let (hold, hold_kicks) = txn::HoldState::new();
        Ok(CoreCtx {
            hold: RefCell::new(hold),
            hold_kicks: RefCell::new(Some(hold_kicks)),
            core,
            access: RefCell::new(AccessRecorder::new(fragments)),
            exports: Exports::default(),
            descriptors: Descriptors::default(),
            reader,
            peers: Rc::new(Peers::new(fabric, max_reply)),
            routes: RefCell::new(RouteCache::new(&shared.routes)),
            shared,
            shard: RefCell::new(shard),
            senders,
        })
    }

    /// Start the tasks that answer other cores, keep the shard tidy and report
    /// telemetry.
    pub fn spawn_background(ctx: &Rc<CoreCtx>, receivers: Vec<ConnectedReceiver<CoreMsg>>) {
        for rx in receivers {
            glommio::spawn_local(receive_loop(ctx.clone(), rx)).detach();
        }
        if let Some(kicks) = ctx.hold_kicks.borrow_mut().take() {
            glommio::spawn_local(txn::drain_task(ctx.clone(), kicks)).detach();
        }
        glommio::spawn_local(maintenance(ctx.clone())).detach();
        glommio::spawn_local(rebuild_slices(ctx.clone())).detach();
        glommio::spawn_local(telemetry_ticks(ctx.clone())).detach();
        if ctx.core == 0 {
            glommio::spawn_local(watch_handovers(ctx.clone())).detach();
        }
    }
}

type Batches = BTreeMap<usize, Vec<(u32, KeyRequest)>>;
type NodeBatch = Vec<(u32, KeyRequest)>;
type NodeBatches = BTreeMap<u64, NodeBatch>;

/// How long a request is re-routed after an owner answered `Moved` (or its fragment
/// was fenced for a handover) before the client gets `-TRYAGAIN`; each retry first
/// waits (for the fence, or 1 ms doubling up to 50 ms unless the table already moved)
/// and refreshes the routes from the table.
const RETRY_FOR: Duration = Duration::from_secs(5);

fn not_formed() -> Frame {
    Frame::error("CLUSTERDOWN The cluster is not formed yet")
}

impl CoreCtx {
    /// Execute key requests from a client of this node: local ones at once, other
    /// cores' one mesh message per core, other nodes' one fabric request per node.
    /// Replies come back in request order.
    pub async fn run_keys(&self, reqs: Vec<KeyRequest>) -> Vec<Frame> {
        self.run_keys_for(0, reqs).await
    }

    /// `run_keys` for client connection `client` (its id; 0: none), whose order of
    /// fragments feeds the placement's sequence model.
    pub async fn run_keys_for(&self, client: u64, reqs: Vec<KeyRequest>) -> Vec<Frame> {
        let mut out: Vec<Option<Frame>> = vec![None; reqs.len()];
        // For telemetry: each request's table fragment, whether it writes, its bytes
        // (the reply's are added once known); filled by the first routing pass.
        let mut counted = vec![(0u32, false, 0usize); reqs.len()];
        let mut pending: Vec<(u32, KeyRequest)> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u32, r))
            .collect();
        let deadline = std::time::Instant::now() + RETRY_FOR;
        for attempt in 0u32.. {
            let last = std::time::Instant::now() >= deadline;
            let count = (attempt == 0).then_some(&mut counted[..]);
            // Not while a transaction holds this core (nothing awaits in between).
            self.wait_unheld().await;
            let (cores, mut nodes, fenced) = self.run_local(pending, &mut out, false, count);
            if cores.is_empty() && nodes.is_empty() && fenced.is_empty() {
                // All served here (the common case): nothing to send or wait for.
                break;
            }
            let reads = take_one_sided(&mut nodes);
            let (from_cores, (from_nodes, mut moved), (read, fallback)) = futures::join!(
                self.send_keys(cores),
                self.send_to_nodes(nodes, last),
                self.read_remote_all(reads)
            );
            // Reads that could not be served one-sided go as messages.
            let (from_fallback, moved_too) = self.send_to_nodes(fallback, last).await;
            moved.extend(moved_too);
            // Requests fenced here or on another core wait for the handover to finish.
            let mut done = Vec::new();
            let mut fenced = fenced;
            for (i, r) in from_cores {
                match r {
                    Ok(f) => done.push((i, f)),
                    Err(req) => fenced.push((i, req)),
                }
            }
            if last {
                for (i, _) in moved.drain(..).chain(fenced.drain(..)) {
                    done.push((
                        i,
                        Frame::error("TRYAGAIN the key's fragment is moving; retry shortly"),
                    ));
                }
            }
            for (i, f) in done
                .into_iter()
                .chain(from_nodes)
                .chain(read)
                .chain(from_fallback)
            {
                if let Some(slot) = out.get_mut(i as usize) {
                    *slot = Some(f);
                }
            }
            if moved.is_empty() && fenced.is_empty() {
                break;
            }
            stats::bump(
                &self.shared.stats[self.core].moved_retries,
                (moved.len() + fenced.len()) as u64,
            );
            let waited = std::time::Instant::now();
            if !fenced.is_empty() {
                // Queued behind a handover: go on when it resolves (to the new owner
                // after a commit, here after an abort), not on a timer.
                self.wait_unfenced(&fenced).await;
            }
            if !moved.is_empty() && !self.table_is_ahead() {
                // An owner said the key is not its own and this node's table has not
                // moved yet: the commit is on its way here.
                let backoff = Duration::from_millis(1 << attempt.min(6));
                glommio::timer::sleep(backoff.min(Duration::from_millis(50))).await;
            }
            stats::bump(
                &self.shared.stats[self.core].reroute_wait_us,
                waited.elapsed().as_micros() as u64,
            );
            self.shared.follow_table();
            moved.extend(fenced);
            moved.sort_unstable_by_key(|(i, _)| *i);
            pending = moved;
        }
        let out: Vec<Frame> = out
            .into_iter()
            .map(|f| f.unwrap_or_else(|| Frame::error("ERR internal: an owner did not answer")))
            .collect();
        let mut access = self.access.borrow_mut();
        for ((fragment, write, bytes), reply) in counted.into_iter().zip(&out) {
            let reply_bytes = match reply {
                Frame::Bulk(b) => b.len(),
                _ => 0,
            };
            access.record(fragment, write, bytes + reply_bytes);
            access.record_order(client, fragment);
        }
        out
    }

    /// Whether this node's copy of the ownership table is newer than the routes.
    fn table_is_ahead(&self) -> bool {
        self.shared
            .ownership
            .get()
            .is_some_and(|o| o.version() > self.shared.routes.snapshot().cluster_version)
    }

    /// Wait, bounded by `FENCE_WAIT`, until none of these keys is fenced any more.
    async fn wait_unfenced(&self, reqs: &[(u32, KeyRequest)]) {
        let deadline = std::time::Instant::now() + FENCE_WAIT;
        while reqs
            .iter()
            .any(|(_, r)| r.keys().any(|k| self.shared.is_fenced(k)))
            && std::time::Instant::now() < deadline
        {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Take over a fragment that migrated here.
    pub fn install(&self, fragment: crate::store::Fragment) {
        self.shard.borrow_mut().adopt(fragment);
    }

    /// A handover of `fragment` was abandoned before its commit: serve the range again,
    /// on fresh regions (the fenced ones were retired for one-sided readers).
    pub fn abandon_fence(&self, fragment: u64) {
        if let Some(f) = self.shared.unfence(fragment) {
            tracing::info!(
                core = self.core,
                fragment,
                "handover abandoned; serving again"
            );
            self.shard
                .borrow_mut()
                .renew_retired(&f.lo, f.hi.as_deref(), now_ms());
        }
    }

    /// Fences whose handover committed: drop the data here (the new owner has it);
    /// fences left without a commit for too long: abandon them.
    fn tidy_fences(&self) {
        let Some(ownership) = self.shared.ownership.get() else {
            return;
        };
        let table = ownership.table();
        let me = self.shared.cluster().my_id;
        for f in self
            .shared
            .fences()
            .into_iter()
            .filter(|f| f.core == self.core)
        {
            let owner = table.fragment(f.fragment).map(|e| e.owner);
            if let Some(owner) = owner.filter(|o| *o != me) {
                // Route to the new owner first: with the data gone and the route still
                // here, requests would find nothing.
                self.shared
                    .routes
                    .update(|r| r.set_owner(&f.lo, f.hi.as_ref(), Owner::Node(owner)));
                let dropped = self.shard.borrow_mut().drop_range(&f.lo, f.hi.as_deref());
                if dropped > 0 || self.shard.borrow().fragment_for(&f.lo).is_none() {
                    self.shared.unfence(f.fragment);
                    let held_us = f.since.elapsed().as_micros() as u64;
                    self.shared.migration_stats().record_handed_over(held_us);
                    tracing::info!(
                        core = self.core,
                        fragment = f.fragment,
                        dropped,
                        held_us,
                        "handed over"
                    );
                }
            } else if f.since.elapsed() > FENCE_TIMEOUT {
                self.abandon_fence(f.fragment);
            }
        }
    }

    /// Tell the cluster table about a split made here (in the background; a refused
    /// proposal only leaves the table coarser than the local fragments).
    fn propose_split(&self, at: Bytes) {
        let Some(ownership) = self.shared.ownership.get() else {
            return;
        };
        let table = ownership.table();
        let Some(f) = table.fragment_for(&at) else {
            return;
        };
        if f.lo == at[..] || f.owner != self.shared.cluster().my_id {
            return; // already a table boundary, or no longer ours
        }
        let reply = ownership.propose(Change::Split {
            fragment: f.id,
            at: at.to_vec(),
        });
        let core = self.core;
        glommio::spawn_local(async move {
            match reply.await {
                Ok(Ok(_)) => tracing::debug!(core, "split committed to the table"),
                Ok(Err(e)) => tracing::info!(core, "table split not committed: {e}"),
                Err(_) => tracing::info!(core, "table split: ownership gone"),
            }
        })
        .detach();
    }

    /// Placement's two simplest moves, from the latest telemetry: split a fragment of
    /// this core that is hotter than `split-load` (at a local boundary inside it, else
    /// at its median key), and — on the leader, core 0 — merge neighbouring fragments
    /// of one node that have been cold for `merge-after-s`. One of each per tick.
    fn split_and_merge(&self, cold_since: &mut HashMap<u64, std::time::Instant>) {
        let Some(ownership) = self.shared.ownership.get() else {
            return;
        };
        let table = ownership.table();
        if table.members.len() < 2 {
            return;
        }
        let rates = self.shared.telemetry().rates();
        let me = self.shared.cluster().my_id;
        let config = &self.shared.config;
        let load = |id: u64| rates.get(&id).map_or(0.0, |by| by.values().sum::<f64>());
        if config.split_load > 0 {
            let hot = table.fragments.values().find(|f| {
                f.owner == me
                    && f.core as usize % self.shared.core_count() == self.core
                    && f.state == FragmentState::Stable
                    && load(f.id) > config.split_load as f64
            });
            if let Some(f) = hot {
                let mut shard = self.shard.borrow_mut();
                let inside = shard.boundaries_within(&f.lo, f.hi.as_deref());
                if let Some(at) = inside.get(inside.len() / 2) {
                    let at = at.clone();
                    drop(shard);
                    self.propose_split(at);
                } else {
                    match shard.split_hot(&f.lo, now_ms()) {
                        Ok(true) => tracing::info!(fragment = f.id, "load split"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(fragment = f.id, "load split failed: {e}"),
                    }
                }
            }
        }
        let leader = ownership.status().leader == Some(me);
        if config.merge_after_s == 0 || !leader || self.core != 0 {
            return;
        }
        let now = std::time::Instant::now();
        cold_since.retain(|id, _| table.fragments.values().any(|f| f.id == *id));
        for f in table.fragments.values() {
            if load(f.id) > 0.0 {
                cold_since.remove(&f.id);
            } else {
                cold_since.entry(f.id).or_insert(now);
            }
        }
        let cold_enough = |id: u64| {
            cold_since
                .get(&id)
                .is_some_and(|t| now.duration_since(*t).as_secs() >= config.merge_after_s)
        };
        let list: Vec<_> = table.fragments.values().collect();
        let pair = list.windows(2).find(|w| {
            w[0].owner == w[1].owner
                && w[0].core == w[1].core
                && w[0].state == FragmentState::Stable
                && w[1].state == FragmentState::Stable
                && cold_enough(w[0].id)
                && cold_enough(w[1].id)
        });
        if let Some(w) = pair {
            let (left, right) = (w[0].id, w[1].id);
            let reply = ownership.propose(Change::Merge { left, right });
            glommio::spawn_local(async move {
                match reply.await {
                    Ok(Ok(_)) => tracing::info!(left, right, "merged cold fragments"),
                    Ok(Err(e)) => tracing::info!(left, right, "merge not committed: {e}"),
                    Err(_) => {}
                }
            })
            .detach();
        }
    }

    /// End a telemetry tick: this core's summary goes to every member (this node's
    /// own straight into its aggregate), without waiting on slow peers.
    fn ship_telemetry(self: &Rc<Self>, tick: Duration, resources: Option<Resources>) {
        let (fragments, sizes, sequences) = {
            let mut routes = self.routes.borrow_mut();
            let table = routes.get(&self.shared.routes);
            let mut access = self.access.borrow_mut();
            let counts = access.drain(|i| table.fragment_id(i));
            // Connection ids are unique on the node, not only on this core.
            let orders = access.drain_orders(|i| table.fragment_id(i));
            drop(access);
            let mut sizes: HashMap<u64, u64> = HashMap::new();
            for (lo, bytes) in self.shard.borrow().sizes() {
                let (_, index) = table.locate(&lo);
                *sizes.entry(table.fragment_id(index)).or_default() += bytes;
            }
            (counts, sizes.into_iter().collect(), orders)
        };
        let cluster = self.shared.cluster();
        let summary = TickSummary {
            node: cluster.my_id,
            core: self.core as u32,
            tick_ms: tick.as_millis() as u64,
            fragments,
            sizes,
            resources,
            sequences,
        };
        for (id, member) in &cluster.members {
            if *id == cluster.my_id {
                continue;
            }
            let n = member.fabric.len();
            let Some(&addr) = member.fabric.get(self.core % n.max(1)) else {
                continue;
            };
            let (ctx, req) = (self.clone(), PeerRequest::Telemetry(summary.clone()));
            glommio::spawn_local(async move {
                let sent = std::time::Instant::now();
                match ctx.peers.request(addr, &req).await {
                    Ok(_) => stats::smooth(
                        &ctx.shared.stats[ctx.core].peer_rtt_us,
                        sent.elapsed().as_micros() as u64,
                    ),
                    Err(e) => tracing::debug!(%addr, "telemetry not delivered: {e}"),
                }
            })
            .detach();
        }
        self.shared.telemetry().ingest(summary);
    }

    /// Serve reads of other nodes' keys with one-sided reads of their regions, all
    /// at once; what cannot be served that way comes back to go as messages.
    async fn read_remote_all(
        &self,
        reads: Vec<(u32, u64, KeyRequest)>,
    ) -> (Vec<(u32, Frame)>, NodeBatches) {
        let now = now_ms();
        let results =
            futures::future::join_all(reads.into_iter().map(|(i, node, req)| async move {
                let got = self.read_remote(node, &req, now).await;
                (i, node, req, got)
            }))
            .await;
        let mut done = Vec::new();
        let mut fallback = NodeBatches::new();
        for (i, node, req, got) in results {
            match got {
                Some(f) => done.push((i, f)),
                None => fallback.entry(node).or_default().push((i, req)),
            }
        }
        (done, fallback)
    }

    /// One key of `node` by one-sided reads; `None` when that did not work (the
    /// caller then sends the request as a message, which always works).
    async fn read_remote(&self, node: u64, req: &KeyRequest, now: u64) -> Option<Frame> {
        let stats = &self.shared.stats[self.core];
        for _ in 0..2 {
            let (addr, fragment) = match self.descriptors.get(&req.key) {
                Some(d) => d,
                None => self.fetch_descriptor(node, &req.key).await?,
            };
            let conn = self.peers.connection(addr).await.ok()?;
            match self.reader.get(&conn, &fragment, &req.key, now).await {
                Ok(value) => {
                    stats::bump(&stats.remote_reads, 1);
                    return Some(remote::reply_for(&req.op, value, now));
                }
                Err(RemoteReadError::Retired) => {
                    stats::bump(&stats.remote_read_retries, 1);
                    self.descriptors.forget(&req.key);
                }
                Err(e) => {
                    tracing::debug!(core = self.core, node, "one-sided read failed: {e}");
                    stats::bump(&stats.remote_read_retries, 1);
                    self.descriptors.forget(&req.key);
                    return None;
                }
            }
        }
        None
    }

    /// Ask `node` to describe the fragment holding `key`, following it to the core
    /// that holds it, and cache the answer.
    async fn fetch_descriptor(
        &self,
        node: u64,
        key: &Bytes,
    ) -> Option<(SocketAddr, RemoteFragment)> {
        let cluster = self.shared.cluster();
        let member = cluster.members.get(&node)?;
        let n = member.fabric.len();
        let mut addr = *member.fabric.get(self.core % n.max(1))?;
        for _ in 0..2 {
            let req = PeerRequest::Describe { key: key.clone() };
            match self.peers.request(addr, &req).await.ok()? {
                PeerReply::Described(Described::Here { lo, hi, fragment }) => {
                    let fragment = fragment.decode()?;
                    self.descriptors.put(lo, hi, addr, fragment);
                    return Some((addr, fragment));
                }
                PeerReply::Described(Described::OtherCore(c)) => {
                    addr = *member.fabric.get(c as usize)?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Describe, for a peer, the fragment holding `key` on this core.
    pub fn describe_local(&self, key: &[u8]) -> Described {
        if self.shared.is_fenced(key) {
            return Described::NotHere;
        }
        let owner = self
            .routes
            .borrow_mut()
            .get(&self.shared.routes)
            .owner_of(key);
        match owner {
            Owner::Core(c) if c != self.core => Described::OtherCore(c as u32),
            Owner::Core(_) => {
                let shard = self.shard.borrow();
                let Some(fragment) = shard.fragment_for(key) else {
                    return match shard.forwarded_to(key) {
                        Some(c) => Described::OtherCore(c as u32),
                        None => Described::NotHere,
                    };
                };
                match self.exports.describe(self.peers.transport(), fragment) {
                    Ok(d) => Described::Here {
                        lo: fragment.lo().clone(),
                        hi: fragment.hi().cloned(),
                        fragment: WireFragment::encode(&d),
                    },
                    Err(e) => {
                        tracing::warn!(core = self.core, "cannot export a fragment: {e}");
                        Described::NotHere
                    }
                }
            }
            _ => Described::NotHere,
        }
    }

    /// Execute key requests another node sent us. Keys this node does not own are
    /// answered `Moved` rather than forwarded, so a request never hops twice.
    pub async fn run_keys_for_peer(
        &self,
        cluster_version: u64,
        reqs: Vec<KeyRequest>,
    ) -> Vec<KeyReply> {
        // The asker routed with a newer table than ours: catch up before deciding what
        // is ours, rather than answer `Moved` from a stale view.
        if cluster_version > self.shared.routes.snapshot().cluster_version {
            self.shared.follow_table();
        }
        let n = reqs.len();
        let mut out: Vec<Option<Frame>> = vec![None; n];
        let pending = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u32, r))
            .collect();
        self.wait_unheld().await;
        let (cores, mut elsewhere, fenced) = self.run_local(pending, &mut out, true, None);
        let mut retry: Vec<u32> = Vec::new();
        if !fenced.is_empty() {
            // Hold them until the handover resolves, then run them here (an abort) or
            // answer `Moved` (a commit: the asker refreshes and goes to the new owner).
            self.wait_unfenced(&fenced).await;
            self.shared.follow_table();
            self.wait_unheld().await;
            let (cores_too, elsewhere_too, still) = self.run_local(fenced, &mut out, true, None);
            retry.extend(still.into_iter().map(|(i, _)| i));
            for (n, reqs) in elsewhere_too {
                elsewhere.entry(n).or_default().extend(reqs);
            }
            for (i, r) in self.send_keys(cores_too).await {
                match r {
                    Ok(f) => {
                        if let Some(slot) = out.get_mut(i as usize) {
                            *slot = Some(f);
                        }
                    }
                    Err(_) => retry.push(i),
                }
            }
        }
        for (i, r) in self.send_keys(cores).await {
            match r {
                Ok(f) => {
                    if let Some(slot) = out.get_mut(i as usize) {
                        *slot = Some(f);
                    }
                }
                Err(_) => retry.push(i),
            }
        }
        let mut replies: Vec<KeyReply> = out
            .into_iter()
            .map(|f| {
                KeyReply::Done(
                    f.unwrap_or_else(|| Frame::error("ERR internal: a core did not answer")),
                )
            })
            .collect();
        let elsewhere = elsewhere.into_values().flatten().map(|(i, _)| i);
        for i in elsewhere.chain(retry) {
            if let Some(slot) = replies.get_mut(i as usize) {
                *slot = KeyReply::Moved;
            }
        }
        replies
    }

    /// Run what this core owns; sort the rest by owning core and owning node. With
    /// `from_peer`, keys of other nodes are collected (to answer `Moved`), not sent.
    /// `count`, indexed like the requests, gets each one's telemetry entry from the
    /// same route lookup.
    fn run_local(
        &self,
        reqs: Vec<(u32, KeyRequest)>,
        out: &mut [Option<Frame>],
        from_peer: bool,
        mut count: Option<&mut [(u32, bool, usize)]>,
    ) -> (Batches, NodeBatches, Vec<(u32, KeyRequest)>) {
        let now = now_ms();
        let mut cores = Batches::new();
        let mut nodes = NodeBatches::new();
        let mut fenced = Vec::new();
        let mut routes = self.routes.borrow_mut();
        let table = routes.get(&self.shared.routes);
        let mut shard = self.shard.borrow_mut();
        let (mut first_seen, mut first_seen_remote) = (0, 0);
        for (i, req) in reqs {
            let (owner, fragment) = table.locate(&req.key);
            if let Some(slot) = count.as_deref_mut().and_then(|c| c.get_mut(i as usize)) {
                *slot = (
                    fragment,
                    req.op.is_write(),
                    req.key.len() + req.op.payload_len(),
                );
                first_seen += 1;
                first_seen_remote += u64::from(matches!(owner, Owner::Node(_)));
            }
            if req.keys().any(|k| self.shared.is_fenced(k)) {
                fenced.push((i, req));
                continue;
            }
            match owner {
                Owner::Core(c) if c != self.core => cores.entry(c).or_default().push((i, req)),
                Owner::Core(_) => match shard.execute(&req, now) {
                    Outcome::Done(f) => out[i as usize] = Some(f),
                    Outcome::Forward(c) => cores.entry(c).or_default().push((i, req)),
                },
                Owner::Node(n) => nodes.entry(n).or_default().push((i, req)),
                Owner::Unassigned if from_peer => nodes.entry(0).or_default().push((i, req)),
                Owner::Unassigned => out[i as usize] = Some(not_formed()),
            }
        }
        shard.publish_counters();
        let stats = &self.shared.stats[self.core];
        stats::bump(&stats.key_requests, first_seen);
        stats::bump(&stats.key_requests_remote, first_seen_remote);
        (cores, nodes, fenced)
    }

    /// Send each node its batch; returns the replies, and the requests to route
    /// again because their owner said `Moved` (on the last attempt, an error instead).
    async fn send_to_nodes(
        &self,
        nodes: NodeBatches,
        last_attempt: bool,
    ) -> (Vec<(u32, Frame)>, Vec<(u32, KeyRequest)>) {
        if nodes.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let cluster = self.shared.cluster();
        let version = self
            .routes
            .borrow_mut()
            .get(&self.shared.routes)
            .cluster_version;
        let stats = &self.shared.stats[self.core];
        // Nodes are asked at once; the pieces of one node's batch one after another, so
        // its requests run in pipeline order (a GET after a SET of the same key sees it).
        let mut per_node: Vec<(u64, Vec<NodeBatch>)> = Vec::new();
        for (node, piece) in split_by_bytes(nodes) {
            match per_node.last_mut() {
                Some((n, pieces)) if *n == node => pieces.push(piece),
                _ => per_node.push((node, vec![piece])),
            }
        }
        let calls = per_node.into_iter().map(|(node, pieces)| {
            let addr = cluster.members.get(&node).and_then(|m| {
                let n = m.fabric.len();
                (n > 0).then(|| m.fabric[self.core % n])
            });
            async move {
                let mut results = Vec::with_capacity(pieces.len());
                for batch in pieces {
                    let Some(addr) = addr else {
                        results.push((node, batch, Err(format!("node {node} is not a member"))));
                        continue;
                    };
                    let keys: Vec<KeyRequest> = batch.iter().map(|(_, r)| r.clone()).collect();
                    stats::bump(&stats.remote_requests, keys.len() as u64);
                    let req = PeerRequest::Keys {
                        cluster_version: version,
                        reqs: keys,
                    };
                    let result = match self.peers.request(addr, &req).await {
                        Ok(PeerReply::Keys(replies)) if replies.len() == batch.len() => Ok(replies),
                        Ok(PeerReply::Refused(why)) => Err(format!("refused: {why}")),
                        Ok(_) => Err("answered something else".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    results.push((node, batch, result));
                }
                results
            }
        });
        let mut done = Vec::new();
        let mut moved = Vec::new();
        let results = futures::future::join_all(calls).await.into_iter().flatten();
        for (node, batch, result) in results {
            match result {
                Ok(replies) => {
                    for ((i, req), reply) in batch.into_iter().zip(replies) {
                        match reply {
                            KeyReply::Done(f) => done.push((i, f)),
                            KeyReply::Moved if last_attempt => done.push((
                                i,
                                Frame::error(format!(
                                    "TRYAGAIN ownership of this key is changing (node {node})"
                                )),
                            )),
                            KeyReply::Moved => moved.push((i, req)),
                        }
                    }
                }
                Err(why) => {
                    stats::bump(&stats.remote_errors, batch.len() as u64);
                    tracing::warn!(core = self.core, node, "remote request failed: {why}");
                    for (i, req) in batch {
                        let fragment = self.fragment_label(&req.key);
                        done.push((
                            i,
                            Frame::error(format!(
                                "CLUSTERDOWN fragment {fragment}: owner node {node} unreachable"
                            )),
                        ));
                    }
                }
            }
        }
        (done, moved)
    }

    /// The cluster table's id for the fragment holding `key`, for error messages.
    fn fragment_label(&self, key: &[u8]) -> String {
        self.shared
            .ownership
            .get()
            .and_then(|o| o.table().fragment_for(key).map(|f| f.id.to_string()))
            .unwrap_or_else(|| "?".into())
    }

    async fn send_keys(&self, batches: Batches) -> Vec<(u32, Result<Frame, KeyRequest>)> {
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
                        .map(|i| (i, Ok(Frame::error("ERR internal: core did not answer")))),
                ),
            }
        }
        out
    }

    /// Ask every core of this node once; each answer says which ranges it held.
    pub async fn fanout_node(&self, req: &FanoutReq) -> Vec<FanoutReply> {
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
        self.wait_unheld().await;
        let local = self.shard.borrow_mut().fanout(req, now_ms());
        let mut replies = vec![local];
        for rx in waiting {
            if let Ok(r) = rx.await {
                replies.push(r);
            }
        }
        replies
    }

    /// Ask every core of every node, until the answers cover the whole key space: a
    /// fragment moving between cores is briefly held by neither. An unreachable node
    /// is an error: its keys cannot be counted or listed.
    pub async fn fanout(&self, req: FanoutReq) -> Result<Vec<FanoutReply>, Frame> {
        let cluster = self.shared.cluster();
        let others: Vec<(u64, SocketAddr)> = cluster
            .members
            .iter()
            .filter(|(id, _)| **id != cluster.my_id)
            .filter_map(|(id, m)| {
                let n = m.fabric.len();
                (n > 0).then(|| (*id, m.fabric[self.core % n]))
            })
            .collect();
        let mut attempt = 0;
        loop {
            let wire_req = PeerRequest::Fanout(PeerFanout::from_local(&req));
            let calls = others.iter().map(|(id, addr)| {
                let wire_req = &wire_req;
                async move { (*id, self.peers.request(*addr, wire_req).await) }
            });
            let (local, remote) =
                futures::join!(self.fanout_node(&req), futures::future::join_all(calls));
            let mut replies = local;
            for (node, answer) in remote {
                match answer {
                    Ok(PeerReply::Fanout(r)) => replies.extend(r),
                    Ok(_) => {
                        return Err(Frame::error(format!(
                            "CLUSTERDOWN node {node} gave an unexpected answer"
                        )))
                    }
                    Err(e) => {
                        return Err(Frame::error(format!(
                            "CLUSTERDOWN node {node} unreachable: {e}"
                        )))
                    }
                }
            }
            attempt += 1;
            if covers_keyspace(&replies) || attempt >= 200 {
                if attempt >= 200 {
                    tracing::warn!("fan-out answers did not cover the key space");
                }
                return Ok(replies);
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Largest message a peer may send this core: the largest value plus room for
    /// the request around it.
    pub fn peer_message_limit(&self) -> usize {
        let bulk = self
            .shared
            .max_bulk_len
            .load(std::sync::atomic::Ordering::Relaxed) as usize;
        bulk.max(PEER_BATCH_BYTES).saturating_add(1 << 20)
    }
}

/// Take out of `nodes` the requests a one-sided read can answer: reads of keys that no
/// request in the same batch writes. A read of a key the pipeline also writes stays in the
/// message, in order, or it could see the state before an earlier SET (or after a later one).
fn take_one_sided(nodes: &mut NodeBatches) -> Vec<(u32, u64, KeyRequest)> {
    let mut reads = Vec::new();
    for (node, batch) in nodes.iter_mut() {
        if !batch.iter().any(|(_, r)| remote::one_sided(&r.op)) {
            continue;
        }
        let written: std::collections::HashSet<Bytes> = batch
            .iter()
            .filter(|(_, r)| r.op.is_write())
            .map(|(_, r)| r.key.clone())
            .collect();
        let (one_sided, rest): (Vec<_>, Vec<_>) = std::mem::take(batch)
            .into_iter()
            .partition(|(_, r)| remote::one_sided(&r.op) && !written.contains(&r.key));
        *batch = rest;
        reads.extend(one_sided.into_iter().map(|(i, r)| (i, *node, r)));
    }
    nodes.retain(|_, b| !b.is_empty());
    reads
}

/// How long a request waits behind a handover before it is routed again anyway.
const FENCE_WAIT: Duration = Duration::from_secs(5);

/// A source that fenced a fragment for a handover and saw no commit within this long
/// serves it again (the target died or gave up).
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Key requests to one node are sent in batches of about this many bytes.
pub const PEER_BATCH_BYTES: usize = 16 << 20;

/// Cut each node's batch into pieces of about `PEER_BATCH_BYTES`, so a deep pipeline
/// of large writes never becomes one message over the peer's limit.
fn split_by_bytes(nodes: NodeBatches) -> Vec<(u64, Vec<(u32, KeyRequest)>)> {
    let mut out = Vec::new();
    for (node, batch) in nodes {
        let mut piece = Vec::new();
        let mut bytes = 0;
        for (i, req) in batch {
            let size = req.key.len() + req.op.payload_len() + 32;
            if !piece.is_empty() && bytes + size > PEER_BATCH_BYTES {
                out.push((node, std::mem::take(&mut piece)));
                bytes = 0;
            }
            bytes += size;
            piece.push((i, req));
        }
        if !piece.is_empty() {
            out.push((node, piece));
        }
    }
    out
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
        txn::on_message(&ctx, msg);
    }
}

/// A message from another core, when no transaction holds this core. Never awaits
/// another core (see below).
fn handle_msg(ctx: &Rc<CoreCtx>, msg: CoreMsg) {
    match msg {
        CoreMsg::Keys { reqs, reply } => {
            let now = now_ms();
            let mut out = Vec::with_capacity(reqs.len());
            let mut forward = Batches::new();
            {
                let mut shard = ctx.shard.borrow_mut();
                for (i, req) in reqs {
                    if req.keys().any(|k| ctx.shared.is_fenced(k)) {
                        out.push((i, Err(req)));
                        continue;
                    }
                    match shard.execute(&req, now) {
                        Outcome::Done(f) => out.push((i, Ok(f))),
                        Outcome::Forward(c) => forward.entry(c).or_default().push((i, req)),
                    }
                }
                shard.publish_counters();
            }
            if forward.is_empty() {
                let _ = reply.send(out);
            } else {
                // Never await another core in the loop that answers other cores:
                // two cores forwarding to each other would each wait for the other
                // loop forever. The forwarded part (and the reply) goes on as its
                // own task; this loop takes the next message at once.
                let ctx = ctx.clone();
                glommio::spawn_local(async move {
                    out.extend(ctx.send_keys(forward).await);
                    let _ = reply.send(out);
                })
                .detach();
            }
        }
        CoreMsg::Adopt(fragment) => ctx.shard.borrow_mut().adopt(*fragment),
        CoreMsg::Fanout { req, reply } => {
            let answer = ctx.shard.borrow_mut().fanout(&req, now_ms());
            let _ = reply.send(answer);
        }
        CoreMsg::Watch { keys, reply } => {
            let _ = reply.send(ctx.watch_here(&keys));
        }
        CoreMsg::Hold { .. }
        | CoreMsg::Release { .. }
        | CoreMsg::TxnCheck { .. }
        | CoreMsg::TxnFanout { .. }
        | CoreMsg::TxnKeys { .. } => txn::on_message(ctx, msg),
    }
}

/// The source's side of a migration's failure handling: every second, for each
/// fragment this node owns that the table says is migrating, ask the target whether it
/// is there. After `TARGET_GONE_AFTER` failed asks in a row the handover is abandoned:
/// the fence (if any) lifts, the source serves on fresh regions, and the state goes
/// back to `Stable`, so the fragment can move again later.
async fn watch_handovers(ctx: Rc<CoreCtx>) {
    let mut failures: HashMap<u64, u32> = HashMap::new();
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let Some(ownership) = ctx.shared.ownership.get() else {
            continue;
        };
        let table = ownership.table();
        let me = ctx.shared.cluster().my_id;
        let migrating: Vec<(u64, u64)> = table
            .fragments
            .values()
            .filter(|f| f.owner == me)
            .filter_map(|f| match f.state {
                FragmentState::Migrating { to, .. } => Some((f.id, to)),
                _ => None,
            })
            .collect();
        failures.retain(|id, _| migrating.iter().any(|(f, _)| f == id));
        for (fragment, to) in migrating {
            let addr = table
                .members
                .get(&to)
                .and_then(|m| m.fabric_addrs.first())
                .copied();
            let alive = match addr {
                Some(addr) => ctx
                    .peers
                    .request_with_timeout(addr, &PeerRequest::Ping, Duration::from_secs(1))
                    .await
                    .is_ok(),
                None => false,
            };
            let n = failures.entry(fragment).or_default();
            *n = if alive { 0 } else { *n + 1 };
            if *n >= TARGET_GONE_AFTER {
                tracing::warn!(
                    fragment,
                    to,
                    "migration target unreachable: abandoning the handover"
                );
                ctx.abandon_fence(fragment);
                let reply = ownership.propose(Change::SetState {
                    fragment,
                    state: FragmentState::Stable,
                });
                let _ = reply.await;
                failures.remove(&fragment);
            }
        }
    }
}

/// Failed pings (one a second) after which a migration's source gives up on its target.
const TARGET_GONE_AFTER: u32 = 3;

/// Every telemetry interval, summarise this core's accesses and send them out; core 0
/// adds the node's resource use.
async fn telemetry_ticks(ctx: Rc<CoreCtx>) {
    let interval = Duration::from_millis(ctx.shared.config.telemetry_interval_ms.max(10));
    let mut last = std::time::Instant::now();
    let mut cpu_before = resources::cpu_seconds();
    let mut commands_before = 0;
    let mut remote_before = 0;
    let mut cold_since = HashMap::new();
    loop {
        glommio::timer::sleep(interval).await;
        let tick = last.elapsed();
        last = std::time::Instant::now();
        let report = (ctx.core == 0).then(|| {
            let shared = &ctx.shared;
            let cpu_now = resources::cpu_seconds();
            let cpu_percent = match (cpu_before, cpu_now) {
                (Some(a), Some(b)) => ((b - a) / tick.as_secs_f64().max(1e-3) * 100.0) as f32,
                _ => 0.0,
            };
            cpu_before = cpu_now;
            let commands = stats::total(&shared.stats, |s| &s.commands);
            let remote = stats::total(&shared.stats, |s| &s.remote_requests)
                + stats::total(&shared.stats, |s| &s.remote_reads);
            let r = Resources {
                cpu_percent,
                used_memory: shared.used_memory(),
                rss: resources::rss_bytes().unwrap_or(0),
                connections: shared.clients.count() as u64,
                commands: commands.saturating_sub(commands_before),
                remote_ops: remote.saturating_sub(remote_before),
            };
            commands_before = commands;
            remote_before = remote;
            r
        });
        ctx.ship_telemetry(tick, report);
        ctx.split_and_merge(&mut cold_since);
    }
}

/// Release this core's fences as soon as the table shows their handover committed:
/// every request for the fragment — this node's clients' and peers' — waits on the
/// fence, so the maintenance tick (100 ms) would add up to a tick to each of them.
/// Started when this core fences a fragment; ends when it holds no fence.
pub async fn watch_fences(ctx: Rc<CoreCtx>) {
    loop {
        glommio::timer::sleep(Duration::from_micros(200)).await;
        if !(ctx.shared.has_fences() && ctx.shared.fences().iter().any(|f| f.core == ctx.core)) {
            return;
        }
        // A transaction holding this core checked where its keys are: change nothing
        // under it (its keys were not fenced, but stay out of its way all the same).
        if !ctx.is_held() {
            ctx.tidy_fences();
        }
    }
}

/// How long the rebuild task pauses between two turns.
const REBUILD_PAUSE: Duration = Duration::from_micros(20);

/// Most slices in one turn, when a rebuild trails the writes filling its fragment,
/// and the time after which a turn ends anyway (checked after each slice).
const MAX_SLICES_PER_TURN: usize = 16;
const TURN_BUDGET: Duration = Duration::from_millis(2);

/// Incremental splits and compactions (decision 0015): while this core has any, one
/// slice per turn, with the core's other work — client batches, other cores'
/// requests — in between. Sleeps on the shard's waker while there is none.
///
/// A rebuild whose fragment fills faster than it copies (every client of the core
/// writing into it) gets more slices a turn, up to [`MAX_SLICES_PER_TURN`] and
/// [`TURN_BUDGET`]: a wait of a millisecond or two for the clients between two turns, rather
/// than the region filling up and everyone waiting for the whole rest of the rebuild.
///
/// The pause between turns is a short timer, not a plain `yield_now`: glommio polls
/// sockets and timers only when its task queue runs dry (or its 100 ms preempt timer
/// fires), and a task that wakes itself at once keeps the queue from ever running dry,
/// so clients waiting on their sockets would wait for the whole rebuild. With the
/// timer, the queue drains, the reactor runs, every client with a request ready gets
/// its turn, and then the next slice. The shard is borrowed only inside a turn.
async fn rebuild_slices(ctx: Rc<CoreCtx>) {
    loop {
        futures::future::poll_fn(|cx| ctx.shard.borrow().poll_rebuild_work(cx)).await;
        // A transaction holding this core sees nothing change under it.
        ctx.wait_unheld().await;
        {
            let started = std::time::Instant::now();
            let mut shard = ctx.shard.borrow_mut();
            for _ in 0..MAX_SLICES_PER_TURN {
                shard.step_rebuild(now_ms());
                if !shard.rebuild_behind() || started.elapsed() >= TURN_BUDGET {
                    break;
                }
            }
        }
        glommio::timer::sleep(REBUILD_PAUSE).await;
    }
}

/// Periodic per-core work: active expiry, then rebalancing by bytes held.
async fn maintenance(ctx: Rc<CoreCtx>) {
    let interval = Duration::from_millis(ctx.shared.config.expiry_interval_ms.max(1));
    loop {
        glommio::timer::sleep(interval).await;
        if ctx.is_held() {
            // A transaction's keys must stay where it checked them; next turn.
            continue;
        }
        let splits = {
            let mut shard = ctx.shard.borrow_mut();
            shard.expire_due(now_ms());
            shard.publish_stats();
            ctx.exports.tidy(|id, generation, identity| {
                shard.region_of(id) == Some((generation, identity))
            });
            shard.take_table_splits()
        };
        for at in splits {
            ctx.propose_split(at);
        }
        ctx.tidy_fences();
        let mut shard = ctx.shard.borrow_mut();
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::router::table::{initial_range, RouteTable, Routes};
    use augur_fabric::{Backend, FabricConfig};
    use glommio::channels::channel_mesh::{Full, MeshBuilder};
    use glommio::{LocalExecutorBuilder, Placement};
    use std::sync::{Barrier, Mutex};

    /// The shared state of a two-core node on no port, and the mesh between its cores:
    /// what tests that run real executors against each other start from.
    pub(super) fn two_cores() -> (Arc<NodeShared>, MeshBuilder<CoreMsg, Full>) {
        let config = crate::Config {
            cores: 2,
            port: 0,
            admin_port: 0,
            ..crate::Config::default()
        };
        let shared = Arc::new(NodeShared::new(
            config,
            0,
            Routes::new(RouteTable::initial(2)),
        ));
        (shared, MeshBuilder::<CoreMsg, Full>::full(2, 64))
    }

    /// Each of two cores gives a fragment to the other (the Adopt queued, as the
    /// rebalancer does) and at once asks the other for a key of the fragment the other
    /// gave away: each receive loop must forward back. A loop that awaited its forward
    /// inline waited for the other loop, itself waiting: both requests hung forever.
    #[test]
    fn receive_loops_forwarding_to_each_other_do_not_deadlock() {
        let (shared, mesh) = two_cores();
        let barrier = Arc::new(Barrier::new(2));
        let given: Arc<Mutex<[Option<Bytes>; 2]>> = Arc::new(Mutex::new([None, None]));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (shared, mesh) = (shared.clone(), mesh.clone());
                let (barrier, given) = (barrier.clone(), given.clone());
                LocalExecutorBuilder::new(Placement::Unbound)
                    .spawn(move || async move {
                        let (senders, mut receivers) = mesh.join().await.unwrap();
                        let me = senders.peer_id();
                        let other = 1 - me;
                        let fabric = AnyTransport::bind(
                            Backend::Tcp,
                            FabricConfig::new(b"forwarding-test-secret".to_vec()),
                            "127.0.0.1:0".parse().unwrap(),
                        )
                        .unwrap();
                        // Two fragments per core, so one can move.
                        let (lo, hi) = initial_range(me, 2);
                        let mid = Bytes::from(vec![lo.first().copied().unwrap_or(0) + 64]);
                        let ranges = vec![(lo, Some(mid.clone())), (mid, hi)];
                        let ctx = Rc::new(
                            CoreCtx::new(shared.clone(), senders, Rc::new(fabric), ranges).unwrap(),
                        );
                        for (_, rx) in receivers.streams() {
                            glommio::spawn_local(receive_loop(ctx.clone(), rx)).detach();
                        }
                        // Core 0 gives first, then core 1 (each looks heavier in turn).
                        for turn in 0..2 {
                            barrier.wait();
                            if turn == me {
                                stats::set(&shared.stats[me].used_bytes, 1 << 40);
                                stats::set(&shared.stats[other].used_bytes, 0);
                                let mut shard = ctx.shard.borrow_mut();
                                let (target, fragment) = shard.pick_fragment_to_move().unwrap();
                                assert_eq!(target, other);
                                let (id, lo, hi) =
                                    (fragment.id(), fragment.lo().clone(), fragment.hi().cloned());
                                assert!(ctx
                                    .senders
                                    .try_send_to(target, CoreMsg::Adopt(Box::new(fragment)))
                                    .is_ok());
                                shard.moved(id, lo.clone(), hi, target);
                                given.lock().unwrap()[me] = Some(lo);
                            }
                        }
                        barrier.wait();
                        let key = given.lock().unwrap()[other].clone().unwrap();
                        let (tx, rx) = oneshot::channel();
                        let reqs = vec![(
                            0,
                            KeyRequest {
                                key,
                                op: crate::cmd::KeyOp::Get,
                            },
                        )];
                        assert!(ctx
                            .senders
                            .try_send_to(other, CoreMsg::Keys { reqs, reply: tx })
                            .is_ok());
                        let answer =
                            glommio::timer::timeout(Duration::from_secs(5), async { Ok(rx.await) })
                                .await;
                        matches!(answer, Ok(Ok(ref r)) if matches!(r[..], [(0, Ok(Frame::Null))]))
                    })
                    .unwrap()
            })
            .collect();
        let answered: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            answered,
            [true, true],
            "a forwarded request was never answered"
        );
    }
}
