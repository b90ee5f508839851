//! The verbs [`Transport`]: RC queue pairs, one-sided READ/WRITE, SEND/RECV with credits.
//!
//! * One PD per transport (per core); every registration is valid on every connection.
//! * One CQ and one RC QP per connection, polled by the futures of the operations on that
//!   connection: each poll takes up to `poll_budget` completions, and a future that is not
//!   complete yet wakes itself and returns `Pending` (busy-poll, then yield to the executor).
//! * A batch becomes one linked list of work requests posted with one doorbell; transfers
//!   longer than `max_wr_bytes` are split; only the last request of each posted group is
//!   signaled, and RC's in-order completion retires the unsignaled ones before it.
//! * Messages: `recv_depth` buffers pre-posted; small messages go inline; the receiver
//!   returns credits by RDMA-WRITing its cumulative consumed count into the sender's
//!   credit word (no receive buffer is spent on credit updates).
//! * Failures: an error completion (remote access error, retry exceeded, ...) or the loss of
//!   the bootstrap TCP connection moves the QP to ERR, fails every operation in flight and
//!   every later one with an error; the connection reports `failure()`, and the caller
//!   reconnects (`connect` again). Nothing waits forever: a silent peer surfaces as
//!   "retry exceeded" after about 7 × 67 ms.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use rand::Rng;

use super::connect::{self, Endpoint};
use super::cq::{Completion, CompletionQueue, POLL_BATCH};
use super::device::Device;
use super::memory::Region;
use super::mr::MemoryRegion;
use super::pd::ProtectionDomain;
use super::qp::{Local, PeerPath, Post, QpCaps, QueuePair, WorkRequest};
use crate::auth;
use crate::error::{Error, Result};
use crate::shared_socket::SharedSocket as Boot;
use crate::transport::{Access, Connection, FabricConfig, LocalMr, Op, RemoteRegion, Transport};

const RECV_TAG: u64 = 1 << 63;
/// Offset of the credit-source word in the control region; send slots follow.
const CTRL_HEADER: u64 = 64;

struct VT {
    cfg: FabricConfig,
    device: Rc<Device>,
    pd: Rc<ProtectionDomain>,
    listener: TcpListener,
    addr: SocketAddr,
    next_id: Cell<u32>,
    next_gen: Cell<u64>,
}

/// The verbs transport of one core.
pub struct VerbsTransport {
    inner: Rc<VT>,
}

/// A region registered with a [`VerbsTransport`] (an `ibv_mr`).
pub struct VerbsMr {
    mr: Rc<MemoryRegion>,
    desc: RemoteRegion,
}

impl LocalMr for VerbsMr {
    fn region(&self) -> &Region {
        self.mr.region()
    }
    fn descriptor(&self) -> RemoteRegion {
        self.desc
    }
}

