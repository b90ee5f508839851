//! The node: one pinned glommio executor per core, each accepting its own
//! connections on a shared `SO_REUSEPORT` port, owning its fragments, and talking to
//! the other cores over a channel mesh.
//!
//! Start-up only: config → shared state → one executor per core (its [`CoreCtx`],
//! its listener) → the admin endpoint. What a request does from there is in
//! `server::connection` (read, parse, reply) and `core` (route and execute).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use augur_fabric::{AnyTransport, Backend, FabricConfig, Transport};
use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::context::{ClusterMap, MemberAddrs, NodeShared};
use crate::core::msg::CoreMsg;
use crate::core::CoreCtx;
use crate::ownership::{Member, Ownership, OwnershipConfig, Role, Table};
use crate::router::table::{initial_range, Owner, RouteTable, Routes};

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
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A running node.
pub struct NodeHandle {
    pub port: u16,
    pub admin_port: Option<u16>,
    /// Each core's fabric endpoint, index = core.
    pub fabric_addrs: Vec<SocketAddr>,
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

/// Where each core's fragments are and who owns the rest: the node's first route
/// table and, per core, the key ranges it creates fragments for.
pub struct Assignment {
    pub routes: RouteTable,
    pub per_core: Vec<Vec<(Bytes, Option<Bytes>)>>,
    pub cluster: ClusterMap,
}

impl Assignment {
    /// This node's part of a formed ownership table: the fragments it owns, on the
    /// cores the table names; every other range routed to its owner.
    pub fn from_table(table: &Table, me: u64, cores: usize) -> Assignment {
        let mut per_core = vec![Vec::new(); cores];
        let mut routes = Vec::with_capacity(table.fragments.len());
        for f in table.fragments.values() {
            let lo = Bytes::copy_from_slice(&f.lo);
            let owner = if f.owner == me {
                let core = f.core as usize % cores;
                per_core[core].push((lo.clone(), f.hi.as_deref().map(Bytes::copy_from_slice)));
                Owner::Core(core)
            } else {
                Owner::Node(f.owner)
            };
            routes.push((lo, owner, f.id));
        }
        let mut cluster = cluster_map(table, me);
        cluster.role = "member".into();
        Assignment {
            routes: RouteTable::from_ranges(table.applied, routes),
            per_core,
            cluster,
        }
    }

