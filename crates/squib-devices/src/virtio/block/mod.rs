//! virtio-block (virtio 1.2 §5.2): a guest disk backed by a host file.
//!
//! - [`device`]: [`Block`], its config space, features and queue processing.
//! - [`request`]: parsing one descriptor chain into a request, with every guest mistake a
//!   typed [`request::RequestError`].
//! - [`disk`]: the backing file; `pread`/`pwrite` straight between it and guest memory,
//!   through the [`disk::DiskIo`] trait (tests substitute fault-injecting doubles).
//! - [`uring`]: the `Async` engine, io_uring with up to [`uring::RING_ENTRIES`] requests in
//!   flight, completions signalled on an eventfd the event loop watches.
//! - [`event_handler`]: the `event_manager` subscription (queue and rate-limiter events).
//! - [`metrics`]: [`BlockMetrics`], Firecracker's per-drive `block_<id>` counters.
//! - [`device::persist`]: [`BlockState`], what a snapshot keeps of the device.
//!
//! Data safety: a write completes only after `pwrite` returned for all its bytes; a FLUSH
//! completes only after `fdatasync`, whatever the cache mode (as in Firecracker; the mode only
//! decides whether the FLUSH feature is offered). With [`CacheMode::Writeback`] the file is
//! also synced when the device lets it go (drop at exit, a `path_on_host` swap). DISCARD and
//! WRITE_ZEROES punch a hole in the file (`fallocate`), so they are offered only for writable
//! regular files whose filesystem can punch holes (probed at open); they are charged one op
//! to the rate limiter like every request, but no bandwidth (no data moves).

pub mod device;
pub mod disk;
pub mod event_handler;
pub mod metrics;
pub mod request;
#[cfg(test)]
pub(crate) mod test_utils;
pub mod uring;

use std::path::PathBuf;

pub use device::persist::BlockState;
pub use device::Block;
pub use metrics::BlockMetrics;

use crate::rate_limiter::RateLimiter;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u8 = 9;
/// Queue size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request the device accepts (advertised as `seg_max`).
pub const SEG_MAX: u32 = 128;
/// Largest data segment a driver should send (advertised as `size_max`): with [`SEG_MAX`]
/// segments, a conforming driver never exceeds [`MAX_REQUEST_BYTES`].
pub const SIZE_MAX: u32 = 64 * 1024;
/// Largest data length of one read or write (8 MiB): a longer one is refused with IOERR
/// before any I/O, so one request cannot keep the event loop busy for long. Linux's default
/// `max_sectors_kb` stays well under it.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Bytes of reads and writes after which a drain stops and re-kicks itself, so that other
/// event sources get a turn: one queue event moves less than this plus one request.
pub const MAX_DRAIN_BYTES: u64 = 2 * MAX_REQUEST_BYTES;
/// Largest DISCARD/WRITE_ZEROES range in sectors (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;

/// virtio-blk feature bits.
pub mod features {
    /// `size_max` in config space is valid.
    pub const SIZE_MAX: u32 = 1;
    /// `seg_max` in config space is valid.
    pub const SEG_MAX: u32 = 2;
    /// The device is read-only.
    pub const RO: u32 = 5;
    /// Cache flush command.
    pub const FLUSH: u32 = 9;
    /// DISCARD command (offered for writable regular files).
    pub const DISCARD: u32 = 13;
    /// WRITE_ZEROES command (offered for writable regular files).
    pub const WRITE_ZEROES: u32 = 14;
}

/// Request types (`virtio_blk_outhdr.type`).
pub mod request_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id string.
    pub const GET_ID: u32 = 8;
    /// Deallocate sectors.
    pub const DISCARD: u32 = 11;
    /// Zero sectors.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Host caching policy (`cache_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// No FLUSH offered (a flush the guest sends anyway still syncs); no sync at exit.
    #[default]
    Unsafe,
    /// FLUSH offered; a flush completes after `fdatasync`; the file is synced at exit.
    Writeback,
}

/// How requests reach the backing file (`io_engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IoEngine {
    /// `pread`/`pwrite`/`fdatasync` on the event-loop thread, one request at a time.
    #[default]
    Sync,
    /// io_uring: many requests in flight, completions on an eventfd (see [`uring`]).
    Async,
}

/// Everything needed to build a [`Block`].
#[derive(Debug)]
pub struct BlockConfig {
    /// Drive id (returned by GET_ID, names the metrics group).
    pub drive_id: String,
    /// Backing file.
    pub path: PathBuf,
    /// The guest sees a read-only disk; the file is opened read-only.
    pub read_only: bool,
    /// Caching policy.
    pub cache: CacheMode,
    /// I/O throttling, if any.
    pub rate_limiter: Option<RateLimiter>,
    /// The I/O engine.
    pub engine: IoEngine,
}

/// Why a block device could not be built or updated.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file cannot be opened.
    #[error("Unable to open block file {}: {source}", path.display())]
    Open {
        /// Backing file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The size of the backing file cannot be read.
    #[error("Unable to read the size of block file {}: {source}", path.display())]
    Size {
        /// Backing file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An eventfd or timerfd cannot be created.
    #[error("Unable to create block device event fd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The Async engine cannot have an io_uring on this host.
    #[error(transparent)]
    Uring(#[from] uring::UringError),
    /// Signalling the guest failed.
    #[error("Unable to signal the guest: {0}")]
    Interrupt(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_error_names_path_and_os_error() {
        let err = BlockError::Open {
            path: PathBuf::from("/nope/disk.img"),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            err.to_string(),
            "Unable to open block file /nope/disk.img: No such file or directory (os error 2)"
        );
    }
}