impl VerbsTransport {
    /// Opens the device (`cfg.device`, else `$IBV_DEVICE`, else the first), allocates the
    /// PD and listens for peers on `addr`.
    pub fn bind(cfg: FabricConfig, addr: SocketAddr) -> Result<VerbsTransport> {
        cfg.validate()?;
        let name = cfg
            .device
            .clone()
            .or_else(|| std::env::var("IBV_DEVICE").ok());
        let gid_index = cfg.gid_index.or_else(|| {
            std::env::var("SOFTROCE_GID_INDEX")
                .ok()
                .and_then(|s| s.parse().ok())
        });
        let device = Device::open(name.as_deref(), cfg.port, gid_index)?;
        let pd = ProtectionDomain::new(&device)?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::Io(e.into()))?;
        let addr = listener.local_addr().map_err(|e| Error::Io(e.into()))?;
        Ok(VerbsTransport {
            inner: Rc::new(VT {
                cfg,
                device,
                pd,
                listener,
                addr,
                next_id: Cell::new(1),
                next_gen: Cell::new(1),
            }),
        })
    }

    /// The opened device.
    pub fn device(&self) -> &Rc<Device> {
        &self.inner.device
    }

    async fn establish(&self, mut stream: TcpStream, client: bool) -> Result<VerbsConnection> {
        let t = &self.inner;
        let cfg = &t.cfg;
        stream.set_nodelay(true).map_err(|e| Error::Io(e.into()))?;
        stream
            .set_read_timeout(Some(cfg.handshake_timeout))
            .map_err(|e| Error::Io(e.into()))?;
        // 1. authenticate before anything about the QP or memory is said
        if client {
            auth::client(&mut stream, &cfg.secret, auth::backend::VERBS).await?;
        } else {
            auth::server(&mut stream, &cfg.secret, auth::backend::VERBS).await?;
        }
        // 2. resources: CQ, QP, control region (credit source + send slots + receive
        //    slots, local only) and the credit word (remote-writable)
        let depth = cfg.recv_depth as u64;
        let max_msg = cfg.max_message as u64;
        let sq_depth = cfg.sq_depth;
        // (registrations first, so that on an error below the QP is dropped before them)
        let ctrl_region = Region::new(
            "augur-fabric-ctrl",
            (CTRL_HEADER + 2 * depth * max_msg) as usize,
        )?;
        let ctrl = Rc::new(MemoryRegion::register(&t.pd, &ctrl_region, Access::LOCAL)?);
        let credit_region = Region::new("augur-fabric-credit", 4096)?;
        let credit = Rc::new(MemoryRegion::register(
            &t.pd,
            &credit_region,
            Access {
                remote_read: false,
                remote_write: true,
            },
        )?);
        let cq = CompletionQueue::new(&t.device, sq_depth + cfg.recv_depth + 16)?;
        let qp = QueuePair::new(
            &t.pd,
            &cq,
            QpCaps {
                max_send_wr: sq_depth,
                max_recv_wr: cfg.recv_depth,
                max_inline: cfg.max_inline,
            },
        )?;
        qp.to_init()?;
        let recv_base = CTRL_HEADER + depth * max_msg;
        for i in 0..depth {
            // SAFETY: the control MR lives in the connection, which drops the QP first.
            unsafe {
                qp.post_recv(
                    RECV_TAG | i,
                    Local {
                        mr: &ctrl,
                        offset: recv_base + i * max_msg,
                        len: max_msg as u32,
                    },
                )?
            };
        }
        let psn = rand::thread_rng().gen::<u32>() & 0x00ff_ffff;
        let ours = Endpoint {
            qpn: qp.qpn(),
            psn,
            credit_rkey: credit.rkey(),
            recv_depth: cfg.recv_depth,
            max_message: cfg.max_message,
            lid: t.device.lid(),
            mtu: t.device.active_mtu() as u8,
            gid: t.device.gid(),
            credit_addr: credit.addr(),
        };
        // 3. exchange endpoints, connect the QP, barrier
        let peer = connect::exchange(&mut stream, &ours).await?;
        qp.to_rtr(&PeerPath {
            qpn: peer.qpn,
            psn: peer.psn,
            gid: peer.gid,
            lid: peer.lid,
            mtu: (peer.mtu as u32).min(t.device.active_mtu()),
        })?;
        qp.to_rts(psn)?;
        connect::ready(&mut stream).await?;
        stream
            .set_read_timeout(None)
            .map_err(|e| Error::Io(e.into()))?;
        let sq_depth = qp.caps().max_send_wr.max(4);
        let max_inline = qp.caps().max_inline as usize;
        let inner = Rc::new(VInner {
            qp,
            state: RefCell::new(VState {
                free_slots: (0..depth as usize).collect(),
                ..VState::default()
            }),
            graveyard: RefCell::new(Vec::new()),
            ctrl,
            credit,
            cq,
            peer,
            sq_depth,
            max_inline,
            depth,
            max_msg,
            budget: cfg.poll_budget.max(1) as usize,
            spin: cfg.spin_polls.max(1),
            scratch: RefCell::new(Vec::with_capacity(POLL_BATCH)),
            max_wr_bytes: cfg.max_wr_bytes as u64,
            boot: Boot::new(stream),
        });
        // 4. watch the bootstrap connection: its loss means the peer is gone
        let weak = Rc::downgrade(&inner);
        let mut boot = inner.boot.clone();
        glommio::spawn_local(async move {
            let mut b = [0u8; 1];
            let why = match boot.read(&mut b).await {
                Ok(0) => "peer closed the bootstrap connection".to_string(),
                Ok(_) => "unexpected data on the bootstrap connection".to_string(),
                Err(e) => format!("bootstrap connection failed: {e}"),
            };
            if let Some(c) = weak.upgrade() {
                c.fail(&why);
            }
        })
        .detach();
        Ok(VerbsConnection { inner })
    }
}

