//! Which MSRs a vCPU snapshot holds, and reading and writing them in chunks KVM accepts.
//!
//! The saved set is the host's `KVM_GET_MSR_INDEX_LIST` restricted to the MSRs that hold guest
//! state (`SERIALIZABLE_RANGES`, without `MCG_CTL`), plus the MSRs the vCPU's CPUID implies
//! but KVM does not list (MTRRs, machine-check banks, MPX's `BNDCFGS`).
//!
//! `TSC_DEADLINE` is always read and written last, in a chunk of its own: KVM arms the LAPIC
//! deadline timer relative to the guest TSC at the moment of the write, so it must follow the
//! restored TSC.

use std::ops::RangeInclusive;

use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, Msrs, KVM_MAX_MSR_ENTRIES};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::vcpu_state::VcpuStateError;

/// `IA32_TIME_STAMP_COUNTER`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_TSC_DEADLINE`: the LAPIC timer's deadline in TSC-deadline mode.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// `IA32_MCG_CTL`: not saved (as in Firecracker). KVM accepts a non-zero value only when
/// `MCG_CAP` has `MCG_CTL_P`, which KVM's default `MCG_CAP` lacks.
const MSR_IA32_MCG_CTL: u32 = 0x17b;
/// `IA32_BNDCFGS` (MPX).
const MSR_IA32_BNDCFGS: u32 = 0xd90;

/// The MSRs that hold guest state, saved when the host's KVM lists them. Left out on purpose:
/// EFER and APIC_BASE (in `kvm_sregs`), MSRs that describe the CPU rather than the guest
/// (`ARCH_CAPABILITIES`, `PERF_CAPABILITIES`, `UCODE_REV`, `PLATFORM_INFO`: KVM derives them
/// from the host and the CPUID), write-only commands (`PRED_CMD`, `FLUSH_CMD`) and the PMU.
const SERIALIZABLE_RANGES: &[RangeInclusive<u32>] = &[
    // TSC, and the old KVM paravirtual wall clock and system time.
    0x10..=0x12,
    // SMI_COUNT, FEATURE_CONTROL, TSC_ADJUST.
    0x34..=0x34,
    0x3a..=0x3b,
    // SPEC_CTRL.
    0x48..=0x48,
    // TSX_CTRL.
    0x122..=0x122,
    // MISC_FEATURES_ENABLES (CPUID faulting).
    0x140..=0x140,
    // SYSENTER_CS/ESP/EIP.
    0x174..=0x176,
    // MCG_STATUS (MCG_CTL is filtered out; MCG_CAP is read-only: KVM_X86_SETUP_MCE sets it).
    0x17a..=0x17b,
    // MISC_ENABLE.
    0x1a0..=0x1a0,
    // DEBUGCTL and the last-branch / last-exception records.
    0x1d9..=0x1de,
    // POWER_CTL.
    0x1fc..=0x1fc,
    // Variable and fixed MTRRs, PAT, MCi_CTL2, MTRR_DEF_TYPE.
    0x200..=0x2ff,
    // Machine-check banks: CTL, STATUS, ADDR, MISC for 32 banks.
    0x400..=0x47f,
    // TSC_DEADLINE.
    0x6e0..=0x6e0,
    // x2APIC registers.
    0x800..=0x8ff,
    // BNDCFGS, XSS.
    0xd90..=0xd90,
    0xda0..=0xda0,
    // STAR, LSTAR, CSTAR, SFMASK.
    0xc000_0081..=0xc000_0084,
    // FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX.
    0xc000_0100..=0xc000_0103,
    // AMD: HWCR, VM_HSAVE_PA, VIRT_SPEC_CTRL.
    0xc001_0015..=0xc001_0015,
    0xc001_0117..=0xc001_0117,
    0xc001_011f..=0xc001_011f,
    // KVM paravirtual MSRs (kvmclock, async page faults, steal time, PV EOI, ...).
    0x4b56_4d00..=0x4b56_4dff,
];

/// The MTRRs KVM emulates but leaves out of its index list: the 8 variable pairs, the fixed
/// ranges, PAT and the default type.
const MTRR_MSRS: &[RangeInclusive<u32>] = &[
    0x200..=0x20f,
    0x250..=0x250,
    0x258..=0x259,
    0x268..=0x26f,
    0x277..=0x277,
    0x2ff..=0x2ff,
];

/// `MCG_STATUS` and the 32 machine-check banks KVM gives a vCPU by default (KVM lists
/// neither).
const MCE_MSRS: &[RangeInclusive<u32>] = &[0x17a..=0x17a, 0x400..=0x47f];

/// CPUID.1:EDX feature bits that imply MSRs.
const LEAF1_EDX_MCE: u32 = 1 << 7;
const LEAF1_EDX_MTRR: u32 = 1 << 12;
/// CPUID.(7,0):EBX.MPX.
const LEAF7_EBX_MPX: u32 = 1 << 14;