    /// A node alone: the key space cut evenly over its cores.
    pub fn single(cores: usize) -> Assignment {
        Assignment {
            routes: RouteTable::initial(cores),
            per_core: (0..cores).map(|c| vec![initial_range(c, cores)]).collect(),
            cluster: ClusterMap::default(),
        }
    }
}

/// What start-up hands each core once the assignment is known.
struct CoreStart {
    shared: Arc<NodeShared>,
    ranges: Vec<(Bytes, Option<Bytes>)>,
}

/// Start a node: join or start its cluster, wait until the key space is spread over
/// the members, create this node's fragments, serve. Returns once every core listens.
pub fn start(config: Config) -> Result<NodeHandle, NodeError> {
    let cores = config.core_count();
    let mut ownership = None;
    let handle = start_with(config.clone(), |fabric_addrs| {
        let o = start_ownership(&config, fabric_addrs)?;
        let table = wait_formed(&o, Duration::from_secs(config.cluster_form_timeout))?;
        let assignment = Assignment::from_table(&table, config.node_id, cores);
        ownership = Some(o);
        Ok(assignment)
    })?;
    if let Some(o) = ownership {
        watch_ownership(handle.shared.clone(), o);
    }
    Ok(handle)
}

fn start_ownership(config: &Config, fabric_addrs: &[SocketAddr]) -> Result<Ownership, String> {
    let client_addr = SocketAddr::new(config.bind, config.port);
    let bus_bind = config.bus_addr(config.port);
    let me = Member {
        id: config.node_id,
        client_addr,
        bus_addr: bus_bind,
        fabric_addrs: fabric_addrs.to_vec(),
        cores: fabric_addrs.len() as u32,
        capacity_bytes: config.maxmemory,
    };
    Ownership::start(OwnershipConfig {
        node_id: config.node_id,
        dir: config.dir.clone(),
        bus_bind,
        secret: config.fabric_secret(),
        me,
        join: config.join,
        expected_size: config.cluster_size,
    })
    .map_err(|e| e.to_string())
}

/// Wait until the table has spread the key space over the members.
fn wait_formed(o: &Ownership, limit: Duration) -> Result<Arc<Table>, String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let table = o.table();
        if table.formed {
            return Ok(table);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the cluster did not form within {limit:?}: {} of {} members joined",
                table.members.len(),
                table.expected_size
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The control thread's duty for the data path: whenever the ownership table
/// changes, publish the new members and the new owners of other nodes' ranges; keep
/// the leader and role INFO shows current.
fn watch_ownership(shared: Arc<NodeShared>, ownership: Ownership) {
    let _ = shared.ownership.set(ownership.clone());
    let spawned = std::thread::Builder::new()
        .name("augur-ownership-watch".into())
        .spawn(move || {
            let mut seen = (0, None, Role::Shutdown);
            loop {
                let status = ownership.status();
                if status.role == Role::Shutdown {
                    return;
                }
                let now = (ownership.version(), status.leader, status.role);
                if now != seen {
                    seen = now;
                    let mut map = cluster_map(&ownership.table(), shared.cluster().my_id);
                    map.leader = status.leader;
                    map.role = format!("{:?}", status.role).to_lowercase();
                    shared.set_cluster(map);
                    shared.follow_table();
                }
                // Cores also refresh on their own when an owner says "moved"; this
                // tick bounds how stale a node that sends nothing can be.
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the ownership watcher: {e}");
    }
}

fn cluster_map(table: &Table, my_id: u64) -> ClusterMap {
    ClusterMap {
        my_id,
        version: table.applied,
        members: table
            .members
            .values()
            .map(|m| {
                (
                    m.id,
                    MemberAddrs {
                        client: m.client_addr,
                        fabric: m.fabric_addrs.clone(),
                    },
                )
            })
            .collect(),
        leader: None,
        role: String::new(),
    }
}

/// Start a node whose fragments and routes `assign` decides, once it knows the
/// fabric endpoint of each core (tests use it to wire nodes by hand).
pub fn start_with(
    config: Config,
    assign: impl FnOnce(&[SocketAddr]) -> Result<Assignment, String>,
) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let mut config = config;
    config.maxclients = fit_maxclients(config.maxclients);
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
    let fabric_config = fabric_config(&config);
    let backend = config.fabric;
    let mesh = MeshBuilder::<CoreMsg, Full>::full(cores, MESH_CAPACITY);
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<(usize, Result<SocketAddr, String>)>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(cores);
    let mut starts = Vec::with_capacity(cores);
    for i in 0..cores {
        // Pin only a node that takes the whole machine: nodes sharing one (a local
        // cluster, a test) would all pin their core 0 to CPU 0.
        let placement = if cores == online {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        };
        let (start_tx, start_rx) = oneshot::channel::<CoreStart>();
        starts.push(start_tx);
        let (mesh, bound, ready) = (mesh.clone(), bound_tx.clone(), ready_tx.clone());
        let (bind, fabric_config) = (config.bind, fabric_config.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("augur-core-{i}"))
            // glommio's registered buffers are for file I/O, which the data path does
            // not do; keep the locked memory small so `ulimit -l` rarely matters.
            .io_memory(1 << 20)
            .spawn(move || async move {
                let fabric =
                    match AnyTransport::bind(backend, fabric_config, SocketAddr::new(bind, 0)) {
                        Ok(t) => {
                            tracing::info!(
                                core = i,
                                addr = %t.local_addr(),
                                "fabric endpoint: {}",
                                t.describe()
                            );
                            let _ = bound.send((i, Ok(t.local_addr())));
                            Rc::new(t)
                        }
                        Err(e) => {
                            let _ = bound.send((i, Err(format!("fabric endpoint: {e}"))));
                            return;
                        }
                    };
                let Ok(start) = start_rx.await else {
                    return; // start-up was abandoned
                };
                core_main(start, fabric, mesh, addr, ready).await
            })
            .map_err(|e| NodeError::Core(i, e.to_string()))?;
        handles.push(handle);
    }
    let mut fabric_addrs = vec![None; cores];
    for _ in 0..cores {
        match bound_rx.recv_timeout(Duration::from_secs(30)) {
            Ok((i, Ok(a))) => fabric_addrs[i] = Some(a),
            Ok((i, Err(e))) => return Err(NodeError::Core(i, e)),
            Err(_) => return Err(NodeError::Core(0, "timed out starting".into())),
        }
    }
    let fabric_addrs: Vec<SocketAddr> = fabric_addrs.into_iter().flatten().collect();
    let assignment = assign(&fabric_addrs).map_err(NodeError::Cluster)?;
    if assignment.per_core.len() != cores {
        return Err(NodeError::Cluster(format!(
            "assignment for {} cores, node has {cores}",
            assignment.per_core.len()
        )));
    }
    let shared = Arc::new(NodeShared::new(
        config,
        addr.port(),
        Routes::new(assignment.routes),
    ));
    shared.set_cluster(assignment.cluster);
    for (start_tx, ranges) in starts.into_iter().zip(assignment.per_core) {
        let _ = start_tx.send(CoreStart {
            shared: shared.clone(),
            ranges,
        });
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
            crate::server::admin::serve(shared.clone(), SocketAddr::new(shared.config.bind, p))
                .map_err(NodeError::Admin)?,
        ),
    };
    tracing::info!(port = addr.port(), cores, "augur node ready");
    Ok(NodeHandle {
        port: addr.port(),
        admin_port,
        fabric_addrs,
        shared,
        cores: handles,
    })
}

/// The fabric settings of every core, per backend.
fn fabric_config(config: &Config) -> FabricConfig {
    let mut cfg = FabricConfig::new(config.fabric_secret());
    match config.fabric {
        Backend::Tcp => {
            // Peer requests and replies travel in chunks of up to `max_message`; 1 MiB
            // keeps big batches to few chunks, and TCP holds only what is in flight, so the
            // size costs no memory up front.
            cfg.max_message = 1 << 20;
        }
        Backend::Verbs => {
            // Verbs pre-posts `recv_depth` receive buffers of `max_message` bytes per
            // connection, plus as many send slots, all registered (pinned) for as long as
            // the connection lives: 2 × recv_depth × max_message. TCP's 1 MiB × 64 would
            // pin 128 MiB per link (a core has one link to, and one from, each peer core).
            // 64 KiB × 32 is 4 MiB: bigger payloads just go as more chunks (the node cuts
            // by the connection's `max_message_size`), and 32 credits still keep many
            // chunks in flight (a sender past them waits for the peer's reader, which
            // returns credits every 16 messages). Small chunks (a GET request) go inline
            // (`max_inline`, 128 B); one-sided reads (bucket, header, a record) are far
            // below `max_wr_bytes` (1 MiB; longer ones are split anyway).
            cfg.max_message = 64 << 10;
            cfg.recv_depth = 32;
            // The device (and GID) that carries the bind address, when one does; else
            // the fabric's default ($IBV_DEVICE, else the first device).
            if let Some(p) = augur_fabric::any::rdma_port_for(config.bind) {
                cfg.device = Some(p.device);
                cfg.port = p.port;
                cfg.gid_index = Some(p.gid_index);
            }
        }
    }
    cfg
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
    start: CoreStart,
    fabric: Rc<AnyTransport>,
    mesh: MeshBuilder<CoreMsg, Full>,
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let Ok((senders, mut receivers)) = mesh.join().await else {
        let _ = ready.send(Err("channel mesh join failed".into()));
        return;
    };
    let core = senders.peer_id();
    let ctx = match CoreCtx::new(start.shared, senders, fabric.clone(), start.ranges) {
        Ok(ctx) => Rc::new(ctx),
        Err(e) => {
            let _ = ready.send(Err(e));
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
    let _ = ready.send(Ok(()));
    let receivers = receivers.streams().into_iter().map(|(_, rx)| rx).collect();
    CoreCtx::spawn_background(&ctx, receivers);
    if core == 0 {
        glommio::spawn_local(crate::placement::driver::run(ctx.clone())).detach();
    }
    // Several at once: `accept` includes the handshake (for verbs also the QP set-up),
    // so one slow or silent peer does not hold up the others.
    for _ in 0..PEER_ACCEPTORS {
        glommio::spawn_local(accept_peers(ctx.clone(), fabric.clone())).detach();
    }
    let mut failures = 0u32;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(crate::server::connection::serve(ctx.clone(), stream))
                    .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: back off (doubling up to a
                // second) instead of spinning or logging every few ms; a success resets it.
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(core, failures, "accept failed: {e}");
                }
                glommio::timer::sleep(accept_backoff(failures)).await;
                continue;
            }
        }
        failures = 0;
    }
}

/// How long to wait after the `failures`-th accept error in a row: 10 ms doubling,
/// at most a second.
fn accept_backoff(failures: u32) -> Duration {
    let ms = 10u64 << failures.saturating_sub(1).min(7);
    Duration::from_millis(ms.min(1000))
}

/// File descriptors kept for the node itself (listeners, fabric, io_uring, logs), as
/// Redis's CONFIG_MIN_RESERVED_FDS.
const RESERVED_FDS: u64 = 64;

/// Make room for `maxclients` connections, as Redis's adjustOpenFilesLimit: raise the
/// soft RLIMIT_NOFILE up to the hard one if needed; if even that is too few, lower
/// maxclients (with a warning) to what fits.
fn fit_maxclients(maxclients: usize) -> usize {
    use rlimit::Resource;
    let want = maxclients as u64 + RESERVED_FDS;
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return maxclients;
    };
    if soft >= want {
        return maxclients;
    }
    let target = want.min(hard);
    let limit = match rlimit::setrlimit(Resource::NOFILE, target, hard) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!("cannot raise the open files limit to {target}: {e}");
            soft
        }
    };
    fit_within(maxclients, limit)
}

