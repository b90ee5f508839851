//! The [`Ownership`] handle: an openraft node on a control thread of its own (one small
//! current-thread tokio runtime), the bus server, bootstrap/join, and proposal forwarding.
//!
//! Nothing here blocks a caller: the table is read lock-free ([`Ownership::table`],
//! [`Ownership::version`]); proposals go over a channel to the control thread and complete a
//! runtime-agnostic `futures` oneshot, so glommio tasks can await them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, watch};

use super::network::{self, BusClient, NetworkFactory, RemoteFailure, Reply, Request};
use super::store::{LogStore, Published, StateMachine};
use super::table::{Applied, Change, Member, NodeId, Table, TableError};
use super::TypeConfig;

/// Voters the leader promotes joiners to; later joiners stay learners.
pub const MAX_VOTERS: usize = 3;
/// Log entries between snapshots.
pub const SNAPSHOT_EVERY: u64 = 1000;
/// How long a proposal may take, forwarding and leader elections included.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(10);
/// Time a forwarded join may take at the leader (adding a learner waits for it to catch up).
const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for a forwarded proposal.
const PROPOSE_RPC_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest pause between join attempts.
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(2);
/// Time `start` waits for the control thread to open storage and bind.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the ownership node.
#[derive(Clone, Debug)]
pub struct OwnershipConfig {
    /// This node's id (raft id and member id).
    pub node_id: NodeId,
    /// Keeps vote, log and snapshots under `dir/raft/`; `None` = in memory.
    pub dir: Option<PathBuf>,
    /// Where the control bus listens (port 0 = any; the bound address is
    /// [`Ownership::bus_addr`]).
    pub bus_bind: SocketAddr,
    /// Cluster secret every bus peer must prove it knows.
    pub secret: Vec<u8>,
    /// This node as a member. A `bus_addr` with port 0 gets the bound port.
    pub me: Member,
    /// A member's bus address to join through; `None` = bootstrap a new cluster.
    pub join: Option<SocketAddr>,
    /// Members to wait for before forming (only the bootstrapping node's value counts).
    pub expected_size: u32,
}

/// Why the ownership node failed or a proposal did not commit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OwnershipError {
    /// Bad configuration.
    #[error("invalid ownership config: {0}")]
    Config(String),
    /// Storage could not be opened or written.
    #[error("ownership storage: {0}")]
    Storage(String),
    /// The bus could not bind.
    #[error("cannot bind the control bus on {addr}: {reason}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// OS error.
        reason: String,
    },
    /// The change was committed and refused by the table (nothing changed).
    #[error("change refused: {0}")]
    Refused(TableError),
    /// No leader could be reached before the deadline.
    #[error("no ownership leader reachable")]
    NoLeader,
    /// The outcome is unknown (the leader did not answer in time); the change may or may not
    /// have committed: read the table.
    #[error("ownership proposal timed out; it may or may not have committed")]
    Timeout,
    /// Raft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The node was shut down.
    #[error("the ownership node is shut down")]
    Shutdown,
}

/// This node's raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leader of the current term.
    Leader,
    /// Voter following a leader.
    Follower,
    /// Non-voting replica (or not yet part of a cluster).
    Learner,
    /// Campaigning.
    Candidate,
    /// Shut down.
    Shutdown,
}

/// A view of the raft state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Index of the last applied log entry.
    pub last_applied: u64,
    /// Current voters.
    pub voters: Vec<NodeId>,
    /// Last log index covered by this node's latest snapshot.
    pub snapshot: Option<u64>,
    /// Log entries up to this index have been purged (only a snapshot can bring a newcomer
    /// up to date past them).
    pub purged: Option<u64>,
}

type ProposeReply = oneshot::Sender<Result<Applied, OwnershipError>>;

struct Shared {
    node_id: NodeId,
    bus_addr: SocketAddr,
    published: Arc<Published>,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    proposals: mpsc::UnboundedSender<(Change, ProposeReply)>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the ownership node. Cheap to clone, `Send + Sync`; every method is non-blocking
/// except [`Ownership::start`] and [`Ownership::shutdown`].
#[derive(Clone)]
pub struct Ownership {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("node_id", &self.shared.node_id)
            .field("bus_addr", &self.shared.bus_addr)
            .finish()
    }
}

struct Started {
    bus_addr: SocketAddr,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
}

