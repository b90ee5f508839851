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
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use augur_fabric::{AnyConnection, AnyTransport, Backend};
use augur_fabric::{Connection, Transport};
use futures::channel::oneshot;

use crate::core::wire::{self, PeerReply, PeerRequest, Reassembly, KIND_REPLY, KIND_REQUEST};

/// How long connecting to a peer (TCP plus the authentication handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The same over verbs, whose set-up does more: it registers (pins) the link's message
/// buffers on both sides and takes a queue pair through three states, with two more
/// round trips. In the emulated SoftRoCE VM that took 2-2.6 s, so at 2 s every attempt
/// was abandoned (and the next one queued behind it on the peer).
pub const VERBS_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
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
    conn: AnyConnection,
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
}

pub struct Peers {
    transport: Rc<AnyTransport>,
    links: RefCell<HashMap<SocketAddr, Rc<Link>>>,
    /// Largest reply accepted from a peer.
    max_reply: usize,
}

impl Peers {
    pub fn new(transport: Rc<AnyTransport>, max_reply: usize) -> Peers {
        Peers {
            transport,
            links: RefCell::new(HashMap::new()),
            max_reply,
        }
    }

    pub fn transport(&self) -> &Rc<AnyTransport> {
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
    pub async fn connection(self: &Rc<Self>, addr: SocketAddr) -> Result<AnyConnection, PeerError> {
        Ok(self.link(addr).await?.conn.clone())
    }

    async fn link(self: &Rc<Self>, addr: SocketAddr) -> Result<Rc<Link>, PeerError> {
        if let Some(link) = self.links.borrow().get(&addr) {
            if link.conn.failure().is_none() {
                return Ok(link.clone());
            }
        }
        let transport = self.transport.clone();
        let limit = match transport.backend() {
            Backend::Tcp => CONNECT_TIMEOUT,
            Backend::Verbs => VERBS_CONNECT_TIMEOUT,
        };
        let started = std::time::Instant::now();
        let conn = glommio::timer::timeout(limit, async move { Ok(transport.connect(addr).await) })
            .await
            .map_err(|_| PeerError::Timeout(addr, limit))?
            .map_err(|e| PeerError::Unreachable(addr, e.to_string()))?;
        // Another task may have connected while we did; keep one link per peer.
        if let Some(link) = self.links.borrow().get(&addr) {
            if link.conn.failure().is_none() {
                conn.close();
                return Ok(link.clone());
            }
        }
        tracing::debug!(%addr, took = ?started.elapsed(), "peer link up");
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

/// Rounds a verbs `recv` is polled back to back before [`recv`] starts pausing.
const RECV_SPIN_ROUNDS: u32 = 16;
/// First and longest pause between polls of an idle verbs link.
const RECV_MIN_PAUSE: Duration = Duration::from_micros(20);
const RECV_MAX_PAUSE: Duration = Duration::from_millis(2);

/// The next message of `conn`, without keeping the core busy while the link is idle.
///
/// A verbs `recv` waits by polling its completion queue and waking itself at once, so a
/// link's reader, which waits in `recv` for as long as the link lives, would keep its
/// core spinning for good: taking the CPU from every other process on it, and leaving
/// glommio to look at sockets and timers only when its preempt timer fires. Here it is
/// polled back to back for a few rounds, then with pauses that double up to
/// [`RECV_MAX_PAUSE`] (the most an idle link adds to a message's latency). Polling with a
/// waker that does nothing is enough: the verbs futures make progress only when polled,
/// and a message is taken only when the future is ready. TCP's `recv` waits on its
/// socket and is awaited as is.
pub async fn recv(conn: &AnyConnection) -> augur_fabric::Result<Vec<u8>> {
    if conn.backend() == Backend::Tcp {
        return conn.recv().await;
    }
    let mut next = std::pin::pin!(conn.recv());
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut round = 0u32;
    let mut pause = RECV_MIN_PAUSE;
    loop {
        if let Poll::Ready(result) = next.as_mut().poll(&mut cx) {
            return result;
        }
        if round < RECV_SPIN_ROUNDS {
            round += 1;
            futures_lite::future::yield_now().await;
        } else {
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(RECV_MAX_PAUSE);
        }
    }
}

/// The one reader of a link: hands each complete reply to its waiter. On any error
/// the link is dropped and every waiter fails at once.
async fn read_replies(peers: Rc<Peers>, addr: SocketAddr, link: Rc<Link>) {
    let mut stitch = Reassembly::new(peers.max_reply);
    loop {
        let chunk = match recv(&link.conn).await {
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
