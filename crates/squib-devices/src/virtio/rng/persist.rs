//! [`EntropyState`]: what a snapshot keeps of the entropy device, as plain data.
//!
//! The device's only guest-visible state is its queue and the negotiated features; the rate
//! limiter is rebuilt from the VM configuration and the host buffers are scratch. Restoring
//! gives an inactive device; when [`EntropyState::activated`] is set, the VMM activates it
//! with the restored guest memory and interrupt line, as after a guest's DRIVER_OK.

use virtio_queue::{Queue, QueueState};

use super::{Entropy, EntropyError, QUEUE_SIZE};
use crate::rate_limiter::RateLimiter;
use crate::virtio::{features, VirtioDevice, VirtioState};

/// The entropy device's snapshot state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntropyState {
    /// Feature bits the driver accepted.
    pub acked_features: u64,
    /// The request queue (addresses, size, ring positions).
    pub queue: QueueState,
    /// Whether the device was activated.
    pub activated: bool,
}

impl Entropy {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> EntropyState {
        EntropyState {
            acked_features: self.acked_features(),
            queue: self.state.queues[super::RNG_QUEUE].state(),
            activated: self.is_activated(),
        }
    }

    /// A device with the saved queue and features, inactive, throttled by `rate_limiter`.
    ///
    /// # Errors
    /// [`EntropyError::Queue`] when the saved queue is not valid (e.g. a size above
    /// [`QUEUE_SIZE`]), [`EntropyError::EventFd`] when the queue eventfd cannot be created.
    pub fn restore(state: &EntropyState, rate_limiter: RateLimiter) -> Result<Self, EntropyError> {
        if state.queue.max_size != QUEUE_SIZE {
            return Err(EntropyError::Queue(virtio_queue::Error::InvalidMaxSize));
        }
        let queue = Queue::try_from(state.queue).map_err(EntropyError::Queue)?;
        let mut virtio = VirtioState::new(1, QUEUE_SIZE, 1u64 << features::VERSION_1)
            .map_err(EntropyError::EventFd)?;
        virtio.queues[super::RNG_QUEUE] = queue;
        virtio.acked_features = state.acked_features & virtio.avail_features;
        Ok(Self::with_state(virtio, rate_limiter))
    }
}
