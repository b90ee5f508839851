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

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::context::NodeShared;
use crate::core::msg::CoreMsg;
use crate::core::CoreCtx;
use crate::router::table::{RouteTable, Routes};

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
    let shared = Arc::new(NodeShared::new(
        config,
        addr.port(),
        Routes::new(RouteTable::initial(cores)),
    ));
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
            crate::server::admin::serve(shared.clone(), SocketAddr::new(shared.config.bind, p))
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
    let ctx = match CoreCtx::new(shared, senders) {
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
