//! Tests for the ACPI tables: they are built into real guest memory and read back the way a
//! kernel walks them (RSDP -> XSDT -> FADT -> DSDT, XSDT -> MADT).

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::memory::GuestMemoryMmap;
use crate::mptable::setup_mptable;

const VIRTIO_BASE: u64 = 0xc000_1000;

pub(super) fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 30)]).unwrap()
}

pub(super) fn devices(n: u32) -> Vec<MmioDeviceInfo> {
    (0..n)
        .map(|i| MmioDeviceInfo {
            addr: VIRTIO_BASE + u64::from(i) * 0x1000,
            len: 0x1000,
            gsi: 5 + i,
        })
        .collect()
}

pub(super) fn cfg(vcpu_count: u8, mmio_devices: &[MmioDeviceInfo]) -> AcpiConfig<'_> {
    AcpiConfig {
        vcpu_count,
        mmio_devices,
        serial: true,
        i8042: true,
        vmgenid: None,
        vmclock: None,
    }
}

pub(super) fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(super) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub(super) fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// A whole table (the length comes from its header), checked to sum to zero.
pub(super) fn table_at(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let len = u32_at(&read(mem, addr, 8), 4);
    let table = read(mem, addr, len as usize);
    assert_eq!(sum(&table), 0, "table {:?} at {addr:#x}", &table[0..4]);
    table
}

/// The tables a kernel reaches from the RSDP: (address, bytes) of XSDT, FADT, MADT, DSDT.
pub(super) struct Tables {
    pub(super) xsdt: (u64, Vec<u8>),
    pub(super) fadt: (u64, Vec<u8>),
    pub(super) madt: (u64, Vec<u8>),
    pub(super) dsdt: (u64, Vec<u8>),
}

pub(super) fn walk(mem: &GuestMemoryMmap, rsdp: GuestAddress) -> Tables {
    let rsdp = read(mem, rsdp.0, 36);
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = table_at(mem, xsdt_addr);
    let fadt_addr = u64_at(&xsdt, 36);
    let madt_addr = u64_at(&xsdt, 44);
    let fadt = table_at(mem, fadt_addr);
    let dsdt_addr = u64_at(&fadt, 140);
    Tables {
        xsdt: (xsdt_addr, xsdt),
        madt: (madt_addr, table_at(mem, madt_addr)),
        dsdt: (dsdt_addr, table_at(mem, dsdt_addr)),
        fadt: (fadt_addr, fadt),
    }
}

/// (addr, len, gsi) of every `Memory32Fixed` + Extended Interrupt pair in the AML, in order.
fn mmio_resources(aml: &[u8]) -> Vec<(u32, u32, u32)> {
    let mut found = Vec::new();
    for i in 0..aml.len().saturating_sub(20) {
        if aml[i..i + 4] == [0x86, 0x09, 0x00, 0x01] {
            let irq = &aml[i + 12..i + 21];
            // Extended IRQ, length 6, flags consumer|edge (active high, exclusive), 1 GSI.
            assert_eq!(irq[0..5], [0x89, 0x06, 0x00, 0x03, 0x01]);
            found.push((u32_at(aml, i + 4), u32_at(aml, i + 8), u32_at(irq, 5)));
        }
    }
    found
}

pub(super) fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn rsdp_is_revision_2_with_both_checksums_at_fixed_address() {
    let mem = mem();
    let rsdp = create_acpi_tables(&mem, &cfg(1, &[])).unwrap();
    assert_eq!(rsdp, GuestAddress(0xe0000));
    let bytes = read(&mem, rsdp.0, 36);
    assert_eq!(&bytes[0..8], b"RSD PTR ");
    assert_eq!(&bytes[9..15], b"FIRECK");
    assert_eq!(bytes[15], 2);
    assert_eq!(u32_at(&bytes, 20), 36);
    assert_eq!(sum(&bytes[0..20]), 0);
    assert_eq!(sum(&bytes), 0);
}

#[test]
fn xsdt_lists_fadt_then_madt_and_every_table_sums_to_zero() {
    let mem = mem();
    let devs = devices(3);
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(2, &devs)).unwrap());
    assert_eq!(&t.xsdt.1[0..4], b"XSDT");
    assert_eq!(t.xsdt.1.len(), 36 + 2 * 8);
    assert_eq!(&t.fadt.1[0..4], b"FACP");
    assert_eq!(&t.madt.1[0..4], b"APIC");
    assert_eq!(&t.dsdt.1[0..4], b"DSDT");
    for (addr, _) in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
        assert_eq!(addr % TABLE_ALIGN, 0);
    }
}

