//! ACPI tables: RSDP, XSDT, FADT, MADT and DSDT, so that a kernel reading ACPI finds every
//! vCPU, the I/O APIC, COM1, the i8042 and every virtio-mmio device.
//!
//! What is written, following Firecracker (`vmm/src/acpi/`):
//! - DSDT: `_SB_.COM1` (PNP0501), `_SB_.PS2_` (PNP0303) and one `LNRO0005` device per
//!   virtio-mmio slot (module `dsdt`); when asked, the clone-safety devices VMGenID
//!   (`_SB_.VGEN`), VMClock (`_SB_.VCLK`) and the Generic Event Device (`_SB_.GED_`) that
//!   signals them (module `clone_devices`). No `_S5_`: Firecracker has no ACPI power
//!   management.
//! - FADT: hardware-reduced ACPI, power and sleep buttons as control-method devices, IA-PC boot
//!   flags "VGA not present", "no PCIe ASPM", "MSI not supported", 64-bit DSDT pointer and
//!   Firecracker's hypervisor vendor identity.
//! - MADT: the local APIC address, the I/O APIC (id 0, GSI base 0) and one enabled Processor
//!   Local APIC per vCPU (UID = APIC id = vCPU index). Like Firecracker there is no Interrupt
//!   Source Override: without one Linux identity-maps ISA IRQs 0..=15 as edge/active-high,
//!   which is how KVM's in-kernel IOAPIC routes them (the PIT on pin 0), and on a
//!   hardware-reduced platform it skips the SCI set-up an override would describe.
//! - XSDT listing the FADT and the MADT; RSDP revision 2 pointing at the XSDT.
//!
//! Placement: the reserved "system memory" area `[0x9fc00, 0xe0000)` is shared with the MP
//! table, which owns its first [`MPTABLE_MAX_SIZE`] bytes
//! whatever the vCPU count; the ACPI tables are allocated first-fit (8-byte aligned) from
//! [`ACPI_TABLES_START`] in the order DSDT, FADT, MADT, XSDT, and creation fails rather than
//! cross [`SYSTEM_TABLES_END`], above which VMGenID and VMClock live. The RSDP itself sits
//! at the fixed [`RSDP_ADDR`] where Linux also looks (`boot_params.acpi_rsdp_addr` should
//! point there too). The two builders are therefore
//! independent: either may run first, and neither overwrites the other.
//!
//! The `acpi_tables` crate (rust-vmm / Cloud Hypervisor) builds the bytes, checksums included.

mod clone_devices;
mod dsdt;
#[cfg(test)]
mod tests;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::layout::{APIC_ADDR, IOAPIC_ADDR, LAST_GSI, VMCLOCK_SIZE, VMGENID_SIZE};
pub use crate::layout::{RSDP_ADDR, SYSTEM_TABLES_END};
use crate::memory::GuestMemoryMmap;
use crate::mptable::{MPTABLE_MAX_SIZE, MPTABLE_START};

/// First byte available to the ACPI tables (right after the MP table's reservation).
pub const ACPI_TABLES_START: u64 = MPTABLE_START + MPTABLE_MAX_SIZE;
/// Local APIC base address, as the MADT announces it (32-bit field).
const APIC_ADDR_32: u32 = APIC_ADDR as u32;
/// I/O APIC base address (32-bit field).
const IOAPIC_ADDR_32: u32 = IOAPIC_ADDR as u32;
const _: () = assert!(APIC_ADDR < 1 << 32 && IOAPIC_ADDR < 1 << 32);
/// Alignment of each table in the system-memory area.
const TABLE_ALIGN: u64 = 8;

/// Most vCPUs the MADT describes: 8-bit APIC ids, 0xff is the broadcast id.
pub const MAX_VCPUS: u8 = 254;
/// Most virtio-mmio devices the DSDT can name (`V000` to `V999`).
pub const MAX_MMIO_DEVICES: usize = 1000;

/// The OEM id in every table header. Firecracker's, so guest software that checks how it is
/// virtualised sees the machine it expects.
const OEM_ID: [u8; 6] = *b"FIRECK";
/// The OEM revision of every table.
const OEM_REVISION: u32 = 0;
/// The FADT's hypervisor vendor identity.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"FIRECKVM";

/// IA-PC boot architecture flags (ACPI 6.5 table 5.11).
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_PRESENT: u16 = 1 << 3;
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;

/// One virtio-mmio device as the guest must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Base guest-physical address of its register window.
    pub addr: u64,
    /// Length of its register window.
    pub len: u64,
    /// Its interrupt line (edge-triggered, active high).
    pub gsi: u32,
}

/// Where the VM generation ID lives and which GSI tells the guest it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmGenIdInfo {
    /// Guest-physical address of the 16-byte ID (normally [`crate::layout::VMGENID_ADDR`]).
    pub addr: u64,
    /// The GED interrupt line that announces a new ID (normally
    /// [`crate::layout::ACPI_GED_GSI`]).
    pub gsi: u32,
}

