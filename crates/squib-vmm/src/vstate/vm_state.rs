//! The VM-wide KVM state a snapshot holds — the PIT, the KVM clock and the three in-kernel
//! interrupt controllers — with [`Vm::save_state`] and [`Vm::restore_state`].

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_CLOCK_REALTIME, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use serde::{Deserialize, Serialize};

use super::vm::{Vm, VmError};

/// The VM's in-kernel device and clock state.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VmState {
    /// The i8254 PIT (`KVM_GET_PIT2`).
    pub pit: kvm_pit_state2,
    /// The KVM clock (`KVM_GET_CLOCK`): its flags say whether `realtime` is set.
    pub clock: kvm_clock_data,
    /// The master i8259 PIC.
    pub pic_master: kvm_irqchip,
    /// The slave i8259 PIC.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
}

/// Which saved chip goes where.
const CHIPS: [(&str, u32); 3] = [
    ("PIC master", KVM_IRQCHIP_PIC_MASTER),
    ("PIC slave", KVM_IRQCHIP_PIC_SLAVE),
    ("IOAPIC", KVM_IRQCHIP_IOAPIC),
];

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

impl VmState {
    fn chips(&self) -> [&kvm_irqchip; 3] {
        [&self.pic_master, &self.pic_slave, &self.ioapic]
    }
}

impl Vm {
    /// Save the PIT, the KVM clock and the interrupt controllers (with the vCPUs paused).
    ///
    /// # Errors
    /// [`VmError::Ioctl`] naming the ioctl that failed.
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let fd = self.fd();
        let pit = fd
            .get_pit2()
            .map_err(ioctl("get PIT state (KVM_GET_PIT2)"))?;
        let clock = fd.get_clock().map_err(ioctl("get clock (KVM_GET_CLOCK)"))?;
        let get_chip = |chip_id| {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            fd.get_irqchip(&mut chip)
                .map_err(ioctl("get irqchip (KVM_GET_IRQCHIP)"))?;
            Ok(chip)
        };
        Ok(VmState {
            pit,
            clock,
            pic_master: get_chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: get_chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: get_chip(KVM_IRQCHIP_IOAPIC)?,
        })
    }

    /// Restore `state` into a VM whose vCPUs have not run: the PIT, then the clock, then the
    /// interrupt controllers.
    ///
    /// The clock is set with `KVM_CLOCK_REALTIME` only when `clock_realtime` asks for it: KVM
    /// then advances the guest clock by the wall-clock time elapsed since the save. Otherwise
    /// the guest clock resumes where it stopped. The other saved flags are cleared: they
    /// describe the saving host's clock, and kernels before `KVM_CLOCK_REALTIME` existed
    /// refuse any flag.
    ///
    /// # Errors
    /// [`VmError::ClockRealtimeMissing`] when `clock_realtime` is asked but the saved clock
    /// has no wall-clock time, [`VmError::IrqchipMismatch`] for a corrupt state (both checked
    /// before anything is set), [`VmError::Ioctl`] naming the ioctl that failed.
    pub fn restore_state(&self, state: &VmState, clock_realtime: bool) -> Result<(), VmError> {
        if clock_realtime && state.clock.flags & KVM_CLOCK_REALTIME == 0 {
            return Err(VmError::ClockRealtimeMissing);
        }
        for ((place, expected), chip) in CHIPS.into_iter().zip(state.chips()) {
            if chip.chip_id != expected {
                return Err(VmError::IrqchipMismatch {
                    place,
                    expected,
                    found: chip.chip_id,
                });
            }
        }
        let fd = self.fd();
        fd.set_pit2(&state.pit)
            .map_err(ioctl("set PIT state (KVM_SET_PIT2)"))?;
        let clock = kvm_clock_data {
            flags: if clock_realtime {
                KVM_CLOCK_REALTIME
            } else {
                0
            },
            ..state.clock
        };
        fd.set_clock(&clock)
            .map_err(ioctl("set clock (KVM_SET_CLOCK)"))?;
        for chip in state.chips() {
            fd.set_irqchip(chip)
                .map_err(ioctl("set irqchip (KVM_SET_IRQCHIP)"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "vm_state_tests.rs"]
mod tests;
