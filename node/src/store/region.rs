//! A region: one anonymous shared mapping (`memfd_create` + `memmap2`) holding one
//! fragment's `header | index | log`.
//!
//! Never a mapping of a regular disk file: kernels since 6.5 refuse the long-term
//! writable pins that RDMA registration needs on file-backed pages. memfd pages are
//! shmem, which the NIC may pin, and untouched pages cost no memory.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

/// Huge pages are 2 MiB on x86-64; a hugetlb memfd must be sized in whole pages.
const HUGE_PAGE: usize = 2 << 20;

pub struct Region {
    map: MmapMut,
    file: File,
    hugetlb: bool,
    /// The memfd's inode number: unique among live regions, and never reused while
    /// anyone (a peer registration) still holds the file.
    identity: u64,
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
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra_flags;
        // SAFETY: `name` is a valid NUL-terminated string; flags are valid memfd flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        // The size is final: sealed, no handle to the memfd (see `export_file`) can
        // truncate it under a mapping, which would turn its accesses into SIGBUS.
        // SAFETY: a valid fd and valid seal flags; fcntl touches no memory of ours.
        let sealed = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        if sealed != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the memfd is anonymous and its size is sealed, so nothing truncates it
        // behind the mapping's back; its bytes are written only through this mapping
        // (the second mapping `export_file` allows is registered for remote READ only).
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
        let identity = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
        Ok(Region {
            map,
            identity,
            file,
            hugetlb: extra_flags & libc::MFD_HUGETLB != 0,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Which memory this is (the memfd's inode): two regions with the same fragment id
    /// and generation — a fragment that migrated away and back — still differ here.
    pub fn identity(&self) -> u64 {
        self.identity
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

    /// A second handle (dup) of the memfd, so that the fabric can map the same pages again
    /// and register that mapping for one-sided READs. Both mappings are `MAP_SHARED` views
    /// of one set of shmem pages, so a remote reader sees every store made here, in the
    /// order the release stores publish it. The size seal keeps the other handle from
    /// truncating the file under this mapping.
    pub fn export_file(&self) -> std::io::Result<File> {
        self.file.try_clone()
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

    fn half_word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.map.len());
        // SAFETY: as for `word`: page-aligned mapping, 4-aligned in-bounds offset
        // (asserted), borrow bounded by the mapping's lifetime.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(offset) as *mut u32) }
    }

    /// Read a published 4-byte field (the header state).
    pub fn load_acquire_u32(&self, offset: usize) -> u32 {
        self.half_word(offset).load(Ordering::Acquire)
    }

    /// Publish a 4-byte field that may change while the region is shared (the header
    /// state, set once by `Fragment::retire`); `&self` because it is set on a fragment
    /// that readers may still be holding.
    pub fn store_release_u32(&self, offset: usize, value: u32) {
        self.half_word(offset).store(value, Ordering::Release)
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
    fn exported_file_sees_the_same_pages_and_cannot_resize() {
        let mut r = Region::create(1 << 16, false).expect("memfd region");
        let file = r.export_file().expect("dup");
        r.bytes_mut()[4096] = 42;
        r.store_release_u32(12, 1);
        let mut seen = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut seen, 4096).expect("pread");
        assert_eq!(seen, [42]);
        assert_eq!(r.load_acquire_u32(12), 1);
        assert!(file.set_len(4096).is_err(), "shrink must be sealed");
        assert!(file.set_len(1 << 20).is_err(), "grow must be sealed");
        assert_eq!(file.metadata().expect("stat").len(), 1 << 16);
    }

    #[test]
    fn hugetlb_request_falls_back() {
        // Most CI machines reserve no huge pages; either way we get a usable region.
        let r = Region::create(1 << 20, true).expect("region with or without hugetlb");
        assert!(r.len() >= 1 << 20);
    }
}
