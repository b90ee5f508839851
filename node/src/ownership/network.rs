//! The control bus: raft RPCs, joins and forwarded proposals over plain TCP.
//!
//! Every connection starts with a mutual HMAC-SHA256 challenge/response over the cluster
//! secret (the pattern of `augur_fabric::auth`, with bus-specific magic and labels so a proof
//! for one protocol is never valid for the other; the fabric's version speaks futures-io to
//! glommio sockets, the bus is tokio). After that, each request is one frame
//! `len:u32 LE | kind:u8 | json` answered by one reply frame. Frame sizes are capped per kind,
//! and every connect, handshake, request and reply is bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::table::{Applied, Change, Member, TableError};
use super::TypeConfig;

type HmacSha256 = Hmac<Sha256>;
type NodeId = u64;

/// First bytes of every handshake message.
const MAGIC: [u8; 4] = *b"AUGB";
const VERSION: u16 = 1;
const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const RESPONSE: u8 = 3;
const RESULT: u8 = 4;
const SERVER_LABEL: &[u8] = b"augur-bus/v1/server-proof";
const CLIENT_LABEL: &[u8] = b"augur-bus/v1/client-proof";

/// Time allowed for the whole handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A server connection with no request for this long is closed (leaders heartbeat far more
/// often, so only dead peers hit it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to write one reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest snapshot chunk frame (openraft chunks are configured far smaller).
pub(crate) const MAX_SNAPSHOT_FRAME: usize = 64 << 20;
/// Largest append-entries frame.
const MAX_APPEND_FRAME: usize = 16 << 20;
/// Largest frame of any other kind (votes, joins, proposals, replies).
const MAX_SMALL_FRAME: usize = 1 << 20;

/// Frame kinds; they only select the size cap.
mod kind {
    pub const APPEND: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const SNAPSHOT: u8 = 3;
    pub const JOIN: u8 = 4;
    pub const PROPOSE: u8 = 5;
    pub const REPLY: u8 = 6;
}

fn cap(k: u8) -> Option<usize> {
    match k {
        kind::SNAPSHOT => Some(MAX_SNAPSHOT_FRAME),
        kind::APPEND => Some(MAX_APPEND_FRAME),
        kind::VOTE | kind::JOIN | kind::PROPOSE => Some(MAX_SMALL_FRAME),
        // Replies to appends carry conflicts/votes only; still allow generous room.
        kind::REPLY => Some(MAX_SMALL_FRAME),
        _ => None,
    }
}

/// A request on the bus.
#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Add this node to the cluster. `forwarded`: already passed on once; the receiver must
    /// be the leader or refuse.
    Join {
        member: Member,
        forwarded: bool,
    },
    /// Commit this change (same forwarding rule).
    Propose {
        change: Change,
        forwarded: bool,
    },
}

impl Request {
    fn kind(&self) -> u8 {
        match self {
            Request::Append(_) => kind::APPEND,
            Request::Vote(_) => kind::VOTE,
            Request::Snapshot(_) => kind::SNAPSHOT,
            Request::Join { .. } => kind::JOIN,
            Request::Propose { .. } => kind::PROPOSE,
        }
    }
}

/// Why a forwarded join or proposal failed on the remote side.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum RemoteFailure {
    /// No leader is known right now (election in progress); retry.
    #[error("no leader is known")]
    NoLeader,
    /// The forwarded request reached a node that is not (or no longer) the leader; retry.
    #[error("not the leader")]
    NotLeader,
    /// The leader did not answer in time: the outcome is unknown.
    #[error("the leader did not answer in time")]
    Timeout,
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// A reply on the bus.
#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Join(Result<(), RemoteFailure>),
    Propose(Result<Result<Applied, TableError>, RemoteFailure>),
}

/// What can go wrong on one call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("authentication with {0} failed: {1}")]
    Auth(SocketAddr, String),
    #[error("{0}")]
    Io(String),
    #[error("{0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn io_err(e: std::io::Error) -> CallError {
    CallError::Io(e.to_string())
}

// --- handshake ---

fn proof(secret: &[u8], label: &[u8], cn: &[u8; 32], sn: &[u8; 32]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(label);
    mac.update(cn);
    mac.update(sn);
    mac
}

fn header(t: u8, flag: u8) -> [u8; 8] {
    let v = VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], t, flag]
}

fn check_header(buf: &[u8], want: u8) -> Result<u8, String> {
    if buf[0..4] != MAGIC {
        return Err("bad magic: not an augur control bus peer".into());
    }
    let v = u16::from_le_bytes([buf[4], buf[5]]);
    if v != VERSION {
        return Err(format!("bus protocol version {v}, expected {VERSION}"));
    }
    if buf[6] != want {
        return Err(format!(
            "unexpected handshake message {} (wanted {want})",
            buf[6]
        ));
    }
    Ok(buf[7])
}

