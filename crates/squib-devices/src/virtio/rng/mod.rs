//! virtio-rng (virtio 1.2 §5.4): an entropy source for the guest, fed by the host's
//! `getrandom(2)`.
//!
//! - [`device`]: [`Entropy`], its features and queue processing.
//! - [`request`]: turning one descriptor chain into the guest buffers to fill, with every
//!   guest mistake a typed [`request::RequestError`].
//! - [`event_handler`]: the `event_manager` subscription (queue and rate-limiter events).
//! - [`metrics`]: [`EntropyMetrics`], Firecracker's `entropy` group.
//! - [`persist`]: [`EntropyState`], the plain state a snapshot keeps.
//!
//! The device has one request queue and no config space, and offers only VERSION_1. Each
//! request is a chain of device-writable buffers; the device fills them with at most
//! [`MAX_ENTROPY_BYTES`] random bytes and completes the chain with the number written. As in
//! Firecracker (`src/vmm/src/devices/virtio/rng/device.rs`), a request costs one op and the
//! bytes it *asks for* (not the capped number served) from the rate limiter; a throttled
//! request goes back to the ring and is retried when the limiter's timer fires. A malformed
//! chain or a host `getrandom` failure completes with length 0 and the device keeps running.

pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod persist;
pub mod request;

pub use device::Entropy;
pub use metrics::EntropyMetrics;
pub use persist::EntropyState;

/// Queue size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the request queue.
pub const RNG_QUEUE: usize = 0;
/// Most bytes served per request (Firecracker's cap): bounds the host buffer and the work
/// one chain can cause, whatever lengths the guest writes in its descriptors.
pub const MAX_ENTROPY_BYTES: u32 = 64 * 1024;
/// The device id Firecracker gives its single entropy device.
pub const ENTROPY_DEV_ID: &str = "rng";
/// Key of the metrics group the VMM registers [`Entropy::metrics`] under.
pub const METRICS_GROUP: &str = "entropy";

/// Why an entropy device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    /// An eventfd cannot be created.
    #[error("Unable to create entropy device event fd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
