//! Where each guest memory region lives in the memory file.
//!
//! As in Firecracker, the regions lie back to back in guest-address order: region `i` starts
//! at the sum of the sizes of the regions before it, and the file is exactly as long as all
//! regions together. The saver builds the layout from its guest memory, the loader from the
//! regions recorded in the state file, which may be hostile: every region must be non-empty,
//! page-aligned in address and size (so that each file offset can be `mmap`ed), and strictly
//! after the previous one.

use std::fs::File;

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory_file::{MemoryFileError, PAGE_SIZE};

/// One region of guest memory and its place in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutRegion {
    /// Guest-physical start.
    pub guest_addr: GuestAddress,
    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub size: u64,
    /// Where the region's first byte is in the memory file.
    pub file_offset: u64,
}

/// The regions of a memory file, in guest-address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    regions: Vec<LayoutRegion>,
    total_len: u64,
}

/// A list of regions that cannot be laid out in a memory file (or mapped from one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No regions at all.
    #[error("No memory region defined.")]
    NoRegions,
    /// A region of zero bytes.
    #[error("memory region {index} is empty")]
    Empty {
        /// Position of the region in the list.
        index: usize,
    },
    /// A region whose start or size is not a multiple of the page size.
    #[error(
        "memory region {index} at {addr:#x} of {size:#x} bytes is not aligned to {PAGE_SIZE} bytes"
    )]
    Unaligned {
        /// Position of the region in the list.
        index: usize,
        /// Its guest-physical start.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// A region that starts before the previous one ends.
    #[error("memory region {index} at {addr:#x} overlaps or precedes the region before it")]
    OutOfOrder {
        /// Position of the region in the list.
        index: usize,
        /// Its guest-physical start.
        addr: u64,
    },
    /// A region that runs past the end of the guest address space, or a total size past the
    /// largest file offset.
    #[error("memory region {index} runs past the largest address or file offset")]
    Overflow {
        /// Position of the region in the list.
        index: usize,
    },
}

impl MemoryLayout {
    /// Lays out `regions` (guest address, size), which must be in guest-address order.
    ///
    /// # Errors
    /// [`LayoutError`] for an empty list, an empty, unaligned, overlapping or unsorted region,
    /// or sizes that overflow.
    pub fn new(
        regions: impl IntoIterator<Item = (GuestAddress, u64)>,
    ) -> Result<Self, LayoutError> {
        let mut laid_out: Vec<LayoutRegion> = Vec::new();
        let mut file_offset = 0u64;
        // Guest address where the previous region ends (exclusive).
        let mut prev_end = 0u64;
        for (index, (guest_addr, size)) in regions.into_iter().enumerate() {
            let addr = guest_addr.raw_value();
            if size == 0 {
                return Err(LayoutError::Empty { index });
            }
            if addr % PAGE_SIZE as u64 != 0 || size % PAGE_SIZE as u64 != 0 {
                return Err(LayoutError::Unaligned { index, addr, size });
            }
            if index > 0 && addr < prev_end {
                return Err(LayoutError::OutOfOrder { index, addr });
            }
            prev_end = addr
                .checked_add(size)
                .ok_or(LayoutError::Overflow { index })?;
            let region = LayoutRegion {
                guest_addr,
                size,
                file_offset,
            };
            // File offsets are signed 64-bit for the kernel.
            file_offset = file_offset
                .checked_add(size)
                .filter(|end| i64::try_from(*end).is_ok())
                .ok_or(LayoutError::Overflow { index })?;
            laid_out.push(region);
        }
        if laid_out.is_empty() {
            return Err(LayoutError::NoRegions);
        }
        Ok(Self {
            regions: laid_out,
            total_len: file_offset,
        })
    }

    /// The layout of the regions of `mem`.
    ///
    /// # Errors
    /// [`LayoutError`] when `mem` has no regions or regions [`MemoryLayout::new`] refuses.
    pub fn of_memory<M: GuestMemoryBackend>(mem: &M) -> Result<Self, LayoutError> {
        Self::new(mem.iter().map(|r| (r.start_addr(), r.len())))
    }

    /// The regions, in guest-address (and file) order.
    pub fn regions(&self) -> &[LayoutRegion] {
        &self.regions
    }

    /// The length of a memory file with this layout: the sum of the region sizes.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Checks that a memory file of `file_len` bytes holds every region. A longer file is
    /// accepted: the bytes past the last region are never mapped.
    ///
    /// # Errors
    /// [`MemoryFileError::FileTooShort`].
    pub fn check_file_len(&self, file_len: u64) -> Result<(), MemoryFileError> {
        if file_len < self.total_len {
            return Err(MemoryFileError::FileTooShort {
                file_len,
                needed: self.total_len,
            });
        }
        Ok(())
    }

