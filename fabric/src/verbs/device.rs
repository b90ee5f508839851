//! Device discovery, the device context, port state and RoCEv2 GID selection.

use std::ffi::CStr;
use std::rc::Rc;

use rdma_sys::*;

use crate::error::{Error, Result};

/// Names of the RDMA devices present (empty when there are none, e.g. no `ib_uverbs`).
pub fn list() -> Vec<String> {
    let mut n: i32 = 0;
    // SAFETY: ibv_get_device_list writes the count and returns a NULL-terminated array
    // (or NULL), which we free below.
    let devs = unsafe { ibv_get_device_list(&mut n) };
    if devs.is_null() {
        return Vec::new();
    }
    let mut names = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: `i < n`, so the entry is a valid device pointer of the list.
        let d = unsafe { *devs.add(i) };
        // SAFETY: ibv_get_device_name returns a NUL-terminated string owned by the device.
        let name = unsafe { CStr::from_ptr(ibv_get_device_name(d)) };
        names.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: the list came from ibv_get_device_list and is freed once.
    unsafe { ibv_free_device_list(devs) };
    names
}

/// A GID (16 bytes; for RoCEv2 over IPv4 an IPv4-mapped IPv6 address).
pub type Gid = [u8; 16];

/// An opened device (context) with one chosen port and GID. Shared (`Rc`) by everything
/// created on it; closed when the last user is gone.
pub struct Device {
    ctx: *mut ibv_context,
    name: String,
    port: u8,
    gid_index: u8,
    gid: Gid,
    lid: u16,
    active_mtu: ibv_mtu::Type,
    max_qp_wr: u32,
    max_qp_rd_atom: u8,
    max_cqe: u32,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("gid_index", &self.gid_index)
            .field("gid", &std::net::Ipv6Addr::from(self.gid))
            .finish()
    }
}