#[test]
fn fadt_is_hardware_reduced_with_buttons_and_no_vga() {
    let mem = mem();
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(1, &[])).unwrap());
    let fadt = &t.fadt.1;
    assert_eq!(fadt.len(), 276);
    assert_eq!((fadt[8], fadt[131]), (6, 5), "FADT revision 6.5");
    let flags = u32_at(fadt, 112);
    assert_eq!(flags, (1 << 20) | (1 << 4) | (1 << 5));
    let iapc = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(iapc, (1 << 2) | (1 << 3) | (1 << 4));
    assert_eq!(u32_at(fadt, 40), 0, "only the 64-bit DSDT pointer is set");
    assert_eq!(u64_at(fadt, 140), t.dsdt.0);
    assert_eq!(&fadt[268..276], b"FIRECKVM");
}

#[test]
fn madt_has_ioapic_and_one_enabled_local_apic_per_vcpu() {
    for vcpus in [1u8, 2, 32] {
        let mem = mem();
        let t = walk(&mem, create_acpi_tables(&mem, &cfg(vcpus, &[])).unwrap());
        let madt = &t.madt.1;
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        let (mut lapics, mut ioapics, mut off) = (Vec::new(), 0, 44);
        while off < madt.len() {
            let (kind, len) = (madt[off], usize::from(madt[off + 1]));
            match kind {
                0 => {
                    assert_eq!(u32_at(madt, off + 4), 1, "enabled");
                    lapics.push((madt[off + 2], madt[off + 3]));
                }
                1 => {
                    assert_eq!(u32_at(madt, off + 4), 0xfec0_0000);
                    assert_eq!(u32_at(madt, off + 8), 0, "GSI base");
                    ioapics += 1;
                }
                other => panic!("unexpected MADT structure {other}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(ioapics, 1);
        let expected: Vec<_> = (0..vcpus).map(|i| (i, i)).collect();
        assert_eq!(lapics, expected, "{vcpus} vCPUs");
    }
}

#[test]
fn dsdt_has_one_lnro0005_per_device_with_its_window_and_gsi() {
    let mem = mem();
    let devs = devices(17);
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(1, &devs)).unwrap());
    let aml = &t.dsdt.1[36..];
    assert_eq!(count(aml, b"LNRO0005\0"), 17);
    let expected: Vec<_> = devs
        .iter()
        .map(|d| (d.addr as u32, d.len as u32, d.gsi))
        .collect();
    assert_eq!(mmio_resources(aml), expected);
    for i in 0..17 {
        assert_eq!(count(aml, format!("V{i:03}").as_bytes()), 1);
    }
}

#[test]
fn dsdt_has_com1_and_ps2_only_when_present() {
    let mem = mem();
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(1, &[])).unwrap());
    let aml = &t.dsdt.1[36..];
    assert_eq!(count(aml, b"COM1"), 2, "device name and _DDN");
    assert_eq!(count(aml, b"PS2_"), 1);
    // IO descriptors: 0x3f8 x 8 ports, 0x60 and 0x64 x 1 port.
    assert_eq!(
        count(aml, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]),
        1
    );
    assert_eq!(
        count(aml, &[0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]),
        1
    );
    assert_eq!(
        count(aml, &[0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]),
        1
    );
    // COM1 on GSI 4, the i8042 on GSI 1, both edge/active high.
    assert_eq!(count(aml, &[0x89, 0x06, 0x00, 0x03, 0x01, 4, 0, 0, 0]), 1);
    assert_eq!(count(aml, &[0x89, 0x06, 0x00, 0x03, 0x01, 1, 0, 0, 0]), 1);

    let bare = AcpiConfig {
        serial: false,
        i8042: false,
        ..cfg(1, &[])
    };
    let mem = self::mem();
    let t = walk(&mem, create_acpi_tables(&mem, &bare).unwrap());
    assert_eq!(t.dsdt.1.len(), 36, "an empty DSDT is just its header");
}