/// The most MSRs one `KVM_GET_MSRS` / `KVM_SET_MSRS` takes: KVM refuses
/// `KVM_MAX_MSR_ENTRIES` (256) or more with `E2BIG`.
const MSRS_PER_CALL: usize = KVM_MAX_MSR_ENTRIES - 1;

/// One saved MSR.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrEntry {
    /// The MSR number.
    pub index: u32,
    /// Its value.
    pub data: u64,
}

/// The MSRs of `index_list` (the host's `KVM_GET_MSR_INDEX_LIST`) that hold guest state, in
/// ascending order.
#[must_use]
pub fn serializable_msrs(index_list: &[u32]) -> Vec<u32> {
    let mut msrs: Vec<u32> = index_list
        .iter()
        .copied()
        .filter(|&msr| msr != MSR_IA32_MCG_CTL && in_ranges(SERIALIZABLE_RANGES, msr))
        .collect();
    msrs.sort_unstable();
    msrs.dedup();
    msrs
}

/// The MSRs a vCPU with `cpuid` uses that KVM does not list: MTRRs, machine-check state and
/// MPX's bounds configuration.
#[must_use]
pub fn cpuid_implied_msrs(cpuid: &[kvm_cpuid_entry2]) -> Vec<u32> {
    let leaf = |function: u32| {
        cpuid
            .iter()
            .find(|e| e.function == function && e.index == 0)
    };
    let leaf1_edx = leaf(1).map_or(0, |e| e.edx);
    let leaf7_ebx = leaf(7).map_or(0, |e| e.ebx);
    let mut msrs = Vec::new();
    if leaf1_edx & LEAF1_EDX_MTRR != 0 {
        msrs.extend(MTRR_MSRS.iter().cloned().flatten());
    }
    if leaf1_edx & LEAF1_EDX_MCE != 0 {
        msrs.extend(MCE_MSRS.iter().cloned().flatten());
    }
    if leaf7_ebx & LEAF7_EBX_MPX != 0 {
        msrs.push(MSR_IA32_BNDCFGS);
    }
    msrs
}

/// The union of `listed` and `implied`, ascending, without duplicates, with `TSC_DEADLINE`
/// moved to the end.
#[must_use]
pub fn save_order(listed: &[u32], implied: &[u32]) -> Vec<u32> {
    let mut msrs: Vec<u32> = listed.iter().chain(implied).copied().collect();
    msrs.sort_unstable();
    msrs.dedup();
    // A stable partition: everything else keeps its order, the deadline goes last.
    msrs.sort_by_key(|&msr| msr == MSR_IA32_TSC_DEADLINE);
    msrs
}

fn in_ranges(ranges: &[RangeInclusive<u32>], msr: u32) -> bool {
    ranges.iter().any(|r| r.contains(&msr))
}

/// Read `indices` from the vCPU, `MSRS_PER_CALL` (255) at a time.
///
/// `KVM_GET_MSRS` stops at the first MSR it cannot read and returns how many it read. Such an
/// MSR is dropped (logged at debug) and the read goes on after it. KVM refuses an MSR this
/// vCPU does not have (it checks some against the vCPU's CPUID, machine-check banks against
/// `MCG_CAP`), so the guest holds no state there to lose; and Firecracker's rule (any
/// unreadable MSR fails the snapshot) would make one such MSR of the host's list fail every
/// snapshot. An ioctl error is an error.
///
/// # Errors
/// [`VcpuStateError::Ioctl`] when `KVM_GET_MSRS` fails outright.
pub fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<MsrEntry>, VcpuStateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSRS_PER_CALL)];
        let mut msrs = msrs_buffer(chunk.iter().map(|&index| (index, 0)))?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(VcpuStateError::ioctl("get MSRs (KVM_GET_MSRS)"))?;
        let read = read.min(chunk.len());
        saved.extend(msrs.as_slice()[..read].iter().map(|e| MsrEntry {
            index: e.index,
            data: e.data,
        }));
        if read < chunk.len() {
            log::debug!(
                "KVM cannot read MSR {:#x} of this vCPU: it is not saved",
                chunk[read]
            );
            rest = &rest[read + 1..];
        } else {
            rest = &rest[chunk.len()..];
        }
    }
    Ok(saved)
}

/// Replace a `TSC_DEADLINE` of 0 by the saved TSC value.
///
/// KVM reads the deadline back as 0 both when the timer is disarmed and once it has fired.
/// Writing 0 on restore would leave a guest that waits for that expiry's interrupt waiting
/// forever; writing the TSC instead makes the timer fire as soon as the guest runs, and a
/// guest in TSC-deadline mode takes an extra timer interrupt in its stride.
pub fn deadline_zero_to_tsc(msrs: &mut [MsrEntry]) {
    let Some(tsc) = msrs
        .iter()
        .find(|e| e.index == MSR_IA32_TSC)
        .map(|e| e.data)
    else {
        return;
    };
    for entry in msrs
        .iter_mut()
        .filter(|e| e.index == MSR_IA32_TSC_DEADLINE && e.data == 0)
    {
        entry.data = tsc;
    }
}

