//! Tests for the clone-safety devices in the DSDT: VGEN, VCLK and the GED, built through
//! [`create_acpi_tables`] and read back from guest memory (so the DSDT checksum is checked
//! too), plus the configurations the tables refuse.

use super::super::tests::{cfg, count, mem, walk};
use super::super::{create_acpi_tables, AcpiConfig, AcpiError, VmClockInfo, VmGenIdInfo};
use crate::layout::{ACPI_GED_GSI, SYSTEM_TABLES_END, VMCLOCK_ADDR, VMGENID_ADDR};
use crate::memory::GuestMemoryMmap;

const VMGENID: VmGenIdInfo = VmGenIdInfo {
    addr: VMGENID_ADDR,
    gsi: ACPI_GED_GSI,
};
const VMCLOCK: VmClockInfo = VmClockInfo {
    addr: VMCLOCK_ADDR,
    gsi: ACPI_GED_GSI,
};

/// `Notify (\_SB_.<name>, 0x80)` in AML.
fn notify(name: &[u8; 4]) -> Vec<u8> {
    let mut aml = vec![0x86, b'\\', 0x2e, b'_', b'S', b'B', b'_'];
    aml.extend_from_slice(name);
    aml.extend_from_slice(&[0x0a, 0x80]);
    aml
}

/// How many `Device (\_SB_.<name>)` definitions `aml` has: the dual name path not preceded by
/// the root prefix that the GED's `Notify` paths carry.
fn devices_named(aml: &[u8], name: &[u8; 4]) -> usize {
    let mut path = vec![0x2e, b'_', b'S', b'B', b'_'];
    path.extend_from_slice(name);
    aml.windows(path.len())
        .enumerate()
        .filter(|(at, w)| *w == &path[..] && aml[at - 1] != b'\\')
        .count()
}

/// `If (LEqual (Arg0, gsi))` header bytes after the package length (gsi < 256, not 0 or 1).
fn if_arg0_equals(gsi: u8) -> [u8; 4] {
    [0x93, 0x68, 0x0a, gsi]
}

/// An Extended Interrupt descriptor: consumer, edge, active high, exclusive, one GSI.
fn ext_irq(gsi: u8) -> [u8; 9] {
    [0x89, 0x06, 0x00, 0x03, 0x01, gsi, 0, 0, 0]
}

/// The DSDT's AML (header stripped) for `vmgenid` and `vmclock`, with COM1 and the i8042.
fn dsdt_aml(vmgenid: Option<VmGenIdInfo>, vmclock: Option<VmClockInfo>) -> Vec<u8> {
    let mem = mem();
    let config = AcpiConfig {
        vmgenid,
        vmclock,
        ..cfg(1, &[])
    };
    // `walk` checks that every table, the DSDT included, sums to zero.
    let tables = walk(&mem, create_acpi_tables(&mem, &config).unwrap());
    tables.dsdt.1[36..].to_vec()
}

#[test]
fn vgen_has_its_ids_and_addr_package() {
    let aml = dsdt_aml(Some(VMGENID), None);
    assert_eq!(devices_named(&aml, b"VGEN"), 1);
    assert_eq!(count(&aml, b"_HID\x0dVMGENCTR\0"), 1);
    assert_eq!(count(&aml, b"_CID\x0dVM_Gen_Counter\0"), 1);
    // Name (ADDR, Package (2) { 0x000DEFF0, Zero }): low dword, then high dword 0.
    let addr = [
        b'A', b'D', b'D', b'R', 0x12, 0x08, 0x02, 0x0c, 0xf0, 0xef, 0x0d, 0x00, 0x00,
    ];
    assert_eq!(count(&aml, &addr), 1);
    assert_eq!(count(&aml, b"VCLK"), 0);
}

