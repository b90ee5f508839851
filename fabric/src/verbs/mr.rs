//! Memory registration of existing regions.

use std::rc::Rc;

use rdma_sys::*;

use super::memory::Region;
use super::pd::ProtectionDomain;
use crate::error::{Error, Result};
use crate::transport::Access;

/// A registered (pinned) region. Holds a clone of the [`Region`], so the memory cannot be
/// unmapped while the NIC may access it, and the PD, so the PD outlives it.
pub struct MemoryRegion {
    mr: *mut ibv_mr,
    region: Region,
    _pd: Rc<ProtectionDomain>,
}

impl MemoryRegion {
    /// Registers all of `region` in `pd`. Local write is always allowed (a region can be
    /// the target of our own READs); remote read/write as `access` says.
    pub fn register(
        pd: &Rc<ProtectionDomain>,
        region: &Region,
        access: Access,
    ) -> Result<MemoryRegion> {
        let mut flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
        if access.remote_read {
            flags |= ibv_access_flags::IBV_ACCESS_REMOTE_READ;
        }
        if access.remote_write {
            flags |= ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        }
        // SAFETY: the range is the whole live mapping of `region`, which we keep alive (the
        // clone below) until after ibv_dereg_mr; the PD is alive (we hold it).
        let mr = unsafe {
            ibv_reg_mr(
                pd.as_ptr(),
                region.as_ptr().cast(),
                region.len(),
                flags.0 as i32,
            )
        };
        if mr.is_null() {
            let e = std::io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::ENOMEM)
                || e.raw_os_error() == Some(libc::EPERM)
            {
                " (raise `ulimit -l`: registration pins memory)"
            } else {
                ""
            };
            return Err(Error::Verbs(format!(
                "ibv_reg_mr of {} bytes: {e}{hint}",
                region.len()
            )));
        }
        Ok(MemoryRegion {
            mr,
            region: region.clone(),
            _pd: pd.clone(),
        })
    }

    /// Local key (for scatter/gather entries of our own work requests).
    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration returned by ibv_reg_mr.
        unsafe { (*self.mr).lkey }
    }

    /// Remote key (for peers' one-sided operations).
    pub fn rkey(&self) -> u32 {
        // SAFETY: as in `lkey`.
        unsafe { (*self.mr).rkey }
    }

    /// Start address of the registered memory.
    pub fn addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// The registered region.
    pub fn region(&self) -> &Region {
        &self.region
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered once, deregistered once; the transport keeps an Rc of every MR
        // used by an outstanding work request until its completion or until the QP is gone.
        let rc = unsafe { ibv_dereg_mr(self.mr) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_dereg_mr failed");
        }
    }
}
