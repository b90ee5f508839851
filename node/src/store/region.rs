//! A region: one anonymous shared mapping (`memfd_create` + `memmap2`) holding one
//! fragment's `header | index | log`.
//!
//! Never a mapping of a regular disk file: kernels since 6.5 refuse the long-term
//! writable pins that RDMA registration needs on file-backed pages. memfd pages are
//! shmem, which the NIC may pin, and untouched pages cost no memory.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

/// Huge pages are 2 MiB on x86-64; a hugetlb memfd must be sized in whole pages.
const HUGE_PAGE: usize = 2 << 20;

pub struct Region {
    map: MmapMut,
    file: File,
    hugetlb: bool,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.map.len())
            .field("fd", &self.file.as_raw_fd())
            .field("hugetlb", &self.hugetlb)
            .finish()
    }
}

impl Region {
    /// Create a zero-filled region of at least `len` bytes. With `hugetlb`, try a
    /// `MFD_HUGETLB` memfd first and fall back to normal pages, logging why.
    pub fn create(len: usize, hugetlb: bool) -> std::io::Result<Region> {
        if hugetlb {
            let rounded = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            match Self::create_with(rounded, libc::MFD_HUGETLB) {
                Ok(region) => return Ok(region),
                Err(e) => tracing::info!(
                    "hugetlb region of {rounded} bytes unavailable ({e}); using normal pages"
                ),
            }
        }
        Self::create_with(len, 0)
    }

    fn create_with(len: usize, extra_flags: libc::c_uint) -> std::io::Result<Region> {
        let name = c"augur-region";
        // SAFETY: `name` is a valid NUL-terminated string; flags are valid memfd flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | extra_flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        // SAFETY: the memfd is private to this process (never named, never passed out
        // while mapped writable by anyone else), so nothing truncates or rewrites it
        // behind the mapping's back.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
        Ok(Region {
            map,
            file,
            hugetlb: extra_flags & libc::MFD_HUGETLB != 0,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn is_hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// The memfd, for registration with the fabric or sealing into /dev/shm.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.map.len());
        // SAFETY: the mapping is page aligned, `offset` is a multiple of 8 and in
        // bounds (asserted), so the pointer is valid and aligned for an AtomicU64 for
        // as long as `self` (the mapping) lives, which bounds the returned borrow.
        // Concurrent access to these words by remote readers is exactly why they
        // are accessed atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(offset) as *mut u64) }
    }

    /// Read a published word (an index slot or the log tail).
    pub fn load_acquire(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::Acquire)
    }

    /// Publish a word: everything written before it (the record bytes) becomes
    /// visible no later than the word itself.
    pub fn store_release(&mut self, offset: usize, value: u64) {
        self.word(offset).store(value, Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_zeroed_and_words_publish() {
        let mut r = Region::create(1 << 16, false).expect("memfd region");
        assert!(r.bytes().iter().all(|&b| b == 0));
        r.bytes_mut()[100] = 7;
        r.store_release(64, 0xdead_beef);
        assert_eq!(r.load_acquire(64), 0xdead_beef);
        assert_eq!(r.bytes()[100], 7);
    }

    #[test]
    fn hugetlb_request_falls_back() {
        // Most CI machines reserve no huge pages; either way we get a usable region.
        let r = Region::create(1 << 20, true).expect("region with or without hugetlb");
        assert!(r.len() >= 1 << 20);
    }
}
