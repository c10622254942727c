//! Block test doubles: [`FaultyFile`], a [`DiskIo`] over a real file that injects the host
//! failures a disk can have (EIO, ENOSPC after a short write, zero-length writes, a failing
//! `fdatasync`) and counts what the device asked of it, and [`faulty_block`] to build a
//! device on one.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tempfile::NamedTempFile;

use super::device::tests::harness::{pattern, TestDisk};
use super::disk::{DiskFile, DiskIo, GuestSlice};
use super::{Block, BlockConfig, CacheMode};

/// The faults to inject (an errno of 0 = none) and the counters, shared with the test.
#[derive(Debug)]
pub struct Faults {
    /// Every `pread` fails with this errno.
    pub read_errno: AtomicI32,
    /// Every `pwrite` fails with this errno.
    pub write_errno: AtomicI32,
    /// Every `fdatasync` fails with this errno.
    pub sync_errno: AtomicI32,
    /// Every `fallocate` fails with this errno.
    pub punch_errno: AtomicI32,
    /// Most bytes one `pwrite` moves (0 = no limit): short writes.
    pub write_chunk: AtomicUsize,
    /// Every `pwrite` returns 0.
    pub write_zero: AtomicBool,
    /// Bytes the disk still has room for: a write past it is cut short, the next one fails
    /// with ENOSPC, as on a full filesystem.
    pub space_left: AtomicU64,
    /// Successful `fdatasync` calls.
    pub syncs: AtomicU64,
    /// Successful `fallocate` calls.
    pub punches: AtomicU64,
    /// A write succeeded since the last successful `fdatasync`.
    pub dirty: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            read_errno: AtomicI32::new(0),
            write_errno: AtomicI32::new(0),
            sync_errno: AtomicI32::new(0),
            punch_errno: AtomicI32::new(0),
            write_chunk: AtomicUsize::new(0),
            write_zero: AtomicBool::new(false),
            space_left: AtomicU64::new(u64::MAX),
            syncs: AtomicU64::new(0),
            punches: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
        }
    }
}

impl Faults {
    /// Stop injecting anything.
    pub fn clear(&self) {
        for errno in [
            &self.read_errno,
            &self.write_errno,
            &self.sync_errno,
            &self.punch_errno,
        ] {
            errno.store(0, Ordering::SeqCst);
        }
        self.write_chunk.store(0, Ordering::SeqCst);
        self.write_zero.store(false, Ordering::SeqCst);
        self.space_left.store(u64::MAX, Ordering::SeqCst);
    }

    fn injected(errno: &AtomicI32) -> std::io::Result<()> {
        match errno.load(Ordering::SeqCst) {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// A real file behind a fault injector.
#[derive(Debug)]
pub struct FaultyFile {
    file: File,
    faults: Arc<Faults>,
}

impl FaultyFile {
    /// `file`, failing as `faults` says.
    pub fn new(file: File, faults: Arc<Faults>) -> Self {
        Self { file, faults }
    }
}

impl DiskIo for FaultyFile {
    fn read_at(&self, dst: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize> {
        Faults::injected(&self.faults.read_errno)?;
        self.file.read_at(dst, offset)
    }

    fn write_at(&self, src: &GuestSlice<'_>, offset: u64) -> std::io::Result<usize> {
        let f = &self.faults;
        Faults::injected(&f.write_errno)?;
        if f.write_zero.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let mut len = src.len();
        match f.write_chunk.load(Ordering::SeqCst) {
            0 => {}
            chunk => len = len.min(chunk),
        }
        let space = f.space_left.load(Ordering::SeqCst);
        if space == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        len = len.min(usize::try_from(space).unwrap_or(usize::MAX));
        let part = src.subslice(0, len).expect("in range");
        let n = self.file.write_at(&part, offset)?;
        f.space_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some(s.saturating_sub(n as u64))
            })
            .ok();
        f.dirty.store(true, Ordering::SeqCst);
        Ok(n)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Faults::injected(&self.faults.sync_errno)?;
        // Clear first: a write racing this sync leaves the file dirty.
        self.faults.dirty.store(false, Ordering::SeqCst);
        DiskIo::sync_data(&self.file)?;
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        DiskIo::raw_fd(&self.file)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        Faults::injected(&self.faults.punch_errno)?;
        self.file.punch_hole(offset, len)?;
        self.faults.punches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A block device on a temp file of `size` bytes (filled with [`pattern`]) behind a
/// [`FaultyFile`]; `prepare` may set faults before the device opens it (the punch-hole probe
/// runs at open).
pub fn faulty_block(
    size: usize,
    cache: CacheMode,
    prepare: impl FnOnce(&Faults),
) -> (TestDisk, Arc<Faults>) {
    let mut file = NamedTempFile::new().unwrap();
    file.write_all(&pattern(0, size)).unwrap();
    let faults = Arc::new(Faults::default());
    prepare(&faults);
    let io = FaultyFile::new(file.reopen().unwrap(), faults.clone());
    let disk = DiskFile::with_io(Box::new(io), file.path(), size as u64, true);
    let cfg = BlockConfig {
        drive_id: "rootfs".to_owned(),
        path: file.path().to_owned(),
        read_only: false,
        cache,
        rate_limiter: None,
        engine: Default::default(),
    };
    let block = Block::with_disk(cfg, disk).unwrap();
    (TestDisk { block, file }, faults)
}
