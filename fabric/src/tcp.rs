//! The TCP backend: the same [`Transport`] API over one TCP connection per peer.
//!
//! One-sided operations are emulated by the owning side. Each connection has one reader
//! task, which demultiplexes frames, and one send queue (FIFO) of frames. A READ request is
//! answered by queueing its response frame, whose bytes are taken from the registered
//! mapping by the kernel when the frame is sent (`sendmsg(2)` from the region, no
//! intermediate buffer); responses longer than `stream_chunk` go out chunk by chunk, each
//! chunk queued in place of the previous one, so nothing overtakes the rest of a read.
//! The queue is written by whoever has just filled it: the requester task right after it
//! queued a batch, the reader task once it has handled every frame it has buffered (so
//! replies that are ready together leave in one `sendmsg`), and a writer task only while
//! the socket is full. Hence READs on a connection are executed in arrival order (see
//! [`Connection::read_batch`]), and no task is spawned per request.
//!
//! READ data and WRITE payloads of 16 KiB or more are received straight into the target
//! region (`recv(2)` into the mapping), smaller ones through a 64 KiB receive buffer so that
//! one `recv` brings in many small frames. Each side accepts at most its `max_requests`
//! outstanding one-sided requests from the peer (a requester waits for a slot; a peer that
//! sends more is cut off), which bounds the owner's send queue. Requires a glommio executor
//! (the reader and writer tasks are spawned with `glommio::spawn_local`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rand::Rng;

use crate::auth;
use crate::error::{Error, RemoteStatus, Result};
use crate::shared_socket::SharedSocket as Sock;
use crate::transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};
use crate::verbs::memory::{try_sendmsg, Region};
use crate::wire::{kind, Header, Params, HEADER_LEN, PARAMS_LEN};

/// Largest data payload of one WRITE_REQ frame (longer writes are split); a peer sending
/// more is violating the protocol.
const MAX_WRITE_FRAME: u64 = 16 << 20;

struct RegEntry {
    region: Region,
    rkey: u32,
    generation: u64,
    access: Access,
}

struct TInner {
    cfg: FabricConfig,
    listener: TcpListener,
    addr: SocketAddr,
    regions: RefCell<HashMap<u32, RegEntry>>,
    next_id: Cell<u32>,
    next_gen: Cell<u64>,
}

impl TInner {
    /// Looks up a registration and checks key, generation, bounds and access.
    fn resolve(&self, h: &Header, write: bool) -> std::result::Result<Region, RemoteStatus> {
        let regions = self.regions.borrow();
        let e = regions
            .get(&h.region_id)
            .ok_or(RemoteStatus::NoSuchRegion)?;
        if e.rkey != h.rkey || e.generation != h.generation {
            return Err(RemoteStatus::BadKey);
        }
        if (write && !e.access.remote_write) || (!write && !e.access.remote_read) {
            return Err(RemoteStatus::Permission);
        }
        e.region
            .check(h.offset, h.len)
            .map_err(|_| RemoteStatus::OutOfBounds)?;
        Ok(e.region.clone())
    }
}

/// The TCP transport of one core.
pub struct TcpTransport {
    inner: Rc<TInner>,
}

impl TcpTransport {
    /// Listens on `addr` (use port 0 for any) with the given settings.
    pub fn bind(cfg: FabricConfig, addr: SocketAddr) -> Result<TcpTransport> {
        cfg.validate()?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::Io(e.into()))?;
        let addr = listener.local_addr().map_err(|e| Error::Io(e.into()))?;
        Ok(TcpTransport {
            inner: Rc::new(TInner {
                cfg,
                listener,
                addr,
                regions: RefCell::new(HashMap::new()),
                next_id: Cell::new(1),
                next_gen: Cell::new(1),
            }),
        })
    }

    async fn establish(&self, mut stream: TcpStream, client: bool) -> Result<TcpConnection> {
        let cfg = &self.inner.cfg;
        stream.set_nodelay(true).map_err(|e| Error::Io(e.into()))?;
        stream
            .set_read_timeout(Some(cfg.handshake_timeout))
            .map_err(|e| Error::Io(e.into()))?;
        if client {
            auth::client(&mut stream, &cfg.secret, auth::backend::TCP).await?;
        } else {
            auth::server(&mut stream, &cfg.secret, auth::backend::TCP).await?;
        }
        let ours = Params {
            recv_depth: cfg.recv_depth,
            max_message: cfg.max_message,
            max_requests: cfg.max_requests,
        };
        stream
            .write_all(&ours.encode())
            .await
            .map_err(|e| Error::Auth(format!("sending parameters: {e}")))?;
        let mut pb = [0u8; PARAMS_LEN];
        auth::read_msg(&mut stream, &mut pb, "PARAMS").await?;
        let theirs = Params::decode(&pb)?;
        stream
            .set_read_timeout(None)
            .map_err(|e| Error::Io(e.into()))?;
        Ok(TcpConnection::start(self.inner.clone(), stream, theirs))
    }
}

