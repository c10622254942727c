//! [`BlockState`]: what a snapshot keeps of a block device, and its restore.
//!
//! The drive's configuration (path, read-only, cache mode, rate limiter, id) comes back from
//! the VM configuration; the snapshot keeps the virtio state plus what the guest saw of the
//! disk: its id (GET_ID) and capacity. A restore onto a file of another size is refused, since
//! the guest's idea of the disk would be wrong. The I/O engine is kept too, and a restore
//! onto a drive configured with another one is refused. Nothing is in flight when the state
//! is read: the Sync engine finishes each request within its event, and the Async engine's
//! requests are completed by `prepare_save` first (used entries written, interrupt raised).
//! A request the guest published and the device had not taken yet is still in the
//! available ring, and the restore kicks the queue.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Block;
use crate::virtio::block::IoEngine;
use crate::virtio::persist::{restore_device, RestoreError, VirtioDeviceState};
use crate::virtio::{GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

/// A block device's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockState {
    /// Queue, features, activation.
    pub virtio: VirtioDeviceState,
    /// The drive id (what GET_ID answers).
    pub drive_id: String,
    /// The backing file when the snapshot was taken (for error messages and the VMM).
    pub disk_path: PathBuf,
    /// The capacity in 512-byte sectors the guest saw.
    pub nsectors: u64,
    /// The I/O engine that served the drive.
    pub io_engine: IoEngine,
}

impl Block {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> BlockState {
        BlockState {
            virtio: self.state.save(self.is_activated()),
            drive_id: self.drive_id.clone(),
            disk_path: self.disk.path().to_owned(),
            nsectors: self.disk.nsectors(),
            io_engine: self.io_engine(),
        }
    }

    /// Apply `state` to this freshly built device; if it was activated, activate it with
    /// `mem` and `interrupt` and kick its queue.
    ///
    /// # Errors
    /// [`RestoreError::DiskSize`] when the disk's capacity is not the one the guest saw,
    /// [`RestoreError::Identity`] for another drive id, or the common virtio checks.
    pub fn restore(
        &mut self,
        state: &BlockState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), RestoreError> {
        if state.drive_id != self.drive_id {
            return Err(RestoreError::Identity {
                device: format!("block {}", self.drive_id),
                what: "drive id",
                saved: state.drive_id.clone(),
                configured: self.drive_id.clone(),
            });
        }
        if state.io_engine != self.io_engine() {
            return Err(RestoreError::Identity {
                device: format!("block {}", self.drive_id),
                what: "io_engine",
                saved: format!("{:?}", state.io_engine),
                configured: format!("{:?}", self.io_engine()),
            });
        }
        if state.nsectors != self.disk.nsectors() {
            return Err(RestoreError::DiskSize {
                drive_id: self.drive_id.clone(),
                path: self.disk.path().to_owned(),
                saved: state.nsectors,
                actual: self.disk.nsectors(),
            });
        }
        restore_device(self, &state.virtio, mem, interrupt, |_| Ok(()))?;
        if state.virtio.activated {
            self.state.kick_queues(&[0])?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
