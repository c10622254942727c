//! The DSDT's clone-safety devices: VMGenID (`_SB_.VGEN`), VMClock (`_SB_.VCLK`) and the ACPI
//! Generic Event Device (`_SB_.GED_`) whose interrupt tells the guest to re-read them.
//!
//! When one snapshot is restored into many VMs, each guest must learn it was cloned so that it
//! reseeds its RNG and drops clock calibration. The VMM rewrites both areas on restore and
//! raises the GED's interrupt; the GED's `_EVT` method then sends `Notify(..., 0x80)` to every
//! device on that line, which Linux's `vmgenid` and `ptp_vmclock` drivers handle.
//!
//! - `_SB_.VGEN`: `_HID` "VMGENCTR", `_CID` "VM_Gen_Counter" (the IDs Linux's `vmgenid` binds
//!   to), and `ADDR`, a package {low 32 bits, high 32 bits} of the 16-byte ID's address.
//! - `_SB_.VCLK`: `_HID` "AMZNC10C", `_CID` "VMCLOCK", `_STA` 0x0f and a read-only
//!   `Memory32Fixed` resource over the 4 KiB page (`ptp_vmclock` maps its one memory resource).
//! - `_SB_.GED_`: `_HID` "ACPI0013", one edge/active-high Extended Interrupt per distinct GSI,
//!   and `_EVT(gsi)` notifying the devices on that GSI. Linux's GED driver calls `_EVT` with
//!   the GSI as `Arg0` when there is no `_Exx` method.

use acpi_tables::aml::{
    Arg, Device, Equal, If, Interrupt, Memory32Fixed, Method, Name, Notify, Package, Path,
    ResourceTemplate, Return,
};
use acpi_tables::Aml;

use super::{VmClockInfo, VmGenIdInfo};
use crate::layout::VMCLOCK_SIZE;

/// Absolute paths the GED notifies.
const VGEN_PATH: &str = "\\_SB_.VGEN";
const VCLK_PATH: &str = "\\_SB_.VCLK";
/// The notification value for "device-specific change" (ACPI 6.5 table 5.207).
const NOTIFY_DEVICE_CHECK: u8 = 0x80;
/// `_STA`: present, enabled, shown in the UI, functioning.
const STA_PRESENT_ENABLED_FUNCTIONING: u8 = 0x0f;

/// Appends VGEN, VCLK and the GED for whichever of the two devices the VM has; nothing when it
/// has neither. Both areas must already have been validated.
pub(super) fn clone_devices_aml(
    out: &mut Vec<u8>,
    vmgenid: Option<VmGenIdInfo>,
    vmclock: Option<VmClockInfo>,
) {
    if let Some(info) = vmgenid {
        vmgenid_aml(out, info);
    }
    if let Some(info) = vmclock {
        vmclock_aml(out, info);
    }
    let mut targets = Vec::new();
    if let Some(info) = vmgenid {
        targets.push((info.gsi, VGEN_PATH));
    }
    if let Some(info) = vmclock {
        targets.push((info.gsi, VCLK_PATH));
    }
    if !targets.is_empty() {
        ged_aml(out, &targets);
    }
}

/// `_SB_.VGEN` with `ADDR` pointing at the ID.
fn vmgenid_aml(out: &mut Vec<u8>, info: VmGenIdInfo) {
    // ADDR is two 32-bit integers even where AML integers are 64-bit: that is the format the
    // VM Generation ID specification (and Linux's driver) reads.
    let low = (info.addr & 0xffff_ffff) as u32;
    let high = (info.addr >> 32) as u32;
    Device::new(
        Path::new("_SB_.VGEN"),
        vec![
            &Name::new(Path::new("_HID"), &"VMGENCTR"),
            &Name::new(Path::new("_CID"), &"VM_Gen_Counter"),
            &Name::new(Path::new("_DDN"), &"VM_Gen_Counter"),
            &Name::new(Path::new("ADDR"), &Package::new(vec![&low, &high])),
        ],
    )
    .to_aml_bytes(out);
}

/// `_SB_.VCLK` with its page as the one memory resource.
fn vmclock_aml(out: &mut Vec<u8>, info: VmClockInfo) {
    // A consumer-only Memory32Fixed descriptor (the page is validated to lie below 1 MiB);
    // read-only because only the host writes the structure.
    let page = Memory32Fixed::new(false, info.addr as u32, VMCLOCK_SIZE as u32);
    let crs = ResourceTemplate::new(vec![&page]);
    let sta = STA_PRESENT_ENABLED_FUNCTIONING;
    Device::new(
        Path::new("_SB_.VCLK"),
        vec![
            &Name::new(Path::new("_HID"), &"AMZNC10C"),
            &Name::new(Path::new("_CID"), &"VMCLOCK"),
            &Name::new(Path::new("_DDN"), &"VMCLOCK"),
            &Method::new(Path::new("_STA"), 0, false, vec![&Return::new(&sta)]),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(out);
}

/// `_SB_.GED_` for `targets`, (GSI, device path) pairs: one interrupt per distinct GSI, and an
/// `_EVT` branch per GSI notifying every device on it.
fn ged_aml(out: &mut Vec<u8>, targets: &[(u32, &'static str)]) {
    let mut gsis: Vec<u32> = targets.iter().map(|(gsi, _)| *gsi).collect();
    gsis.sort_unstable();
    gsis.dedup();

    let irqs: Vec<Interrupt> = gsis
        .iter()
        .map(|gsi| Interrupt::new(true, true, false, false, *gsi))
        .collect();
    let crs = ResourceTemplate::new(irqs.iter().map(|irq| irq as &dyn Aml).collect());

    let paths: Vec<(u32, Path)> = targets
        .iter()
        .map(|(gsi, path)| (*gsi, Path::new(path)))
        .collect();
    let value = NOTIFY_DEVICE_CHECK;
    let notifies: Vec<(u32, Notify)> = paths
        .iter()
        .map(|(gsi, path)| (*gsi, Notify::new(path, &value)))
        .collect();
    let arg0 = Arg(0);
    let conditions: Vec<Equal> = gsis.iter().map(|gsi| Equal::new(&arg0, gsi)).collect();
    let branches: Vec<If> = gsis
        .iter()
        .zip(&conditions)
        .map(|(gsi, condition)| {
            let body = notifies
                .iter()
                .filter(|(target_gsi, _)| target_gsi == gsi)
                .map(|(_, notify)| notify as &dyn Aml)
                .collect();
            If::new(condition, body)
        })
        .collect();
    let evt = Method::new(
        Path::new("_EVT"),
        1,
        true,
        branches.iter().map(|branch| branch as &dyn Aml).collect(),
    );

    Device::new(
        Path::new("_SB_.GED_"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0013"),
            &Name::new(Path::new("_CRS"), &crs),
            &evt,
        ],
    )
    .to_aml_bytes(out);
}

#[cfg(test)]
#[path = "clone_devices_tests.rs"]
mod tests;
