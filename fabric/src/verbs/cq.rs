//! Completion queue, polled by the owning core.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::rc::Rc;

use rdma_sys::*;

use super::device::Device;
use crate::error::{Error, Result};

/// One work completion, copied out of the CQ.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The work request id given when posting.
    pub wr_id: u64,
    /// `IBV_WC_SUCCESS` (0) or an error status.
    pub status: u32,
    /// `ibv_wc_opcode` value.
    pub opcode: u32,
    /// Bytes received (receive completions).
    pub byte_len: u32,
}

impl Completion {
    /// True when the work request succeeded.
    pub fn ok(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_SUCCESS
    }

    /// libibverbs' text for the status.
    pub fn status_str(&self) -> String {
        // SAFETY: ibv_wc_status_str returns a static NUL-terminated string for any value.
        unsafe { CStr::from_ptr(ibv_wc_status_str(self.status)) }
            .to_string_lossy()
            .into_owned()
    }

    /// True for receive completions.
    pub fn is_recv(&self) -> bool {
        self.opcode & ibv_wc_opcode::IBV_WC_RECV != 0
    }
}

/// Most completions taken out per `ibv_poll_cq` call.
pub const POLL_BATCH: usize = 32;

/// A completion queue. Holds its device.
pub struct CompletionQueue {
    cq: *mut ibv_cq,
    depth: u32,
    _device: Rc<Device>,
}

impl CompletionQueue {
    /// Creates a CQ with room for `depth` completions (no completion channel: it is polled).
    pub fn new(device: &Rc<Device>, depth: u32) -> Result<Rc<CompletionQueue>> {
        let depth = depth.min(device.max_cqe().max(1));
        // SAFETY: open context (kept alive by the Rc we store); no channel, no context.
        let cq = unsafe {
            ibv_create_cq(
                device.as_ptr(),
                depth as i32,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if cq.is_null() {
            return Err(Error::Verbs(format!(
                "ibv_create_cq({depth}): {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Rc::new(CompletionQueue {
            cq,
            depth,
            _device: device.clone(),
        }))
    }

    /// Takes up to `max` (≤ [`POLL_BATCH`]) completions, appending them to `out`; returns
    /// how many.
    pub fn poll(&self, max: usize, out: &mut Vec<Completion>) -> Result<usize> {
        let mut wcs: [MaybeUninit<ibv_wc>; POLL_BATCH] =
            [const { MaybeUninit::uninit() }; POLL_BATCH];
        let max = max.clamp(1, POLL_BATCH);
        // SAFETY: the CQ is alive; `wcs` has room for `max` entries, which ibv_poll_cq
        // fills (the first `n` of them).
        let n = unsafe { ibv_poll_cq(self.cq, max as i32, wcs.as_mut_ptr().cast()) };
        if n < 0 {
            return Err(Error::Verbs(format!("ibv_poll_cq returned {n}")));
        }
        for wc in wcs.iter().take(n as usize) {
            // SAFETY: the first `n` entries were initialised by ibv_poll_cq.
            let wc = unsafe { wc.assume_init_ref() };
            out.push(Completion {
                wr_id: wc.wr_id,
                status: wc.status,
                opcode: wc.opcode,
                byte_len: wc.byte_len,
            });
        }
        Ok(n as usize)
    }

    /// Capacity.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_cq {
        self.cq
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: every QP using this CQ holds an Rc of it, so none is left; destroyed once.
        let rc = unsafe { ibv_destroy_cq(self.cq) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_destroy_cq failed");
        }
    }
}
