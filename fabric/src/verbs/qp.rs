//! Reliable-connected queue pair: creation, the RESET → INIT → RTR → RTS state machine,
//! posting work-request lists (one doorbell per list) and receives.

use std::rc::Rc;

use rdma_sys::*;

use super::cq::CompletionQueue;
use super::device::Gid;
use super::mr::MemoryRegion;
use super::pd::ProtectionDomain;
use crate::error::{Error, Result};

/// Sizes asked for at creation; the device may round them (read back with [`QueuePair::caps`]).
#[derive(Clone, Copy, Debug)]
pub struct QpCaps {
    /// Send queue depth.
    pub max_send_wr: u32,
    /// Receive queue depth.
    pub max_recv_wr: u32,
    /// Largest inline payload.
    pub max_inline: u32,
}

/// What the peer told us in the handshake, needed for RTR.
#[derive(Clone, Copy, Debug)]
pub struct PeerPath {
    /// Peer QP number.
    pub qpn: u32,
    /// Peer's initial packet sequence number.
    pub psn: u32,
    /// Peer GID.
    pub gid: Gid,
    /// Peer LID (0 on RoCE).
    pub lid: u16,
    /// Path MTU (`ibv_mtu` value), the smaller of both sides'.
    pub mtu: u32,
}

/// A local buffer of a work request: `len` bytes at `offset` of a registered region.
#[derive(Clone, Copy)]
pub struct Local<'a> {
    /// The registration.
    pub mr: &'a MemoryRegion,
    /// Offset into it.
    pub offset: u64,
    /// Bytes.
    pub len: u32,
}