/// maxclients lowered to what `limit` file descriptors leave room for (at least 1).
fn fit_within(maxclients: usize, limit: u64) -> usize {
    let room = limit.saturating_sub(RESERVED_FDS).max(1);
    if (maxclients as u64) <= room {
        return maxclients;
    }
    tracing::warn!(
        "maxclients lowered from {maxclients} to {room}: the open files limit is {limit} \
         (raise it with ulimit -n, or set maxclients lower)"
    );
    room as usize
}

/// Handshakes with other nodes a core runs at once.
const PEER_ACCEPTORS: usize = 4;

/// Accept other nodes on this core's fabric endpoint; each authenticated peer is
/// served by its own task.
async fn accept_peers(ctx: Rc<CoreCtx>, fabric: Rc<AnyTransport>) {
    loop {
        match fabric.accept().await {
            Ok(conn) => {
                glommio::spawn_local(crate::server::peer::serve(ctx.clone(), conn)).detach();
            }
            Err(e) => {
                // A peer with the wrong secret, a broken handshake: log and go on.
                tracing::warn!(core = ctx.core, "fabric peer rejected: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_to_a_second() {
        let waits: Vec<u64> = (1..=10)
            .map(|n| accept_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn maxclients_fits_the_open_files_limit() {
        assert_eq!(fit_within(10_000, 1024), 1024 - RESERVED_FDS as usize);
        assert_eq!(fit_within(100, 1024), 100);
        assert_eq!(fit_within(100, 10), 1);
        // The process's own limit: after fitting, maxclients plus the reserve fits.
        let fitted = fit_maxclients(1_000_000);
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(fitted as u64 + RESERVED_FDS <= soft.max(RESERVED_FDS + 1));
    }
}
