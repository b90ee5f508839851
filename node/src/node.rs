//! The node: one pinned glommio executor per core, each accepting its own
//! connections on a shared `SO_REUSEPORT` port, owning its fragments, and talking to
//! the other cores over a channel mesh.
//!
//! Request flow: `server::connection` reads and parses a batch of pipelined
//! requests → `cmd::parse` makes a `Plan` → `CoreCtx::run_keys` executes key requests
//! of local fragments at once (`shard::Shard::execute` → `cmd::apply` → `store`)
//! and sends the rest, one message per core, over the mesh → replies are written
//! back in request order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::TcpListener;
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ResourceType};

use crate::cmd::args::now_ms;
use crate::cmd::KeyRequest;
use crate::config::Config;
use crate::resp::Frame;
use crate::server::clients::Clients;
use crate::shard::cursors::Cursors;
use crate::shard::msg::{CoreMsg, FanoutReply, FanoutReq};
use crate::shard::routes::{RouteCache, RouteTable, Routes};
use crate::shard::stats::{self, CoreStats};
use crate::shard::{Outcome, Shard};
use crate::store::Geometry;

/// Messages queued per core pair before senders wait.
const MESH_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("core {0} failed to start: {1}")]
    Core(usize, String),
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
}

/// State every core shares. Written rarely (config changes, client registry, route
/// changes); the data path reads only atomics and its own core's shard.
pub struct NodeShared {
    pub config: Config,
    cores: usize,
    pub port: u16,
    pub routes: Routes,
    pub stats: Vec<CoreStats>,
    pub clients: Clients,
    pub cursors: Mutex<Cursors>,
    fragment_ids: AtomicU64,
    geometry: Geometry,
    pub started: Instant,
    pub maxmemory: AtomicU64,
    pub maxclients: AtomicU64,
    pub max_bulk_len: AtomicU64,
    pub requirepass: Mutex<Option<Bytes>>,
}

impl NodeShared {
    pub fn core_count(&self) -> usize {
        self.cores
    }

    pub fn next_fragment_id(&self) -> u64 {
        self.fragment_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The geometry of a fresh fragment: `region-size` bytes for records of the
    /// size a small-value workload has.
    pub fn default_geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn used_memory(&self) -> u64 {
        stats::total(&self.stats, |s| &s.used_bytes)
    }

    pub fn over_maxmemory(&self) -> bool {
        let max = self.maxmemory.load(Ordering::Relaxed);
        max > 0 && self.used_memory() >= max
    }

    pub fn password(&self) -> Option<Bytes> {
        match self.requirepass.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    pub port: u16,
    pub admin_port: Option<u16>,
    pub shared: Arc<NodeShared>,
    cores: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl NodeHandle {
    /// Serve until the process ends.
    pub fn wait(self) {
        for core in self.cores {
            let _ = core.join();
        }
    }
}

/// Start a node; returns once every core listens.
pub fn start(config: Config) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let cores = config.core_count();
    let requested = SocketAddr::new(config.bind, config.port);
    // Bind (without listening) to learn the port when 0 was asked for and to hold it
    // while the cores bind theirs; SO_REUSEPORT lets them share it.
    let reserve = reserve_port(requested).map_err(|e| NodeError::Bind(requested, e))?;
    let addr = reserve
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(requested);
    let shared = Arc::new(NodeShared {
        cores,
        port: addr.port(),
        routes: Routes::new(RouteTable::initial(cores)),
        stats: (0..cores).map(|_| CoreStats::default()).collect(),
        clients: Clients::default(),
        cursors: Mutex::new(Cursors::default()),
        fragment_ids: AtomicU64::new(1),
        geometry: Geometry::sized_for(config.region_size as usize, 72),
        started: Instant::now(),
        maxmemory: AtomicU64::new(config.maxmemory),
        maxclients: AtomicU64::new(config.maxclients as u64),
        max_bulk_len: AtomicU64::new(config.proto_max_bulk_len),
        requirepass: Mutex::new(config.requirepass.clone().map(Bytes::from)),
        config,
    });
    let mesh = MeshBuilder::<CoreMsg, Full>::full(cores, MESH_CAPACITY);
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(cores);
    for i in 0..cores {
        let placement = if cores <= online {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        };
        let (shared, mesh, ready) = (shared.clone(), mesh.clone(), ready_tx.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("augur-core-{i}"))
            // glommio's registered buffers are for file I/O, which the data path does
            // not do; keep the locked memory small so `ulimit -l` rarely matters.
            .io_memory(1 << 20)
            .spawn(move || core_main(shared, mesh, addr, ready))
            .map_err(|e| NodeError::Core(i, e.to_string()))?;
        handles.push(handle);
    }
    for _ in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NodeError::Core(0, e)),
            Err(_) => return Err(NodeError::Core(0, "timed out starting".into())),
        }
    }
    drop(reserve);
    let admin_port = match shared.config.admin_port {
        0 => None,
        p => Some(
            crate::metrics::serve(shared.clone(), SocketAddr::new(shared.config.bind, p))
                .map_err(NodeError::Admin)?,
        ),
    };
    tracing::info!(port = addr.port(), cores, "augur node ready");
    Ok(NodeHandle {
        port: addr.port(),
        admin_port,
        shared,
        cores: handles,
    })
}

fn reserve_port(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

async fn core_main(
    shared: Arc<NodeShared>,
    mesh: MeshBuilder<CoreMsg, Full>,
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let Ok((senders, mut receivers)) = mesh.join().await else {
        let _ = ready.send(Err("channel mesh join failed".into()));
        return;
    };
    let core = senders.peer_id();
    let shard = match Shard::new(core, shared.clone()) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("core {core}: {e}")));
            return;
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("core {core}: cannot listen on {addr}: {e}")));
            return;
        }
    };
    let ctx = Rc::new(CoreCtx {
        core,
        routes: RefCell::new(RouteCache::new(&shared.routes)),
        shared,
        shard: RefCell::new(shard),
        senders,
    });
    let _ = ready.send(Ok(()));
    for (_, rx) in receivers.streams() {
        glommio::spawn_local(receive_loop(ctx.clone(), rx)).detach();
    }
    glommio::spawn_local(maintenance(ctx.clone())).detach();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(crate::server::connection::serve(ctx.clone(), stream))
                    .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin or die.
                tracing::warn!(core, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One core's context, shared by its tasks (all on the same thread).
pub struct CoreCtx {
    pub core: usize,
    pub shared: Arc<NodeShared>,
    pub shard: RefCell<Shard>,
    senders: Senders<CoreMsg>,
    routes: RefCell<RouteCache>,
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
