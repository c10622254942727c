//! Guest RAM: where it lies around the 32-bit MMIO hole, and creating it, empty for a boot or
//! restored from a snapshot's memory file.
//!
//! Like Firecracker (`arch/x86_64/mod.rs` `arch_memory_regions`) RAM starts at 0 and
//! runs up to [`MMIO32_START`] (3 GiB); whatever does not fit below the hole continues at
//! [`RAM_64BIT_START`] (4 GiB). Each region is one anonymous private mapping with
//! `MAP_NORESERVE`: untouched guest memory costs the host no RSS and no swap reservation, so
//! a 4 GiB guest that uses 60 MiB costs about 60 MiB.
//!
//! A snapshot's memory file holds the regions back to back in guest-address order (region *i*
//! at the sum of the earlier sizes). A restore either maps that file copy-on-write
//! ([`create_guest_memory_from_file`]: lazy, and many clones of one snapshot share its page
//! cache), or creates empty anonymous regions ([`create_guest_memory_for_uffd`]) that a
//! userfaultfd page-fault handler fills on demand.
//!
//! Every region carries a [`GuestBitmap`]: one bit per 4 KiB page, set by each write the VMM
//! makes through vm-memory (device data, used rings, the boot loaders). KVM's dirty log sees
//! only the guest's own writes, so a Diff snapshot needs both (see `squib-vmm`'s snapshot
//! module). The bitmap is always there, whether dirty pages are tracked or not, so the whole
//! VMM has one guest memory type: [`GuestMemoryMmap`].
//!
//! Not modelled yet: Firecracker's 64-bit MMIO window at 256 GiB (only used with PCI), so a
//! guest larger than 255 GiB is refused rather than laid across it.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{FileOffset, GuestAddress, GuestRegionCollectionError};

use crate::layout::{MMIO32_START, PAGE_SIZE, RAM_64BIT_START};

/// The dirty-page bitmap of a guest memory region: bit `i` covers bytes
/// `[i * 4096, (i + 1) * 4096)` of the region, the same pages as bit `i` of the KVM dirty log
/// of the region's memory slot.
pub type GuestBitmap = AtomicBitmap;

/// One region of guest memory, with its [`GuestBitmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<GuestBitmap>;

/// Guest memory as the whole VMM uses it: mmap-backed regions, each with a [`GuestBitmap`]
/// that records the pages the VMM writes.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<GuestBitmap>;

/// The page size of the [`GuestBitmap`]: KVM logs dirty memory in 4 KiB pages whatever backs
/// it, hugetlbfs included, and the two must line up bit for bit.
pub const DIRTY_PAGE_SIZE: usize = PAGE_SIZE as usize;

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
    /// The regions could not form one guest memory (none, overlapping, unsorted).
    #[error("cannot assemble the guest memory regions: {0}")]
    Regions(#[source] GuestRegionCollectionError),
    /// The host's 2 MiB huge page pool cannot back the guest.
    #[error(
        "not enough 2 MiB huge pages for {mem_size_mib} MiB of guest memory: {needed} needed, \
         {available} available on the host (raise /proc/sys/vm/nr_hugepages)"
    )]
    HugePagesUnavailable {
        /// Guest memory asked for.
        mem_size_mib: usize,
        /// 2 MiB pages it needs.
        needed: u64,
        /// Free, unreserved pages in the pool when the mapping failed.
        available: u64,
    },
    /// A restored region is empty, or does not start and end on a page boundary.
    #[error(
        "guest memory region at {addr:#x} of {size:#x} bytes is not a non-empty run of whole \
         {page_size:#x}-byte pages"
    )]
    Unaligned {
        /// Guest-physical start of the region.
        addr: u64,
        /// Size of the region.
        size: usize,
        /// The page size it must be made of.
        page_size: usize,
    },
}

/// Errors mapping guest memory from a snapshot's memory file. The texts are Firecracker's
/// (`GuestMemoryFromFileError`).
#[derive(Debug, thiserror::Error)]
pub enum MemoryFromFileError {
    /// hugetlbfs pages cannot be a private mapping of an ordinary file.
    #[error(
        "Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd."
    )]
    HugetlbfsSnapshot,
    /// The memory file could not be inspected or duplicated.
    #[error("Failed to load guest memory: {0}")]
    File(#[source] io::Error),
    /// The file is shorter than the regions it should hold.
    #[error(
        "Failed to restore guest memory: Total sum of memory regions exceeds largest possible \
         file offset"
    )]
    OffsetTooLarge {
        /// Sum of the region sizes.
        regions_bytes: u64,
        /// Length of the memory file.
        file_bytes: u64,
    },
    /// The regions could not be mapped.
    #[error("Failed to restore guest memory: {0}")]
    Memory(#[source] MemoryError),
}

/// The pages restored guest memory is made of (a snapshot's `huge_pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePageMode {
    /// The host's base pages.
    #[default]
    None,
    /// Base pages advised with `MADV_HUGEPAGE`, which the kernel may back with transparent
    /// huge pages.
    Transparent,
    /// 2 MiB hugetlbfs pages (`MAP_HUGETLB | MAP_HUGE_2MB`).
    Hugetlbfs2M,
}