/// Client side of the handshake: the server proves itself first.
pub(crate) async fn handshake_client(s: &mut TcpStream, secret: &[u8]) -> Result<(), String> {
    let mut cn = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut cn);
    let mut hello = [0u8; 40];
    hello[..8].copy_from_slice(&header(HELLO, 0));
    hello[8..].copy_from_slice(&cn);
    s.write_all(&hello).await.map_err(|e| e.to_string())?;

    let mut ch = [0u8; 72];
    s.read_exact(&mut ch).await.map_err(|e| e.to_string())?;
    check_header(&ch, CHALLENGE)?;
    let mut sn = [0u8; 32];
    sn.copy_from_slice(&ch[8..40]);
    proof(secret, SERVER_LABEL, &cn, &sn)
        .verify_slice(&ch[40..72])
        .map_err(|_| "the peer does not know the cluster secret".to_string())?;

    let mut resp = [0u8; 40];
    resp[..8].copy_from_slice(&header(RESPONSE, 0));
    resp[8..].copy_from_slice(
        &proof(secret, CLIENT_LABEL, &cn, &sn)
            .finalize()
            .into_bytes(),
    );
    s.write_all(&resp).await.map_err(|e| e.to_string())?;

    let mut result = [0u8; 8];
    s.read_exact(&mut result).await.map_err(|e| e.to_string())?;
    match check_header(&result, RESULT)? {
        1 => Ok(()),
        _ => Err("the peer rejected our proof (wrong cluster secret)".into()),
    }
}

/// Server side of the handshake.
pub(crate) async fn handshake_server(s: &mut TcpStream, secret: &[u8]) -> Result<(), String> {
    let mut hello = [0u8; 40];
    s.read_exact(&mut hello).await.map_err(|e| e.to_string())?;
    check_header(&hello, HELLO)?;
    let mut cn = [0u8; 32];
    cn.copy_from_slice(&hello[8..40]);
    let mut sn = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut sn);

    let mut ch = [0u8; 72];
    ch[..8].copy_from_slice(&header(CHALLENGE, 0));
    ch[8..40].copy_from_slice(&sn);
    ch[40..].copy_from_slice(
        &proof(secret, SERVER_LABEL, &cn, &sn)
            .finalize()
            .into_bytes(),
    );
    s.write_all(&ch).await.map_err(|e| e.to_string())?;

    let mut resp = [0u8; 40];
    s.read_exact(&mut resp).await.map_err(|e| e.to_string())?;
    check_header(&resp, RESPONSE)?;
    let ok = proof(secret, CLIENT_LABEL, &cn, &sn)
        .verify_slice(&resp[8..40])
        .is_ok();
    // Tell the client either way, so it fails fast instead of timing out.
    let _ = s.write_all(&header(RESULT, u8::from(ok))).await;
    if ok {
        Ok(())
    } else {
        Err("the peer does not know the cluster secret".into())
    }
}

// --- frames ---

async fn write_frame<T: Serialize>(s: &mut TcpStream, k: u8, v: &T) -> Result<(), CallError> {
    let body = serde_json::to_vec(v).map_err(|e| CallError::Protocol(e.to_string()))?;
    let limit = cap(k).unwrap_or(0);
    if body.len() > limit {
        return Err(CallError::Protocol(format!(
            "frame of {} bytes over the {limit}-byte cap",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.push(k);
    buf.extend_from_slice(&body);
    s.write_all(&buf).await.map_err(io_err)
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a new frame.
async fn read_frame(s: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>, CallError> {
    let mut head = [0u8; 5];
    match s.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let k = head[4];
    let limit = cap(k).ok_or_else(|| CallError::Protocol(format!("unknown frame kind {k}")))?;
    if len > limit {
        return Err(CallError::Protocol(format!(
            "frame of {len} bytes over the {limit}-byte cap for kind {k}"
        )));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(io_err)?;
    Ok(Some((k, body)))
}

// --- client ---

/// A connection to one peer, re-established on demand after any failure.
pub(crate) struct BusClient {
    addr: SocketAddr,
    secret: Arc<[u8]>,
    conn: Option<TcpStream>,
}

impl BusClient {
    pub(crate) fn new(addr: SocketAddr, secret: Arc<[u8]>) -> BusClient {
        BusClient {
            addr,
            secret,
            conn: None,
        }
    }

    /// One request and its reply, all within `timeout` (connecting included).
    pub(crate) async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let addr = self.addr;
        let r = tokio::time::timeout(timeout, self.call_inner(req)).await;
        match r {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                // The stream may hold half a frame: never reuse it.
                self.conn = None;
                Err(CallError::Timeout(addr))
            }
        }
    }

    async fn call_inner(&mut self, req: &Request) -> Result<Reply, CallError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut c = TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| CallError::Connect(self.addr, e.to_string()))?;
                let _ = c.set_nodelay(true);
                tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_client(&mut c, &self.secret))
                    .await
                    .map_err(|_| CallError::Auth(self.addr, "handshake timed out".into()))?
                    .map_err(|e| CallError::Auth(self.addr, e))?;
                c
            }
        };
        write_frame(&mut conn, req.kind(), req).await?;
        let (k, body) = read_frame(&mut conn)
            .await?
            .ok_or_else(|| CallError::Io(format!("{} closed the connection", self.addr)))?;
        if k != kind::REPLY {
            return Err(CallError::Protocol(format!(
                "expected a reply, got kind {k}"
            )));
        }
        let reply = serde_json::from_slice(&body)
            .map_err(|e| CallError::Protocol(format!("undecodable reply: {e}")))?;
        self.conn = Some(conn);
        Ok(reply)
    }
}