impl Transport for VerbsTransport {
    type Mr = VerbsMr;
    type Conn = VerbsConnection;

    fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn register(&self, region: &Region, access: Access) -> Result<VerbsMr> {
        let mr = MemoryRegion::register(&self.inner.pd, region, access)?;
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id.wrapping_add(1).max(1));
        let generation = self.inner.next_gen.get();
        self.inner.next_gen.set(generation + 1);
        let desc = RemoteRegion {
            addr: mr.addr(),
            len: region.len() as u64,
            rkey: mr.rkey(),
            region_id: id,
            generation,
        };
        Ok(VerbsMr {
            mr: Rc::new(mr),
            desc,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<VerbsConnection> {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Io(e.into()))?;
        self.establish(s, true).await
    }

    async fn accept(&self) -> Result<VerbsConnection> {
        let s = self
            .inner
            .listener
            .accept()
            .await
            .map_err(|e| Error::Io(e.into()))?;
        self.establish(s, false).await
    }
}

struct OpSlot {
    /// Signaled work requests of this op not completed yet.
    remaining: u32,
    err: Option<Error>,
    /// Registrations the NIC may still touch for this op.
    keep: Vec<Rc<MemoryRegion>>,
    /// Send slot to free on completion.
    slot: Option<usize>,
    abandoned: bool,
    /// Still posting groups: not complete even if `remaining` is 0.
    posting: bool,
}

#[derive(Clone, Copy)]
struct WrInfo {
    op: u64,
    covers: u32,
    signaled: bool,
}

#[derive(Default)]
struct VState {
    failed: Option<String>,
    next_wr: u64,
    next_op: u64,
    wrs: BTreeMap<u64, WrInfo>,
    ops: HashMap<u64, OpSlot>,
    sq_used: u32,
    since_signaled: u32,
    inbox: VecDeque<Vec<u8>>,
    sent: u64,
    consumed: u64,
    consumed_reported: u64,
    free_slots: Vec<usize>,
}

struct VInner {
    // Field order is drop order: the QP goes first, so the NIC stops touching memory
    // before any registration kept below is released.
    qp: QueuePair,
    state: RefCell<VState>,
    graveyard: RefCell<Vec<Rc<MemoryRegion>>>,
    ctrl: Rc<MemoryRegion>,
    credit: Rc<MemoryRegion>,
    cq: Rc<CompletionQueue>,
    peer: Endpoint,
    sq_depth: u32,
    max_inline: usize,
    depth: u64,
    max_msg: u64,
    budget: usize,
    spin: u32,
    scratch: RefCell<Vec<Completion>>,
    max_wr_bytes: u64,
    boot: Boot,
}

/// An owned work request (buffers referenced through kept registrations).
enum Wr {
    Rdma {
        read: bool,
        mr: Rc<MemoryRegion>,
        offset: u64,
        len: u32,
        remote_addr: u64,
        rkey: u32,
    },
    CreditWrite,
    Send {
        slot: usize,
        len: u32,
    },
}

impl VInner {
    fn fail(&self, why: &str) {
        {
            let mut st = self.state.borrow_mut();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(why.to_string());
            let mut grave = self.graveyard.borrow_mut();
            for op in st.ops.values_mut() {
                if op.err.is_none() {
                    op.err = Some(Error::Disconnected(why.to_string()));
                }
                // the NIC may still touch these until the QP is destroyed
                grave.append(&mut op.keep);
            }
        }
        // (no wakers to call: waiting futures poll the CQ themselves and see `failed`)
        tracing::debug!(why, "verbs connection failed");
        let _ = self.qp.to_error();
        if let Ok(s) = self.boot.0.try_borrow() {
            let _ = futures_lite::future::block_on(s.shutdown(Shutdown::Both));
        }
    }

