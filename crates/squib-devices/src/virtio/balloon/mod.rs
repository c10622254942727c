//! virtio-balloon (virtio 1.2 §5.5): the guest hands pages back to the host on request.
//!
//! - [`device`]: [`Balloon`], its features, config space and queue processing.
//! - [`discard`]: giving guest pages back to the host (`madvise`, or an anonymous mapping
//!   over a file-backed private range), after checking they are guest memory.
//! - [`stats`]: [`BalloonStats`], the guest's statistics records and what `GET
//!   /balloon/statistics` shows.
//! - [`hinting`]: free page hinting's command ids ([`hinting::HintingState`]).
//! - [`event_handler`]: the `event_manager` subscription (queues and the statistics timer).
//! - [`persist`]: [`BalloonState`], the plain state a snapshot keeps.
//!
//! Queues, in Firecracker's order: inflate, deflate, stats (when the polling interval is not
//! 0), hinting (when free page hinting is on) and reporting (when free page reporting is
//! on). Pages are 4 KiB whatever the host
//! page size, as the virtio spec says.

pub mod device;
pub mod discard;
pub mod event_handler;
pub mod hinting;
pub mod persist;
pub mod stats;

pub use device::Balloon;
pub use persist::BalloonState;
pub use stats::BalloonStats;

/// Queue size of every balloon queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the inflate queue.
pub const INFLATE_QUEUE: usize = 0;
/// Index of the deflate queue.
pub const DEFLATE_QUEUE: usize = 1;
/// Key of the metrics group the VMM registers [`Balloon::metrics`] under.
pub const METRICS_GROUP: &str = "balloon";
/// Balloon page size (virtio 1.2 §5.5.6: always 4 KiB).
pub const BALLOON_PAGE_SIZE: u64 = 4096;
/// Page frame numbers are `address >> PFN_SHIFT`.
pub const PFN_SHIFT: u64 = 12;
/// Most PFNs read from one inflate or deflate descriptor (the Linux driver sends 256).
pub const MAX_PFNS_PER_DESC: usize = 256;
/// Pages in one MiB.
pub const PAGES_PER_MIB: u32 = 256;

/// Balloon feature bits (virtio 1.2 §5.5.3).
pub mod feature {
    /// The device has a statistics queue.
    pub const STATS_VQ: u32 = 1;
    /// The guest deflates the balloon when it runs out of memory.
    pub const DEFLATE_ON_OOM: u32 = 2;
    /// The device has a free page hinting queue.
    pub const FREE_PAGE_HINT: u32 = 3;
    /// The device has a free page reporting queue.
    pub const FREE_PAGE_REPORTING: u32 = 5;
}

/// How the VMM configures a balloon (the validated `PUT /balloon` body, minus hinting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Target size in MiB.
    pub amount_mib: u32,
    /// Offer DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// Statistics polling period in seconds; 0 disables the stats queue.
    pub stats_polling_interval_s: u16,
    /// Offer FREE_PAGE_HINT and its queue.
    pub free_page_hinting: bool,
    /// Offer FREE_PAGE_REPORTING and its queue.
    pub free_page_reporting: bool,
}

/// Balloon errors, with Firecracker's texts (the VMM prefixes `Balloon update error: `).
#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    /// An eventfd or timerfd cannot be created or armed.
    #[error("Balloon: {0}")]
    Io(#[source] std::io::Error),
    /// A runtime change before the guest activated the device.
    #[error("Balloon: Device not activated yet.")]
    DeviceNotActive,
    /// Statistics switched on or off after boot.
    #[error("Balloon: Statistics cannot be enabled/disabled after activation.")]
    StatisticsStateChange,
    /// `GET /balloon/statistics` on a balloon without a stats queue.
    #[error("Balloon: Received stats query when stats are disabled.")]
    StatisticsDisabled,
    /// A hinting action on a balloon built without hinting.
    #[error("Balloon: Attempting to use hinting when not enabled")]
    HintingNotEnabled,
    /// A target of more pages than a u32 holds.
    #[error("Balloon: Amount of pages requested is too large.")]
    TooManyPages,
}

#[cfg(test)]
mod tests;