impl HugePageMode {
    /// The page size regions are made of: what their addresses and sizes must be multiples of,
    /// and the unit a userfaultfd handler fills.
    pub fn page_size(self) -> usize {
        match self {
            HugePageMode::None | HugePageMode::Transparent => PAGE_SIZE as usize,
            HugePageMode::Hugetlbfs2M => 2 << 20,
        }
    }
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

/// Maps `mem_size_mib` MiB of guest RAM of base pages: [`create_guest_memory_backed`] with
/// [`HugePageMode::None`].
pub fn create_guest_memory(mem_size_mib: usize) -> Result<GuestMemoryMmap, MemoryError> {
    create_guest_memory_backed(mem_size_mib, HugePageMode::None)
}

/// Maps `mem_size_mib` MiB of guest RAM, one anonymous private mapping per region of
/// [`arch_memory_regions`], of base pages (`MAP_NORESERVE`: pages come when first touched),
/// base pages advised for transparent huge pages, or 2 MiB hugetlbfs pages. Hugetlbfs pages
/// are reserved from the host's pool now, so a pool too small for the guest is an error here
/// ([`MemoryError::HugePagesUnavailable`]) rather than a `SIGBUS` when the guest first touches
/// a page the pool cannot give.
pub fn create_guest_memory_backed(
    mem_size_mib: usize,
    huge: HugePageMode,
) -> Result<GuestMemoryMmap, MemoryError> {
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
    if huge == HugePageMode::Hugetlbfs2M && mem_size_mib % 2 != 0 {
        return Err(MemoryError::Unaligned {
            addr: 0,
            size: mem_size_mib << 20,
            page_size: huge.page_size(),
        });
    }
    let regions = arch_memory_regions(mem_size_mib << 20)
        .into_iter()
        .map(|(addr, size)| {
            map_region(addr, size, None, huge, Reserve::Hugetlbfs).map_err(|e| match e {
                MemoryError::Mmap { source, .. }
                    if huge == HugePageMode::Hugetlbfs2M && is_out_of_memory(&source) =>
                {
                    MemoryError::HugePagesUnavailable {
                        mem_size_mib,
                        needed: (mem_size_mib / 2) as u64,
                        available: available_huge_pages_2m(),
                    }
                }
                e => e,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

/// Maps a snapshot's memory file as guest memory: `regions` (guest address and size, in
/// guest-address order) each a private copy-on-write `MAP_NORESERVE` mapping of the file at
/// the sum of the earlier sizes. Pages are read from the file when the guest first touches
/// them and guest writes never reach the file. The file may be longer than the regions, not
/// shorter.
pub fn create_guest_memory_from_file(
    regions: &[(GuestAddress, usize)],
    file: &File,
    huge: HugePageMode,
) -> Result<GuestMemoryMmap, MemoryFromFileError> {
    if huge == HugePageMode::Hugetlbfs2M {
        return Err(MemoryFromFileError::HugetlbfsSnapshot);
    }
    check_restored_regions(regions, huge).map_err(MemoryFromFileError::Memory)?;
    let file_bytes = file.metadata().map_err(MemoryFromFileError::File)?.len();
    // Cannot overflow: the regions were just checked to total at most MAX_MEM_SIZE_MIB.
    let regions_bytes: u64 = regions.iter().map(|&(_, size)| size as u64).sum();
    if regions_bytes > file_bytes {
        return Err(MemoryFromFileError::OffsetTooLarge {
            regions_bytes,
            file_bytes,
        });
    }
    // One duplicate of the descriptor, shared by every region, lives as long as the memory.
    let file = Arc::new(file.try_clone().map_err(MemoryFromFileError::File)?);
    let mut offset = 0u64;
    let mut mapped = Vec::with_capacity(regions.len());
    for &(addr, size) in regions {
        let file_offset = FileOffset::from_arc(Arc::clone(&file), offset);
        mapped.push(
            map_region(addr, size, Some(file_offset), huge, Reserve::Nothing)
                .map_err(MemoryFromFileError::Memory)?,
        );
        // Cannot overflow: the sum of all sizes fits the file length checked above.
        offset += size as u64;
    }
    GuestMemoryMmap::from_regions(mapped)
        .map_err(|err| MemoryFromFileError::Memory(MemoryError::Regions(err)))
}

/// Creates empty guest memory for a userfaultfd handler to fill: `regions` (guest address and
/// size, in guest-address order) each an anonymous private `MAP_NORESERVE` mapping, the kind
/// of memory `UFFDIO_REGISTER` in missing mode accepts. With [`HugePageMode::Hugetlbfs2M`] the
/// regions are 2 MiB hugetlbfs pages, which the host must have reserved.
pub fn create_guest_memory_for_uffd(
    regions: &[(GuestAddress, usize)],
    huge: HugePageMode,
) -> Result<GuestMemoryMmap, MemoryError> {
    check_restored_regions(regions, huge)?;
    let mapped = regions
        .iter()
        .map(|&(addr, size)| map_region(addr, size, None, huge, Reserve::Nothing))
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(mapped).map_err(MemoryError::Regions)
}

/// Regions read from a snapshot are not trusted: each must be whole pages at a page-aligned
/// address (file offsets and userfaultfd ranges need it), and all of them together no more
/// than a booted guest could have. Order and overlap are checked when they are assembled.
fn check_restored_regions(
    regions: &[(GuestAddress, usize)],
    huge: HugePageMode,
) -> Result<(), MemoryError> {
    let page_size = huge.page_size();
    let mut total = 0usize;
    for &(addr, size) in regions {
        if size == 0 || size % page_size != 0 || addr.0 % page_size as u64 != 0 {
            return Err(MemoryError::Unaligned {
                addr: addr.0,
                size,
                page_size,
            });
        }
        total = total.saturating_add(size);
    }
    let max_bytes = MAX_MEM_SIZE_MIB << 20;
    if total > max_bytes {
        return Err(MemoryError::TooLarge {
            mem_size_mib: total.div_ceil(1 << 20),
            max_mib: MAX_MEM_SIZE_MIB,
        });
    }
    Ok(())
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

/// Whether a mapping reserves its pages when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserve {
    /// Never (`MAP_NORESERVE`): pages are found when first touched.
    Nothing,
    /// Hugetlbfs pages are taken from the pool at `mmap` (which fails if it is short); base
    /// pages still come on first touch.
    Hugetlbfs,
}

/// One private mapping of `size` bytes placed at guest address `addr`: of the file at
/// `file_offset` when there is one, anonymous otherwise; `MAP_NORESERVE` unless `reserve`
/// asks for its hugetlbfs pages now.
fn map_region(
    addr: GuestAddress,
    size: usize,
    file_offset: Option<FileOffset>,
    huge: HugePageMode,
    reserve: Reserve,
) -> Result<GuestRegionMmap, MemoryError> {
    let hugetlbfs = huge == HugePageMode::Hugetlbfs2M;
    let mut flags = libc::MAP_PRIVATE;
    if !(hugetlbfs && reserve == Reserve::Hugetlbfs) {
        flags |= libc::MAP_NORESERVE;
    }
    if file_offset.is_none() {
        flags |= libc::MAP_ANONYMOUS;
    }
    if hugetlbfs {
        flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    }
    let mut builder = MmapRegionBuilder::new_with_bitmap(size, dirty_bitmap(size))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(flags)
        .with_hugetlbfs(hugetlbfs);
    if let Some(file_offset) = file_offset {
        builder = builder.with_file_offset(file_offset);
    }
    let mapping = builder.build().map_err(|source| MemoryError::Mmap {
        addr: addr.0,
        size,
        source,
    })?;
    exclude_from_core_dumps(mapping.as_ptr(), size);
    if huge == HugePageMode::Transparent {
        advise_transparent_huge_pages(mapping.as_ptr(), size);
    }
    GuestRegionMmap::new(mapping, addr).ok_or(MemoryError::RegionOverflow { addr: addr.0, size })
}

/// Whether a failed `mmap` ran out of memory (for hugetlbfs: the pool could not reserve).
fn is_out_of_memory(error: &MmapRegionError) -> bool {
    matches!(error, MmapRegionError::Mmap(e) if e.raw_os_error() == Some(libc::ENOMEM))
}

/// 2 MiB huge pages the host's pool can still give: free and not reserved by a mapping.
pub fn available_huge_pages_2m() -> u64 {
    let read = |name: &str| -> u64 {
        std::fs::read_to_string(format!("{HUGE_PAGES_2M_SYSFS}/{name}"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    read("free_hugepages").saturating_sub(read("resv_hugepages"))
}

/// The host's 2 MiB hugetlbfs pool in sysfs.
const HUGE_PAGES_2M_SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// A clear bitmap for a region of `size` bytes. Built explicitly: vm-memory's default
/// `AtomicBitmap` has no bits at all, and silently ignores every page marked in it.
fn dirty_bitmap(size: usize) -> GuestBitmap {
    // Evaluated at compile time: the page size is a non-zero constant.
    const PAGE: NonZeroUsize = NonZeroUsize::new(DIRTY_PAGE_SIZE).unwrap();
    AtomicBitmap::new(size, PAGE)
}

/// Ask for transparent huge pages. Only a hint: if the host has them disabled the guest still
/// runs, on base pages, so a refusal is logged and not an error.
fn advise_transparent_huge_pages(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr`/`size` describe a mapping this function's caller just created and owns;
    // MADV_HUGEPAGE only changes VMA flags and never touches the memory's contents.
    let ret = unsafe { libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE) };
    if ret != 0 {
        log::warn!(
            "madvise(MADV_HUGEPAGE) on guest memory failed, it stays on base pages: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