#[test]
fn vclk_has_its_ids_and_a_read_only_page() {
    let aml = dsdt_aml(None, Some(VMCLOCK));
    assert_eq!(devices_named(&aml, b"VCLK"), 1);
    assert_eq!(count(&aml, b"_HID\x0dAMZNC10C\0"), 1);
    assert_eq!(count(&aml, b"_CID\x0dVMCLOCK\0"), 1);
    // Memory32Fixed, read-only, over the page.
    let mut page = vec![0x86, 0x09, 0x00, 0x00];
    page.extend_from_slice(&0xdf000u32.to_le_bytes());
    page.extend_from_slice(&0x1000u32.to_le_bytes());
    assert_eq!(count(&aml, &page), 1);
    assert_eq!(count(&aml, b"VGEN"), 0);
}

#[test]
fn ged_on_one_shared_gsi_notifies_both_devices() {
    let aml = dsdt_aml(Some(VMGENID), Some(VMCLOCK));
    assert_eq!(devices_named(&aml, b"GED_"), 1);
    assert_eq!(devices_named(&aml, b"VGEN"), 1);
    assert_eq!(devices_named(&aml, b"VCLK"), 1);
    assert_eq!(count(&aml, b"_HID\x0dACPI0013\0"), 1);
    // One interrupt (GSI 3, like COM1's but on its own line), one _EVT branch, two Notify.
    assert_eq!(count(&aml, &ext_irq(3)), 1);
    assert_eq!(count(&aml, &if_arg0_equals(3)), 1);
    assert_eq!(count(&aml, &notify(b"VGEN")), 1);
    assert_eq!(count(&aml, &notify(b"VCLK")), 1);
    // _EVT takes one argument and is serialized: MethodOp, length, name, flags 0b1001.
    let evt = aml.windows(4).position(|w| w == b"_EVT").unwrap();
    assert_eq!(aml[evt + 4], 0x09);
}

#[test]
fn ged_on_two_gsis_has_a_branch_each() {
    let clock = VmClockInfo { gsi: 7, ..VMCLOCK };
    let aml = dsdt_aml(Some(VMGENID), Some(clock));
    assert_eq!(count(&aml, &ext_irq(3)), 1);
    assert_eq!(count(&aml, &ext_irq(7)), 1);
    let vgen_branch = aml.windows(4).position(|w| w == if_arg0_equals(3)).unwrap();
    let vclk_branch = aml.windows(4).position(|w| w == if_arg0_equals(7)).unwrap();
    let vgen_notify = aml.windows(13).position(|w| w == notify(b"VGEN")).unwrap();
    let vclk_notify = aml.windows(13).position(|w| w == notify(b"VCLK")).unwrap();
    // Each Notify follows its own GSI's test, and the branches come in GSI order.
    assert!(vgen_branch < vgen_notify && vgen_notify < vclk_branch);
    assert!(vclk_branch < vclk_notify);
}

#[test]
fn without_either_device_there_is_no_ged() {
    let aml = dsdt_aml(None, None);
    for name in [&b"VGEN"[..], b"VCLK", b"GED_", b"ACPI0013"] {
        assert_eq!(count(&aml, name), 0);
    }
}

#[test]
fn tables_stop_below_the_device_area() {
    let mem = mem();
    let many = super::super::tests::devices(19);
    let config = AcpiConfig {
        vmgenid: Some(VMGENID),
        vmclock: Some(VMCLOCK),
        ..cfg(254, &many)
    };
    let t = walk(&mem, create_acpi_tables(&mem, &config).unwrap());
    for (addr, bytes) in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
        assert!(addr + bytes.len() as u64 <= SYSTEM_TABLES_END, "{addr:#x}");
    }
}

fn refused(vmgenid: Option<VmGenIdInfo>, vmclock: Option<VmClockInfo>) -> AcpiError {
    let mem: GuestMemoryMmap = mem();
    let config = AcpiConfig {
        vmgenid,
        vmclock,
        ..cfg(1, &[])
    };
    create_acpi_tables(&mem, &config).unwrap_err()
}