// --- openraft network ---

/// Creates one [`PeerNetwork`] per replication target.
pub(crate) struct NetworkFactory {
    pub(crate) secret: Arc<[u8]>,
}

/// The raft connection to one peer.
pub(crate) struct PeerNetwork {
    target: NodeId,
    client: Result<BusClient, String>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        let client = node
            .addr
            .parse::<SocketAddr>()
            .map(|a| BusClient::new(a, self.secret.clone()))
            .map_err(|e| format!("node {target} has a bad bus address {:?}: {e}", node.addr));
        PeerNetwork { target, client }
    }
}

fn rpc_err<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Connect(..) | CallError::Auth(..) | CallError::Timeout(_) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        CallError::Io(_) | CallError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerNetwork {
    async fn call(&mut self, req: Request, ttl: Duration) -> Result<Reply, CallError> {
        match &mut self.client {
            Ok(c) => c.call(&req, ttl).await,
            Err(e) => Err(CallError::Protocol(e.clone())),
        }
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    rpc_err(CallError::Protocol("reply of the wrong type".into()))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Request::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Reply::Snapshot(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(rpc_err(e)),
        }
    }
}

// --- server ---

/// What the server asks the raft node to do with a request.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl std::future::Future<Output = Reply> + Send;
}

/// Accepts bus connections until `stop` turns true.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    secret: Arc<[u8]>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (secret, handler) = (secret.clone(), handler.clone());
                    tokio::spawn(async move {
                        if let Err(e) = serve_conn(stream, peer, &secret, &*handler).await {
                            tracing::debug!(%peer, error = %e, "bus: connection closed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "bus: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

async fn serve_conn<H: Handler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    secret: &[u8],
    handler: &H,
) -> Result<(), CallError> {
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_server(&mut stream, secret)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%peer, reason = %e, "bus: rejected a peer");
            return Err(CallError::Auth(peer, e));
        }
        Err(_) => {
            tracing::warn!(%peer, "bus: rejected a peer: handshake timed out");
            return Err(CallError::Timeout(peer));
        }
    }
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream))
            .await
            .map_err(|_| CallError::Timeout(peer))??;
        let Some((k, body)) = frame else {
            return Ok(());
        };
        let req: Request = serde_json::from_slice(&body)
            .map_err(|e| CallError::Protocol(format!("undecodable request: {e}")))?;
        if req.kind() != k {
            return Err(CallError::Protocol(format!(
                "frame kind {k} does not match its request"
            )));
        }
        let reply = handler.handle(req).await;
        tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut stream, kind::REPLY, &reply))
            .await
            .map_err(|_| CallError::Timeout(peer))??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn handshake_accepts_the_same_secret() {
        rt().block_on(async {
            let (mut c, mut s) = pair().await;
            let (a, b) = tokio::join!(
                handshake_client(&mut c, b"secret"),
                handshake_server(&mut s, b"secret")
            );
            assert_eq!(a, Ok(()));
            assert_eq!(b, Ok(()));
        });
    }

    #[test]
    fn handshake_rejects_a_wrong_secret_on_both_sides() {
        rt().block_on(async {
            let (mut c, mut s) = pair().await;
            let client = async move {
                let r = handshake_client(&mut c, b"wrong").await;
                drop(c); // as the real client does: the server must not wait forever
                r
            };
            let (a, b) = tokio::join!(client, handshake_server(&mut s, b"secret"));
            // The client refuses the server's proof and never sends its own.
            assert!(a.unwrap_err().contains("cluster secret"));
            assert!(b.is_err());
        });
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        rt().block_on(async {
            let (mut c, mut s) = pair().await;
            let mut head = ((MAX_SMALL_FRAME + 1) as u32).to_le_bytes().to_vec();
            head.push(kind::VOTE);
            c.write_all(&head).await.unwrap();
            let err = read_frame(&mut s).await.unwrap_err();
            assert!(err.to_string().contains("cap"), "{err}");
            c.write_all(&[0, 0, 0, 0, 99]).await.unwrap();
            let (mut c2, mut s2) = pair().await;
            c2.write_all(&[0, 0, 0, 0, 99]).await.unwrap();
            assert!(read_frame(&mut s2).await.is_err());
        });
    }
}
