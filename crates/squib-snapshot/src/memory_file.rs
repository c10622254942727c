//! Writing guest memory to the snapshot's memory file, whole (Full) or only its dirty pages
//! (Diff).
//!
//! The file has the [`MemoryLayout`] of the guest memory. A file of another length is cut to
//! nothing and then set to the right length first; a file of the right length is written in
//! place. So a Diff written onto a copy of its base file updates just the pages that changed,
//! and the result is a valid Full file; a Diff written to a new file leaves every clean page a
//! sparse hole (for `squib-rebase-snap` to merge later).
//!
//! The bytes go straight from guest memory to the file with `pwrite`, in large runs, with no
//! intermediate copy. Short writes are retried; a write that makes no progress (a full disk)
//! is an error, never silently dropped data. The caller must keep the guest from running
//! while a file is written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion, MemoryRegionAddress, VolatileSlice,
};

use crate::file_op::FileOp;
use crate::memory_layout::{LayoutError, MemoryLayout};

/// The granularity of dirty tracking and of Diff files.
pub const PAGE_SIZE: usize = 4096;

/// The most one `pwrite` is asked to write. Linux stops a single write at about 2 GiB anyway;
/// a round 1 GiB keeps the loop simple.
const MAX_WRITE: usize = 1 << 30;

/// Why a memory file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Opening, sizing or syncing the memory file failed at `op`.
    #[error("Cannot perform {op} on the memory backing file: {source}")]
    BackingFile {
        /// The step that failed.
        op: FileOp,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Writing guest memory into the file failed (a full disk, an I/O error).
    #[error("Cannot write memory file: {0}")]
    Write(#[source] io::Error),
    /// The guest memory cannot be laid out in a file.
    #[error("Invalid guest memory layout: {0}")]
    Layout(#[from] LayoutError),
    /// Guest memory could not be accessed.
    #[error("Cannot access guest memory: {0}")]
    GuestMemory(#[from] GuestMemoryError),
    /// The memory file ends before the last region does.
    #[error("Failed to restore guest memory: Total sum of memory regions exceeds largest possible file offset")]
    FileTooShort {
        /// The file's length.
        file_len: u64,
        /// The sum of the region sizes.
        needed: u64,
    },
}

/// Opens (creating it if needed) the memory file at `path` for [`write_full`] or
/// [`write_diff`]. An existing file is not truncated: a Diff merges into a same-size base.
///
/// # Errors
/// [`MemoryFileError::BackingFile`] with [`FileOp::Open`].
pub fn open_for_write(path: &Path) -> Result<File, MemoryFileError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| MemoryFileError::BackingFile {
            op: FileOp::Open,
            source,
        })
}

/// Writes every byte of `mem` to `file` and syncs it. Returns the number of bytes written.
///
/// # Errors
/// [`MemoryFileError::BackingFile`] naming the step that failed, [`MemoryFileError::Write`],
/// or [`MemoryFileError::Layout`] for memory that cannot be laid out.
pub fn write_full<M: GuestMemoryBackend>(mem: &M, file: &File) -> Result<u64, MemoryFileError> {
    write_diff(mem, file, |_, _| true)
}

/// Writes the pages of `mem` for which `is_dirty(region_index, page_index)` is true to their
/// places in `file`, and syncs it. Regions are numbered in guest-address order and pages from
/// the start of their region, in [`PAGE_SIZE`] units; `is_dirty` is asked once per page, in
/// file order. Runs of dirty pages go out in one `pwrite`. Returns the number of bytes written.
///
/// # Errors
/// As [`write_full`].
pub fn write_diff<M, F>(mem: &M, file: &File, mut is_dirty: F) -> Result<u64, MemoryFileError>
where
    M: GuestMemoryBackend,
    F: FnMut(usize, usize) -> bool,
{
    let layout = MemoryLayout::of_memory(mem)?;
    set_file_len(file, layout.total_len())?;
    let mut written = 0u64;
    for (index, (region, place)) in mem.iter().zip(layout.regions()).enumerate() {
        let pages =
            usize::try_from(place.size).map_err(|_| LayoutError::Overflow { index })? / PAGE_SIZE;
        let mut run_start = None;
        // One step past the last page closes a run that reaches the end of the region.
        for page in 0..=pages {
            let dirty = page < pages && is_dirty(index, page);
            match (dirty, run_start) {
                (true, None) => run_start = Some(page),
                (false, Some(start)) => {
                    run_start = None;
                    let offset = start * PAGE_SIZE;
                    let len = (page - start) * PAGE_SIZE;
                    let slice = region.get_slice(MemoryRegionAddress(offset as u64), len)?;
                    pwrite_all(file, &slice, place.file_offset + offset as u64)
                        .map_err(MemoryFileError::Write)?;
                    written += len as u64;
                }
                _ => {}
            }
        }
    }
    sync(file)?;
    Ok(written)
}

/// The length of `file`.
pub(crate) fn file_len(file: &File) -> Result<u64, MemoryFileError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|source| MemoryFileError::BackingFile {
            op: FileOp::GetMetadata,
            source,
        })
}

/// Gives `file` exactly `len` bytes; a file of another length is emptied first, so no stale
/// page of an unrelated snapshot survives in it.
fn set_file_len(file: &File, len: u64) -> Result<(), MemoryFileError> {
    if file_len(file)? == len {
        return Ok(());
    }
    let op_err = |op| move |source| MemoryFileError::BackingFile { op, source };
    file.set_len(0).map_err(op_err(FileOp::Truncate))?;
    file.set_len(len).map_err(op_err(FileOp::SetLength))
}

fn sync(mut file: &File) -> Result<(), MemoryFileError> {
    let op_err = |op| move |source| MemoryFileError::BackingFile { op, source };
    file.flush().map_err(op_err(FileOp::Flush))?;
    file.sync_all().map_err(op_err(FileOp::SyncAll))
}

/// Writes all of `slice` to `file` at `offset`, retrying short and interrupted writes.
fn pwrite_all<B: BitmapSlice>(
    file: &File,
    slice: &VolatileSlice<'_, B>,
    offset: u64,
) -> io::Result<()> {
    let guard = slice.ptr_guard();
    let base = guard.as_ptr();
    let len = slice.len();
    let mut done = 0usize;
    while done < len {
        let chunk = (len - done).min(MAX_WRITE);
        let at = offset
            .checked_add(done as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file offset overflow"))?;
        // SAFETY: `base .. base + len` is the mapped guest memory of `slice`, kept mapped by
        // `guard` for this whole function, and `done + chunk <= len`. `pwrite` only reads
        // that range; the caller keeps the guest paused so it does not change meanwhile.
        let n = unsafe { libc::pwrite(file.as_raw_fd(), base.add(done).cast(), chunk, at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file accepted no more bytes",
                ))
            }
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "memory_file_tests.rs"]
mod tests;