impl Ownership {
    /// Opens storage, binds the bus and starts the control thread; returns once the node is
    /// listening. Bootstrapping or joining continues in the background (watch
    /// [`Ownership::version`] / [`Ownership::table`]).
    pub fn start(cfg: OwnershipConfig) -> Result<Ownership, OwnershipError> {
        if cfg.me.id != cfg.node_id {
            return Err(OwnershipError::Config(format!(
                "member id {} differs from node id {}",
                cfg.me.id, cfg.node_id
            )));
        }
        if cfg.expected_size == 0 {
            return Err(OwnershipError::Config(
                "expected_size must be at least 1".into(),
            ));
        }
        if cfg.secret.is_empty() {
            return Err(OwnershipError::Config("the cluster secret is empty".into()));
        }
        let published = Arc::new(Published::new());
        let (proposals_tx, proposals_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (init_tx, init_rx) = std::sync::mpsc::channel();
        let node_id = cfg.node_id;
        let thread_published = published.clone();
        let thread = std::thread::Builder::new()
            .name(format!("augur-ownership-{node_id}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = init_tx.send(Err(OwnershipError::Config(format!(
                            "cannot build the control runtime: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(control_main(
                    cfg,
                    thread_published,
                    init_tx,
                    proposals_rx,
                    stop_rx,
                ));
            })
            .map_err(|e| OwnershipError::Config(format!("cannot spawn the control thread: {e}")))?;
        let started = match init_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = stop_tx.send(true);
                return Err(OwnershipError::Storage(
                    "the control thread did not start in time".into(),
                ));
            }
        };
        Ok(Ownership {
            shared: Arc::new(Shared {
                node_id,
                bus_addr: started.bus_addr,
                published,
                metrics: started.metrics,
                proposals: proposals_tx,
                stop: stop_tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The current table (lock-free).
    pub fn table(&self) -> Arc<Table> {
        self.shared.published.table.load_full()
    }

    /// The current table's version (`table().applied`), an atomic load. Poll this and call
    /// [`Ownership::table`] when it moves; a table loaded after seeing version `v` has
    /// `applied >= v`.
    pub fn version(&self) -> u64 {
        self.shared.published.version.load(Ordering::Acquire)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The bound bus address.
    pub fn bus_addr(&self) -> SocketAddr {
        self.shared.bus_addr
    }

    /// Commits `change` (forwarded to the leader from any node). Resolves once the change is
    /// applied on the leader: `Ok` with what it did, or `Refused` if the table rejected it.
    /// A proposal is submitted once; only failures where it surely did not reach a leader are
    /// retried (until a 10 s deadline).
    pub fn propose(&self, change: Change) -> oneshot::Receiver<Result<Applied, OwnershipError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, tx))) = self.shared.proposals.send((change, tx)) {
            let _ = tx.send(Err(OwnershipError::Shutdown));
        }
        rx
    }

    /// Raft role, leader, term, last applied index and voters.
    pub fn status(&self) -> RaftStatus {
        let m = self.shared.metrics.borrow();
        RaftStatus {
            role: match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Learner => Role::Learner,
                ServerState::Candidate => Role::Candidate,
                ServerState::Shutdown => Role::Shutdown,
            },
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map_or(0, |l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        }
    }

    /// Stops raft and the control thread and closes the bus listener; waits for the thread.
    /// Other clones of the handle keep the last table; their proposals fail with `Shutdown`.
    pub fn shutdown(self) {
        let _ = self.shared.stop.send(true);
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The raft node as the bus server and the control tasks see it.
struct Node {
    id: NodeId,
    raft: Raft<TypeConfig>,
    secret: Arc<[u8]>,
    published: Arc<Published>,
    /// One membership change at a time (openraft refuses overlapping ones).
    join_lock: tokio::sync::Mutex<()>,
}

fn raft_config() -> Result<openraft::Config, OwnershipError> {
    openraft::Config {
        cluster_name: "augur".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 3000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: SNAPSHOT_EVERY,
        // JSON inflates bytes ~4x; keep chunk frames well under the bus frame cap.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    }
    .validate()
    .map_err(|e| OwnershipError::Config(e.to_string()))
}

async fn control_main(
    mut cfg: OwnershipConfig,
    published: Arc<Published>,
    init: std::sync::mpsc::Sender<Result<Started, OwnershipError>>,
    mut proposals: mpsc::UnboundedReceiver<(Change, ProposeReply)>,
    mut stop: watch::Receiver<bool>,
) {
    let setup = async {
        let raft_dir = cfg.dir.as_ref().map(|d| d.join("raft"));
        let log = LogStore::open(raft_dir.as_deref())
            .map_err(|e| OwnershipError::Storage(e.to_string()))?;
        let sm = StateMachine::open(raft_dir.as_deref(), published.clone())
            .map_err(|e| OwnershipError::Storage(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.bus_bind)
            .await
            .map_err(|e| OwnershipError::Bind {
                addr: cfg.bus_bind,
                reason: e.to_string(),
            })?;
        let bound = listener.local_addr().map_err(|e| OwnershipError::Bind {
            addr: cfg.bus_bind,
            reason: e.to_string(),
        })?;
        if cfg.me.bus_addr.port() == 0 {
            cfg.me.bus_addr.set_port(bound.port());
        }
        let secret: Arc<[u8]> = cfg.secret.clone().into();
        let network = NetworkFactory {
            secret: secret.clone(),
        };
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config()?), network, log, sm)
            .await
            .map_err(|e| OwnershipError::Raft(e.to_string()))?;
        Ok::<_, OwnershipError>((listener, bound, raft, secret))
    };
    let (listener, bound, raft, secret) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    let node = Arc::new(Node {
        id: cfg.node_id,
        raft: raft.clone(),
        secret: secret.clone(),
        published,
        join_lock: tokio::sync::Mutex::new(()),
    });
    let _ = init.send(Ok(Started {
        bus_addr: bound,
        metrics: raft.metrics(),
    }));
    tracing::info!(node = cfg.node_id, bus = %bound, "ownership: control bus listening");

    tokio::spawn(network::serve(listener, secret, node.clone(), stop.clone()));
    tokio::spawn(enter_cluster(node.clone(), cfg));

    loop {
        tokio::select! {
            p = proposals.recv() => match p {
                Some((change, reply)) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(node.propose(change).await);
                    });
                }
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), raft.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(node = node.id, "ownership: raft did not stop in time");
    }
    tracing::info!(node = node.id, "ownership: stopped");
    // Returning drops the runtime: the listener and every connection close with it.
}