/// Write `msrs` to the vCPU in chunks of `MSRS_PER_CALL` (255), `TSC_DEADLINE` last and alone
/// (whatever the order in `msrs`).
///
/// # Errors
/// [`VcpuStateError::Ioctl`] when `KVM_SET_MSRS` fails, [`VcpuStateError::PartialMsrWrite`]
/// when KVM refuses one of them.
pub fn write_msrs(fd: &VcpuFd, msrs: &[MsrEntry]) -> Result<(), VcpuStateError> {
    let (deadline, others): (Vec<MsrEntry>, Vec<MsrEntry>) =
        msrs.iter().partition(|e| e.index == MSR_IA32_TSC_DEADLINE);
    for chunk in others
        .chunks(MSRS_PER_CALL)
        .chain(deadline.chunks(MSRS_PER_CALL))
    {
        let buffer = msrs_buffer(chunk.iter().map(|e| (e.index, e.data)))?;
        let written = fd
            .set_msrs(&buffer)
            .map_err(VcpuStateError::ioctl("set MSRs (KVM_SET_MSRS)"))?;
        if written < chunk.len() {
            let index = chunk[written].index;
            log::error!("KVM refused to restore MSR {index:#x}");
            return Err(VcpuStateError::PartialMsrWrite { index });
        }
    }
    Ok(())
}

fn msrs_buffer(entries: impl Iterator<Item = (u32, u64)>) -> Result<Msrs, VcpuStateError> {
    let entries: Vec<kvm_msr_entry> = entries
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|e| VcpuStateError::Buffer("MSR", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_state_msrs_of_the_host_list_are_saved_without_mcg_ctl() {
        let host = [
            0xc000_0082,
            0x10,
            0x17b, // MCG_CTL
            0x17a,
            0x10a, // ARCH_CAPABILITIES: describes the CPU
            0x345, // PERF_CAPABILITIES
            0x4b56_4d01,
            0x6e0,
            0x10,
        ];
        assert_eq!(
            serializable_msrs(&host),
            [0x10, 0x17a, 0x6e0, 0x4b56_4d01, 0xc000_0082]
        );
    }

    fn leaf(function: u32, ebx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ebx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_features_imply_their_msrs() {
        assert!(cpuid_implied_msrs(&[]).is_empty());
        let mtrr = cpuid_implied_msrs(&[leaf(1, 0, LEAF1_EDX_MTRR)]);
        assert_eq!(mtrr.len(), 16 + 1 + 2 + 8 + 1 + 1);
        assert!(mtrr.contains(&0x2ff) && mtrr.contains(&0x20f) && !mtrr.contains(&0xfe));
        let mce = cpuid_implied_msrs(&[leaf(1, 0, LEAF1_EDX_MCE)]);
        assert_eq!(mce.len(), 1 + 128);
        assert!(!mce.contains(&MSR_IA32_MCG_CTL));
        assert_eq!(
            cpuid_implied_msrs(&[leaf(7, LEAF7_EBX_MPX, 0)]),
            [MSR_IA32_BNDCFGS]
        );
        // A sub-leaf other than 0 of leaf 7 does not count.
        let mut subleaf = leaf(7, LEAF7_EBX_MPX, 0);
        subleaf.index = 1;
        assert!(cpuid_implied_msrs(&[subleaf]).is_empty());
    }

    #[test]
    fn the_save_order_is_sorted_unique_with_the_deadline_last() {
        assert_eq!(
            save_order(&[0x6e0, 0x10, 0xc000_0100], &[0x200, 0x10, 0x6e0]),
            [0x10, 0x200, 0xc000_0100, 0x6e0]
        );
        assert_eq!(save_order(&[0x11, 0x10], &[]), [0x10, 0x11]);
    }

    fn entry(index: u32, data: u64) -> MsrEntry {
        MsrEntry { index, data }
    }

    #[test]
    fn a_zero_deadline_becomes_the_tsc_and_a_set_one_stays() {
        let mut msrs = [entry(MSR_IA32_TSC, 1234), entry(MSR_IA32_TSC_DEADLINE, 0)];
        deadline_zero_to_tsc(&mut msrs);
        assert_eq!(msrs[1], entry(MSR_IA32_TSC_DEADLINE, 1234));
        let mut armed = [entry(MSR_IA32_TSC, 1234), entry(MSR_IA32_TSC_DEADLINE, 99)];
        deadline_zero_to_tsc(&mut armed);
        assert_eq!(armed[1].data, 99);
        // Without a saved TSC there is nothing to arm it at.
        let mut no_tsc = [entry(MSR_IA32_TSC_DEADLINE, 0)];
        deadline_zero_to_tsc(&mut no_tsc);
        assert_eq!(no_tsc[0].data, 0);
    }
}