#[test]
fn areas_outside_the_reserved_device_area_are_refused() {
    for addr in [
        0x10_0000,             // RAM: the kernel would use it
        SYSTEM_TABLES_END - 8, // straddles the tables' end
        0x9fc00,               // the MP table
        0xdfff8,               // runs into the RSDP
        u64::MAX - 4,          // wraps
    ] {
        let err = refused(Some(VmGenIdInfo { addr, ..VMGENID }), None);
        assert!(
            matches!(
                err,
                AcpiError::InvalidDeviceArea {
                    device: "VMGenID",
                    ..
                }
            ),
            "{addr:#x}: {err}"
        );
    }
    for addr in [
        VMCLOCK_ADDR + 8,
        VMCLOCK_ADDR - 0x1000,
        0xe0000,
        !0xfff, // the last page of the address space: wraps
    ] {
        let err = refused(None, Some(VmClockInfo { addr, ..VMCLOCK }));
        assert!(
            matches!(
                err,
                AcpiError::InvalidDeviceArea {
                    device: "VMClock",
                    ..
                }
            ),
            "{addr:#x}: {err}"
        );
    }
    let err = refused(
        Some(VmGenIdInfo {
            addr: 0x10_0000,
            ..VMGENID
        }),
        None,
    );
    assert_eq!(
        err.to_string(),
        "VMGenID area 0x100000+0x10 is misaligned or outside the reserved device area \
         [0xdeff0, 0xe0000)"
    );
}

#[test]
fn overlapping_devices_and_bad_gsis_are_refused() {
    let inside_clock = VmGenIdInfo {
        addr: VMCLOCK_ADDR + 0x100,
        ..VMGENID
    };
    assert!(matches!(
        refused(Some(inside_clock), Some(VMCLOCK)),
        AcpiError::DeviceAreasOverlap {
            vmgenid: 0xdf100,
            vmclock: 0xdf000
        }
    ));
    // On its own, an ID inside the page area is fine (the area is reserved either way).
    dsdt_aml(Some(inside_clock), None);

    let err = refused(Some(VmGenIdInfo { gsi: 24, ..VMGENID }), None);
    assert_eq!(
        err.to_string(),
        "VMGenID GSI 24 is beyond the I/O APIC's last pin (23)"
    );
    let err = refused(None, Some(VmClockInfo { gsi: 99, ..VMCLOCK }));
    assert!(matches!(
        err,
        AcpiError::InvalidGsi {
            device: "VMClock",
            gsi: 99,
            max: 23
        }
    ));
}

/// Disassembles the DSDT with ACPICA's `iasl` (Debian `acpica-tools`).
#[test]
fn iasl_disassembles_the_clone_devices() {
    crate::acpi::tests::require_iasl();
    let clock = VmClockInfo { gsi: 7, ..VMCLOCK };
    let aml = dsdt_aml(Some(VMGENID), Some(clock));
    let mem = mem();
    let config = AcpiConfig {
        vmgenid: Some(VMGENID),
        vmclock: Some(clock),
        ..cfg(1, &[])
    };
    let t = walk(&mem, create_acpi_tables(&mem, &config).unwrap());
    assert_eq!(&t.dsdt.1[36..], &aml[..]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dsdt.dat");
    std::fs::write(&file, &t.dsdt.1).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
    for needle in [
        "Device (_SB.VGEN)",
        "Name (_HID, \"VMGENCTR\")",
        "Name (_CID, \"VM_Gen_Counter\")",
        "Name (ADDR, Package (0x02)",
        "0x000DEFF0",
        "Device (_SB.VCLK)",
        "Name (_HID, \"AMZNC10C\")",
        "Name (_CID, \"VMCLOCK\")",
        "Memory32Fixed (ReadOnly,\n                0x000DF000,         // Address Base\n                0x00001000,",
        "Device (_SB.GED)",
        "Name (_HID, \"ACPI0013\" /* Generic Event Device */)",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n            {\n                0x00000003,",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n            {\n                0x00000007,",
        "Method (_EVT, 1, Serialized)",
        "If ((Arg0 == 0x03))",
        "Notify (\\_SB.VGEN, 0x80)",
        "If ((Arg0 == 0x07))",
        "Notify (\\_SB.VCLK, 0x80)",
    ] {
        assert!(dsl.contains(needle), "missing {needle:?} in\n{dsl}");
    }
}