/// A region registered with a [`TcpTransport`].
pub struct TcpMr {
    transport: Weak<TInner>,
    region: Region,
    desc: RemoteRegion,
}

impl LocalMr for TcpMr {
    fn region(&self) -> &Region {
        &self.region
    }
    fn descriptor(&self) -> RemoteRegion {
        self.desc
    }
}

impl Drop for TcpMr {
    fn drop(&mut self) {
        if let Some(t) = self.transport.upgrade() {
            t.regions.borrow_mut().remove(&self.desc.region_id);
        }
    }
}

impl Transport for TcpTransport {
    type Mr = TcpMr;
    type Conn = TcpConnection;

    fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn register(&self, region: &Region, access: Access) -> Result<TcpMr> {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id.wrapping_add(1).max(1));
        let generation = self.inner.next_gen.get();
        self.inner.next_gen.set(generation + 1);
        let rkey: u32 = rand::thread_rng().gen();
        self.inner.regions.borrow_mut().insert(
            id,
            RegEntry {
                region: region.clone(),
                rkey,
                generation,
                access,
            },
        );
        Ok(TcpMr {
            transport: Rc::downgrade(&self.inner),
            region: region.clone(),
            desc: RemoteRegion {
                addr: 0,
                len: region.len() as u64,
                rkey,
                region_id: id,
                generation,
            },
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpConnection> {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Io(e.into()))?;
        self.establish(s, true).await
    }

    async fn accept(&self) -> Result<TcpConnection> {
        let s = self
            .inner
            .listener
            .accept()
            .await
            .map_err(|e| Error::Io(e.into()))?;
        self.establish(s, false).await
    }
}

struct Pending {
    /// Destination of a read (None for writes).
    local: Option<Region>,
    local_offset: u64,
    len: u64,
    received: u64,
    done: Option<Result<()>>,
    waker: Option<Waker>,
    /// The waiting future was dropped.
    abandoned: bool,
}

/// Hasher of our own request ids (sequential, chosen by us; the map holds at most the
/// peer's window plus abandoned requests): one multiply instead of SipHash, which was
/// ~10% of the instructions per small op (callgrind).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: spreads sequential ids over the high bits hashbrown uses
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct State {
    pending: IdMap<Pending>,
    next_req: u64,
    /// Our one-sided requests sent and not yet answered (≤ the peer's `max_requests`).
    in_flight: u32,
    window_wakers: Vec<Waker>,
    failed: Option<String>,
    inbox: VecDeque<Vec<u8>>,
    recv_wakers: Vec<Waker>,
    sent: u64,
    peer_consumed: u64,
    credit_wakers: Vec<Waker>,
    consumed: u64,
    consumed_reported: u64,
}

/// What follows a frame header in the send queue.
enum Body {
    None,
    Owned(Rc<[u8]>),
    /// `len` bytes at `offset` of a region, read by the kernel when the frame is sent.
    Region {
        region: Region,
        offset: u64,
        len: u64,
    },
}

/// The not yet queued part of a READ response longer than one stream chunk.
struct ReadRest {
    req_id: u64,
    region: Region,
    /// Region offset of the next chunk.
    offset: u64,
    /// Offset of the next chunk within the request.
    pos: u64,
    remaining: u64,
}

/// One frame in the send queue.
struct OutFrame {
    head: [u8; HEADER_LEN],
    body: Body,
    /// Bytes of head + body already handed to the kernel.
    sent: usize,
    /// For a chunked READ response: what comes after this chunk (queued in its place, so
    /// that nothing overtakes the rest of a read).
    rest: Option<ReadRest>,
    /// Writing this frame completely finishes serving one of the peer's requests.
    ends_request: bool,
}

impl OutFrame {
    fn control(h: &Header, ends_request: bool) -> OutFrame {
        OutFrame {
            head: h.encode(),
            body: Body::None,
            sent: 0,
            rest: None,
            ends_request,
        }
    }

