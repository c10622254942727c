//! Places devices in the guest: legacy devices on the port-I/O bus, the boot timer and the
//! virtio-mmio devices on the MMIO bus, each with its interrupt route, and records what the
//! guest must be told (kernel command line entries, ACPI/DSDT device list).
//!
//! Addresses and GSIs are handed out in attach order, which is Firecracker's order:
//! boot timer, balloon, block (root first), net, pmem, vsock, entropy.

mod acpi;
mod legacy;
mod mmio;

pub use acpi::{CloneDevices, CloneDevicesError, CloneDevicesState};
pub use legacy::{LegacyDevices, LegacyError, SharedI8042, SharedSerial};
pub use mmio::MmioError;

use std::sync::{Arc, Mutex};

use squib_arch::acpi::MmioDeviceInfo;
use squib_devices::bus::Bus;
use squib_devices::virtio::mmio::MmioTransport;

/// The buses the vCPUs dispatch to and the MMIO devices the guest must be told about.
#[derive(Debug, Default)]
pub struct DeviceManager {
    /// Port-I/O devices (serial, i8042).
    pub pio_bus: Bus,
    /// MMIO devices (boot timer, virtio-mmio).
    pub mmio_bus: Bus,
    /// Every virtio-mmio device, in attach order.
    pub mmio_devices: Vec<MmioDeviceInfo>,
    /// Their transports, in the same order (a snapshot saves and restores them).
    pub mmio_transports: Vec<Arc<Mutex<MmioTransport>>>,
}

impl DeviceManager {
    /// An empty device manager.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The `virtio_mmio.device=` entries for the kernel command line, one per device.
    #[must_use]
    pub fn cmdline_entries(&self) -> Vec<String> {
        self.mmio_devices
            .iter()
            .map(|d| {
                format!(
                    "virtio_mmio.device={}K@{:#x}:{}",
                    d.len / 1024,
                    d.addr,
                    d.gsi
                )
            })
            .collect()
    }
}