#[test]
fn tables_stay_in_system_memory_after_the_mptable() {
    let mem = mem();
    let devs = devices(17);
    setup_mptable(&mem, 32).unwrap();
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(32, &devs)).unwrap());
    let mp_end = MPTABLE_START + crate::mptable::mptable_size(32) as u64;
    for (addr, bytes) in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
        assert!(*addr >= mp_end && *addr >= 0x9fc00, "{addr:#x}");
        assert!(addr + bytes.len() as u64 <= 0xe0000, "{addr:#x}");
    }
    // The MP table is intact: its configuration table still sums to zero.
    let mpc = read(&mem, MPTABLE_START + 16, 44);
    let mpc_len = usize::from(u16::from_le_bytes([mpc[4], mpc[5]]));
    assert_eq!(sum(&read(&mem, MPTABLE_START + 16, mpc_len)), 0);
}

#[test]
fn rejects_what_the_tables_cannot_describe() {
    let mem = mem();
    assert!(matches!(
        create_acpi_tables(&mem, &cfg(0, &[])),
        Err(AcpiError::NoCpus)
    ));
    assert!(matches!(
        create_acpi_tables(&mem, &cfg(255, &[])),
        Err(AcpiError::TooManyCpus {
            count: 255,
            max: 254
        })
    ));
    for (addr, len) in [(0xffff_f000, 0x2000), (VIRTIO_BASE, 0), (u64::MAX, 2)] {
        let bad = [MmioDeviceInfo { addr, len, gsi: 5 }];
        let err = create_acpi_tables(&mem, &cfg(1, &bad)).unwrap_err();
        assert!(matches!(err, AcpiError::InvalidMmioWindow { .. }), "{err}");
    }
    let many = vec![devices(1)[0]; MAX_MMIO_DEVICES + 1];
    assert!(matches!(
        create_acpi_tables(&mem, &cfg(1, &many)),
        Err(AcpiError::TooManyMmioDevices {
            count: 1001,
            max: 1000
        })
    ));
}

#[test]
fn error_messages_name_the_table_and_address() {
    let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9f000)]).unwrap();
    let err = create_acpi_tables(&small, &cfg(1, &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot write ACPI table DSDT at {ACPI_TABLES_START:#x} to guest memory")
    );
    let err = AcpiError::OutOfSystemMemory {
        table: "DSDT",
        size: 300_000,
    };
    assert_eq!(
        err.to_string(),
        "ACPI table DSDT (300000 bytes) does not fit in system memory"
    );
}

#[test]
fn too_many_devices_for_system_memory_is_an_error_not_an_overflow() {
    let mem = mem();
    // Each device costs ~80 bytes of AML: 1000 of them still fit, so shrink the room instead.
    let mut writer = TableWriter {
        mem: &mem,
        next: SYSTEM_TABLES_END - 16,
    };
    let err = writer.write("XSDT", &[0; 36]).unwrap_err();
    assert!(matches!(
        err,
        AcpiError::OutOfSystemMemory {
            table: "XSDT",
            size: 36
        }
    ));
    let devs = devices(1000);
    create_acpi_tables(&mem, &cfg(254, &devs)).unwrap();
}

/// Fails with what to install when ACPICA's `iasl` is missing (`scripts/test.sh` installs it):
/// a disassembly test must not pass without disassembling.
pub(super) fn require_iasl() {
    let found = std::process::Command::new("iasl")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "iasl is missing: install Debian's acpica-tools (scripts/test.sh does)"
    );
}

/// Disassembles the DSDT with ACPICA's `iasl` (Debian `acpica-tools`).
#[test]
fn iasl_disassembles_the_dsdt() {
    require_iasl();
    let mem = mem();
    let devs = devices(2);
    let t = walk(&mem, create_acpi_tables(&mem, &cfg(2, &devs)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let aml = dir.path().join("dsdt.dat");
    std::fs::write(&aml, &t.dsdt.1).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&aml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
    for needle in [
        "Device (_SB.COM1)",
        "EisaId (\"PNP0501\")",
        "IO (Decode16,\n                0x03F8,",
        "Device (_SB.PS2)",
        "EisaId (\"PNP0303\")",
        "Device (_SB.V000)",
        "Device (_SB.V001)",
        "Name (_HID, \"LNRO0005\")",
        "Memory32Fixed (ReadWrite,\n                0xC0002000,",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
    ] {
        assert!(dsl.contains(needle), "missing {needle:?} in\n{dsl}");
    }
}
