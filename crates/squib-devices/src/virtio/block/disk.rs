//! The backing file of a block device, and the synchronous I/O engine.
//!
//! Data moves with `pread`/`pwrite` directly between the file and the guest-memory slices
//! vm-memory hands out (`get_slices` splits a range that crosses regions), so a request costs
//! no intermediate buffer. Short transfers are retried until complete; hitting end-of-file
//! mid-request is an error (the device checks bounds first, so only a file truncated behind
//! our back gets there).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryError};

use super::{BlockError, SECTOR_SHIFT, SECTOR_SIZE};
use crate::virtio::GuestMemoryMmap;

/// Why moving data between the file and guest memory failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskIoError {
    /// The guest range is not fully inside guest memory.
    #[error("guest memory range is invalid: {0}")]
    Memory(#[source] GuestMemoryError),
    /// The host file operation failed.
    #[error("host file I/O failed: {0}")]
    Io(#[source] std::io::Error),
}

/// An open backing file and its size in sectors.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    path: PathBuf,
    nsectors: u64,
    regular: bool,
}

impl DiskFile {
    /// Open `path` (read-only when `read_only`) and measure it.
    ///
    /// # Errors
    /// [`BlockError::Open`] / [`BlockError::Size`] with the OS error.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        // Seeking to the end also measures block devices, whose metadata length is 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_owned(),
                source,
            })?;
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "block file {} size {size} is not a multiple of {SECTOR_SIZE}; the tail is hidden",
                path.display()
            );
        }
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        Ok(Self {
            file,
            path: path.to_owned(),
            nsectors: size >> SECTOR_SHIFT,
            regular,
        })
    }

    /// Disk capacity in 512-byte sectors.
    #[must_use]
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    /// The backing file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read `len` bytes at file `offset` into guest memory at `addr`.
    ///
    /// # Errors
    /// [`DiskIoError`] when the guest range is invalid or the read fails.
    pub fn read_to_guest(
        &self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
        mut offset: u64,
    ) -> Result<(), DiskIoError> {
        for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
            let slice = slice.map_err(DiskIoError::Memory)?;
            let guard = slice.ptr_guard_mut();
            // SAFETY: `guard` keeps `slice.len()` bytes at `as_ptr()` mapped and writable for
            // its lifetime; the kernel writes at most that many bytes there.
            unsafe { transfer_all(&self.file, guard.as_ptr(), slice.len(), offset, Dir::Read) }
                .map_err(DiskIoError::Io)?;
            offset += slice.len() as u64;
        }
        Ok(())
    }

    /// Write `len` bytes from guest memory at `addr` to file `offset`.
    ///
    /// # Errors
    /// [`DiskIoError`] when the guest range is invalid or the write fails.
    pub fn write_from_guest(
        &self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
        mut offset: u64,
    ) -> Result<(), DiskIoError> {
        for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
            let slice = slice.map_err(DiskIoError::Memory)?;
            let guard = slice.ptr_guard();
            // SAFETY: `guard` keeps `slice.len()` bytes at `as_ptr()` mapped and readable for
            // its lifetime; the kernel only reads them.
            unsafe {
                transfer_all(
                    &self.file,
                    guard.as_ptr().cast_mut(),
                    slice.len(),
                    offset,
                    Dir::Write,
                )
            }
            .map_err(DiskIoError::Io)?;
            offset += slice.len() as u64;
        }
        Ok(())
    }

    /// Whether the backing is a regular file (holes can be punched).
    #[must_use]
    pub fn is_regular_file(&self) -> bool {
        self.regular
    }

    /// Deallocate `len` bytes at `offset`, keeping the file size; they read back as zeros.
    ///
    /// # Errors
    /// The OS error of `fallocate` (e.g. `EOPNOTSUPP` on a filesystem without holes).
    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
        let off = libc::off_t::try_from(offset).map_err(|_| invalid())?;
        let len = libc::off_t::try_from(len).map_err(|_| invalid())?;
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on an fd we own touches no memory of this process.
        let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// `fdatasync` the file.
    ///
    /// # Errors
    /// The OS error of `fdatasync`.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// `pread`/`pwrite` until `len` bytes moved, retrying short transfers and EINTR.
///
/// # Safety
/// `ptr` must be valid for `len` bytes: writable for [`Dir::Read`], readable for
/// [`Dir::Write`], for the whole call.
unsafe fn transfer_all(
    file: &File,
    ptr: *mut u8,
    len: usize,
    offset: u64,
    dir: Dir,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let off = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `done < len`, so `ptr + done` and the `len - done` bytes after it stay inside
        // the caller's valid range; the fd is open for the whole call.
        let ret = unsafe {
            let p = ptr.add(done);
            match dir {
                Dir::Read => libc::pread(file.as_raw_fd(), p.cast(), len - done, off),
                Dir::Write => libc::pwrite(file.as_raw_fd(), p.cast(), len - done, off),
            }
        };
        match ret {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::single_region_mem;
    use std::io::Write;
    use vm_memory::Bytes;

    #[test]
    fn open_measures_size_and_reports_missing_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0u8; 4096 + 100]).unwrap();
        let disk = DiskFile::open(f.path(), false).unwrap();
        assert_eq!(disk.nsectors(), 8);
        let err = DiskFile::open(Path::new("/nonexistent/squib.img"), true).unwrap_err();
        assert!(matches!(err, BlockError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/squib.img"));
    }

    #[test]
    fn moves_data_between_file_and_guest_memory() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(8192).unwrap();
        let disk = DiskFile::open(f.path(), false).unwrap();
        let mem = single_region_mem(0x10000);
        mem.write_slice(&[0xab; 1024], GuestAddress(0x1000))
            .unwrap();
        disk.write_from_guest(&mem, GuestAddress(0x1000), 1024, 512)
            .unwrap();
        disk.read_to_guest(&mem, GuestAddress(0x4000), 1024, 512)
            .unwrap();
        let mut back = [0u8; 1024];
        mem.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
        assert_eq!(back, [0xab; 1024]);
        let err = disk
            .read_to_guest(&mem, GuestAddress(0xff00), 1024, 0)
            .unwrap_err();
        assert!(matches!(err, DiskIoError::Memory(_)));
        let err = disk
            .read_to_guest(&mem, GuestAddress(0), 1024, 8000)
            .unwrap_err();
        assert!(matches!(err, DiskIoError::Io(_)));
    }
}
