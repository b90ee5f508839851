//! This core's links to other nodes over the fabric: one authenticated connection per
//! peer address, opened on first use, shared by every task of the core. A request is
//! a [`PeerRequest`] cut into chunks; one reader task per link stitches replies
//! together and hands each to the task waiting for its id.
//!
//! Every wait is bounded: connecting, and each request, have a deadline, after which
//! the caller gets an error it turns into `-CLUSTERDOWN` for the client. A link that
//! fails is dropped, so the next request connects afresh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use augur_fabric::tcp::{TcpConnection, TcpTransport};
use augur_fabric::{Connection, Transport};
use futures::channel::oneshot;

use crate::core::wire::{self, PeerReply, PeerRequest, Reassembly, KIND_REPLY, KIND_REQUEST};

/// How long connecting to a peer (TCP plus the authentication handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request to a peer may take before the caller gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(SocketAddr, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0}: {1}")]
    Protocol(SocketAddr, String),
}

struct Link {
    conn: TcpConnection,
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
}

pub struct Peers {
    transport: Rc<TcpTransport>,
    links: RefCell<HashMap<SocketAddr, Rc<Link>>>,
    /// Largest reply accepted from a peer.
    max_reply: usize,
}

impl Peers {
    pub fn new(transport: Rc<TcpTransport>, max_reply: usize) -> Peers {
        Peers {
            transport,
            links: RefCell::new(HashMap::new()),
            max_reply,
        }
    }

    pub fn transport(&self) -> &Rc<TcpTransport> {
        &self.transport
    }

    /// Send `req` to the peer at `addr` and wait for its reply.
    pub async fn request(
        self: &Rc<Self>,
        addr: SocketAddr,
        req: &PeerRequest,
    ) -> Result<PeerReply, PeerError> {
        self.request_with_timeout(addr, req, REQUEST_TIMEOUT).await
    }

    /// [`Peers::request`] for requests that take long by nature (a migration).
    pub async fn request_with_timeout(
        self: &Rc<Self>,
        addr: SocketAddr,
        req: &PeerRequest,
        limit: Duration,
    ) -> Result<PeerReply, PeerError> {
        let link = self.link(addr).await?;
        let payload = wire::encode(req).map_err(|e| PeerError::Protocol(addr, e.to_string()))?;
        let id = link.next_id.get();
        link.next_id.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        link.waiting.borrow_mut().insert(id, tx);
        let exchange = async {
            let max = link.conn.max_message_size();
            for chunk in wire::chunks(KIND_REQUEST, id, &payload, max) {
                link.conn
                    .send(&chunk)
                    .await
                    .map_err(|e| PeerError::Unreachable(addr, e.to_string()))?;
            }
            rx.await.map_err(|_| {
                let why = link
                    .conn
                    .failure()
                    .unwrap_or_else(|| "connection closed".into());
                PeerError::Unreachable(addr, why)
            })
        };
        let bytes =
            match glommio::timer::timeout(REQUEST_TIMEOUT, async { Ok(exchange.await) }).await {
                Ok(result) => result,
                Err(_) => {
                    link.waiting.borrow_mut().remove(&id);
                    // A peer that stops answering is treated as gone: drop the link so
                    // the next request reconnects (or fails fast if it is down).
                    self.drop_link(addr, &link);
                    return Err(PeerError::Timeout(addr, limit));
                }
            }?;
        wire::decode(&bytes, self.max_reply).map_err(|e| PeerError::Protocol(addr, e.to_string()))
    }

    /// The connection to `addr`, for one-sided operations.
    pub async fn connection(self: &Rc<Self>, addr: SocketAddr) -> Result<TcpConnection, PeerError> {
        Ok(self.link(addr).await?.conn.clone())
    }

    async fn link(self: &Rc<Self>, addr: SocketAddr) -> Result<Rc<Link>, PeerError> {
        if let Some(link) = self.links.borrow().get(&addr) {
            if link.conn.failure().is_none() {
                return Ok(link.clone());
            }
        }
        let transport = self.transport.clone();
        let conn =
            glommio::timer::timeout(
                CONNECT_TIMEOUT,
                async move { Ok(transport.connect(addr).await) },
            )
            .await
            .map_err(|_| PeerError::Timeout(addr, CONNECT_TIMEOUT))?
            .map_err(|e| PeerError::Unreachable(addr, e.to_string()))?;
        // Another task may have connected while we did; keep one link per peer.
        if let Some(link) = self.links.borrow().get(&addr) {
            if link.conn.failure().is_none() {
                conn.close();
                return Ok(link.clone());
            }
        }
        let link = Rc::new(Link {
            conn,
            next_id: Cell::new(1),
            waiting: RefCell::new(HashMap::new()),
        });
        self.links.borrow_mut().insert(addr, link.clone());
        glommio::spawn_local(read_replies(self.clone(), addr, link.clone())).detach();
        Ok(link)
    }

    fn drop_link(&self, addr: SocketAddr, link: &Rc<Link>) {
        let mut links = self.links.borrow_mut();
        if links.get(&addr).is_some_and(|l| Rc::ptr_eq(l, link)) {
            links.remove(&addr);
        }
        link.conn.close();
    }
}

/// The one reader of a link: hands each complete reply to its waiter. On any error
/// the link is dropped and every waiter fails at once.
async fn read_replies(peers: Rc<Peers>, addr: SocketAddr, link: Rc<Link>) {
    let mut stitch = Reassembly::new(peers.max_reply);
    loop {
        let chunk = match link.conn.recv().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%addr, "peer link closed: {e}");
                break;
            }
        };
        match stitch.push(&chunk) {
            Ok(Some(whole)) if whole.kind == KIND_REPLY => {
                if let Some(tx) = link.waiting.borrow_mut().remove(&whole.id) {
                    let _ = tx.send(whole.payload);
                }
            }
            Ok(Some(_)) => {
                tracing::warn!(%addr, "peer sent a request on a reply link; closing it");
                break;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%addr, "bad message from peer, closing the link: {e}");
                break;
            }
        }
    }
    link.waiting.borrow_mut().clear();
    peers.drop_link(addr, &link);
}
