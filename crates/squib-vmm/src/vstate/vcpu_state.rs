//! A vCPU's KVM state: save everything needed to resume it exactly ([`save_vcpu`]) and put
//! it back into a fresh vCPU ([`restore_vcpu`]).
//!
//! Save order: MP state, registers, special registers, XSAVE, XCRs, debug registers, LAPIC,
//! TSC frequency, CPUID, MSRs, vCPU events.
//!
//! Restore order: TSC frequency (only when the host's differs), CPUID, MP state, registers,
//! special registers, XSAVE, XCRs, debug registers, LAPIC, MSRs, vCPU events; then
//! `KVM_KVMCLOCK_CTRL` so the guest does not count the time it spent saved as a lockup.
//! CPUID goes first because KVM checks later values (EFER, XCR0, MSRs) against it; the LAPIC
//! precedes the MSRs because the TSC deadline only arms a timer in TSC-deadline mode.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, kvm_xsave2, CpuId, Xsave, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};
use squib_logger::metrics::METRICS;

use super::msrs::{
    cpuid_implied_msrs, deadline_zero_to_tsc, read_msrs, save_order, serializable_msrs, write_msrs,
    MsrEntry,
};

/// 32-bit words in the legacy `kvm_xsave` area (4 KiB), which every XSAVE buffer starts with.
const LEGACY_XSAVE_WORDS: usize = std::mem::size_of::<kvm_xsave>() / 4;

/// How far (in parts per million) the host's TSC frequency may be from the saved one before
/// the restored vCPU's TSC is scaled to the saved frequency.
const TSC_KHZ_TOLERANCE_PPM: u64 = 250;

/// Everything KVM holds for one vCPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VcpuState {
    /// Running, halted, waiting for INIT/SIPI, ...
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segments, descriptor tables, control registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// The XSAVE area as 32-bit words: the legacy 4 KiB area, then (with `KVM_CAP_XSAVE2`) the
    /// dynamically sized components.
    pub xsave: Vec<u32>,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// The in-kernel local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// The vCPU's TSC frequency; `None` when KVM could not tell (the snapshot then cannot be
    /// checked against a host with another TSC frequency).
    pub tsc_khz: Option<u32>,
    /// The vCPU's CPUID entries (at most `KVM_MAX_CPUID_ENTRIES`).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// The saved MSRs; `TSC_DEADLINE`, if present, is last.
    pub msrs: Vec<MsrEntry>,
    /// Pending exceptions, interrupts, NMIs and SMM state.
    pub vcpu_events: kvm_vcpu_events,
}

/// Why a vCPU's state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// A vCPU ioctl failed; the text says which.
    #[error("Failed to {0}: {1}")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// KVM accepted only some of the MSRs of a chunk.
    #[error("Failed to set all KVM MSRs for this vCPU. Only a partial write was done.")]
    PartialMsrWrite {
        /// The first MSR KVM refused.
        index: u32,
    },
    /// A KVM buffer with a flexible array could not be built.
    #[error("Cannot build the KVM {0} buffer: {1}")]
    Buffer(&'static str, #[source] vmm_sys_util::fam::Error),
    /// The saved XSAVE area is shorter than the legacy area every vCPU has.
    #[error(
        "Invalid vCPU state: the XSAVE area has {0} 32-bit words, fewer than the {LEGACY_XSAVE_WORDS} of the legacy area"
    )]
    XsaveTooShort(usize),
    /// The restored vCPU's TSC frequency could not be read.
    #[error("Could not get TSC to check if TSC scaling was required with the snapshot: {0}")]
    GetTsc(#[source] kvm_ioctls::Error),
    /// The restored vCPU's TSC could not be scaled to the saved frequency.
    #[error("Could not set TSC scaling within the snapshot: {0}")]
    SetTsc(#[source] kvm_ioctls::Error),
}

impl VcpuStateError {
    pub(super) fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |e| Self::Ioctl(what, e)
    }
}

use VcpuStateError as E;

/// What saving and restoring vCPU state needs to know about the host's KVM, computed once per
/// VM (see `Vm::vcpu_state_caps`) and shared by its vCPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuStateCaps {
    /// The host-listed MSRs that hold guest state.
    msrs: Vec<u32>,
    /// `KVM_CAP_XSAVE2`: the XSAVE buffer size in bytes; `None` on hosts before Linux 5.17,
    /// which use the legacy 4 KiB `kvm_xsave`.
    xsave_size: Option<usize>,
}