    /// The first chunk of a READ response of `len` > 0 bytes at `offset` of `region`.
    fn read_data(rest: ReadRest, chunk: u64) -> OutFrame {
        let n = rest.remaining.min(chunk);
        let h = Header {
            kind: kind::READ_DATA,
            req_id: rest.req_id,
            offset: rest.pos,
            len: n,
            ..Header::default()
        };
        let body = Body::Region {
            region: rest.region.clone(),
            offset: rest.offset,
            len: n,
        };
        let more = (rest.remaining > n).then(|| ReadRest {
            offset: rest.offset + n,
            pos: rest.pos + n,
            remaining: rest.remaining - n,
            ..rest
        });
        OutFrame {
            head: h.encode(),
            body,
            sent: 0,
            ends_request: more.is_none(),
            rest: more,
        }
    }

    fn body_len(&self) -> usize {
        match &self.body {
            Body::None => 0,
            Body::Owned(b) => b.len(),
            Body::Region { len, .. } => *len as usize,
        }
    }

    fn total(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    fn body(&self) -> Result<&[u8]> {
        Ok(match &self.body {
            Body::None => &[],
            Body::Owned(b) => b,
            Body::Region {
                region,
                offset,
                len,
            } => region.io_slice(*offset, *len)?,
        })
    }

    /// The unsent bytes as at most two slices (head rest, body rest).
    fn unsent(&self) -> Result<(&[u8], &[u8])> {
        let body = self.body()?;
        Ok(if self.sent < HEADER_LEN {
            (&self.head[self.sent..], body)
        } else {
            (&[], &body[self.sent - HEADER_LEN..])
        })
    }
}

/// Frames a sendmsg gathers at most (two iovecs each; well under IOV_MAX).
const MAX_GATHER: usize = 64;

/// The send side of a connection: one FIFO of frames, written in order by whoever flushes
/// (the task that queued them, the reader task once it has handled all it has buffered,
/// or — when the socket is full — the writer task).
#[derive(Default)]
struct Tx {
    queue: VecDeque<OutFrame>,
    /// The writer task owns the rest of the queue until the socket takes it all.
    busy: bool,
    writer: Option<Waker>,
    /// Peer requests received whose reply is not completely written yet (≤ our
    /// `max_requests`).
    serving: u32,
}

impl Tx {
    /// One non-blocking sendmsg of up to [`MAX_GATHER`] queued frames, in queue order.
    /// Returns (bytes written, bytes offered).
    fn send_some(&self, fd: RawFd) -> std::io::Result<(usize, usize)> {
        let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(2 * MAX_GATHER);
        let mut offered = 0;
        for f in self.queue.iter().take(MAX_GATHER) {
            let (head, body) = f
                .unsent()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            for p in [head, body] {
                if !p.is_empty() {
                    offered += p.len();
                    parts.push(IoSlice::new(p));
                }
            }
            if f.rest.is_some() {
                // the next chunk of this read is not queued yet and must come next
                break;
            }
        }
        if parts.is_empty() {
            return Ok((0, 0));
        }
        Ok((try_sendmsg(fd, &parts)?, offered))
    }

    /// Accounts `n` bytes the kernel took from the front of the queue; a finished chunk of
    /// a longer READ response is replaced by the next one, in place.
    fn advance(&mut self, mut n: usize, chunk: u64) {
        while let Some(f) = self.queue.front_mut() {
            let left = f.total() - f.sent;
            if n < left {
                f.sent += n;
                return;
            }
            n -= left;
            let Some(f) = self.queue.pop_front() else {
                return;
            };
            if f.ends_request {
                self.serving = self.serving.saturating_sub(1);
            }
            if let Some(rest) = f.rest {
                self.queue.push_front(OutFrame::read_data(rest, chunk));
            }
        }
    }