/// Where the VMClock page lives and which GSI tells the guest it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmClockInfo {
    /// Guest-physical address of the page-aligned 4 KiB VMClock page (normally
    /// [`crate::layout::VMCLOCK_ADDR`]).
    pub addr: u64,
    /// The GED interrupt line that announces an update (normally
    /// [`crate::layout::ACPI_GED_GSI`]; sharing VMGenID's line is fine, the GED then notifies
    /// both devices).
    pub gsi: u32,
}

/// What the ACPI tables describe.
#[derive(Clone, Copy, Debug)]
pub struct AcpiConfig<'a> {
    /// Number of vCPUs (APIC ids `0..vcpu_count`).
    pub vcpu_count: u8,
    /// The virtio-mmio devices, in slot order (their DSDT names follow this order).
    pub mmio_devices: &'a [MmioDeviceInfo],
    /// Whether COM1 (0x3f8, GSI 4) is present.
    pub serial: bool,
    /// Whether the i8042 (0x60/0x64, GSI 1) is present.
    pub i8042: bool,
    /// The VMGenID device (`_SB_.VGEN`), if the VM has one.
    pub vmgenid: Option<VmGenIdInfo>,
    /// The VMClock device (`_SB_.VCLK`), if the VM has one.
    pub vmclock: Option<VmClockInfo>,
}

/// Errors building or writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// Zero vCPUs.
    #[error("the ACPI tables need at least one vCPU")]
    NoCpus,
    /// More vCPUs than 8-bit APIC ids allow.
    #[error("{count} vCPUs is more than the MADT supports ({max})")]
    TooManyCpus {
        /// vCPUs requested.
        count: u8,
        /// Most vCPUs supported.
        max: u8,
    },
    /// More virtio-mmio devices than the DSDT can name.
    #[error("{count} virtio-mmio devices is more than the DSDT supports ({max})")]
    TooManyMmioDevices {
        /// Devices requested.
        count: usize,
        /// Most devices supported.
        max: usize,
    },
    /// A virtio-mmio window that is empty or not below 4 GiB (`Memory32Fixed` is 32-bit).
    #[error("virtio-mmio window {addr:#x}+{len:#x} is empty or not below 4 GiB")]
    InvalidMmioWindow {
        /// Base address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A VMGenID or VMClock area that is misaligned or not inside the reserved device area
    /// `[SYSTEM_TABLES_END, RSDP_ADDR)`.
    #[error(
        "{device} area {addr:#x}+{len:#x} is misaligned or outside the reserved device area \
         [{SYSTEM_TABLES_END:#x}, {RSDP_ADDR:#x})"
    )]
    InvalidDeviceArea {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// Base address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The VMGenID ID and the VMClock page share bytes.
    #[error("VMGenID at {vmgenid:#x} overlaps the VMClock page at {vmclock:#x}")]
    DeviceAreasOverlap {
        /// VMGenID's address.
        vmgenid: u64,
        /// VMClock's address.
        vmclock: u64,
    },
    /// A GED interrupt line the I/O APIC does not have.
    #[error("{device} GSI {gsi} is beyond the I/O APIC's last pin ({max})")]
    InvalidGsi {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// The line asked for.
        gsi: u32,
        /// The last valid line.
        max: u32,
    },
    /// The tables do not fit between [`ACPI_TABLES_START`] and [`SYSTEM_TABLES_END`].
    #[error("ACPI table {table} ({size} bytes) does not fit in system memory")]
    OutOfSystemMemory {
        /// Table signature.
        table: &'static str,
        /// Its size.
        size: usize,
    },
    /// Guest memory does not cover a table.
    #[error("cannot write ACPI table {table} at {addr:#x} to guest memory")]
    Write {
        /// Table signature.
        table: &'static str,
        /// Where the write started.
        addr: u64,
        /// What guest memory said.
        #[source]
        source: GuestMemoryError,
    },
}

/// Builds the DSDT, FADT, MADT, XSDT and RSDP for `cfg`, writes them to guest memory and
/// returns the RSDP's address (always [`RSDP_ADDR`]).
pub fn create_acpi_tables(
    mem: &GuestMemoryMmap,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    validate(cfg)?;
    let mut writer = TableWriter {
        mem,
        next: ACPI_TABLES_START,
    };
    let dsdt_addr = writer.write("DSDT", &dsdt::build_dsdt(cfg, OEM_ID, OEM_REVISION)?)?;
    let fadt_addr = writer.write("FACP", &build_fadt(dsdt_addr))?;
    let madt_addr = writer.write("APIC", &build_madt(cfg.vcpu_count))?;
    let xsdt_addr = writer.write("XSDT", &build_xsdt(&[fadt_addr, madt_addr]))?;
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    write_at(mem, "RSD PTR", RSDP_ADDR, &rsdp)?;
    log::debug!("acpi: RSDP at {RSDP_ADDR:#x}, XSDT at {xsdt_addr:#x}");
    Ok(GuestAddress(RSDP_ADDR))
}