/// Bootstraps a cluster or joins one, retrying until it works.
async fn enter_cluster(node: Arc<Node>, cfg: OwnershipConfig) {
    let mut backoff = Duration::from_millis(50);
    let mut pause = || {
        let p = backoff;
        backoff = (backoff * 2).min(MAX_JOIN_BACKOFF);
        tokio::time::sleep(p)
    };
    match cfg.join {
        None => {
            loop {
                match node.raft.is_initialized().await {
                    Ok(true) => break,
                    Ok(false) => {
                        let me = BTreeMap::from([(node.id, BasicNode::new(cfg.me.bus_addr))]);
                        match node.raft.initialize(me).await {
                            Ok(()) => break,
                            Err(e) => tracing::warn!(error = %e, "ownership: bootstrap failed"),
                        }
                    }
                    Err(_) => return, // shutting down
                }
                pause().await;
            }
            let table = node.published.table.load_full();
            let mut steps = Vec::new();
            if table.expected_size == 0 {
                steps.push(Change::Expect {
                    size: cfg.expected_size,
                });
            }
            if table.members.get(&node.id) != Some(&cfg.me) {
                steps.push(Change::Join(cfg.me.clone()));
            }
            for change in steps {
                loop {
                    match node.propose(change.clone()).await {
                        Ok(_) | Err(OwnershipError::Refused(_)) => break,
                        Err(OwnershipError::Shutdown) => return,
                        Err(e) => tracing::warn!(error = %e, ?change, "ownership: bootstrap step"),
                    }
                    pause().await;
                }
            }
            if node.is_leader() {
                node.maybe_form().await;
            }
        }
        Some(via) => {
            let mut attempts = 0u32;
            loop {
                let req = Request::Join {
                    member: cfg.me.clone(),
                    forwarded: false,
                };
                let mut client = BusClient::new(via, node.secret.clone());
                match client.call(&req, JOIN_RPC_TIMEOUT).await {
                    Ok(Reply::Join(Ok(()))) => {
                        tracing::info!(node = node.id, %via, "ownership: joined the cluster");
                        return;
                    }
                    Ok(Reply::Join(Err(e))) => {
                        tracing::info!(node = node.id, %via, error = %e, "ownership: join refused, retrying")
                    }
                    Ok(_) => tracing::warn!(%via, "ownership: join got a reply of the wrong type"),
                    Err(e) => {
                        // The leader may simply not be up yet; say so loudly only now and then.
                        attempts += 1;
                        if attempts % 10 == 1 {
                            tracing::warn!(node = node.id, %via, error = %e, "ownership: cannot join yet");
                        }
                    }
                }
                pause().await;
            }
        }
    }
}

fn refused_to_failure<E: std::fmt::Display>(
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    what: E,
) -> RemoteFailure {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => RemoteFailure::NotLeader,
        e => RemoteFailure::Failed(format!("{what}: {e}")),
    }
}

impl Node {
    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    fn is_leader(&self) -> bool {
        self.metrics().current_leader == Some(self.id)
    }

