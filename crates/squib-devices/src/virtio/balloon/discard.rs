//! Giving guest page ranges back to the host.
//!
//! Every range is checked against guest memory first and split at region boundaries, so
//! nothing outside the guest's own mappings is ever touched, whatever the guest sends.
//! Anonymous private memory (a booted guest) is discarded with `MADV_DONTNEED`: the host
//! frees the pages and the guest reads zeros when it touches them again. A private mapping
//! of a snapshot file (a restored guest) would fall back to the file's contents under
//! `MADV_DONTNEED`, so such a range is replaced by a fresh anonymous mapping instead.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::virtio::GuestMemoryMmap;

/// Why a range was not discarded.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    /// Part of the range is not guest memory.
    #[error("range {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The host refused (`madvise` or `mmap` failed).
    #[error("cannot discard {addr:#x}+{len:#x}: {source}")]
    Host {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// Whether `[addr, addr + len)` lies entirely in guest memory.
#[must_use]
pub fn in_guest_memory(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let mut at = addr;
    while at < end {
        let Some(region) = mem.find_region(GuestAddress(at)) else {
            return false;
        };
        let region_end = region.start_addr().0 + region.len();
        at = region_end.min(end);
    }
    true
}

/// Give `[addr, addr + len)` of guest memory back to the host. The range is checked whole
/// before anything is discarded.
///
/// # Errors
/// [`DiscardError::OutsideMemory`] (nothing discarded) or [`DiscardError::Host`].
pub fn discard_range(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), DiscardError> {
    if !in_guest_memory(mem, addr, len) {
        return Err(DiscardError::OutsideMemory { addr, len });
    }
    let end = addr + len;
    let mut at = addr;
    while at < end {
        // Checked above: every address of the range has a region.
        let Some(region) = mem.find_region(GuestAddress(at)) else {
            return Err(DiscardError::OutsideMemory { addr, len });
        };
        let offset = at - region.start_addr().0;
        let chunk = (region.len() - offset).min(end - at);
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(offset))
            .map_err(|_| DiscardError::OutsideMemory { addr, len })?;
        let file_backed = region.file_offset().is_some();
        discard_host(host, chunk, file_backed).map_err(|source| DiscardError::Host {
            addr: at,
            len: chunk,
            source,
        })?;
        at += chunk;
    }
    Ok(())
}

/// Discard `len` bytes of the guest mapping at `host`.
fn discard_host(host: *mut u8, len: u64, file_backed: bool) -> std::io::Result<()> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    if file_backed {
        // SAFETY: `host..host + len` lies inside one guest memory region (checked by the
        // caller against the region's bounds); replacing it with a fresh private anonymous
        // mapping at the same address keeps it mapped read-write, so every pointer into
        // guest memory stays valid and only the contents (which the guest gave up) change.
        let ret = unsafe {
            libc::mmap(
                host.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ret == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the range was just mapped above; MADV_DONTDUMP only sets a VMA flag, as
        // on the rest of guest memory (kept out of core dumps, its own VMA in smaps).
        if unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTDUMP) } != 0 {
            log::warn!(
                "balloon: madvise(MADV_DONTDUMP) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        return Ok(());
    }
    // SAFETY: `host..host + len` lies inside one guest memory region, a private mapping
    // owned by the VMM for the guest's whole life; MADV_DONTNEED only drops its pages
    // (reads then see zeros) and never unmaps it.
    let ret = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use squib_arch::memory::{create_guest_memory_from_file, HugePageMode};
    use vm_memory::Bytes;

    use super::*;

    fn page(mem: &GuestMemoryMmap, n: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        mem.read_slice(&mut buf, GuestAddress(n * 4096)).unwrap();
        buf
    }

    #[test]
    fn file_backed_private_memory_reads_zeros_after_discard_not_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![0xaa; 16 * 4096]).unwrap();
        let mem = create_guest_memory_from_file(
            &[(GuestAddress(0), 16 * 4096)],
            &file,
            HugePageMode::None,
        )
        .unwrap();
        // Page 1 has a private copy (written), page 0 is still the file's.
        mem.write_slice(&[0x55; 4096], GuestAddress(4096)).unwrap();
        discard_range(&mem, 0, 2 * 4096).unwrap();
        assert!(page(&mem, 0).iter().all(|&b| b == 0));
        assert!(page(&mem, 1).iter().all(|&b| b == 0));
        assert!(page(&mem, 2).iter().all(|&b| b == 0xaa));
        // Still writable guest memory.
        mem.write_slice(&[7; 16], GuestAddress(0)).unwrap();
        assert_eq!(page(&mem, 0)[..16], [7; 16]);
    }

    #[test]
    fn ranges_outside_or_overflowing_guest_memory_are_refused_whole() {
        let mem = crate::virtio::test_utils::single_region_mem(0x10_0000);
        mem.write_slice(&[1; 4096], GuestAddress(0xf_f000)).unwrap();
        assert!(matches!(
            discard_range(&mem, 0xf_f000, 0x2000),
            Err(DiscardError::OutsideMemory { .. })
        ));
        assert!(discard_range(&mem, u64::MAX - 0xfff, 0x1000).is_err());
        // Nothing was discarded on refusal.
        assert_eq!(page(&mem, 0xff)[0], 1);
        assert!(in_guest_memory(&mem, 0, 0x10_0000));
        assert!(!in_guest_memory(&mem, 0, 0x10_0001));
    }
}
