//! The TCP backend: the same [`Transport`] API over one TCP connection per peer.
//!
//! One-sided operations are emulated by the owning side: a reader task per connection
//! demultiplexes frames; each READ request is served by a responder task that writes the
//! bytes straight from the registered mapping to the socket (`send(2)` from the region, no
//! intermediate buffer), streamed in chunks of at most `stream_chunk` bytes so that other
//! frames interleave; READ data and WRITE payloads of 16 KiB or more are received straight
//! into the target region (`recv(2)` into the mapping), smaller ones through a 64 KiB receive
//! buffer so that one `recv` brings in many small frames. Requires a glommio executor (tasks
//! are spawned with `glommio::spawn_local`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use rand::Rng;

use crate::auth;
use crate::error::{Error, RemoteStatus, Result};
use crate::shared_socket::SharedSocket as Sock;
use crate::transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};
use crate::verbs::memory::{try_writev, Region};
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

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    next_req: u64,
    failed: Option<String>,
    inbox: VecDeque<Vec<u8>>,
    recv_wakers: Vec<Waker>,
    sent: u64,
    peer_consumed: u64,
    credit_wakers: Vec<Waker>,
    consumed: u64,
    consumed_reported: u64,
}

struct CInner {
    transport: Rc<TInner>,
    sock: Sock,
    write_lock: Semaphore,
    peer: Params,
    state: RefCell<State>,
}

/// A connection of the TCP backend. Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct TcpConnection {
    inner: Rc<CInner>,
}

impl TcpConnection {
    fn start(transport: Rc<TInner>, stream: TcpStream, peer: Params) -> TcpConnection {
        let inner = Rc::new(CInner {
            transport,
            sock: Sock::new(stream),
            write_lock: Semaphore::new(1),
            peer,
            state: RefCell::new(State::default()),
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
        TcpConnection { inner }
    }

    /// Abruptly shuts the socket down (both directions) without any goodbye, as a crashed
    /// peer would. For tests of failure handling.
    pub fn abort(&self) {
        self.inner.fail("connection aborted locally");
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
        let mut ids = Vec::new();
        let mut frames: Vec<(Header, Option<(Region, u64)>)> = Vec::new();
        {
            let mut st = self.inner.state.borrow_mut();
            for op in ops {
                let mut pos = 0;
                while pos < op.len {
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
                    ids.push(id);
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
                    frames.push((
                        h,
                        write.then(|| (op.local.region.clone(), op.local_offset + pos)),
                    ));
                    pos += n;
                }
            }
        }
        let sent = self.send_requests(&frames).await;
        if let Err(e) = sent {
            let mut st = self.inner.state.borrow_mut();
            for id in &ids {
                st.pending.remove(id);
            }
            return Err(e);
        }
        WaitAll {
            conn: &self.inner,
            ids,
            first_err: None,
        }
        .await
    }

    /// Writes the request frames. Read requests (headers only) go out in one socket write.
    async fn send_requests(&self, frames: &[(Header, Option<(Region, u64)>)]) -> Result<()> {
        let _g = self.inner.lock().await?;
        let mut headers: Vec<u8> = Vec::new();
        for (h, payload) in frames {
            headers.extend_from_slice(&h.encode());
            if let Some((region, off)) = payload {
                let data = region.io_slice(*off, h.len)?;
                self.inner.write_parts(&headers, data).await?;
                headers.clear();
            }
        }
        if !headers.is_empty() {
            self.inner.write_parts(&headers, &[]).await?;
        }
        Ok(())
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
    async fn lock(&self) -> Result<glommio::sync::Permit<'_>> {
        self.write_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Disconnected("connection closed".into()))
    }

    fn io_fail(&self, e: std::io::Error) -> Error {
        let why = format!("socket error: {e}");
        self.fail(&why);
        Error::Disconnected(why)
    }

    /// Marks the connection failed: shuts the socket down, fails every pending operation,
    /// wakes every waiter. Idempotent.
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
            (w, first)
        };
        if first {
            tracing::debug!(why, "tcp fabric connection failed");
            if let Ok(s) = self.sock.0.try_borrow() {
                let _ = futures_lite::future::block_on(s.shutdown(Shutdown::Both));
            }
            self.write_lock.close();
        }
        for w in wakers {
            w.wake();
        }
    }

    fn complete(&self, id: u64, r: Result<()>) {
        let w = {
            let mut st = self.state.borrow_mut();
            match st.pending.get_mut(&id) {
                Some(p) if p.abandoned => {
                    // nobody waits any more (cancelled): forget it
                    st.pending.remove(&id);
                    None
                }
                Some(p) => {
                    p.done = Some(r);
                    p.waker.take()
                }
                None => None,
            }
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    async fn write_frame(&self, h: &Header, payload: &[u8]) -> Result<()> {
        let _g = self.lock().await?;
        self.write_parts(&h.encode(), payload).await
    }

    /// Writes `head` then `body` (caller holds the write lock): first one non-blocking
    /// `sendmsg` of both (no copy, one system call), then the async path for any rest.
    async fn write_parts(&self, head: &[u8], body: &[u8]) -> Result<()> {
        let fd = self.sock.0.borrow().as_raw_fd();
        let n = match try_writev(fd, head, body) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(self.io_fail(e)),
        };
        let mut sock = self.sock.clone();
        if n < head.len() {
            sock.write_all(&head[n..])
                .await
                .map_err(|e| self.io_fail(e))?;
            sock.write_all(body).await.map_err(|e| self.io_fail(e))?;
        } else if n - head.len() < body.len() {
            sock.write_all(&body[n - head.len()..])
                .await
                .map_err(|e| self.io_fail(e))?;
        }
        Ok(())
    }
}

