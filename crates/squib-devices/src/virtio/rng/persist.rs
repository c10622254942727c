//! [`EntropyState`]: what a snapshot keeps of the entropy device, as plain data.
//!
//! The device's only guest-visible state is its queue, the negotiated features and whether
//! it was activated; the rate limiter is rebuilt from the VM configuration and the host
//! buffers are scratch. A request the guest published before the snapshot is served after
//! the restore (the restore kicks the queue).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Entropy, RNG_QUEUE};
use crate::virtio::persist::{restore_device, RestoreError, VirtioDeviceState};
use crate::virtio::{GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

/// The entropy device's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EntropyState {
    /// Queue, features, activation.
    pub virtio: VirtioDeviceState,
}

impl Entropy {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> EntropyState {
        EntropyState {
            virtio: self.state.save(self.is_activated()),
        }
    }

    /// Apply `state` to this freshly built device; if it was activated, activate it with
    /// `mem` and `interrupt` and kick its queue.
    ///
    /// # Errors
    /// [`RestoreError`] when the state does not fit the device (queue count or maximum size,
    /// an invalid queue, features not offered) or the device is not fresh.
    pub fn restore(
        &mut self,
        state: &EntropyState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), RestoreError> {
        restore_device(self, &state.virtio, mem, interrupt, |_| Ok(()))?;
        if state.virtio.activated {
            self.state.kick_queues(&[RNG_QUEUE])?;
        }
        Ok(())
    }
}
