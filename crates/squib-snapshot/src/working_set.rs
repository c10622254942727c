//! The working-set file: which pages of a memory file a restored guest touched in its first
//! moments, so that the next load of the same snapshot can read exactly those pages, in
//! file order, before the guest resumes (working-set prefetch, as REAP and FaaSnap do).
//!
//! It is stored in the state file's container ([`save_state`]/[`load_state`]: magic,
//! version, length, CRC64, crash-safe replace) with a payload of its own that starts with
//! [`WORKING_SET_MARKER`], so a state file given as a working set (or the reverse) is refused.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::memory_file::PAGE_SIZE;
use crate::state_file::{load_state, save_state, SnapshotError};

/// First field of every working-set payload: `SQWSET01` read as a little-endian u64.
pub const WORKING_SET_MARKER: u64 = u64::from_le_bytes(*b"SQWSET01");

/// Pages of a memory file, as runs of consecutive pages in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingSet {
    marker: u64,
    memory_len: u64,
    runs: Vec<PageRun>,
}

/// Consecutive pages of the memory file: byte offset and length, both page multiples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// Offset of the first page in the memory file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Why a working-set file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkingSetError {
    /// Reading, checking or writing the container failed.
    #[error("{0}")]
    File(#[from] SnapshotError),
    /// The file is a valid container, but not of a working set.
    #[error("not a working-set file")]
    NotAWorkingSet,
    /// The working set was recorded against a memory file of another size.
    #[error("recorded for a memory file of {recorded} bytes, this one has {actual}")]
    OtherMemory {
        /// Memory length in the file.
        recorded: u64,
        /// Memory length of this load.
        actual: u64,
    },
    /// A run that is not page-aligned, overlaps its predecessor or leaves the memory.
    #[error("run {index} is out of order, unaligned or outside the memory")]
    BadRun {
        /// Position of the run in the file.
        index: usize,
    },
}

impl WorkingSet {
    /// The working set of the pages at `page_offsets` (byte offsets into a memory file of
    /// `memory_len` bytes, ascending; each a page multiple), merged into runs.
    #[must_use]
    pub fn from_pages(memory_len: u64, page_offsets: impl IntoIterator<Item = u64>) -> Self {
        let page = PAGE_SIZE as u64;
        let mut runs: Vec<PageRun> = Vec::new();
        for offset in page_offsets {
            match runs.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += page,
                _ => runs.push(PageRun { offset, len: page }),
            }
        }
        Self {
            marker: WORKING_SET_MARKER,
            memory_len,
            runs,
        }
    }

    /// The runs, in file order.
    #[must_use]
    pub fn runs(&self) -> &[PageRun] {
        &self.runs
    }

    /// Pages in the set.
    #[must_use]
    pub fn pages(&self) -> u64 {
        self.runs.iter().map(|r| r.len / PAGE_SIZE as u64).sum()
    }

    /// Checks that this set was recorded for a memory file of `memory_len` bytes and that
    /// its runs are ascending, page-aligned, disjoint and inside it.
    ///
    /// # Errors
    /// [`WorkingSetError::NotAWorkingSet`], [`WorkingSetError::OtherMemory`] or
    /// [`WorkingSetError::BadRun`].
    pub fn check(&self, memory_len: u64) -> Result<(), WorkingSetError> {
        if self.marker != WORKING_SET_MARKER {
            return Err(WorkingSetError::NotAWorkingSet);
        }
        if self.memory_len != memory_len {
            return Err(WorkingSetError::OtherMemory {
                recorded: self.memory_len,
                actual: memory_len,
            });
        }
        let page = PAGE_SIZE as u64;
        let mut end = 0u64;
        for (index, run) in self.runs.iter().enumerate() {
            let run_end = run.offset.checked_add(run.len);
            let ok = run.offset % page == 0
                && run.len % page == 0
                && run.len > 0
                && run.offset >= end
                && run_end.is_some_and(|e| e <= memory_len);
            if !ok {
                return Err(WorkingSetError::BadRun { index });
            }
            end = run_end.unwrap_or(memory_len);
        }
        Ok(())
    }
}

/// Writes `set` to `path` (crash-safe: the old file or the new one, never a partial one).
///
/// # Errors
/// [`WorkingSetError::File`].
pub fn save_working_set(path: &Path, set: &WorkingSet) -> Result<(), WorkingSetError> {
    Ok(save_state(path, set)?)
}

/// Reads the working set at `path` and checks it against a memory file of `memory_len`
/// bytes; `Ok(None)` when there is no file there yet (the load records one).
///
/// # Errors
/// Any [`WorkingSetError`]: a damaged, foreign or stale file is refused, never half-used.
pub fn load_working_set(
    path: &Path,
    memory_len: u64,
) -> Result<Option<WorkingSet>, WorkingSetError> {
    let set: WorkingSet = match load_state(path) {
        Ok(set) => set,
        Err(SnapshotError::Open(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(SnapshotError::Deserialize(_)) => return Err(WorkingSetError::NotAWorkingSet),
        Err(e) => return Err(e.into()),
    };
    set.check(memory_len)?;
    Ok(Some(set))
}

#[cfg(test)]
#[path = "working_set_tests.rs"]
mod tests;
