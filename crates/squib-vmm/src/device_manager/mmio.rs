//! virtio-mmio devices: a 4 KiB slot and a GSI each, queue notifications through
//! ioeventfds (no vCPU exit to user space) and interrupts through an irqfd.

use std::sync::{Arc, Mutex};

use squib_arch::acpi::MmioDeviceInfo;
use squib_arch::layout::{FIRST_VIRTIO_GSI, LAST_GSI, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_START};
use squib_arch::memory::GuestMemoryMmap;
use squib_devices::bus::BusError;
use squib_devices::virtio::mmio::{reg, MmioTransport};
use squib_devices::virtio::VirtioDevice;

use super::DeviceManager;
use crate::vstate::vm::{Vm, VmError};

/// Why a virtio-mmio device could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// Every GSI for virtio devices is taken.
    #[error("Too many virtio devices: at most {0} are supported")]
    TooManyDevices(u32),
    /// The transport's interrupt or queue eventfds could not be created.
    #[error("Cannot create the virtio eventfds: {0}")]
    Interrupt(#[source] std::io::Error),
    /// Interrupt or notification routing failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The bus refused the slot.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl DeviceManager {
    /// Put `device` behind a virtio-mmio transport in the next free slot.
    ///
    /// # Errors
    /// [`MmioError`] when no slot is left or KVM refuses a route.
    pub fn attach_virtio(
        &mut self,
        vm: &Vm,
        mem: &GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<MmioDeviceInfo, MmioError> {
        let max_devices = LAST_GSI - FIRST_VIRTIO_GSI + 1;
        let slot = u32::try_from(self.mmio_devices.len()).unwrap_or(u32::MAX);
        if slot >= max_devices {
            return Err(MmioError::TooManyDevices(max_devices));
        }
        let addr = VIRTIO_MMIO_START + u64::from(slot) * VIRTIO_MMIO_SLOT_SIZE;
        let gsi = FIRST_VIRTIO_GSI + slot;

        let transport = MmioTransport::new(mem.clone(), device).map_err(MmioError::Interrupt)?;
        let queue_evts = transport.queue_evts().map_err(MmioError::Interrupt)?;
        for (queue_index, evt) in (0u32..).zip(&queue_evts) {
            vm.register_mmio_ioevent(evt, addr + reg::QUEUE_NOTIFY, queue_index)?;
        }
        vm.register_irqfd(transport.interrupt_evt(), gsi)?;
        let transport = Arc::new(Mutex::new(transport));
        self.mmio_bus
            .insert(transport.clone(), addr, VIRTIO_MMIO_SLOT_SIZE)?;
        self.mmio_transports.push(transport);

        let info = MmioDeviceInfo {
            addr,
            len: VIRTIO_MMIO_SLOT_SIZE,
            gsi,
        };
        self.mmio_devices.push(info);
        Ok(info)
    }
}
