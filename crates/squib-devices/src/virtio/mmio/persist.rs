//! [`MmioTransportState`]: what a snapshot keeps of one virtio-mmio slot — the transport's
//! registers and, through [`VirtioDevice::save_state`](crate::virtio::VirtioDevice::save_state), the device behind it — and the one
//! call that restores both.
//!
//! The VMM rebuilds the device from its configuration and the transport on the same MMIO
//! slot and IRQ as at boot, then calls [`MmioTransport::restore`]: the device gets its queues,
//! features and in-flight state back (and, if it was activated, is activated and its queues
//! are kicked so requests published before the snapshot are served), and the transport its
//! Status, selectors, driver features, InterruptStatus and ConfigGeneration. A pending
//! interrupt is raised again: one raised just before the snapshot must not be lost, and a
//! spurious one costs the driver a register read.

use serde::{Deserialize, Serialize};
use virtio_queue::QueueT;

use super::MmioTransport;
use crate::virtio::persist::{DeviceState, RestoreError};
use crate::virtio::{status, INTERRUPT_CONFIG, INTERRUPT_VRING};

/// One virtio-mmio slot in a snapshot: transport registers and the device's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MmioTransportState {
    /// Status.
    pub device_status: u32,
    /// DeviceFeaturesSel.
    pub features_select: u32,
    /// DriverFeaturesSel.
    pub acked_features_select: u32,
    /// DriverFeatures as the driver wrote them (equal to the device's acked features once
    /// FEATURES_OK is set).
    pub driver_features: u64,
    /// QueueSel.
    pub queue_select: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// The device behind the transport.
    pub device: DeviceState,
}

impl MmioTransport {
    /// Let the device finish what it has in flight before anything is saved (see
    /// [`crate::virtio::VirtioDevice::prepare_save`]); the interrupts that raises reach the
    /// irqchip before the VM's state is read.
    pub fn prepare_save(&self) {
        self.locked_device().prepare_save();
    }

    /// The slot's state for a snapshot (takes the device lock; the VM is paused).
    #[must_use]
    pub fn save(&self) -> MmioTransportState {
        MmioTransportState {
            device_status: self.device_status,
            features_select: self.device_features_sel,
            acked_features_select: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_select: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            config_generation: self.interrupt.config_generation(),
            device: self.locked_device().save_state(),
        }
    }

    /// Apply `state` to this freshly built transport and its freshly built device (same
    /// configuration, slot and IRQ as when it was saved).
    ///
    /// # Errors
    /// [`RestoreError`] when the state does not fit: another device kind, a Status that
    /// contradicts the device's activation, driver features that are not the device's acked
    /// ones, undefined interrupt bits, or anything the device refuses. Nothing is changed
    /// then, except when activating the device or signalling it fails.
    pub fn restore(&mut self, state: &MmioTransportState) -> Result<(), RestoreError> {
        if self.device_status != 0 {
            return Err(RestoreError::NotFresh);
        }
        check_registers(state)?;
        {
            let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
            dev.restore_state(&state.device, &self.mem, &self.interrupt)?;
            for (regs, queue) in self.queues.iter_mut().zip(dev.queues()) {
                regs.ready = queue.ready();
            }
        }
        self.device_status = state.device_status;
        self.device_features_sel = state.features_select;
        self.driver_features_sel = state.acked_features_select;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_select;
        self.interrupt
            .restore(state.interrupt_status, state.config_generation);
        self.interrupt
            .retrigger_pending()
            .map_err(RestoreError::Signal)
    }
}

/// The transport's own consistency rules: what its register writes can reach.
fn check_registers(state: &MmioTransportState) -> Result<(), RestoreError> {
    if state.interrupt_status & !(INTERRUPT_VRING | INTERRUPT_CONFIG) != 0 {
        return Err(RestoreError::InterruptStatus(state.interrupt_status));
    }
    let virtio = state.device.virtio();
    let status = state.device_status;
    // DRIVER_OK activates the device only once FEATURES_OK stuck.
    let live = status::FEATURES_OK | status::DRIVER_OK;
    if virtio.activated && status & live != live {
        return Err(RestoreError::DeviceStatus {
            status,
            activated: true,
        });
    }
    // FEATURES_OK sticks only after the device accepted exactly the driver's bits; nothing
    // else sets the device's acked features, and a reset clears both.
    let expected_acked = if status & status::FEATURES_OK != 0 {
        state.driver_features
    } else {
        0
    };
    if virtio.acked_features != expected_acked {
        return Err(RestoreError::DriverFeatures {
            driver: state.driver_features,
            acked: virtio.acked_features,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
