//! [`VsockState`]: what a snapshot keeps of a vsock device, and its restore.
//!
//! Host connections are not saved (as in Firecracker): their Unix streams belong to the old
//! process. The restored device binds `uds_path` (or the VMM's override) afresh, and when it
//! was activated it sends the guest a `TRANSPORT_RESET` event so the guest drops every
//! connection it still believes in. The snapshot keeps the virtio state, the guest CID, the
//! next host-initiated local port, and whether a reset event was delivered that the guest
//! has not acknowledged yet (Firecracker's `pending_event_ack`), during which nothing is sent
//! on the rx queue.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Vsock;
use crate::virtio::persist::{restore_device, RestoreError, VirtioDeviceState};
use crate::virtio::vsock::{RX_INDEX, TX_INDEX};
use crate::virtio::{GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

/// A vsock device's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VsockState {
    /// Queues, features, activation.
    pub virtio: VirtioDeviceState,
    /// The guest's CID (config space).
    pub guest_cid: u64,
    /// The host socket path when the snapshot was taken (the VMM may bind another).
    pub uds_path: PathBuf,
    /// The local port the next host-initiated connection tries first, in [2³⁰, 2³¹).
    pub next_local_port: u32,
    /// A `TRANSPORT_RESET` was delivered and the guest has not refilled the event queue
    /// since: the rx queue stays held until it does.
    pub pending_event_ack: bool,
}

impl Vsock {
    /// The state to put in a snapshot (connections are not part of it).
    #[must_use]
    pub fn save(&self) -> VsockState {
        VsockState {
            virtio: self.state.save(self.is_activated()),
            guest_cid: self.guest_cid,
            uds_path: self.uds_path().to_owned(),
            next_local_port: self.muxer.next_local_port(),
            pending_event_ack: self.rx_gated,
        }
    }

    /// Apply `state` to this freshly built device; if it was activated, activate it with
    /// `mem` and `interrupt`, send the guest a `TRANSPORT_RESET` (now, or as soon as it
    /// posts an event buffer) and kick the rx and tx queues.
    ///
    /// # Errors
    /// [`RestoreError::Identity`] for another guest CID, [`RestoreError::InFlight`] for a
    /// local port outside [2³⁰, 2³¹) or a pending acknowledgement on an inactive device, or
    /// the common virtio checks.
    pub fn restore(
        &mut self,
        state: &VsockState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), RestoreError> {
        if state.guest_cid != self.guest_cid {
            return Err(RestoreError::Identity {
                device: "vsock".to_owned(),
                what: "guest CID",
                saved: state.guest_cid.to_string(),
                configured: self.guest_cid.to_string(),
            });
        }
        let in_flight = |reason: String| RestoreError::InFlight {
            device: "vsock".to_owned(),
            reason,
        };
        if state.pending_event_ack && !state.virtio.activated {
            return Err(in_flight(
                "a transport reset awaits the guest on a device that is not activated".to_owned(),
            ));
        }
        let port = state.next_local_port;
        restore_device(self, &state.virtio, mem, interrupt, |vsock| {
            if !vsock.muxer.set_next_local_port(port) {
                return Err(in_flight(format!(
                    "next local port {port} is outside [2^30, 2^31)"
                )));
            }
            vsock.rx_gated = state.pending_event_ack;
            Ok(())
        })?;
        if state.virtio.activated {
            self.send_transport_reset();
            // Not the event queue: its notification is the guest's acknowledgement of the
            // reset, which lifts the rx gate.
            self.state.kick_queues(&[RX_INDEX, TX_INDEX])?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
