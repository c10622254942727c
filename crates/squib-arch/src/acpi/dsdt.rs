//! The DSDT's AML: the legacy devices and the virtio-mmio devices, as Firecracker describes
//! them (`device_manager/legacy.rs` and `mmio.rs` `add_virtio_aml`).
//!
//! - `_SB_.COM1`: `_HID` PNP0501, `_UID` 0, `_DDN` "COM1", I/O 0x3f8 (8 ports), IRQ 4.
//! - `_SB_.PS2_`: `_HID` PNP0303, `_STA` 0x0f, I/O 0x60 and 0x64 (1 port each), IRQ 1.
//! - `_SB_.Vnnn` (nnn = slot index): `_HID` "LNRO0005", `_UID` nnn, `_CCA` 1 (DMA coherent),
//!   `Memory32Fixed` over the register window and one Extended Interrupt on the device's GSI.
//!   Firecracker puts these at the root (`\Vnnn`); under `\_SB` is where ACPI wants devices,
//!   and Linux enumerates both alike.
//!
//! - `_SB_.VGEN`, `_SB_.VCLK` and `_SB_.GED_` when the VM has VMGenID or VMClock (module
//!   [`clone_devices`](super::clone_devices)).
//!
//! Every interrupt is an Extended Interrupt descriptor: consumer, edge-triggered, active high,
//! exclusive, which is how KVM delivers irqfd interrupts on the legacy GSIs.

use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Method, Name, Path, ResourceTemplate, Return,
    IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{AcpiConfig, AcpiError, MmioDeviceInfo};
use crate::layout::{IRQ_I8042, IRQ_SERIAL};

/// COM1's I/O base, port count and GSI.
const COM1_PORT: u16 = 0x3f8;
const COM1_PORT_COUNT: u8 = 8;
const COM1_GSI: u32 = IRQ_SERIAL;
/// The i8042's data and command/status ports and GSI.
const I8042_DATA_PORT: u16 = 0x60;
const I8042_COMMAND_PORT: u16 = 0x64;
const I8042_GSI: u32 = IRQ_I8042;
/// `_STA`: present, enabled, shown in the UI, functioning.
const STA_PRESENT_ENABLED_FUNCTIONING: u8 = 0x0f;
/// The DSDT revision (2 and up means 64-bit AML integers).
const DSDT_REVISION: u8 = 6;

/// The whole DSDT (header and AML, checksummed) for `cfg`.
///
/// `cfg` must have been validated: every window below 4 GiB and at most
/// [`MAX_MMIO_DEVICES`](super::MAX_MMIO_DEVICES) devices.
pub(super) fn build_dsdt(
    cfg: &AcpiConfig,
    oem_id: [u8; 6],
    oem_revision: u32,
) -> Result<Vec<u8>, AcpiError> {
    let mut body = Vec::new();
    if cfg.serial {
        com1_aml(&mut body);
    }
    if cfg.i8042 {
        ps2_aml(&mut body);
    }
    for (index, dev) in cfg.mmio_devices.iter().enumerate() {
        virtio_mmio_aml(&mut body, index, dev)?;
    }
    super::clone_devices::clone_devices_aml(&mut body, cfg.vmgenid, cfg.vmclock);
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        oem_id,
        *b"FCVMDSDT",
        oem_revision,
    );
    dsdt.append_slice(&body);
    Ok(dsdt.as_slice().to_vec())
}

/// COM1 as a 16550A-compatible serial port.
fn com1_aml(out: &mut Vec<u8>) {
    let irq = Interrupt::new(true, true, false, false, COM1_GSI);
    let io = IO::new(COM1_PORT, COM1_PORT, 1, COM1_PORT_COUNT);
    let crs = ResourceTemplate::new(vec![&irq, &io]);
    Device::new(
        Path::new("_SB_.COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_DDN"), &"COM1"),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(out);
}

/// The i8042 as a PS/2 keyboard controller.
fn ps2_aml(out: &mut Vec<u8>) {
    let data = IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    let command = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let irq = Interrupt::new(true, true, false, false, I8042_GSI);
    let crs = ResourceTemplate::new(vec![&data, &command, &irq]);
    let sta = STA_PRESENT_ENABLED_FUNCTIONING;
    Device::new(
        Path::new("_SB_.PS2_"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0303")),
            &Method::new(Path::new("_STA"), 0, false, vec![&Return::new(&sta)]),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(out);
}

/// One virtio-mmio device in slot `index`.
fn virtio_mmio_aml(out: &mut Vec<u8>, index: usize, dev: &MmioDeviceInfo) -> Result<(), AcpiError> {
    let invalid = || AcpiError::InvalidMmioWindow {
        addr: dev.addr,
        len: dev.len,
    };
    let base = u32::try_from(dev.addr).map_err(|_| invalid())?;
    let len = u32::try_from(dev.len).map_err(|_| invalid())?;
    let uid = u32::try_from(index).map_err(|_| AcpiError::TooManyMmioDevices {
        count: index,
        max: super::MAX_MMIO_DEVICES,
    })?;
    // `validate` caps the device count at 1000, so the name is always 4 characters.
    let path = format!("_SB_.V{:03}", uid % 1000);
    let mem = Memory32Fixed::new(true, base, len);
    let irq = Interrupt::new(true, true, false, false, dev.gsi);
    let crs = ResourceTemplate::new(vec![&mem, &irq]);
    Device::new(
        Path::new(&path),
        vec![
            &Name::new(Path::new("_HID"), &"LNRO0005"),
            &Name::new(Path::new("_UID"), &uid),
            &Name::new(Path::new("_CCA"), &aml::ONE),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(out);
    Ok(())
}