fn sysfs_gid_type(dev: &str, port: u8, index: u32) -> Option<String> {
    let p = format!("/sys/class/infiniband/{dev}/ports/{port}/gid_attrs/types/{index}");
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Device {
    /// Opens the device called `name` (or the first one), checks that `port` is active and
    /// picks the GID: `gid_index` if given, else the first RoCEv2 GID that is an IPv4-mapped
    /// address (the usual choice on RoCE), else the first RoCEv2 GID, else index 0.
    pub fn open(name: Option<&str>, port: u8, gid_index: Option<u8>) -> Result<Rc<Device>> {
        let mut n: i32 = 0;
        // SAFETY: see `list`.
        let devs = unsafe { ibv_get_device_list(&mut n) };
        if devs.is_null() || n <= 0 {
            if !devs.is_null() {
                // SAFETY: list from ibv_get_device_list, freed once.
                unsafe { ibv_free_device_list(devs) };
            }
            return Err(Error::NoDevice(
                "no RDMA devices (is ib_uverbs loaded?)".into(),
            ));
        }
        let mut chosen = None;
        for i in 0..n as usize {
            // SAFETY: `i < n`: a valid entry of the list.
            let d = unsafe { *devs.add(i) };
            // SAFETY: NUL-terminated name owned by the device.
            let dn = unsafe { CStr::from_ptr(ibv_get_device_name(d)) }
                .to_string_lossy()
                .into_owned();
            if name.is_none() || name == Some(dn.as_str()) {
                chosen = Some((d, dn));
                break;
            }
        }
        let Some((d, dn)) = chosen else {
            // SAFETY: list from ibv_get_device_list, freed once.
            unsafe { ibv_free_device_list(devs) };
            return Err(Error::NoDevice(format!("no RDMA device named {name:?}")));
        };
        // SAFETY: `d` is a device of the still-allocated list; the context stays valid
        // after the list is freed (libibverbs reference-counts devices).
        let ctx = unsafe { ibv_open_device(d) };
        // SAFETY: list from ibv_get_device_list, freed once; `d` no longer used.
        unsafe { ibv_free_device_list(devs) };
        if ctx.is_null() {
            return Err(Error::Verbs(format!(
                "ibv_open_device({dn}): {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut dev = Device {
            ctx,
            name: dn,
            port,
            gid_index: 0,
            gid: [0; 16],
            lid: 0,
            active_mtu: ibv_mtu::IBV_MTU_1024,
            max_qp_wr: 0,
            max_qp_rd_atom: 0,
            max_cqe: 0,
        };
        // From here on `dev` owns ctx (closed by Drop on any error).
        // SAFETY: all-zero is a valid ibv_device_attr (plain C struct).
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open; attr is a writable ibv_device_attr.
        if unsafe { ibv_query_device(ctx, &mut attr) } != 0 {
            return Err(Error::Verbs("ibv_query_device failed".into()));
        }
        dev.max_qp_wr = attr.max_qp_wr.max(0) as u32;
        dev.max_qp_rd_atom = attr.max_qp_rd_atom.clamp(0, 255) as u8;
        dev.max_cqe = attr.max_cqe.max(0) as u32;
        // SAFETY: all-zero is a valid ibv_port_attr.
        let mut pattr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open; pattr is writable; rdma-sys' wrapper passes its size.
        if unsafe { ___ibv_query_port(ctx, port, &mut pattr) } != 0 {
            return Err(Error::Verbs(format!(
                "ibv_query_port({}, {port}) failed",
                dev.name
            )));
        }
        if pattr.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(Error::NoDevice(format!(
                "port {port} of {} is not active (state {})",
                dev.name, pattr.state
            )));
        }
        dev.lid = pattr.lid;
        dev.active_mtu = pattr.active_mtu;
        let gids = pattr.gid_tbl_len.max(0) as u32;
        let index = match gid_index {
            Some(i) => i,
            None => dev.pick_gid(gids)?,
        };
        dev.gid = dev.query_gid(index)?;
        dev.gid_index = index;
        tracing::debug!(device = %dev.name, port, gid_index = index, "opened RDMA device");
        Ok(Rc::new(dev))
    }

    fn query_gid(&self, index: u8) -> Result<Gid> {
        // SAFETY: all-zero is a valid ibv_gid (union of byte arrays / integers).
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open; gid is a writable ibv_gid.
        if unsafe { ibv_query_gid(self.ctx, self.port, index as i32, &mut gid) } != 0 {
            return Err(Error::Verbs(format!("ibv_query_gid(index {index}) failed")));
        }
        // SAFETY: every bit pattern of the union is a valid [u8; 16].
        Ok(unsafe { gid.raw })
    }

    fn pick_gid(&self, table_len: u32) -> Result<u8> {
        let mut first_v2 = None;
        for i in 0..table_len.min(256) {
            let Some(t) = sysfs_gid_type(&self.name, self.port, i) else {
                continue;
            };
            if !t.contains("v2") {
                continue;
            }
            let Ok(g) = self.query_gid(i as u8) else {
                continue;
            };
            if g == [0; 16] {
                continue;
            }
            if g[..10] == [0; 10] && g[10] == 0xff && g[11] == 0xff {
                return Ok(i as u8);
            }
            first_v2.get_or_insert(i as u8);
        }
        Ok(first_v2.unwrap_or(0))
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_context {
        self.ctx
    }

    /// Device name, e.g. `rxe0`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Port in use.
    pub fn port(&self) -> u8 {
        self.port
    }
    /// GID index in use.
    pub fn gid_index(&self) -> u8 {
        self.gid_index
    }
    /// GID in use.
    pub fn gid(&self) -> Gid {
        self.gid
    }
    /// LID of the port (0 on RoCE).
    pub fn lid(&self) -> u16 {
        self.lid
    }
    /// Active MTU of the port (`ibv_mtu` value: 1 = 256 ... 5 = 4096).
    pub fn active_mtu(&self) -> u32 {
        self.active_mtu
    }
    /// Largest work-queue depth.
    pub fn max_qp_wr(&self) -> u32 {
        self.max_qp_wr
    }
    /// Largest number of outstanding RDMA READs per QP.
    pub fn max_qp_rd_atom(&self) -> u8 {
        self.max_qp_rd_atom
    }
    /// Largest CQ.
    pub fn max_cqe(&self) -> u32 {
        self.max_cqe
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every PD/CQ holds an Rc<Device>, so none is left when this runs; the
        // context is closed exactly once.
        unsafe { ibv_close_device(self.ctx) };
    }
}
