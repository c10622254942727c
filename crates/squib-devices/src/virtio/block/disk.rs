//! The backing file of a block device, and the synchronous I/O engine.
//!
//! Data moves with `pread`/`pwrite` directly between the file and the guest-memory slices
//! vm-memory hands out (`get_slices` splits a range that crosses regions), so a request costs
//! no intermediate buffer. Short transfers are retried until complete; a transfer that makes
//! no progress (end of file on a read, a zero-length write) is an error (the device checks
//! bounds first, so only a file truncated behind our back gets there).
//!
//! The host-file calls go through [`DiskIo`], implemented by [`File`]; tests put a double in
//! its place to inject faults (EIO, ENOSPC, short writes, a failing `fdatasync`) or to count
//! syncs, without touching the device. DISCARD/WRITE_ZEROES punch holes, so [`DiskFile::open`]
//! probes `fallocate(PUNCH_HOLE)` on the actual file, past its end where no data lives: a
//! block device or a filesystem without hole punching does not get those features.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use vm_memory::bitmap::{Bitmap, MS};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryError, VolatileSlice};

use super::{BlockError, SECTOR_SHIFT, SECTOR_SIZE};
use crate::virtio::GuestMemoryMmap;

/// A slice of guest memory, as vm-memory hands it out for [`GuestMemoryMmap`], with its part
/// of the dirty-page bitmap.
pub type GuestSlice<'a> = VolatileSlice<'a, MS<'a, GuestMemoryMmap>>;

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

