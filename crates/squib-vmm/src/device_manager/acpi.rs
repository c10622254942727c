//! The ACPI devices that make snapshot clones safe: VMGenID (16 random bytes the guest
//! kernel mixes into its RNG when they change) and VMClock (a page that tells the guest its
//! clock was disrupted). Both sit in reserved system memory and share the ACPI GED's
//! interrupt; a restore writes new values and raises it before the vCPUs run.

use serde::{Deserialize, Serialize};
use squib_arch::acpi::{VmClockInfo, VmGenIdInfo};
use squib_arch::layout::{ACPI_GED_GSI, VMCLOCK_ADDR, VMGENID_ADDR};
use squib_arch::memory::GuestMemoryMmap;
use squib_devices::acpi::vmclock::{VmClock, VmClockState};
use squib_devices::acpi::vmgenid::{VmGenId, VmGenIdState};
use squib_devices::acpi::AcpiDeviceError;

use crate::vstate::vm::{Vm, VmError};

/// Why the clone-safety devices could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CloneDevicesError {
    /// Writing their guest memory or signalling them failed.
    #[error("{0}")]
    Device(#[from] AcpiDeviceError),
    /// KVM refused their interrupt route.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// VMGenID and VMClock, attached.
#[derive(Debug)]
pub struct CloneDevices {
    vmgenid: VmGenId,
    vmclock: VmClock,
}

/// What a snapshot keeps of them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CloneDevicesState {
    /// VMGenID's address and interrupt.
    pub vmgenid: VmGenIdState,
    /// VMClock's page, interrupt and counters.
    pub vmclock: VmClockState,
}

impl CloneDevices {
    /// A fresh generation ID and VMClock page in `mem`, their interrupts routed.
    ///
    /// # Errors
    /// [`CloneDevicesError`] when memory or the interrupt route cannot be set up.
    pub fn attach(vm: &Vm, mem: &GuestMemoryMmap) -> Result<Self, CloneDevicesError> {
        let devices = Self {
            vmgenid: VmGenId::new(mem, VMGENID_ADDR, ACPI_GED_GSI)?,
            vmclock: VmClock::new(mem, VMCLOCK_ADDR, ACPI_GED_GSI)?,
        };
        devices.route(vm)?;
        Ok(devices)
    }

    /// After a restore: a new generation ID and a VMClock disruption, announced to the guest
    /// (the interrupt waits in the irqfd until a vCPU runs).
    ///
    /// # Errors
    /// [`CloneDevicesError`] when the saved addresses do not fit `mem` or the interrupt
    /// cannot be routed or raised.
    pub fn restore(
        vm: &Vm,
        mem: &GuestMemoryMmap,
        state: &CloneDevicesState,
    ) -> Result<Self, CloneDevicesError> {
        let devices = Self {
            vmgenid: VmGenId::restore(mem, &state.vmgenid)?,
            vmclock: VmClock::restore(mem, &state.vmclock)?,
        };
        devices.route(vm)?;
        devices.vmgenid.notify()?;
        devices.vmclock.notify()?;
        Ok(devices)
    }

    fn route(&self, vm: &Vm) -> Result<(), VmError> {
        vm.register_irqfd(self.vmgenid.interrupt_evt(), self.vmgenid.gsi())?;
        vm.register_irqfd(self.vmclock.interrupt_evt(), self.vmclock.gsi())
    }

    /// Their state for a snapshot.
    #[must_use]
    pub fn state(&self) -> CloneDevicesState {
        CloneDevicesState {
            vmgenid: self.vmgenid.state(),
            vmclock: self.vmclock.state(),
        }
    }

    /// VMGenID as the DSDT describes it.
    #[must_use]
    pub fn vmgenid_info(&self) -> VmGenIdInfo {
        VmGenIdInfo {
            addr: self.vmgenid.addr(),
            gsi: self.vmgenid.gsi(),
        }
    }

    /// VMClock as the DSDT describes it.
    #[must_use]
    pub fn vmclock_info(&self) -> VmClockInfo {
        VmClockInfo {
            addr: self.vmclock.addr(),
            gsi: self.vmclock.gsi(),
        }
    }
}