    /// Busy-polls: up to `spin` rounds of `progress` until `check` yields a result; then
    /// wakes itself and yields to the executor (other tasks run before the next round).
    fn spin_poll<R>(
        &self,
        cx: &mut Context<'_>,
        mut check: impl FnMut(&VInner) -> Option<R>,
    ) -> Poll<R> {
        for _ in 0..self.spin {
            self.progress();
            if let Some(r) = check(self) {
                return Poll::Ready(r);
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Polls the CQ (up to the budget) and applies the completions.
    fn progress(&self) {
        let mut comps = std::mem::take(&mut *self.scratch.borrow_mut());
        comps.clear();
        let mut left = self.budget;
        while left > 0 {
            match self.cq.poll(left.min(POLL_BATCH), &mut comps) {
                Ok(0) => break,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) => {
                    self.fail(&e.to_string());
                    return;
                }
            }
        }
        for c in comps.drain(..) {
            if c.wr_id & RECV_TAG != 0 {
                self.on_recv(c);
            } else {
                self.on_send(c);
            }
        }
        *self.scratch.borrow_mut() = comps;
    }

    fn on_recv(&self, c: Completion) {
        let idx = c.wr_id & !RECV_TAG;
        if !c.ok() {
            if self.state.borrow().failed.is_none() {
                self.fail(&format!("receive failed: {}", c.status_str()));
            }
            return;
        }
        let off = CTRL_HEADER + self.depth * self.max_msg + idx * self.max_msg;
        let mut msg = vec![0u8; (c.byte_len as u64).min(self.max_msg) as usize];
        if self.ctrl.region().read_at(off, &mut msg).is_err() {
            return;
        }
        let overflow = {
            let mut st = self.state.borrow_mut();
            st.inbox.push_back(msg);
            st.inbox.len() as u64 > self.depth
        };
        if overflow {
            self.fail("peer sent without credit");
            return;
        }
        // the buffer is free again (the message was copied out)
        // SAFETY: the control MR lives as long as the connection, which drops the QP first.
        let r = unsafe {
            self.qp.post_recv(
                c.wr_id,
                Local {
                    mr: &self.ctrl,
                    offset: off,
                    len: self.max_msg as u32,
                },
            )
        };
        if let Err(e) = r {
            self.fail(&e.to_string());
        }
    }

    fn on_send(&self, c: Completion) {
        let mut st = self.state.borrow_mut();
        let Some(info) = st.wrs.get(&c.wr_id).copied() else {
            return;
        };
        // RC completes in order: everything posted before this request is retired too
        let rest = st.wrs.split_off(&(c.wr_id + 1));
        st.wrs = rest;
        if info.signaled && c.ok() {
            st.sq_used = st.sq_used.saturating_sub(info.covers);
        }
        let mut fail = None;
        if let Some(op) = st.ops.get_mut(&info.op) {
            if !c.ok() {
                if op.err.is_none() {
                    op.err = Some(Error::Verbs(format!(
                        "work request failed: {} (the QP is in the error state; reconnect)",
                        c.status_str()
                    )));
                }
                fail = Some(c.status_str());
            } else if info.signaled {
                op.remaining = op.remaining.saturating_sub(1);
            }
            if op.err.is_some() {
                self.graveyard.borrow_mut().append(&mut op.keep);
            }
            if (op.remaining == 0 && !op.posting) || op.err.is_some() {
                let slot = op.slot.take();
                let abandoned = op.abandoned;
                if let Some(s) = slot {
                    st.free_slots.push(s);
                }
                if abandoned {
                    // nobody waits: drop it (and the registrations it kept) now
                    st.ops.remove(&info.op);
                }
            }
        } else if !c.ok() {
            fail = Some(c.status_str());
        }
        drop(st);
        if let Some(why) = fail {
            if self.state.borrow().failed.is_none() {
                self.fail(&format!("work request failed: {why}"));
            }
        }
    }

    /// Posts `wrs` for op `op` in groups that fit the send queue; the last of each group is
    /// signaled. Waits (polling) for room.
    async fn post(&self, op: u64, wrs: Vec<Wr>) -> Result<()> {
        let group_max = (self.sq_depth / 2).max(1) as usize;
        let mut it = wrs.into_iter().peekable();
        while it.peek().is_some() {
            let group: Vec<Wr> = it.by_ref().take(group_max).collect();
            let g = group.len() as u32;
            // wait for room in the send queue
            futures_lite::future::poll_fn(|cx| {
                self.spin_poll(cx, |c| {
                    let st = c.state.borrow();
                    if let Some(why) = &st.failed {
                        return Some(Err(Error::Disconnected(why.clone())));
                    }
                    (st.sq_used + g <= c.sq_depth).then_some(Ok(()))
                })
            })
            .await?;
            self.post_group(op, &group)?;
        }
        Ok(())
    }

    fn post_group(&self, op: u64, group: &[Wr]) -> Result<()> {
        let mut st = self.state.borrow_mut();
        let n = group.len();
        let mut posts = Vec::with_capacity(n);
        let mut infos = Vec::with_capacity(n);
        let mut signaled_count = 0;
        for (i, _) in group.iter().enumerate() {
            let wr_id = st.next_wr;
            st.next_wr += 1;
            st.since_signaled += 1;
            let signaled = i + 1 == n || st.since_signaled >= self.sq_depth / 4;
            let covers = if signaled {
                std::mem::take(&mut st.since_signaled)
            } else {
                0
            };
            if signaled && op != 0 {
                signaled_count += 1;
            }
            posts.push(Post { wr_id, signaled });
            infos.push((
                wr_id,
                WrInfo {
                    op,
                    covers,
                    signaled,
                },
            ));
        }
        let wrs: Vec<(WorkRequest<'_>, Post)> = group
            .iter()
            .zip(posts.iter())
            .map(|(w, p)| {
                let wr = match w {
                    Wr::Rdma {
                        read,
                        mr,
                        offset,
                        len,
                        remote_addr,
                        rkey,
                    } => {
                        let local = Local {
                            mr,
                            offset: *offset,
                            len: *len,
                        };
                        if *read {
                            WorkRequest::Read {
                                local,
                                remote_addr: *remote_addr,
                                rkey: *rkey,
                            }
                        } else {
                            WorkRequest::Write {
                                local,
                                remote_addr: *remote_addr,
                                rkey: *rkey,
                            }
                        }
                    }
                    Wr::CreditWrite => WorkRequest::Write {
                        local: Local {
                            mr: &self.ctrl,
                            offset: 0,
                            len: 8,
                        },
                        remote_addr: self.peer.credit_addr,
                        rkey: self.peer.credit_rkey,
                    },
                    Wr::Send { slot, len } => WorkRequest::Send {
                        local: Local {
                            mr: &self.ctrl,
                            offset: CTRL_HEADER + *slot as u64 * self.max_msg,
                            len: *len,
                        },
                    },
                };
                (wr, *p)
            })
            .collect();
        // SAFETY: every local buffer belongs to an MR kept alive until completion: the
        // control MR by the connection, user MRs by the op's `keep` list (moved to the
        // graveyard if the op fails early); the QP is dropped before both.
        unsafe { self.qp.post_send(&wrs) }?;
        st.sq_used += n as u32;
        for (id, info) in infos {
            st.wrs.insert(id, info);
        }
        if let Some(o) = st.ops.get_mut(&op) {
            o.remaining += signaled_count;
        }
        Ok(())
    }

    fn new_op(&self, keep: Vec<Rc<MemoryRegion>>, slot: Option<usize>) -> u64 {
        let mut st = self.state.borrow_mut();
        st.next_op += 1;
        let id = st.next_op;
        st.ops.insert(
            id,
            OpSlot {
                remaining: 0,
                err: None,
                keep,
                slot,
                abandoned: false,
                posting: true,
            },
        );
        id
    }

    async fn wait_op(&self, id: u64) -> Result<()> {
        let guard = OpGuard { conn: self, id };
        let r = futures_lite::future::poll_fn(|cx| {
            self.spin_poll(cx, |c| {
                let mut st = c.state.borrow_mut();
                let Some(op) = st.ops.get_mut(&id) else {
                    return Some(Err(Error::Disconnected("operation lost".into())));
                };
                if let Some(e) = op.err.take() {
                    st.ops.remove(&id);
                    return Some(Err(e));
                }
                if op.remaining == 0 {
                    st.ops.remove(&id);
                    return Some(Ok(()));
                }
                None
            })
        })
        .await;
        std::mem::forget(guard);
        r
    }

    fn check_alive(&self) -> Result<()> {
        match &self.state.borrow().failed {
            Some(why) => Err(Error::Disconnected(why.clone())),
            None => Ok(()),
        }
    }

    async fn rdma(&self, ops: &[Op<'_, VerbsMr>], read: bool) -> Result<()> {
        for op in ops {
            op.check()?;
        }
        self.check_alive()?;
        let mut wrs = Vec::new();
        let mut keep: Vec<Rc<MemoryRegion>> = Vec::new();
        for op in ops {
            if !keep.iter().any(|k| Rc::ptr_eq(k, &op.local.mr)) {
                keep.push(op.local.mr.clone());
            }
            let mut pos = 0;
            while pos < op.len {
                let n = (op.len - pos).min(self.max_wr_bytes);
                wrs.push(Wr::Rdma {
                    read,
                    mr: op.local.mr.clone(),
                    offset: op.local_offset + pos,
                    len: n as u32,
                    remote_addr: op.remote.addr + op.remote_offset + pos,
                    rkey: op.remote.rkey,
                });
                pos += n;
            }
        }
        let id = self.new_op(keep, None);
        if let Err(e) = self.post(id, wrs).await {
            self.abandon(id);
            return Err(e);
        }
        self.posted(id);
        self.wait_op(id).await
    }

    fn posted(&self, id: u64) {
        if let Some(op) = self.state.borrow_mut().ops.get_mut(&id) {
            op.posting = false;
        }
    }

    fn abandon(&self, id: u64) {
        let mut st = self.state.borrow_mut();
        let remove = match st.ops.get_mut(&id) {
            Some(op) if op.remaining == 0 || op.err.is_some() => true,
            Some(op) => {
                op.abandoned = true;
                op.posting = false;
                false
            }
            None => false,
        };
        if remove {
            if let Some(mut op) = st.ops.remove(&id) {
                if let Some(s) = op.slot.take() {
                    st.free_slots.push(s);
                }
                self.graveyard.borrow_mut().append(&mut op.keep);
            }
        }
    }
}

struct OpGuard<'a> {
    conn: &'a VInner,
    id: u64,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        // the future was dropped before completion: let the completion clean up
        self.conn.abandon(self.id);
    }
}

/// A verbs connection (one RC QP). Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct VerbsConnection {
    inner: Rc<VInner>,
}

impl VerbsConnection {
    /// Moves the QP to the error state and drops the bootstrap connection, as a crashed
    /// peer would look. For tests of failure handling.
    pub fn abort(&self) {
        self.inner.fail("connection aborted locally");
    }