impl VcpuStateCaps {
    /// From the host's `KVM_GET_MSR_INDEX_LIST` and `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)`
    /// (0 when the host lacks it).
    #[must_use]
    pub fn new(msr_index_list: &[u32], xsave2_size: i32) -> Self {
        Self {
            msrs: serializable_msrs(msr_index_list),
            xsave_size: usize::try_from(xsave2_size).ok().filter(|&size| size > 0),
        }
    }

    /// The host-listed MSRs saved for every vCPU (CPUID-implied ones are added per vCPU).
    #[must_use]
    pub fn msrs(&self) -> &[u32] {
        &self.msrs
    }

    /// These capabilities, saving `extra` MSRs too: a CPU template's, which the host's list
    /// may lack or squib would otherwise leave out, so that a restored guest keeps them.
    #[must_use]
    pub fn with_msrs(mut self, extra: &[u32]) -> Self {
        self.msrs.extend_from_slice(extra);
        self.msrs.sort_unstable();
        self.msrs.dedup();
        self
    }
}

/// Save the state of a vCPU that is out of `KVM_RUN` (paused, or not started).
///
/// # Errors
/// [`VcpuStateError`] naming the ioctl that failed. A missing TSC frequency is only a warning.
pub fn save_vcpu(fd: &VcpuFd, caps: &VcpuStateCaps) -> Result<VcpuState, VcpuStateError> {
    let mp_state = fd
        .get_mp_state()
        .map_err(E::ioctl("get the MP state (KVM_GET_MP_STATE)"))?;
    let regs = fd
        .get_regs()
        .map_err(E::ioctl("get the registers (KVM_GET_REGS)"))?;
    let sregs = fd
        .get_sregs()
        .map_err(E::ioctl("get the special registers (KVM_GET_SREGS)"))?;
    let xsave = get_xsave(fd, caps)?;
    let xcrs = fd
        .get_xcrs()
        .map_err(E::ioctl("get the XCRs (KVM_GET_XCRS)"))?;
    let debug_regs = fd
        .get_debug_regs()
        .map_err(E::ioctl("get the debug registers (KVM_GET_DEBUGREGS)"))?;
    let lapic = fd
        .get_lapic()
        .map_err(E::ioctl("get the LAPIC (KVM_GET_LAPIC)"))?;
    let tsc_khz = match fd.get_tsc_khz() {
        Ok(khz) => Some(khz),
        Err(e) => {
            log::warn!(
                "TSC freq not available. Snapshot cannot be loaded on a different CPU model."
            );
            log::debug!("KVM_GET_TSC_KHZ failed: {e}");
            None
        }
    };
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(E::ioctl("get the CPUID (KVM_GET_CPUID2)"))?;
    let cpuid = cpuid.as_slice().to_vec();
    let order = save_order(&caps.msrs, &cpuid_implied_msrs(&cpuid));
    let mut msrs = read_msrs(fd, &order)?;
    deadline_zero_to_tsc(&mut msrs);
    let vcpu_events = fd
        .get_vcpu_events()
        .map_err(E::ioctl("get the vCPU events (KVM_GET_VCPU_EVENTS)"))?;
    Ok(VcpuState {
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        tsc_khz,
        cpuid,
        msrs,
        vcpu_events,
    })
}

/// Restore `state` into a vCPU that has not run yet, then tell the guest it was stopped.
///
/// # Errors
/// [`VcpuStateError`] naming the ioctl that failed, or the invalid part of `state`.
pub fn restore_vcpu(
    fd: &VcpuFd,
    caps: &VcpuStateCaps,
    state: &VcpuState,
) -> Result<(), VcpuStateError> {
    // Built before any ioctl so that a corrupt state changes nothing.
    let xsave = xsave_buffer(&state.xsave, caps)?;
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|e| E::Buffer("CPUID", e))?;
    if let Some(saved_khz) = state.tsc_khz {
        scale_tsc(fd, saved_khz)?;
    }
    fd.set_cpuid2(&cpuid)
        .map_err(E::ioctl("set the CPUID (KVM_SET_CPUID2)"))?;
    fd.set_mp_state(state.mp_state)
        .map_err(E::ioctl("set the MP state (KVM_SET_MP_STATE)"))?;
    fd.set_regs(&state.regs)
        .map_err(E::ioctl("set the registers (KVM_SET_REGS)"))?;
    fd.set_sregs(&state.sregs)
        .map_err(E::ioctl("set the special registers (KVM_SET_SREGS)"))?;
    // SAFETY: `xsave_buffer` sized the buffer to at least KVM_CAP_XSAVE2's size (the legacy
    // 4 KiB without that capability), which is the most KVM_SET_XSAVE reads.
    unsafe { fd.set_xsave2(&xsave) }.map_err(E::ioctl("set the XSAVE area (KVM_SET_XSAVE)"))?;
    fd.set_xcrs(&state.xcrs)
        .map_err(E::ioctl("set the XCRs (KVM_SET_XCRS)"))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(E::ioctl("set the debug registers (KVM_SET_DEBUGREGS)"))?;
    fd.set_lapic(&state.lapic)
        .map_err(E::ioctl("set the LAPIC (KVM_SET_LAPIC)"))?;
    write_msrs(fd, &state.msrs)?;
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(E::ioctl("set the vCPU events (KVM_SET_VCPU_EVENTS)"))?;
    notify_guest_stopped(fd);
    Ok(())
}