/// Serves one READ request: streams the bytes from the registered mapping to the socket.
async fn respond_read(conn: Rc<CInner>, h: Header) {
    let status = match conn.transport.resolve(&h, false) {
        // zero-length reads are refused by the requester; treat one as out of bounds
        Ok(_) if h.len == 0 => RemoteStatus::OutOfBounds,
        Err(status) => status,
        Ok(region) => {
            let chunk = conn.transport.cfg.stream_chunk as u64;
            let mut pos = 0;
            while pos < h.len {
                let n = (h.len - pos).min(chunk);
                let Ok(data) = region.io_slice(h.offset + pos, n) else {
                    return;
                };
                let frame = Header {
                    kind: kind::READ_DATA,
                    req_id: h.req_id,
                    offset: pos,
                    len: n,
                    ..Header::default()
                };
                if conn.write_frame(&frame, data).await.is_err() {
                    return;
                }
                pos += n;
            }
            // the last READ_DATA completed the read
            return;
        }
    };
    let done = Header {
        kind: kind::READ_DONE,
        req_id: h.req_id,
        status: status.code(),
        ..Header::default()
    };
    let _ = conn.write_frame(&done, &[]).await;
}

async fn reply(conn: Rc<CInner>, h: Header) {
    let _ = conn.write_frame(&h, &[]).await;
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

/// The per-connection reader task. Holds only a weak reference to the connection, so
/// dropping every handle ends it.
async fn reader(weak: Weak<CInner>, sock: Sock) -> Result<()> {
    let mut hb = [0u8; HEADER_LEN];
    let mut sock = Rx::new(sock);
    loop {
        sock.read_exact(&mut hb).await.map_err(eof)?;
        let h = Header::decode(&hb)?;
        let Some(conn) = weak.upgrade() else {
            return Ok(());
        };
        match h.kind {
            kind::READ_REQ => {
                glommio::spawn_local(respond_read(conn, h)).detach();
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
                let mut done = Header {
                    kind: kind::WRITE_DONE,
                    req_id: h.req_id,
                    ..Header::default()
                };
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
                glommio::spawn_local(reply(conn, done)).detach();
            }
            kind::WRITE_DONE => {
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
        self.inner.write_frame(&h, msg).await
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
            self.inner.write_frame(&h, &[]).await?;
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
