//! Writing guest memory into a snapshot's memory file — all of it (Full) or only the pages
//! changed since the previous snapshot (Diff) — and keeping the record of changed pages exact
//! from one snapshot to the next.
//!
//! Two records say which pages changed. KVM's dirty log (memory slots registered with
//! `track_dirty_pages`) holds the guest's own writes; each region's [`GuestBitmap`] holds the
//! VMM's writes (device data, used rings), which KVM never sees. Slot `i` is region `i` and
//! both count 4 KiB pages from the start of the region, so bit `p` of either is the same page.
//!
//! Reading KVM's log clears it, so before writing the file the log is folded into the
//! bitmaps, and from then on the bitmaps alone say what changed. They are cleared only once
//! the file is written and synced: a snapshot that fails half-way loses no record, and the
//! next Diff still writes those pages. After any snapshot, Full or Diff, both records are
//! empty, so the next Diff holds exactly what changed since.
//!
//! Unlike Firecracker, a Diff without dirty-page tracking is refused rather than guessed from
//! `mincore(2)`, which misses pages the host has swapped out.

use std::fs::File;

use squib_api::schemas::snapshot::SnapshotType;
use squib_arch::memory::{GuestBitmap, GuestMemoryMmap, DIRTY_PAGE_SIZE};
use squib_snapshot::MemoryFileError;
use vm_memory::mmap::MmapRegion;
use vm_memory::GuestMemoryBackend;

use crate::vstate::vm::{Vm, VmError};

// The memory file's page and the dirty records' page must be the same for the indices to
// line up.
const _: () = assert!(squib_snapshot::PAGE_SIZE == DIRTY_PAGE_SIZE);

/// Why guest memory could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum MemorySnapshotError {
    /// A Diff was asked of a VM that does not track dirty pages.
    #[error(
        "Diff snapshots need dirty page tracking: this microVM was started without \
         track_dirty_pages (set it in PUT /machine-config before boot, or in PUT /snapshot/load)"
    )]
    DiffWithoutTracking,
    /// KVM's dirty log could not be read.
    #[error("Cannot get dirty bitmap: {0}")]
    DirtyBitmap(#[source] VmError),
    /// The memory file could not be written.
    #[error(transparent)]
    File(#[from] MemoryFileError),
}

/// Whether `vm` can take a snapshot of `kind`; checked before anything is written.
///
/// # Errors
/// [`MemorySnapshotError::DiffWithoutTracking`].
pub fn check_snapshot_type(vm: &Vm, kind: SnapshotType) -> Result<(), MemorySnapshotError> {
    if kind == SnapshotType::Diff && !vm.dirty_tracking() {
        return Err(MemorySnapshotError::DiffWithoutTracking);
    }
    Ok(())
}

/// Writes the memory of the paused `vm` into `file` — every page for a Full snapshot, the
/// pages changed since the previous snapshot for a Diff — syncs it, and then starts a new
/// record of changes. Returns the number of bytes written.
///
/// # Errors
/// [`MemorySnapshotError`]; on error the record of changed pages is kept whole.
pub fn write_memory(
    vm: &Vm,
    mem: &GuestMemoryMmap,
    file: &File,
    kind: SnapshotType,
) -> Result<u64, MemorySnapshotError> {
    check_snapshot_type(vm, kind)?;
    if vm.dirty_tracking() {
        fold_guest_writes(vm, mem)?;
    }
    let bitmaps: Vec<&GuestBitmap> = mem.iter().map(|r| MmapRegion::bitmap(r)).collect();
    let written = match kind {
        SnapshotType::Full => squib_snapshot::write_full(mem, file)?,
        SnapshotType::Diff => squib_snapshot::write_diff(mem, file, |region, page| {
            bitmaps.get(region).is_some_and(|b| b.is_bit_set(page))
        })?,
    };
    for bitmap in bitmaps {
        bitmap.reset();
    }
    Ok(written)
}

/// Moves KVM's dirty log (the guest's writes since it was last read) into the regions'
/// bitmaps; the log is empty afterwards.
fn fold_guest_writes(vm: &Vm, mem: &GuestMemoryMmap) -> Result<(), MemorySnapshotError> {
    let logs = vm
        .dirty_bitmap(mem)
        .map_err(MemorySnapshotError::DirtyBitmap)?;
    for (region, log) in mem.iter().zip(&logs) {
        let bitmap = MmapRegion::bitmap(region);
        for (word_index, &word) in log.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                // Bit `b` of word `w` is page `64 w + b` of the slot, hence of the region.
                bitmap.set_bit(word_index * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