/// `KVM_KVMCLOCK_CTRL`: tell the guest, through kvmclock, that the host stopped it, so its
/// soft-lockup watchdog does not fire for the pause. A guest without kvmclock makes this
/// fail; that is only counted (`vcpu.kvmclock_ctrl_fails`) and logged at debug.
pub fn notify_guest_stopped(fd: &VcpuFd) {
    if let Err(e) = fd.kvmclock_ctrl() {
        METRICS.vcpu.kvmclock_ctrl_fails.inc();
        log::debug!("KVM_KVMCLOCK_CTRL failed: {e}");
    }
}

/// Read the XSAVE area: with `KVM_GET_XSAVE2` at the host's size when KVM has it, else the
/// legacy 4 KiB `KVM_GET_XSAVE`.
fn get_xsave(fd: &VcpuFd, caps: &VcpuStateCaps) -> Result<Vec<u32>, VcpuStateError> {
    let Some(size) = caps.xsave_size else {
        let xsave = fd
            .get_xsave()
            .map_err(E::ioctl("get the XSAVE area (KVM_GET_XSAVE)"))?;
        return Ok(xsave.region.to_vec());
    };
    let extra_words = size
        .saturating_sub(std::mem::size_of::<kvm_xsave>())
        .div_ceil(4);
    let mut xsave = Xsave::new(extra_words).map_err(|e| E::Buffer("XSAVE", e))?;
    // SAFETY: the buffer holds KVM_CAP_XSAVE2's size, the most KVM_GET_XSAVE2 writes.
    unsafe { fd.get_xsave2(&mut xsave) }
        .map_err(E::ioctl("get the XSAVE area (KVM_GET_XSAVE2)"))?;
    let legacy = xsave.as_fam_struct_ref().xsave.region;
    Ok(legacy.iter().chain(xsave.as_slice()).copied().collect())
}

/// A `KVM_SET_XSAVE` buffer holding `words`, zero-padded to at least the size KVM reads on
/// this host (a state saved on a host with a smaller XSAVE area leaves the rest in its
/// initial state, which the XSAVE header's feature bitmap says).
fn xsave_buffer(words: &[u32], caps: &VcpuStateCaps) -> Result<Xsave, VcpuStateError> {
    let Some((legacy, extra)) = words.split_first_chunk::<LEGACY_XSAVE_WORDS>() else {
        return Err(E::XsaveTooShort(words.len()));
    };
    let host_words = caps.xsave_size.map_or(0, |size| size.div_ceil(4));
    let padding = host_words.saturating_sub(words.len());
    let mut header = kvm_xsave2::default();
    header.xsave.region = *legacy;
    let mut xsave = Xsave::from_header(header).map_err(|e| E::Buffer("XSAVE", e))?;
    for &word in extra.iter().chain(std::iter::repeat_n(&0, padding)) {
        xsave.push(word).map_err(|e| E::Buffer("XSAVE", e))?;
    }
    Ok(xsave)
}

/// Scale the vCPU's TSC to `saved_khz` when this host's frequency is too far from it.
fn scale_tsc(fd: &VcpuFd, saved_khz: u32) -> Result<(), VcpuStateError> {
    let host_khz = fd.get_tsc_khz().map_err(E::GetTsc)?;
    if tsc_needs_scaling(saved_khz, host_khz) {
        log::info!("Scaling the vCPU's TSC from {host_khz} kHz to the saved {saved_khz} kHz");
        fd.set_tsc_khz(saved_khz).map_err(E::SetTsc)?;
    }
    Ok(())
}

/// Whether `host_khz` is more than [`TSC_KHZ_TOLERANCE_PPM`] away from `saved_khz`.
fn tsc_needs_scaling(saved_khz: u32, host_khz: u32) -> bool {
    u64::from(saved_khz.abs_diff(host_khz)) * 1_000_000
        > u64::from(saved_khz) * TSC_KHZ_TOLERANCE_PPM
}

#[cfg(test)]
#[path = "vcpu_state_tests.rs"]
mod tests;