/// Rejects configurations the tables cannot describe, before anything is written.
fn validate(cfg: &AcpiConfig) -> Result<(), AcpiError> {
    if cfg.vcpu_count == 0 {
        return Err(AcpiError::NoCpus);
    }
    if cfg.vcpu_count > MAX_VCPUS {
        return Err(AcpiError::TooManyCpus {
            count: cfg.vcpu_count,
            max: MAX_VCPUS,
        });
    }
    if cfg.mmio_devices.len() > MAX_MMIO_DEVICES {
        return Err(AcpiError::TooManyMmioDevices {
            count: cfg.mmio_devices.len(),
            max: MAX_MMIO_DEVICES,
        });
    }
    for dev in cfg.mmio_devices {
        let end = dev.addr.checked_add(dev.len);
        if dev.len == 0 || end.is_none_or(|end| end > 1 << 32) {
            return Err(AcpiError::InvalidMmioWindow {
                addr: dev.addr,
                len: dev.len,
            });
        }
    }
    if let Some(v) = cfg.vmgenid {
        validate_device_area("VMGenID", v.addr, VMGENID_SIZE, 1)?;
        validate_gsi("VMGenID", v.gsi)?;
    }
    if let Some(v) = cfg.vmclock {
        // The guest maps the page (into user space too), so it must be a whole page.
        validate_device_area("VMClock", v.addr, VMCLOCK_SIZE, VMCLOCK_SIZE)?;
        validate_gsi("VMClock", v.gsi)?;
    }
    if let (Some(id), Some(clock)) = (cfg.vmgenid, cfg.vmclock) {
        if id.addr < clock.addr + VMCLOCK_SIZE && clock.addr < id.addr + VMGENID_SIZE {
            return Err(AcpiError::DeviceAreasOverlap {
                vmgenid: id.addr,
                vmclock: clock.addr,
            });
        }
    }
    Ok(())
}

/// A device area must be `align`-aligned and lie inside `[SYSTEM_TABLES_END, RSDP_ADDR)`:
/// that part of system memory is E820-reserved (the guest kernel never hands it out as RAM)
/// and no table is written there (the device rewrites its area on every restore).
fn validate_device_area(
    device: &'static str,
    addr: u64,
    len: u64,
    align: u64,
) -> Result<(), AcpiError> {
    let inside = addr >= SYSTEM_TABLES_END
        && addr.checked_add(len).is_some_and(|end| end <= RSDP_ADDR)
        && addr % align == 0;
    if !inside {
        return Err(AcpiError::InvalidDeviceArea { device, addr, len });
    }
    Ok(())
}

/// A GED line must be one of the I/O APIC's pins: KVM routes nothing else to it.
fn validate_gsi(device: &'static str, gsi: u32) -> Result<(), AcpiError> {
    if gsi > LAST_GSI {
        return Err(AcpiError::InvalidGsi {
            device,
            gsi,
            max: LAST_GSI,
        });
    }
    Ok(())
}

/// First-fit allocator over `[ACPI_TABLES_START, SYSTEM_TABLES_END)` that writes each table
/// it places.
struct TableWriter<'a> {
    mem: &'a GuestMemoryMmap,
    next: u64,
}

impl TableWriter<'_> {
    /// Places `bytes` at the next aligned free address and returns that address.
    fn write(&mut self, table: &'static str, bytes: &[u8]) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(TABLE_ALIGN);
        let end = addr + bytes.len() as u64;
        if end > SYSTEM_TABLES_END {
            return Err(AcpiError::OutOfSystemMemory {
                table,
                size: bytes.len(),
            });
        }
        write_at(self.mem, table, addr, bytes)?;
        log::debug!("acpi: wrote {table} ({} bytes) at {addr:#x}", bytes.len());
        self.next = end;
        Ok(addr)
    }
}

/// Writes `bytes` at `addr`, naming `table` in the error.
fn write_at(
    mem: &GuestMemoryMmap,
    table: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), AcpiError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| AcpiError::Write {
            table,
            addr,
            source,
        })
}

/// Serialises any `acpi_tables` object.
fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The FADT: hardware-reduced, buttons as devices, no VGA/ASPM/MSI, DSDT at `dsdt_addr`.
fn build_fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"FCVMFADT", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_PCIE_ASPM_CONTROLS | IAPC_MSI_NOT_PRESENT).into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    to_bytes(&fadt.finalize())
}

/// The MADT: the I/O APIC, then one enabled local APIC per vCPU.
fn build_madt(vcpu_count: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"FCVMMADT",
        OEM_REVISION,
        LocalInterruptController::Address(APIC_ADDR_32),
    );
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR_32, 0));
    for cpu in 0..vcpu_count {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    to_bytes(&madt)
}

/// The XSDT listing `entries`.
fn build_xsdt(entries: &[u64]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, *b"FCMVXSDT", OEM_REVISION);
    for entry in entries {
        xsdt.add_entry(*entry);
    }
    to_bytes(&xsdt)
}