    /// The peer's QP number.
    pub fn peer_qpn(&self) -> u32 {
        self.inner.peer.qpn
    }
}

impl Connection for VerbsConnection {
    type Mr = VerbsMr;

    async fn read_batch(&self, ops: &[Op<'_, VerbsMr>]) -> Result<()> {
        self.inner.rdma(ops, true).await
    }

    async fn write_batch(&self, ops: &[Op<'_, VerbsMr>]) -> Result<()> {
        self.inner.rdma(ops, false).await
    }

    async fn send(&self, msg: &[u8]) -> Result<()> {
        let c = &self.inner;
        let max = c.peer.max_message as usize;
        if msg.len() > max {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max,
            });
        }
        // a credit (and, for non-inline messages, a send slot)
        let inline = msg.len() <= c.max_inline && !msg.is_empty();
        let slot = futures_lite::future::poll_fn(|cx| {
            c.spin_poll(cx, |c| {
                let mut st = c.state.borrow_mut();
                if let Some(why) = &st.failed {
                    return Some(Err(Error::Disconnected(why.clone())));
                }
                let peer_consumed = c.credit.region().load_u64(0).unwrap_or(0);
                let has_credit = st.sent.saturating_sub(peer_consumed) < c.peer.recv_depth as u64;
                let room = st.sq_used < c.sq_depth;
                if has_credit && room {
                    if inline {
                        st.sent += 1;
                        return Some(Ok(None));
                    }
                    if let Some(s) = st.free_slots.pop() {
                        st.sent += 1;
                        return Some(Ok(Some(s)));
                    }
                }
                None
            })
        })
        .await?;
        match slot {
            None => {
                // inline: unsignaled, the payload is copied into the WQE by post_send
                let mut st = c.state.borrow_mut();
                let wr_id = st.next_wr;
                st.next_wr += 1;
                st.since_signaled += 1;
                let signaled = st.since_signaled >= c.sq_depth / 4;
                let covers = if signaled {
                    std::mem::take(&mut st.since_signaled)
                } else {
                    0
                };
                // SAFETY: inline data is copied during the call; no buffer outlives it.
                unsafe {
                    c.qp.post_send(&[(
                        WorkRequest::SendInline { data: msg },
                        Post { wr_id, signaled },
                    )])
                }?;
                st.sq_used += 1;
                st.wrs.insert(
                    wr_id,
                    WrInfo {
                        op: 0,
                        covers,
                        signaled,
                    },
                );
                Ok(())
            }
            Some(s) => {
                let off = CTRL_HEADER + s as u64 * c.max_msg;
                c.ctrl.region().write_at(off, msg)?;
                let id = c.new_op(Vec::new(), Some(s));
                if let Err(e) = c
                    .post(
                        id,
                        vec![Wr::Send {
                            slot: s,
                            len: msg.len() as u32,
                        }],
                    )
                    .await
                {
                    c.abandon(id);
                    return Err(e);
                }
                c.posted(id);
                c.wait_op(id).await
            }
        }
    }

    async fn recv(&self) -> Result<Vec<u8>> {
        let c = &self.inner;
        let msg = futures_lite::future::poll_fn(|cx| {
            c.spin_poll(cx, |c| {
                let mut st = c.state.borrow_mut();
                if let Some(m) = st.inbox.pop_front() {
                    st.consumed += 1;
                    return Some(Ok(m));
                }
                st.failed
                    .as_ref()
                    .map(|why| Err(Error::Disconnected(why.clone())))
            })
        })
        .await?;
        let report = {
            let mut st = c.state.borrow_mut();
            let batch = (c.depth / 2).max(1);
            if st.consumed - st.consumed_reported >= batch {
                st.consumed_reported = st.consumed;
                Some(st.consumed)
            } else {
                None
            }
        };
        if let Some(n) = report {
            // the word is only ever increased, so a later value overwriting it while an
            // earlier write is in flight is harmless
            c.ctrl.region().write_at(0, &n.to_le_bytes())?;
            c.post(0, vec![Wr::CreditWrite]).await?;
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

impl Drop for VInner {
    fn drop(&mut self) {
        if let Ok(s) = self.boot.0.try_borrow() {
            let _ = futures_lite::future::block_on(s.shutdown(Shutdown::Both));
        }
    }
}