    /// Writes as much of the queue as the socket takes now. Ok(true) once it is empty.
    fn drain(&mut self, fd: RawFd, chunk: u64) -> std::io::Result<bool> {
        while !self.queue.is_empty() {
            let (n, offered) = match self.send_some(fd) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.advance(n, chunk);
            if n < offered {
                return Ok(self.queue.is_empty());
            }
        }
        Ok(true)
    }
}

struct CInner {
    transport: Rc<TInner>,
    sock: Sock,
    fd: RawFd,
    peer: Params,
    state: RefCell<State>,
    tx: RefCell<Tx>,
}

/// A connection of the TCP backend. Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct TcpConnection {
    inner: Rc<CInner>,
}

impl TcpConnection {
    fn start(transport: Rc<TInner>, stream: TcpStream, peer: Params) -> TcpConnection {
        let fd = stream.as_raw_fd();
        let inner = Rc::new(CInner {
            transport,
            sock: Sock::new(stream),
            fd,
            peer,
            state: RefCell::new(State::default()),
            tx: RefCell::new(Tx::default()),
        });
        let weak = Rc::downgrade(&inner);
        let sock = inner.sock.clone();
        glommio::spawn_local(async move {
            let why = match reader(weak.clone(), sock).await {
                Ok(()) => "connection closed".to_string(),
                Err(Error::Disconnected(why)) => why,
                Err(e) => e.to_string(),
            };
            if let Some(c) = weak.upgrade() {
                c.fail(&why);
            }
        })
        .detach();
        glommio::spawn_local(writer(Rc::downgrade(&inner), inner.sock.clone())).detach();
        TcpConnection { inner }
    }

    /// Abruptly shuts the socket down (both directions) without any goodbye, as a crashed
    /// peer would. For tests of failure handling.
    pub fn abort(&self) {
        self.inner.fail("connection aborted locally");
    }

    /// Waits for up to `want` (≥ 1) request slots of the peer's window; returns how many
    /// were taken (≥ 1).
    async fn acquire_slots(&self, want: usize) -> Result<usize> {
        futures_lite::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if let Some(why) = &st.failed {
                return Poll::Ready(Err(Error::Disconnected(why.clone())));
            }
            let free = self.inner.peer.max_requests.saturating_sub(st.in_flight) as usize;
            if free > 0 {
                let k = free.min(want);
                st.in_flight += k as u32;
                return Poll::Ready(Ok(k));
            }
            st.window_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    async fn submit(&self, ops: &[Op<'_, TcpMr>], write: bool) -> Result<()> {
        for op in ops {
            op.check()?;
        }
        if let Some(why) = &self.inner.state.borrow().failed {
            return Err(Error::Disconnected(why.clone()));
        }
        let chunk = if write {
            (self.inner.transport.cfg.stream_chunk as u64).min(MAX_WRITE_FRAME)
        } else {
            u64::MAX
        };
        // (op index, position within the op) of every request frame, in submission order
        let mut frames: Vec<(usize, u64)> = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let mut pos = 0;
            while pos < op.len {
                frames.push((i, pos));
                pos += (op.len - pos).min(chunk);
            }
        }
        // Dropping `wait` early (cancellation) marks what was sent abandoned.
        let mut wait = WaitAll {
            conn: &self.inner,
            ids: Vec::with_capacity(frames.len()),
            first_err: None,
        };
        let mut next = 0;
        while next < frames.len() {
            let k = self.acquire_slots(frames.len() - next).await?;
            {
                let mut st = self.inner.state.borrow_mut();
                let mut tx = self.inner.tx.borrow_mut();
                for &(i, pos) in &frames[next..next + k] {
                    let op = &ops[i];
                    let n = (op.len - pos).min(chunk);
                    let id = st.next_req;
                    st.next_req += 1;
                    st.pending.insert(
                        id,
                        Pending {
                            local: (!write).then(|| op.local.region.clone()),
                            local_offset: op.local_offset + pos,
                            len: n,
                            received: 0,
                            done: None,
                            waker: None,
                            abandoned: false,
                        },
                    );
                    wait.ids.push(id);
                    let h = Header {
                        kind: if write {
                            kind::WRITE_REQ
                        } else {
                            kind::READ_REQ
                        },
                        status: 0,
                        req_id: id,
                        region_id: op.remote.region_id,
                        rkey: op.remote.rkey,
                        generation: op.remote.generation,
                        offset: op.remote_offset + pos,
                        len: n,
                    };
                    tx.queue.push_back(OutFrame {
                        head: h.encode(),
                        body: if write {
                            Body::Region {
                                region: op.local.region.clone(),
                                offset: op.local_offset + pos,
                                len: n,
                            }
                        } else {
                            Body::None
                        },
                        sent: 0,
                        rest: None,
                        ends_request: false,
                    });
                }
            }
            next += k;
            self.inner.flush()?;
        }
        // the waiter looks at the last id first: replies come in order, so it is woken once
        (&mut wait).await
    }
}

/// Waits for all requests of one batch; dropping it early marks the rest abandoned (their
/// entries, which keep the target regions alive, go away when the replies arrive).
struct WaitAll<'a> {
    conn: &'a Rc<CInner>,
    ids: Vec<u64>,
    first_err: Option<Error>,
}

impl std::future::Future for WaitAll<'_> {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        let mut st = this.conn.state.borrow_mut();
        while let Some(&id) = this.ids.last() {
            let failed = st.failed.clone();
            let Some(p) = st.pending.get_mut(&id) else {
                this.first_err.get_or_insert(Error::Disconnected(
                    failed.unwrap_or_else(|| "request lost".into()),
                ));
                this.ids.pop();
                continue;
            };
            match p.done.take() {
                Some(r) => {
                    st.pending.remove(&id);
                    this.ids.pop();
                    if let Err(e) = r {
                        this.first_err.get_or_insert(e);
                    }
                }
                None => {
                    p.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(this.first_err.take().map_or(Ok(()), Err))
    }
}

impl Drop for WaitAll<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.conn.state.try_borrow_mut() {
            for id in &self.ids {
                let done = match st.pending.get_mut(id) {
                    Some(p) if p.done.is_some() => true,
                    Some(p) => {
                        p.abandoned = true;
                        p.waker = None;
                        false
                    }
                    None => false,
                };
                if done {
                    st.pending.remove(id);
                }
            }
        }
    }
}

