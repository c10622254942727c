//! Guest RAM: where it lies around the 32-bit MMIO hole, and creating it.
//!
//! Like Firecracker (`arch/x86_64/mod.rs` `arch_memory_regions`) RAM starts at 0 and
//! runs up to [`MMIO32_START`] (3 GiB); whatever does not fit below the hole continues at
//! [`RAM_64BIT_START`] (4 GiB). Each region is one anonymous private mapping with
//! `MAP_NORESERVE`: untouched guest memory costs the host no RSS and no swap reservation, so
//! a 4 GiB guest that uses 60 MiB costs about 60 MiB.
//!
//! Not modelled yet: Firecracker's 64-bit MMIO window at 256 GiB (only used with PCI), so a
//! guest larger than 255 GiB is refused rather than laid across it.

use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionCollectionError, GuestRegionMmap};

use crate::layout::{MMIO32_START, RAM_64BIT_START};

/// Largest guest RAM accepted: everything must fit below Firecracker's 64-bit MMIO window
/// at 256 GiB, after the 1 GiB hole at 3 GiB.
pub const MAX_MEM_SIZE_MIB: usize = 255 * 1024;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Zero MiB of RAM.
    #[error("guest memory size must be at least 1 MiB")]
    ZeroSize,
    /// More RAM than the layout has room for.
    #[error("guest memory size {mem_size_mib} MiB is more than the {max_mib} MiB supported")]
    TooLarge {
        /// Requested size.
        mem_size_mib: usize,
        /// Largest size supported.
        max_mib: usize,
    },
    /// The host refused the mapping (address space, overcommit policy, ...).
    #[error("cannot map {size:#x} bytes of guest memory at {addr:#x}")]
    Mmap {
        /// Guest-physical start of the region.
        addr: u64,
        /// Size of the region.
        size: usize,
        /// What mmap said.
        #[source]
        source: MmapRegionError,
    },
    /// A region ended past the end of the address space.
    #[error("guest memory region at {addr:#x} of {size:#x} bytes overflows")]
    RegionOverflow {
        /// Guest-physical start of the region.
        addr: u64,
        /// Size of the region.
        size: usize,
    },
    /// The regions could not form one guest memory (overlap, unsorted).
    #[error("cannot assemble the guest memory regions")]
    Regions(#[source] GuestRegionCollectionError),
}

/// The guest-physical RAM regions for `mem_size_bytes` of RAM: one region below the MMIO hole,
/// and a second one from 4 GiB when the RAM does not fit below 3 GiB.
pub fn arch_memory_regions(mem_size_bytes: usize) -> Vec<(GuestAddress, usize)> {
    let below_hole = MMIO32_START as usize;
    if mem_size_bytes <= below_hole {
        vec![(GuestAddress(0), mem_size_bytes)]
    } else {
        vec![
            (GuestAddress(0), below_hole),
            (GuestAddress(RAM_64BIT_START), mem_size_bytes - below_hole),
        ]
    }
}

/// Maps `mem_size_mib` MiB of guest RAM, one anonymous private `MAP_NORESERVE` mapping per
/// region of [`arch_memory_regions`].
pub fn create_guest_memory(mem_size_mib: usize) -> Result<GuestMemoryMmap, MemoryError> {
    if mem_size_mib == 0 {
        return Err(MemoryError::ZeroSize);
    }
    if mem_size_mib > MAX_MEM_SIZE_MIB {
        return Err(MemoryError::TooLarge {
            mem_size_mib,
            max_mib: MAX_MEM_SIZE_MIB,
        });
    }
    // Cannot overflow: MAX_MEM_SIZE_MIB << 20 fits a 64-bit usize.
    let regions = arch_memory_regions(mem_size_mib << 20)
        .into_iter()
        .map(|(addr, size)| map_region(addr, size))
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

/// Keep guest RAM out of the VMM's core dumps (it is the guest's data, and large). The
/// distinct VMA flag also stops the kernel from merging guest RAM with a neighbouring
/// anonymous mapping, so `/proc/<pid>/smaps` shows guest memory as its own mappings and the
/// VMM's overhead can be measured apart from it (Firecracker's memory monitor relies on that).
fn exclude_from_core_dumps(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr`/`size` describe a mapping this function's caller just created and owns;
    // MADV_DONTDUMP only changes VMA flags and never touches the memory's contents.
    let ret = unsafe { libc::madvise(ptr.cast(), size, libc::MADV_DONTDUMP) };
    if ret != 0 {
        log::warn!(
            "madvise(MADV_DONTDUMP) on guest memory failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One anonymous private mapping of `size` bytes placed at guest address `addr`.
fn map_region(addr: GuestAddress, size: usize) -> Result<GuestRegionMmap, MemoryError> {
    let mapping = MmapRegionBuilder::new(size)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(|source| MemoryError::Mmap {
            addr: addr.0,
            size,
            source,
        })?;
    exclude_from_core_dumps(mapping.as_ptr(), size);
    GuestRegionMmap::new(mapping, addr).ok_or(MemoryError::RegionOverflow { addr: addr.0, size })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;

    #[test]
    fn small_guest_has_one_region_from_zero() {
        assert_eq!(
            arch_memory_regions(128 * MIB),
            vec![(GuestAddress(0), 128 * MIB)]
        );
        assert_eq!(
            arch_memory_regions(3 * GIB),
            vec![(GuestAddress(0), 3 * GIB)]
        );
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        assert_eq!(
            arch_memory_regions(3 * GIB + MIB),
            vec![(GuestAddress(0), 3 * GIB), (GuestAddress(4 << 30), MIB)]
        );
    }

    #[test]
    fn creates_writable_memory_of_the_requested_size() {
        let mem = create_guest_memory(16).unwrap();
        assert_eq!(mem.num_regions(), 1);
        let size: u64 = mem.iter().map(|r| r.len()).sum();
        assert_eq!(size, 16 << 20);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0xff_fffc))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0xff_fffc)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(0u8, GuestAddress(16 << 20)).is_err());
    }

    #[test]
    fn guest_above_3_gib_is_mapped_without_reserving_it() {
        // 4 GiB of MAP_NORESERVE memory costs nothing until touched.
        let mem = create_guest_memory(4096).unwrap();
        assert_eq!(mem.num_regions(), 2);
        mem.write_obj(7u8, GuestAddress((5u64 << 30) - 1)).unwrap();
        assert!(mem.write_obj(7u8, GuestAddress(MMIO32_START)).is_err());
    }

    #[test]
    fn zero_and_oversized_memory_are_refused_by_name() {
        assert!(matches!(create_guest_memory(0), Err(MemoryError::ZeroSize)));
        let err = create_guest_memory(MAX_MEM_SIZE_MIB + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "guest memory size 261121 MiB is more than the 261120 MiB supported"
        );
    }
}
