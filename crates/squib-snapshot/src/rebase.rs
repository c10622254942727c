//! Merging a sparse Diff memory file onto its base, in place (`squib-rebase-snap`).
//!
//! A Diff written to a new file holds data only where the guest dirtied pages; everything
//! else is a hole. The data ranges are found with `lseek(SEEK_DATA / SEEK_HOLE)` and copied
//! to the same offsets of the base, with `copy_file_range` (which lets the kernel copy, or
//! share extents, without the bytes passing through this process) or, where the filesystems
//! refuse it, with `pread`/`pwrite`. On a filesystem without hole support the whole diff is
//! reported as data and copied, which is slower but still correct.
//!
//! As with Firecracker's `rebase-snap`, a diff longer than its base grows the base, and a
//! base longer than the diff keeps its tail.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Why a diff could not be merged onto its base.
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    /// The diff's length could not be read.
    #[error("Failed to get metadata: {0}")]
    Metadata(#[source] io::Error),
    /// Finding the next data range failed.
    #[error("Failed to seek data: {0}")]
    SeekData(#[source] io::Error),
    /// Finding the end of a data range failed.
    #[error("Failed to seek hole: {0}")]
    SeekHole(#[source] io::Error),
    /// Copying a data range onto the base failed.
    #[error("Failed to copy the diff data to the base file: {0}")]
    Copy(#[source] io::Error),
}

/// How data ranges are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyMethod {
    /// `copy_file_range`, falling back to [`CopyMethod::ReadWrite`] if the kernel or the
    /// filesystems cannot do it.
    CopyFileRange,
    /// `pread` into a buffer, `pwrite` out of it.
    ReadWrite,
}

/// The buffer of the `pread`/`pwrite` fallback.
const COPY_BUFFER: usize = 1 << 20;

/// The most one `copy_file_range` is asked to copy (the kernel stops near 2 GiB anyway).
const MAX_COPY: usize = 1 << 30;

/// Copies every data range of `diff` to the same offsets of `base` (opened for writing) and
/// returns how many bytes were copied. It moves `diff`'s file position; `base`'s is left
/// alone. It does not sync `base`.
///
/// # Errors
/// [`RebaseError`] naming the step that failed; `base` may then be partly updated.
pub fn rebase(base: &File, diff: &File) -> Result<u64, RebaseError> {
    rebase_with(base, diff, CopyMethod::CopyFileRange)
}

fn rebase_with(base: &File, diff: &File, method: CopyMethod) -> Result<u64, RebaseError> {
    let mut copier = Copier {
        method,
        buf: Vec::new(),
    };
    let diff_len = diff.metadata().map_err(RebaseError::Metadata)?.len();
    let mut copied = 0u64;
    let mut cursor = 0u64;
    while cursor < diff_len {
        let Some(start) = seek(diff, cursor, libc::SEEK_DATA).map_err(RebaseError::SeekData)?
        else {
            break;
        };
        // Every file has an implicit hole at its end, so `None` only if the diff shrank.
        let end = seek(diff, start, libc::SEEK_HOLE)
            .map_err(RebaseError::SeekHole)?
            .unwrap_or(diff_len)
            .min(diff_len);
        if end <= start {
            break;
        }
        copier
            .copy_range(diff, base, start, end - start)
            .map_err(RebaseError::Copy)?;
        copied += end - start;
        cursor = end;
    }
    Ok(copied)
}

/// `lseek(fd, offset, whence)` for `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no data (or
/// hole) at or after `offset` (`ENXIO`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
    // SAFETY: lseek on a descriptor we own through `file`; it touches no memory of ours.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if at < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(err),
        };
    }
    // Non-negative, checked just above.
    Ok(Some(at as u64))
}

/// Copies data ranges, remembering across ranges which method works.
struct Copier {
    method: CopyMethod,
    /// The fallback's buffer, allocated on its first use.
    buf: Vec<u8>,
}

impl Copier {
    /// Copies `len` bytes at `offset` of `from` to the same offset of `to`. Switches to
    /// [`CopyMethod::ReadWrite`] for good when `copy_file_range` is not available.
    fn copy_range(&mut self, from: &File, to: &File, offset: u64, len: u64) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let chunk = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(MAX_COPY);
            let n = match self.method {
                CopyMethod::CopyFileRange => match copy_file_range(from, to, at, chunk) {
                    Err(e) if copy_file_range_unsupported(&e) => {
                        self.method = CopyMethod::ReadWrite;
                        continue;
                    }
                    other => other?,
                },
                CopyMethod::ReadWrite => {
                    self.buf.resize(COPY_BUFFER, 0);
                    let len = chunk.min(COPY_BUFFER);
                    read_write(from, to, at, &mut self.buf[..len])?
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the diff file ended inside a data range",
                ));
            }
            done += n as u64;
        }
        Ok(())
    }
}

/// Errors after which `pread`/`pwrite` still works: no syscall (old kernels, seccomp), files
/// on different filesystems, or filesystems that do not implement it.
fn copy_file_range_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
    )
}

/// One `copy_file_range` of up to `len` bytes at `offset` in both files.
fn copy_file_range(from: &File, to: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off_in = libc::loff_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
    let mut off_out = off_in;
    loop {
        // SAFETY: both descriptors are owned by the `File`s; the offsets are locals that the
        // kernel updates, and with explicit offsets neither file position moves.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if n >= 0 {
            // Non-negative, checked just above.
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One `pread` of up to `buf.len()` bytes at `offset` of `from`, written whole at the same
/// offset of `to`.
fn read_write(from: &File, to: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let n = loop {
        match from.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    to.write_all_at(&buf[..n], offset)?;
    Ok(n)
}

#[cfg(test)]
#[path = "rebase_tests.rs"]
mod tests;