/// The host-file operations behind a [`DiskFile`]: one system call each, no retries (the
/// caller retries short transfers and `EINTR`).
pub trait DiskIo: Send + std::fmt::Debug {
    /// One `pread` of at most `dst.len()` bytes at file `offset`; returns the bytes read.
    ///
    /// # Errors
    /// The OS error.
    fn read_at(&self, dst: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize>;
    /// One `pwrite` of at most `src.len()` bytes at file `offset`; returns the bytes written.
    ///
    /// # Errors
    /// The OS error.
    fn write_at(&self, src: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize>;
    /// `fdatasync`.
    ///
    /// # Errors
    /// The OS error.
    fn sync_data(&self) -> std::io::Result<()>;
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)` over `len > 0` bytes at `offset`.
    ///
    /// # Errors
    /// The OS error (`EOPNOTSUPP` where the filesystem cannot punch holes).
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()>;
    /// The file descriptor, for the Async engine's io_uring requests (which bypass these
    /// methods: a double injects faults for the Sync engine only).
    fn raw_fd(&self) -> RawFd;
}

fn off_t(offset: u64) -> std::io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn syscall_result(ret: isize) -> std::io::Result<usize> {
    usize::try_from(ret).map_err(|_| std::io::Error::last_os_error())
}

impl DiskIo for File {
    fn read_at(&self, dst: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize> {
        let off = off_t(offset)?;
        let guard = dst.ptr_guard_mut();
        // SAFETY: `guard` keeps `dst.len()` bytes at `as_ptr()` mapped and writable for its
        // lifetime; the kernel writes at most that many bytes there.
        let ret = unsafe { libc::pread(self.as_raw_fd(), guard.as_ptr().cast(), dst.len(), off) };
        syscall_result(ret)
    }

    fn write_at(&self, src: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize> {
        let off = off_t(offset)?;
        let guard = src.ptr_guard();
        // SAFETY: `guard` keeps `src.len()` bytes at `as_ptr()` mapped and readable for its
        // lifetime; the kernel only reads them.
        let ret = unsafe { libc::pwrite(self.as_raw_fd(), guard.as_ptr().cast(), src.len(), off) };
        syscall_result(ret)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let (off, len) = (off_t(offset)?, off_t(len)?);
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on an fd we own touches no memory of this process.
        let ret = unsafe { libc::fallocate(self.as_raw_fd(), mode, off, len) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// An open backing file and its size in sectors.
#[derive(Debug)]
pub struct DiskFile {
    io: Box<dyn DiskIo>,
    path: PathBuf,
    nsectors: u64,
    punch_hole: bool,
}

impl DiskFile {
    /// Open `path` (read-only when `read_only`), measure it and probe hole punching.
    ///
    /// # Errors
    /// [`BlockError::Open`] / [`BlockError::Size`] with the OS error.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::from_file(file, path, read_only)
    }

    /// Serve `file`, already opened from `path` (read-only when `read_only`) by the caller:
    /// measure it and probe hole punching. The VMM opens drives once, when they are put, and
    /// hands that file here, so the path is never opened again.
    ///
    /// # Errors
    /// [`BlockError::Size`] with the OS error.
    pub fn from_file(mut file: File, path: &Path, read_only: bool) -> Result<Self, BlockError> {
        // Seeking to the end also measures block devices, whose metadata length is 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_owned(),
                source,
            })?;
        // A block device's fallocate discards for real: only regular files are probed.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        Ok(Self::with_io(
            Box::new(file),
            path,
            size,
            regular && !read_only,
        ))
    }

    /// A disk of `size` bytes served by `io` (tests put a fault-injecting double here).
    /// When `probe_punch_hole`, a hole is punched past the end of the file, where no data
    /// lives, to learn whether DISCARD/WRITE_ZEROES can be offered.
    pub fn with_io(io: Box<dyn DiskIo>, path: &Path, size: u64, probe_punch_hole: bool) -> Self {
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "block file {} size {size} is not a multiple of {SECTOR_SIZE}; the tail is hidden",
                path.display()
            );
        }
        let punch_hole = probe_punch_hole && {
            let past_end = size.next_multiple_of(PROBE_LEN);
            io.punch_hole(past_end, PROBE_LEN).is_ok()
        };
        Self {
            io,
            path: path.to_owned(),
            nsectors: size >> SECTOR_SHIFT,
            punch_hole,
        }
    }

    /// Disk capacity in 512-byte sectors.
    #[must_use]
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    /// The backing file's descriptor (the Async engine's requests name it).
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.io.raw_fd()
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
        offset: u64,
    ) -> Result<(), DiskIoError> {
        self.transfer(mem, addr, len, offset, Dir::Read)
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
        offset: u64,
    ) -> Result<(), DiskIoError> {
        self.transfer(mem, addr, len, offset, Dir::Write)
    }

    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
        mut offset: u64,
        dir: Dir,
    ) -> Result<(), DiskIoError> {
        for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
            let slice = slice.map_err(DiskIoError::Memory)?;
            transfer_all(self.io.as_ref(), &slice, offset, dir).map_err(DiskIoError::Io)?;
            offset += slice.len() as u64;
        }
        Ok(())
    }

    /// Whether holes can be punched: a writable regular file on a filesystem that supports
    /// `fallocate(PUNCH_HOLE)` (probed at open).
    #[must_use]
    pub fn supports_punch_hole(&self) -> bool {
        self.punch_hole
    }

    /// Deallocate `len` bytes at `offset`, keeping the file size; they read back as zeros.
    ///
    /// # Errors
    /// The OS error of `fallocate` (e.g. `EOPNOTSUPP` on a filesystem without holes).
    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.io.punch_hole(offset, len)
    }

    /// `fdatasync` the file.
    ///
    /// # Errors
    /// The OS error of `fdatasync`.
    pub fn sync(&self) -> std::io::Result<()> {
        self.io.sync_data()
    }
}

/// Length of the hole [`DiskFile::with_io`] punches past the end of the file as a probe.
const PROBE_LEN: u64 = 4096;

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// `pread`/`pwrite` until all of `slice` moved, retrying short transfers and `EINTR`.
fn transfer_all(
    io: &dyn DiskIo,
    slice: &GuestSlice<'_>,
    offset: u64,
    dir: Dir,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < slice.len() {
        let rest = slice
            .offset(done)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let at = offset + done as u64;
        let ret = match dir {
            Dir::Read => io.read_at(&rest, at),
            Dir::Write => io.write_at(&rest, at),
        };
        match ret {
            Ok(0) => {
                let kind = match dir {
                    Dir::Read => std::io::ErrorKind::UnexpectedEof,
                    Dir::Write => std::io::ErrorKind::WriteZero,
                };
                return Err(kind.into());
            }
            Ok(n) => {
                let n = n.min(rest.len());
                // `pread` wrote through a raw pointer, behind vm-memory's back: record the
                // bytes it wrote as dirty, or a Diff snapshot would miss them.
                if let Dir::Read = dir {
                    rest.bitmap().mark_dirty(0, n);
                }
                done += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{clear_dirty, dirty_pages, single_region_mem};
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

    #[test]
    fn reads_mark_the_guest_pages_they_fill_and_writes_none() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(0x4000).unwrap();
        let disk = DiskFile::open(f.path(), false).unwrap();
        let mem = single_region_mem(0x10000);
        mem.write_slice(&[0xab; 0x1000], GuestAddress(0x1000))
            .unwrap();
        clear_dirty(&mem);
        disk.write_from_guest(&mem, GuestAddress(0x1000), 0x1000, 0)
            .unwrap();
        assert!(dirty_pages(&mem).is_empty());
        // 0x1800 bytes from the middle of page 4 end exactly at the end of page 5.
        disk.read_to_guest(&mem, GuestAddress(0x4800), 0x1800, 0)
            .unwrap();
        assert_eq!(dirty_pages(&mem), [0x4000, 0x5000]);
    }
}
