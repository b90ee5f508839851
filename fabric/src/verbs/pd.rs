//! Protection domain: the scope of memory registrations and queue pairs.

use std::rc::Rc;

use rdma_sys::*;

use super::device::Device;
use crate::error::{Error, Result};

/// A protection domain. Holds its device open; every MR and QP holds the PD.
pub struct ProtectionDomain {
    pd: *mut ibv_pd,
    device: Rc<Device>,
}

impl ProtectionDomain {
    /// Allocates a PD on `device`.
    pub fn new(device: &Rc<Device>) -> Result<Rc<ProtectionDomain>> {
        // SAFETY: the context is open for as long as `device` lives, and we keep it.
        let pd = unsafe { ibv_alloc_pd(device.as_ptr()) };
        if pd.is_null() {
            return Err(Error::Verbs(format!(
                "ibv_alloc_pd: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Rc::new(ProtectionDomain {
            pd,
            device: device.clone(),
        }))
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_pd {
        self.pd
    }

    /// The device.
    pub fn device(&self) -> &Rc<Device> {
        &self.device
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: MRs and QPs hold an Rc of this PD, so none is left; freed once.
        let rc = unsafe { ibv_dealloc_pd(self.pd) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_dealloc_pd failed");
        }
    }
}