impl CInner {
    fn chunk(&self) -> u64 {
        self.transport.cfg.stream_chunk as u64
    }

    /// Marks the connection failed: shuts the socket down, fails every pending operation,
    /// drops the send queue, wakes every waiter. Idempotent.
    fn fail(&self, why: &str) {
        let (wakers, first) = {
            let mut st = self.state.borrow_mut();
            let first = st.failed.is_none();
            if first {
                st.failed = Some(why.to_string());
            }
            let mut w: Vec<Waker> = Vec::new();
            for p in st.pending.values_mut() {
                if p.done.is_none() {
                    p.done = Some(Err(Error::Disconnected(why.to_string())));
                }
                w.extend(p.waker.take());
            }
            w.append(&mut st.recv_wakers);
            w.append(&mut st.credit_wakers);
            w.append(&mut st.window_wakers);
            (w, first)
        };
        if first {
            tracing::debug!(why, "tcp fabric connection failed");
            if let Ok(s) = self.sock.0.try_borrow() {
                let _ = futures_lite::future::block_on(s.shutdown(Shutdown::Both));
            }
        }
        let writer = self.tx.try_borrow_mut().ok().and_then(|mut tx| {
            tx.queue.clear();
            tx.writer.take()
        });
        for w in wakers.into_iter().chain(writer) {
            w.wake();
        }
    }

    /// Queues one frame (sent by the next flush).
    fn push(&self, f: OutFrame) {
        self.tx.borrow_mut().queue.push_back(f);
    }