/// One send-queue work request.
#[derive(Clone, Copy)]
pub enum WorkRequest<'a> {
    /// RDMA READ of `local.len` bytes at `remote_addr` (rkey) into `local`.
    Read {
        /// Destination.
        local: Local<'a>,
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// RDMA WRITE of `local` to `remote_addr`.
    Write {
        /// Source.
        local: Local<'a>,
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// SEND of `local` (consumes one receive buffer on the peer).
    Send {
        /// Source.
        local: Local<'a>,
    },
    /// SEND of bytes copied into the work request at post time (`IBV_SEND_INLINE`):
    /// no registration needed, the buffer is free as soon as `post_send` returns.
    SendInline {
        /// Payload, at most [`QpCaps::max_inline`] bytes.
        data: &'a [u8],
    },
}

/// A posted work request's id and whether it generates a completion.
#[derive(Clone, Copy, Debug)]
pub struct Post {
    /// Id reported in the completion.
    pub wr_id: u64,
    /// Signaled (always completes) or not (completes only on error).
    pub signaled: bool,
}

/// An RC queue pair. Holds its PD and CQ, so neither can be destroyed before it.
pub struct QueuePair {
    qp: *mut ibv_qp,
    caps: QpCaps,
    port: u8,
    gid_index: u8,
    max_rd_atomic: u8,
    _cq: Rc<CompletionQueue>,
    _pd: Rc<ProtectionDomain>,
}

fn modify(
    qp: *mut ibv_qp,
    attr: &mut ibv_qp_attr,
    mask: ibv_qp_attr_mask,
    what: &str,
) -> Result<()> {
    // SAFETY: `qp` is a live QP (callers are methods of QueuePair); `attr` is a valid,
    // initialised attribute struct whose fields named by `mask` are set.
    let rc = unsafe { ibv_modify_qp(qp, attr, mask.0 as i32) };
    if rc != 0 {
        return Err(Error::Verbs(format!(
            "ibv_modify_qp to {what}: {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    Ok(())
}

fn zeroed_attr() -> ibv_qp_attr {
    // SAFETY: ibv_qp_attr is a plain C struct (integers, nested plain structs, unions of
    // integers) for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl QueuePair {
    /// Creates an RC QP (state RESET) using `cq` for both send and receive completions.
    pub fn new(
        pd: &Rc<ProtectionDomain>,
        cq: &Rc<CompletionQueue>,
        caps: QpCaps,
    ) -> Result<QueuePair> {
        let dev = pd.device();
        // SAFETY: all-zero is valid for this plain C struct; fields set below.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq.as_ptr();
        init.recv_cq = cq.as_ptr();
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0; // selective signaling
        init.cap.max_send_wr = caps.max_send_wr.min(dev.max_qp_wr());
        init.cap.max_recv_wr = caps.max_recv_wr.min(dev.max_qp_wr());
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        init.cap.max_inline_data = caps.max_inline;
        // SAFETY: PD and CQ are alive (and kept alive by the Rcs stored in the result).
        let qp = unsafe { ibv_create_qp(pd.as_ptr(), &mut init) };
        if qp.is_null() {
            return Err(Error::Verbs(format!(
                "ibv_create_qp: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(QueuePair {
            qp,
            caps: QpCaps {
                max_send_wr: init.cap.max_send_wr,
                max_recv_wr: init.cap.max_recv_wr,
                max_inline: init.cap.max_inline_data,
            },
            port: dev.port(),
            gid_index: dev.gid_index(),
            // as many outstanding RDMA READs as the device allows (perftest does the same)
            max_rd_atomic: dev.max_qp_rd_atom().max(1),
            _cq: cq.clone(),
            _pd: pd.clone(),
        })
    }

    /// QP number (sent to the peer).
    pub fn qpn(&self) -> u32 {
        // SAFETY: live QP.
        unsafe { (*self.qp).qp_num }
    }

    /// Actual capacities.
    pub fn caps(&self) -> QpCaps {
        self.caps
    }

    /// RESET → INIT: port, partition, remote access allowed by the QP (each MR still
    /// restricts its own access).
    pub fn to_init(&self) -> Result<()> {
        let mut a = zeroed_attr();
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = self.port;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
            .0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        modify(self.qp, &mut a, mask, "INIT")
    }

    /// INIT → RTR: the path to the peer (RoCEv2: global routing header with the peer's GID
    /// and our GID index), its QPN and PSN.
    pub fn to_rtr(&self, peer: &PeerPath) -> Result<()> {
        let mut a = zeroed_attr();
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = peer.mtu;
        a.dest_qp_num = peer.qpn;
        a.rq_psn = peer.psn;
        a.max_dest_rd_atomic = self.max_rd_atomic;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.dlid = peer.lid;
        a.ah_attr.sl = 0;
        a.ah_attr.src_path_bits = 0;
        a.ah_attr.port_num = self.port;
        a.ah_attr.grh.dgid = ibv_gid { raw: peer.gid };
        a.ah_attr.grh.sgid_index = self.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.flow_label = 0;
        a.ah_attr.grh.traffic_class = 0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        modify(self.qp, &mut a, mask, "RTR")
    }

    /// RTR → RTS: our PSN, ACK timeout (4.096 µs · 2^14 ≈ 67 ms) and 7 retries, so a dead
    /// peer surfaces as a retry-exceeded error completion in well under a second.
    pub fn to_rts(&self, psn: u32) -> Result<()> {
        let mut a = zeroed_attr();
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.sq_psn = psn;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.max_rd_atomic = self.max_rd_atomic;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        modify(self.qp, &mut a, mask, "RTS")
    }

    /// Any state → ERR: every outstanding work request is flushed with an error completion.
    pub fn to_error(&self) -> Result<()> {
        let mut a = zeroed_attr();
        a.qp_state = ibv_qp_state::IBV_QPS_ERR;
        modify(self.qp, &mut a, ibv_qp_attr_mask::IBV_QP_STATE, "ERR")
    }

    /// Posts `wrs` as one linked list with one `ibv_post_send` (one doorbell).
    ///
    /// # Safety
    ///
    /// Every `Local` buffer must stay registered and mapped until the request's completion
    /// has been polled (or the QP is destroyed): the NIC accesses it asynchronously. Bounds
    /// are checked here; lifetime beyond this call cannot be.
    pub unsafe fn post_send(&self, wrs: &[(WorkRequest<'_>, Post)]) -> Result<()> {
        if wrs.is_empty() {
            return Ok(());
        }
        let n = wrs.len();
        let mut sges: Vec<ibv_sge> = Vec::with_capacity(n);
        // SAFETY: ibv_send_wr is a plain C struct (pointers, integers, unions of those);
        // all-zero is valid. Filled in below.
        let mut list: Vec<ibv_send_wr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (wr, post) in wrs {
            let sge = match wr {
                WorkRequest::Read { local, .. }
                | WorkRequest::Write { local, .. }
                | WorkRequest::Send { local } => {
                    local.mr.region().check(local.offset, local.len as u64)?;
                    ibv_sge {
                        addr: local.mr.addr() + local.offset,
                        length: local.len,
                        lkey: local.mr.lkey(),
                    }
                }
                WorkRequest::SendInline { data } => {
                    if data.len() > self.caps.max_inline as usize {
                        return Err(Error::InvalidArgument("inline payload too large".into()));
                    }
                    ibv_sge {
                        addr: data.as_ptr() as u64,
                        length: data.len() as u32,
                        lkey: 0,
                    }
                }
            };
            let _ = post;
            sges.push(sge);
        }
        // `sges` is not resized from here on, so element addresses are stable.
        let base = list.as_mut_ptr();
        for (i, (wr, post)) in wrs.iter().enumerate() {
            let w = &mut list[i];
            w.wr_id = post.wr_id;
            w.sg_list = &mut sges[i];
            w.num_sge = 1;
            let mut flags = if post.signaled {
                ibv_send_flags::IBV_SEND_SIGNALED.0
            } else {
                0
            };
            match wr {
                WorkRequest::Read {
                    remote_addr, rkey, ..
                } => {
                    w.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                    w.wr.rdma = rdma_t {
                        remote_addr: *remote_addr,
                        rkey: *rkey,
                    };
                }
                WorkRequest::Write {
                    remote_addr, rkey, ..
                } => {
                    w.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                    w.wr.rdma = rdma_t {
                        remote_addr: *remote_addr,
                        rkey: *rkey,
                    };
                }
                WorkRequest::Send { .. } => w.opcode = ibv_wr_opcode::IBV_WR_SEND,
                WorkRequest::SendInline { .. } => {
                    w.opcode = ibv_wr_opcode::IBV_WR_SEND;
                    flags |= ibv_send_flags::IBV_SEND_INLINE.0;
                }
            }
            w.send_flags = flags;
            // SAFETY: `i + 1 < n` stays inside `list`, whose buffer is not reallocated.
            w.next = if i + 1 < n {
                unsafe { base.add(i + 1) }
            } else {
                std::ptr::null_mut()
            };
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the list, its SGEs and inline data are valid for the call (the provider
        // copies WQEs and inline payloads); registered buffers: see the function contract.
        let rc = unsafe { ibv_post_send(self.qp, base, &mut bad) };
        if rc != 0 {
            return Err(Error::Verbs(format!(
                "ibv_post_send: {}",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
    }

    /// Posts one receive buffer.
    ///
    /// # Safety
    ///
    /// `local` must stay registered and mapped until the receive completes (or the QP is
    /// destroyed).
    pub unsafe fn post_recv(&self, wr_id: u64, local: Local<'_>) -> Result<()> {
        local.mr.region().check(local.offset, local.len as u64)?;
        let mut sge = ibv_sge {
            addr: local.mr.addr() + local.offset,
            length: local.len,
            lkey: local.mr.lkey(),
        };
        let mut wr = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: wr and sge are valid for the call; the buffer: see the contract.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(Error::Verbs(format!(
                "ibv_post_recv: {}",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: destroyed once; after this the NIC no longer touches any buffer of ours,
        // which is why the transport drops QPs before the MRs it kept for them.
        let rc = unsafe { ibv_destroy_qp(self.qp) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_destroy_qp failed");
        }
    }
}
