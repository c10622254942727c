//! COM1 and the i8042 on the port-I/O bus, the boot timer on the MMIO bus.

use std::sync::{Arc, Mutex};

use squib_arch::layout::{BOOT_TIMER_ADDR, IRQ_I8042, IRQ_SERIAL};
use squib_devices::bus::BusError;
use squib_devices::legacy::boot_timer::{BootTimer, TimestampUs};
use squib_devices::legacy::i8042::I8042Device;
use squib_devices::legacy::serial::SerialDevice;
use vmm_sys_util::eventfd::EventFd;

use super::DeviceManager;
use crate::vstate::vm::{Vm, VmError};

const COM1_PORT: u64 = 0x3f8;
const COM1_LEN: u64 = 8;
const I8042_PORT: u64 = 0x60;
const I8042_LEN: u64 = 5;
const BOOT_TIMER_LEN: u64 = 0x1000;

/// Why a legacy device could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd for a legacy device: {0}")]
    EventFd(#[source] std::io::Error),
    /// Interrupt routing failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The bus refused the device's range.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// COM1, shared by the PIO bus and the stdin subscriber.
pub type SharedSerial = Arc<Mutex<SerialDevice>>;
/// The i8042, shared by the PIO bus and the VMM (for `SendCtrlAltDel`).
pub type SharedI8042 = Arc<Mutex<I8042Device>>;

/// Handles the VMM keeps on the legacy devices after attaching them.
pub struct LegacyDevices {
    /// COM1.
    pub serial: SharedSerial,
    /// The keyboard controller (for `SendCtrlAltDel`).
    pub i8042: SharedI8042,
    /// The boot timer, when `--boot-timer` asked for it.
    pub boot_timer: Option<Arc<Mutex<BootTimer>>>,
}

impl DeviceManager {
    /// Attach COM1 (with `serial` already built around its irq eventfd) and the i8042, whose
    /// reset writes `reset_evt`.
    ///
    /// # Errors
    /// [`LegacyError`] when an eventfd, irqfd or bus range fails.
    pub fn attach_legacy(
        &mut self,
        vm: &Vm,
        serial: SerialDevice,
        serial_irq: &EventFd,
        reset_evt: EventFd,
    ) -> Result<(SharedSerial, SharedI8042), LegacyError> {
        vm.register_irqfd(serial_irq, IRQ_SERIAL)?;
        let serial = Arc::new(Mutex::new(serial));
        self.pio_bus.insert(serial.clone(), COM1_PORT, COM1_LEN)?;

        let kbd_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(LegacyError::EventFd)?;
        vm.register_irqfd(&kbd_irq, IRQ_I8042)?;
        let i8042 = Arc::new(Mutex::new(I8042Device::new(reset_evt, kbd_irq)));
        self.pio_bus.insert(i8042.clone(), I8042_PORT, I8042_LEN)?;
        Ok((serial, i8042))
    }

    /// Attach the boot timer, measuring from `start` (the InstanceStart timestamp).
    ///
    /// # Errors
    /// [`BusError`] when its MMIO range is taken.
    pub fn attach_boot_timer(
        &mut self,
        start: TimestampUs,
    ) -> Result<Arc<Mutex<BootTimer>>, BusError> {
        let timer = Arc::new(Mutex::new(BootTimer::new(start)));
        self.mmio_bus
            .insert(timer.clone(), BOOT_TIMER_ADDR, BOOT_TIMER_LEN)?;
        Ok(timer)
    }
}