    /// The leader's bus address, if a leader other than this node is known.
    fn leader_addr(&self) -> Option<SocketAddr> {
        let m = self.metrics();
        let leader = m.current_leader?;
        if leader == self.id {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .parse()
            .ok()
    }

    /// Commits `change` here if this node leads, else forwards it once to the leader.
    async fn submit(
        &self,
        change: Change,
        forwarded: bool,
    ) -> Result<Result<Applied, TableError>, RemoteFailure> {
        match self.raft.client_write(change.clone()).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                if forwarded {
                    return Err(RemoteFailure::NotLeader);
                }
                let Some(addr) = f.leader_node.and_then(|n| n.addr.parse().ok()) else {
                    return Err(RemoteFailure::NoLeader);
                };
                let req = Request::Propose {
                    change,
                    forwarded: true,
                };
                let mut client = BusClient::new(addr, self.secret.clone());
                match client.call(&req, PROPOSE_RPC_TIMEOUT).await {
                    Ok(Reply::Propose(r)) => r,
                    Ok(_) => Err(RemoteFailure::Failed("reply of the wrong type".into())),
                    // Never sent: safe to retry.
                    Err(network::CallError::Connect(..)) => Err(RemoteFailure::NoLeader),
                    Err(network::CallError::Timeout(_)) => Err(RemoteFailure::Timeout),
                    Err(e) => Err(RemoteFailure::Failed(e.to_string())),
                }
            }
            Err(e) => Err(RemoteFailure::Failed(e.to_string())),
        }
    }

    /// The public proposal path: submit, retrying while no leader is reachable.
    async fn propose(&self, change: Change) -> Result<Applied, OwnershipError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        loop {
            match self.submit(change.clone(), false).await {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(refused)) => return Err(OwnershipError::Refused(refused)),
                Err(RemoteFailure::NoLeader | RemoteFailure::NotLeader) => {}
                Err(RemoteFailure::Timeout) => return Err(OwnershipError::Timeout),
                Err(RemoteFailure::Failed(f)) => return Err(OwnershipError::Raft(f)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OwnershipError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Leader side of a join: add as learner, promote while voters < 3, commit `Join`, and
    /// form once enough members are in.
    async fn join(&self, member: Member, forwarded: bool) -> Result<(), RemoteFailure> {
        if !self.is_leader() {
            if forwarded {
                return Err(RemoteFailure::NotLeader);
            }
            let addr = self.leader_addr().ok_or(RemoteFailure::NoLeader)?;
            let req = Request::Join {
                member,
                forwarded: true,
            };
            let mut client = BusClient::new(addr, self.secret.clone());
            return match client.call(&req, JOIN_RPC_TIMEOUT).await {
                Ok(Reply::Join(r)) => r,
                Ok(_) => Err(RemoteFailure::Failed("reply of the wrong type".into())),
                Err(e) => Err(RemoteFailure::Failed(e.to_string())),
            };
        }
        let _one_at_a_time = self.join_lock.lock().await;
        let id = member.id;
        let node = BasicNode::new(member.bus_addr);
        let current = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned();
        match current {
            None => {
                self.raft
                    .add_learner(id, node, true)
                    .await
                    .map_err(|e| refused_to_failure(e, "add learner"))?;
            }
            Some(old) if old != node => {
                // Same node id back at a new address.
                let change = ChangeMembers::SetNodes(BTreeMap::from([(id, node)]));
                self.raft
                    .change_membership(change, true)
                    .await
                    .map_err(|e| refused_to_failure(e, "update address"))?;
            }
            Some(_) => {}
        }
        let voters: BTreeSet<NodeId> = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) && voters.len() < MAX_VOTERS {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(|e| refused_to_failure(e, "promote to voter"))?;
        }
        match self.submit(Change::Join(member), true).await? {
            Ok(_) => {}
            Err(e) => return Err(RemoteFailure::Failed(format!("join refused: {e}"))),
        }
        tracing::info!(leader = self.id, joined = id, "ownership: member joined");
        self.maybe_form().await;
        Ok(())
    }

    /// Commits `Form` once the expected members are in (leader only; a duplicate is refused
    /// harmlessly by the table).
    async fn maybe_form(&self) {
        let t = self.published.table.load_full();
        if t.formed || t.expected_size == 0 || t.members.len() < t.expected_size as usize {
            return;
        }
        match self.submit(Change::Form, true).await {
            Ok(Ok(_)) => tracing::info!(members = t.members.len(), "ownership: table formed"),
            Ok(Err(TableError::AlreadyFormed)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "ownership: form refused"),
            Err(e) => tracing::warn!(error = %e, "ownership: form not committed"),
        }
    }
}

impl network::Handler for Node {
    async fn handle(&self, req: Request) -> Reply {
        match req {
            Request::Append(rpc) => Reply::Append(self.raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(self.raft.vote(rpc).await),
            Request::Snapshot(rpc) => Reply::Snapshot(self.raft.install_snapshot(rpc).await),
            Request::Join { member, forwarded } => Reply::Join(self.join(member, forwarded).await),
            Request::Propose { change, forwarded } => {
                Reply::Propose(self.submit(change, forwarded).await)
            }
        }
    }
}