    /// Writes what is queued, now, in as few system calls as the socket allows; what the
    /// socket does not take is left to the writer task. A no-op while the writer task owns
    /// the queue.
    fn flush(&self) -> Result<()> {
        let r = {
            let mut tx = self.tx.borrow_mut();
            if tx.busy || tx.queue.is_empty() {
                return Ok(());
            }
            match tx.drain(self.fd, self.chunk()) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    tx.busy = true;
                    if let Some(w) = tx.writer.take() {
                        w.wake();
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        r.map_err(|e| {
            let why = format!("socket error: {e}");
            self.fail(&why);
            Error::Disconnected(why)
        })
    }

    /// Completes one of our requests (the peer answered it): frees its window slot.
    fn complete(&self, id: u64, r: Result<()>) {
        let wakers = {
            let mut st = self.state.borrow_mut();
            let (w, known) = match st.pending.get_mut(&id) {
                Some(p) if p.abandoned => {
                    // nobody waits any more (cancelled): forget it
                    st.pending.remove(&id);
                    (None, true)
                }
                Some(p) => {
                    p.done = Some(r);
                    (p.waker.take(), true)
                }
                None => (None, false),
            };
            let mut wakers: Vec<Waker> = w.into_iter().collect();
            if known {
                st.in_flight = st.in_flight.saturating_sub(1);
                wakers.append(&mut st.window_wakers);
            }
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Counts one more peer request being served; refuses a peer beyond our window.
    fn begin_serving(&self) -> Result<()> {
        let mut tx = self.tx.borrow_mut();
        if tx.serving >= self.transport.cfg.max_requests {
            return Err(Error::Protocol(format!(
                "peer exceeded its window of {} outstanding requests",
                self.transport.cfg.max_requests
            )));
        }
        tx.serving += 1;
        Ok(())
    }
}

impl Drop for CInner {
    fn drop(&mut self) {
        // the parked writer task holds a clone of the socket: let it see that the
        // connection is gone and end (else the socket would outlive every handle)
        if let Some(w) = self.tx.get_mut().writer.take() {
            w.wake();
        }
    }
}

/// The unsent rest of the front frame, owned (it is written across an await).
enum Piece {
    Head(Vec<u8>),
    Owned(Rc<[u8]>, usize),
    Region(Region, u64, u64),
}

/// The writer task: takes over the send queue when the socket is full (waits for it to
/// drain) and hands it back once the queue is empty. Holds only a weak reference to the
/// connection, so dropping every handle ends it.
async fn writer(weak: Weak<CInner>, mut sock: Sock) {
    loop {
        let go = futures_lite::future::poll_fn(|cx| {
            let Some(c) = weak.upgrade() else {
                return Poll::Ready(false);
            };
            if c.state.borrow().failed.is_some() {
                return Poll::Ready(false);
            }
            let mut tx = c.tx.borrow_mut();
            if tx.busy {
                return Poll::Ready(true);
            }
            tx.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if !go {
            return;
        }
        let piece = {
            let Some(c) = weak.upgrade() else { return };
            let tx = c.tx.borrow();
            let Some(f) = tx.queue.front() else {
                drop(tx);
                c.tx.borrow_mut().busy = false;
                continue;
            };
            if f.sent < HEADER_LEN {
                Piece::Head(f.head[f.sent..].to_vec())
            } else {
                let from = f.sent - HEADER_LEN;
                match &f.body {
                    Body::None => Piece::Head(Vec::new()),
                    Body::Owned(b) => Piece::Owned(b.clone(), from),
                    Body::Region {
                        region,
                        offset,
                        len,
                    } => Piece::Region(region.clone(), offset + from as u64, len - from as u64),
                }
            }
        };
        // waits until the socket takes at least one byte
        let written = match &piece {
            Piece::Head(b) => sock.write(b).await,
            Piece::Owned(b, from) => sock.write(&b[*from..]).await,
            Piece::Region(r, off, len) => match r.io_slice(*off, *len) {
                Ok(s) => sock.write(s).await,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            },
        };
        let Some(c) = weak.upgrade() else { return };
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                c.fail(&format!("socket error: {e}"));
                return;
            }
        };
        let chunk = c.chunk();
        let r = {
            let mut tx = c.tx.borrow_mut();
            tx.advance(n, chunk);
            match tx.drain(c.fd, chunk) {
                Ok(true) => {
                    tx.busy = false;
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = r {
            c.fail(&format!("socket error: {e}"));
            return;
        }
    }
}

/// Payloads at least this long are received straight into their target (no copy); shorter
/// ones come through the receive buffer, so that one `recv` brings in many small frames.
const DIRECT_RECV: usize = 16 << 10;

/// The receive side of a connection: a buffer for headers and small payloads in front of
/// the socket.
struct Rx {
    sock: Sock,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Rx {
    fn new(sock: Sock) -> Rx {
        Rx {
            sock,
            buf: vec![0u8; 64 << 10],
            start: 0,
            end: 0,
        }
    }

    /// Bytes received and not yet taken.
    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Takes buffered bytes into `out`; returns how many.
    fn take(&mut self, out: &mut [u8]) -> usize {
        let k = out.len().min(self.end - self.start);
        out[..k].copy_from_slice(&self.buf[self.start..self.start + k]);
        self.start += k;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        k
    }

    /// One `recv` into the free end of the buffer.
    async fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.sock.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(())
    }

    async fn read_exact(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let mut pos = self.take(out);
        while pos < out.len() {
            if out.len() - pos >= DIRECT_RECV {
                return self.sock.read_exact(&mut out[pos..]).await;
            }
            self.fill().await?;
            pos += self.take(&mut out[pos..]);
        }
        Ok(())
    }

    async fn skip(&mut self, mut n: u64) -> std::io::Result<()> {
        let mut scratch = [0u8; 4096];
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            self.read_exact(&mut scratch[..k]).await?;
            n -= k as u64;
        }
        Ok(())
    }
}

fn eof(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Disconnected("peer closed the connection".into())
    } else {
        Error::Disconnected(format!("socket error: {e}"))
    }
}

/// Before the reader would wait for `need` more bytes from the socket: send what the frames
/// handled so far queued, in one go (replies that are ready together leave together).
fn flush_before_wait(weak: &Weak<CInner>, rx: &Rx, need: usize) -> Result<()> {
    if rx.buffered() < need {
        if let Some(c) = weak.upgrade() {
            c.flush()?;
        }
    }
    Ok(())
}

/// The per-connection reader task. Holds only a weak reference to the connection, so
/// dropping every handle ends it.
async fn reader(weak: Weak<CInner>, sock: Sock) -> Result<()> {
    let mut hb = [0u8; HEADER_LEN];
    let mut sock = Rx::new(sock);
    loop {
        flush_before_wait(&weak, &sock, HEADER_LEN)?;
        sock.read_exact(&mut hb).await.map_err(eof)?;
        let h = Header::decode(&hb)?;
        let Some(conn) = weak.upgrade() else {
            return Ok(());
        };
        match h.kind {
            kind::READ_REQ => {
                conn.begin_serving()?;
                // The bytes are read from the region when the frame is sent, in queue
                // order: READs are executed in the order they arrived.
                let status = match conn.transport.resolve(&h, false) {
                    // zero-length reads are refused by the requester; treat one as out of bounds
                    Ok(_) if h.len == 0 => RemoteStatus::OutOfBounds,
                    Err(status) => status,
                    Ok(region) => {
                        let rest = ReadRest {
                            req_id: h.req_id,
                            region,
                            offset: h.offset,
                            pos: 0,
                            remaining: h.len,
                        };
                        conn.push(OutFrame::read_data(rest, conn.chunk()));
                        continue;
                    }
                };
                let done = Header {
                    kind: kind::READ_DONE,
                    req_id: h.req_id,
                    status: status.code(),
                    ..Header::default()
                };
                conn.push(OutFrame::control(&done, true));
            }
            kind::READ_DATA => {
                let target = {
                    let st = conn.state.borrow();
                    match st.pending.get(&h.req_id) {
                        Some(p)
                            if p.local.is_some()
                                && h.offset == p.received
                                && h.len <= p.len - p.received =>
                        {
                            p.local.clone().map(|r| (r, p.local_offset + h.offset))
                        }
                        Some(_) => {
                            return Err(Error::Protocol(format!(
                                "READ_DATA for request {} out of order or too long",
                                h.req_id
                            )))
                        }
                        None => None,
                    }
                };
                match target {
                    Some((region, off)) => {
                        flush_before_wait(&weak, &sock, h.len as usize)?;
                        let buf = region.io_slice_mut(off, h.len)?;
                        sock.read_exact(buf).await.map_err(eof)?;
                        let complete = match conn.state.borrow_mut().pending.get_mut(&h.req_id) {
                            Some(p) => {
                                p.received += h.len;
                                p.received == p.len
                            }
                            None => false,
                        };
                        if complete {
                            // the last chunk completes the read (READ_DONE only for refusals)
                            conn.complete(h.req_id, Ok(()));
                        }
                    }
                    None => {
                        return Err(Error::Protocol(format!(
                            "READ_DATA for unknown request {}",
                            h.req_id
                        )))
                    }
                }
            }
            kind::READ_DONE => {
                if h.status == 0 {
                    return Err(Error::Protocol("READ_DONE without an error status".into()));
                }
                let known = conn
                    .state
                    .borrow()
                    .pending
                    .get(&h.req_id)
                    .is_some_and(|p| p.local.is_some() && p.received == 0);
                if !known {
                    return Err(Error::Protocol(
                        "READ_DONE for an unknown or started request".into(),
                    ));
                }
                conn.complete(
                    h.req_id,
                    Err(Error::Remote(RemoteStatus::from_code(h.status))),
                );
            }
            kind::WRITE_REQ => {
                if h.len > MAX_WRITE_FRAME {
                    return Err(Error::Protocol(format!("WRITE_REQ of {} bytes", h.len)));
                }
                conn.begin_serving()?;
                let mut done = Header {
                    kind: kind::WRITE_DONE,
                    req_id: h.req_id,
                    ..Header::default()
                };
                flush_before_wait(&weak, &sock, h.len as usize)?;
                match conn.transport.resolve(&h, true) {
                    Ok(region) => {
                        let buf = region.io_slice_mut(h.offset, h.len)?;
                        sock.read_exact(buf).await.map_err(eof)?;
                    }
                    Err(status) => {
                        sock.skip(h.len).await.map_err(eof)?;
                        done.status = status.code();
                    }
                }
                conn.push(OutFrame::control(&done, true));
            }
            kind::WRITE_DONE => {
                let is_write = conn
                    .state
                    .borrow()
                    .pending
                    .get(&h.req_id)
                    .is_some_and(|p| p.local.is_none());
                if !is_write {
                    return Err(Error::Protocol(format!(
                        "WRITE_DONE for unknown request {}",
                        h.req_id
                    )));
                }
                let r = match h.status {
                    0 => Ok(()),
                    s => Err(Error::Remote(RemoteStatus::from_code(s))),
                };
                conn.complete(h.req_id, r);
            }
            kind::SEND => {
                let max = conn.transport.cfg.max_message as u64;
                if h.len > max {
                    return Err(Error::Protocol(format!(
                        "message of {} bytes > {max}",
                        h.len
                    )));
                }
                let mut msg = vec![0u8; h.len as usize];
                flush_before_wait(&weak, &sock, msg.len())?;
                sock.read_exact(&mut msg).await.map_err(eof)?;
                let wakers = {
                    let mut st = conn.state.borrow_mut();
                    if st.inbox.len() >= conn.transport.cfg.recv_depth as usize {
                        return Err(Error::Protocol("peer sent without credit".into()));
                    }
                    st.inbox.push_back(msg);
                    std::mem::take(&mut st.recv_wakers)
                };
                wakers.into_iter().for_each(Waker::wake);
            }
            kind::CREDIT => {
                let wakers = {
                    let mut st = conn.state.borrow_mut();
                    if h.offset < st.peer_consumed || h.offset > st.sent {
                        return Err(Error::Protocol("bad credit count".into()));
                    }
                    st.peer_consumed = h.offset;
                    std::mem::take(&mut st.credit_wakers)
                };
                wakers.into_iter().for_each(Waker::wake);
            }
            k => return Err(Error::Protocol(format!("unexpected frame kind {k}"))),
        }
    }
}

impl Connection for TcpConnection {
    type Mr = TcpMr;

    async fn read_batch(&self, ops: &[Op<'_, TcpMr>]) -> Result<()> {
        self.submit(ops, false).await
    }

    async fn write_batch(&self, ops: &[Op<'_, TcpMr>]) -> Result<()> {
        self.submit(ops, true).await
    }

    async fn send(&self, msg: &[u8]) -> Result<()> {
        let max = self.max_message_size();
        if msg.len() > max {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max,
            });
        }
        // wait for a credit
        futures_lite::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if let Some(why) = &st.failed {
                return Poll::Ready(Err(Error::Disconnected(why.clone())));
            }
            if st.sent - st.peer_consumed < self.inner.peer.recv_depth as u64 {
                st.sent += 1;
                return Poll::Ready(Ok(()));
            }
            st.credit_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let h = Header {
            kind: kind::SEND,
            len: msg.len() as u64,
            ..Header::default()
        };
        self.inner.push(OutFrame {
            head: h.encode(),
            body: Body::Owned(Rc::from(msg)),
            sent: 0,
            rest: None,
            ends_request: false,
        });
        self.inner.flush()
    }

    async fn recv(&self) -> Result<Vec<u8>> {
        let msg = futures_lite::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if let Some(m) = st.inbox.pop_front() {
                st.consumed += 1;
                return Poll::Ready(Ok(m));
            }
            if let Some(why) = &st.failed {
                return Poll::Ready(Err(Error::Disconnected(why.clone())));
            }
            st.recv_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let report = {
            let mut st = self.inner.state.borrow_mut();
            let batch = (self.inner.transport.cfg.recv_depth as u64 / 2).max(1);
            if st.consumed - st.consumed_reported >= batch {
                st.consumed_reported = st.consumed;
                Some(st.consumed)
            } else {
                None
            }
        };
        if let Some(n) = report {
            let h = Header {
                kind: kind::CREDIT,
                offset: n,
                ..Header::default()
            };
            self.inner.push(OutFrame::control(&h, false));
            self.inner.flush()?;
        }
        Ok(msg)
    }

    fn max_message_size(&self) -> usize {
        self.inner.peer.max_message as usize
    }

    fn failure(&self) -> Option<String> {
        self.inner.state.borrow().failed.clone()
    }

    fn close(&self) {
        self.inner.fail("connection closed locally");
    }
}