    /// [`MemoryLayout::check_file_len`] on the length of `file`.
    ///
    /// # Errors
    /// [`MemoryFileError::FileTooShort`], or [`MemoryFileError::BackingFile`] when the length
    /// cannot be read.
    pub fn check_file(&self, file: &File) -> Result<(), MemoryFileError> {
        let len = crate::memory_file::file_len(file)?;
        self.check_file_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn regions_lie_back_to_back() {
        let layout = MemoryLayout::new([
            (GuestAddress(0), 3 * 1024 * MIB),
            (GuestAddress(4 * 1024 * MIB), 1024 * MIB),
        ])
        .unwrap();
        let offsets: Vec<u64> = layout.regions().iter().map(|r| r.file_offset).collect();
        assert_eq!(offsets, [0, 3 * 1024 * MIB]);
        assert_eq!(layout.total_len(), 4 * 1024 * MIB);
        assert_eq!(layout.regions()[1].guest_addr, GuestAddress(4 * 1024 * MIB));
        assert_eq!(layout.regions()[1].size, 1024 * MIB);
    }

    #[test]
    fn of_memory_matches_the_regions() {
        let mem = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x4000),
            (GuestAddress(0x10_0000), 0x2000),
        ])
        .unwrap();
        let layout = MemoryLayout::of_memory(&mem).unwrap();
        assert_eq!(
            layout.regions(),
            [
                LayoutRegion {
                    guest_addr: GuestAddress(0),
                    size: 0x4000,
                    file_offset: 0
                },
                LayoutRegion {
                    guest_addr: GuestAddress(0x10_0000),
                    size: 0x2000,
                    file_offset: 0x4000
                },
            ]
        );
    }

    #[test]
    fn bad_region_lists_are_refused() {
        let page = PAGE_SIZE as u64;
        let cases: [(Vec<(GuestAddress, u64)>, LayoutError); 7] = [
            (vec![], LayoutError::NoRegions),
            (
                vec![(GuestAddress(0), page), (GuestAddress(page), 0)],
                LayoutError::Empty { index: 1 },
            ),
            (
                vec![(GuestAddress(1), page)],
                LayoutError::Unaligned {
                    index: 0,
                    addr: 1,
                    size: page,
                },
            ),
            (
                vec![(GuestAddress(0), page + 1)],
                LayoutError::Unaligned {
                    index: 0,
                    addr: 0,
                    size: page + 1,
                },
            ),
            (
                vec![(GuestAddress(0), 2 * page), (GuestAddress(page), page)],
                LayoutError::OutOfOrder {
                    index: 1,
                    addr: page,
                },
            ),
            (
                vec![(GuestAddress(0), u64::MAX - page + 1)],
                LayoutError::Overflow { index: 0 },
            ),
            (
                vec![(GuestAddress(0), 1 << 62), (GuestAddress(1 << 62), 1 << 62)],
                LayoutError::Overflow { index: 1 },
            ),
        ];
        for (regions, expected) in cases {
            assert_eq!(
                MemoryLayout::new(regions.clone()),
                Err(expected),
                "{regions:?}"
            );
        }
        // Guest addresses that wrap around.
        assert_eq!(
            MemoryLayout::new([(GuestAddress(u64::MAX - page + 1), 2 * page)]),
            Err(LayoutError::Overflow { index: 0 })
        );
    }

    #[test]
    fn adjacent_regions_are_fine() {
        let page = PAGE_SIZE as u64;
        let layout =
            MemoryLayout::new([(GuestAddress(0), page), (GuestAddress(page), page)]).unwrap();
        assert_eq!(layout.total_len(), 2 * page);
    }

    #[test]
    fn short_file_is_detected() {
        let layout = MemoryLayout::new([(GuestAddress(0), 2 * MIB)]).unwrap();
        layout.check_file_len(2 * MIB).unwrap();
        layout.check_file_len(3 * MIB).unwrap();
        let err = layout.check_file_len(2 * MIB - 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to restore guest memory: Total sum of memory regions exceeds largest possible file offset"
        );

        let file = tempfile::tempfile().unwrap();
        file.set_len(MIB).unwrap();
        assert!(matches!(
            layout.check_file(&file),
            Err(MemoryFileError::FileTooShort {
                file_len,
                needed
            }) if file_len == MIB && needed == 2 * MIB
        ));
        file.set_len(2 * MIB).unwrap();
        layout.check_file(&file).unwrap();
    }
}
