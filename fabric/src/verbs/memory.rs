//! Memory regions: memfd-backed shared mappings that the fabric moves bytes between.
//!
//! This file lives under `verbs/` because it is the one other place where the fabric
//! touches raw memory (the project keeps every `unsafe` of the crate under
//! `fabric/src/verbs`), and because these are exactly the bytes a NIC reads and writes.
//! It is compiled with and without the `verbs` feature.
//!
//! A [`Region`] is an anonymous shared mapping of a memfd (never of a regular disk file:
//! Linux refuses long-term writable pins of file-backed pages, which RDMA registration
//! needs). The caller owns it; a transport only borrows it (by reference count) while it is
//! registered, so a registration can never outlive its memory.
//!
//! The contents of a registered region are shared with remote peers (one-sided READ and
//! WRITE) and with the kernel (socket I/O). They are therefore never exposed as long-lived
//! Rust references: callers copy in and out with [`Region::read_at`] / [`Region::write_at`],
//! and the transports create a slice only for the duration of one system call.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// `TMPFS_MAGIC` and `HUGETLBFS_MAGIC` from `<linux/magic.h>`: the file systems a memfd or a
/// `/dev/shm` file lives on.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

struct Inner {
    map: MmapRaw,
    _file: File,
    len: usize,
}

/// A shared memory region (memfd or shm file mapping). Cheap to clone (reference counted);
/// the mapping lives until the last clone is dropped.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("addr", &self.as_ptr())
            .field("len", &self.inner.len)
            .finish()
    }
}

impl Region {
    /// Creates a zero-filled region of `len` bytes backed by a fresh memfd.
    pub fn new(name: &str, len: usize) -> Result<Region> {
        if len == 0 {
            return Err(Error::InvalidArgument("a region cannot be empty".into()));
        }
        let cname = std::ffi::CString::new(name)
            .map_err(|_| Error::InvalidArgument("region name contains a NUL byte".into()))?;
        // SAFETY: memfd_create reads a valid NUL-terminated string and returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        Region::map(file, len)
    }

    /// Maps an existing memfd or shm (`/dev/shm`, hugetlbfs) file of at least `len` bytes,
    /// shared. Regular files on disk are refused.
    pub fn from_file(file: File, len: usize) -> Result<Region> {
        if len == 0 {
            return Err(Error::InvalidArgument("a region cannot be empty".into()));
        }
        // SAFETY: an all-zero statfs is a valid value of this plain C struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is valid for the call and `st` is a writable statfs.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        #[allow(clippy::unnecessary_cast)]
        let fs = st.f_type as i64;
        if fs != TMPFS_MAGIC && fs != HUGETLBFS_MAGIC {
            return Err(Error::InvalidArgument(
                "only memfd / shm (tmpfs, hugetlbfs) files can be regions, not disk files".into(),
            ));
        }
        if file.metadata()?.len() < len as u64 {
            return Err(Error::InvalidArgument(
                "file is shorter than the region".into(),
            ));
        }
        Region::map(file, len)
    }

    fn map(file: File, len: usize) -> Result<Region> {
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Region {
            inner: Arc::new(Inner {
                map,
                _file: file,
                len,
            }),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Never true (regions are not empty), present for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Start address of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_mut_ptr()
    }

    /// The backing file (memfd), e.g. to map it in another process.
    pub fn file(&self) -> &File {
        &self.inner._file
    }

    /// Checks that `[offset, offset + len)` lies inside the region.
    pub fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len as u64 => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                region_len: self.inner.len as u64,
            }),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        // SAFETY: the range was bounds-checked against the live mapping; `buf` is a distinct
        // Rust buffer, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        // SAFETY: bounds-checked range of the live, writable shared mapping; `data` is a
        // distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.as_ptr().add(offset as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        self.check(offset, len)?;
        // SAFETY: bounds-checked range of the live, writable shared mapping.
        unsafe { std::ptr::write_bytes(self.as_ptr().add(offset as usize), byte, len as usize) };
        Ok(())
    }

    /// A shared view of `[offset, offset + len)` for one send-type system call (the kernel
    /// copies straight out of the mapping). Crate-internal: see the module docs.
    pub(crate) fn io_slice(&self, offset: u64, len: u64) -> Result<&[u8]> {
        self.check(offset, len)?;
        // SAFETY: bounds-checked range of a mapping that lives as long as `self`. The bytes
        // may change under us (remote writers); they are only handed to the kernel, which
        // copies them, never interpreted as Rust values.
        Ok(unsafe { std::slice::from_raw_parts(self.as_ptr().add(offset as usize), len as usize) })
    }

    /// A mutable view of `[offset, offset + len)` for one receive-type system call (the
    /// kernel copies straight into the mapping). Crate-internal: see the module docs.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn io_slice_mut(&self, offset: u64, len: u64) -> Result<&mut [u8]> {
        self.check(offset, len)?;
        // SAFETY: bounds-checked range of a live shared writable mapping. The region is
        // treated as device memory: the transports create at most one such view per
        // in-flight operation, for the duration of one receive, and the caller has handed
        // that byte range to the operation (it must not read it until the op completes).
        Ok(unsafe {
            std::slice::from_raw_parts_mut(self.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// Reads a little-endian u64 at an 8-aligned offset with a volatile load (for words
    /// that a remote peer updates with one-sided writes).
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))]
    pub(crate) fn load_u64(&self, offset: u64) -> Result<u64> {
        self.check(offset, 8)?;
        if offset & 7 != 0 {
            return Err(Error::InvalidArgument("unaligned word".into()));
        }
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned).
        let v =
            unsafe { std::ptr::read_volatile(self.as_ptr().add(offset as usize) as *const u64) };
        Ok(u64::from_le(v))
    }
}

/// One non-blocking `sendmsg(2)` of all of `parts`, in order, on a socket: many frame
/// headers and their payloads (straight from regions' mappings) in one system call, without
/// copying any of them into a buffer of ours. The kernel copies the parts in order, so a
/// payload earlier in `parts` is read from its mapping before a later one. Returns the bytes
/// written (possibly fewer than offered) or the error (`WouldBlock` when the socket buffer
/// is full).
pub(crate) fn try_sendmsg(
    fd: std::os::fd::RawFd,
    parts: &[std::io::IoSlice<'_>],
) -> std::io::Result<usize> {
    let msg = libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        // `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std).
        msg_iov: parts.as_ptr() as *mut libc::iovec,
        msg_iovlen: parts.len() as _,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    };
    // SAFETY: the iovecs describe live slices borrowed for the duration of the call; the
    // kernel only reads them; `fd` is a socket owned by the caller.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
