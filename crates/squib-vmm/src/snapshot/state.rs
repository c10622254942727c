//! [`MicrovmState`]: everything a snapshot's state file holds, as plain data.

use serde::{Deserialize, Serialize};
use squib_devices::legacy::i8042::I8042DeviceState;
use squib_devices::legacy::serial::SerialDeviceState;
use squib_devices::virtio::mmio::MmioTransportState;

use crate::device_manager::CloneDevicesState;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

/// One guest memory region: where the guest sees it and how long it is. The memory file
/// holds the regions back to back in this order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegionState {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A paused microVM, minus its memory (which goes to the memory file).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct MicrovmState {
    /// The VM's configuration in the `--config-file` format: a load rebuilds the devices from
    /// it, in the same order, on the same MMIO slots.
    pub config_json: String,
    /// Guest memory regions, in guest-address order.
    pub memory: Vec<MemoryRegionState>,
    /// The VM's in-kernel devices (PIC, IOAPIC, PIT) and KVM clock.
    pub vm: VmState,
    /// Every vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// COM1.
    pub serial: SerialDeviceState,
    /// The i8042 controller.
    pub i8042: I8042DeviceState,
    /// Every virtio-mmio slot, in attach order.
    pub virtio: Vec<MmioTransportState>,
    /// VMGenID and VMClock (a restore gives them new values).
    pub clone_devices: CloneDevicesState,
}
