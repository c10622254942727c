//! vCPU state on the real `/dev/kvm`: a save restored into a fresh VM saves back the same
//! state, and a guest restored mid-loop goes on counting from where it was; plus the checks
//! that need no KVM.

use kvm_bindings::{KVM_MAX_MSR_ENTRIES, KVM_MP_STATE_RUNNABLE};

use super::*;
use crate::vstate::msrs::{MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE};
use crate::vstate::test_guest::{
    copy_memory, enable_kvmclock, guest_was_told_it_stopped, next_count, test_vm, vm_with_memory,
};

/// The saved TSC, which keeps counting while a state is restored and saved again.
fn tsc(state: &VcpuState) -> u64 {
    msr(state, MSR_IA32_TSC).expect("the TSC is always saved")
}

fn msr(state: &VcpuState, index: u32) -> Option<u64> {
    state.msrs.iter().find(|e| e.index == index).map(|e| e.data)
}

/// `state` with the MSRs that follow the running TSC set to 0. `TSC_DEADLINE` is among them:
/// the guest never armed the deadline timer, so it reads 0 and is saved as the TSC.
fn without_tsc(state: &VcpuState) -> VcpuState {
    let mut state = state.clone();
    for entry in &mut state.msrs {
        if entry.index == MSR_IA32_TSC || entry.index == MSR_IA32_TSC_DEADLINE {
            entry.data = 0;
        }
    }
    state
}

#[test]
fn a_restored_vcpu_saves_back_the_state_it_was_given() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    for expected in 1..=3 {
        assert_eq!(next_count(&mut fd), expected);
    }
    let saved = save_vcpu(&fd, &source.caps).unwrap();
    assert_eq!(saved.regs.rbx, 3);
    assert_eq!(saved.mp_state.mp_state, KVM_MP_STATE_RUNNABLE);
    assert!(saved.xsave.len() >= LEGACY_XSAVE_WORDS);
    assert!(!saved.cpuid.as_slice().is_empty());
    // The boot MSRs were written; the save holds them.
    assert_eq!(msr(&saved, 0x1a0), Some(1), "MISC_ENABLE");
    assert_eq!(msr(&saved, 0x2ff), Some(0x806), "MTRR_DEF_TYPE");
    assert_eq!(saved.msrs.last().unwrap().index, MSR_IA32_TSC_DEADLINE);
    assert_eq!(msr(&saved, MSR_IA32_TSC_DEADLINE), Some(tsc(&saved)));

    let target = vm_with_memory(copy_memory(&source.mem), false);
    let restored = target.blank_vcpu();
    restore_vcpu(&restored, &target.caps, &saved).unwrap();
    let again = save_vcpu(&restored, &target.caps).unwrap();

    assert_eq!(without_tsc(&again), without_tsc(&saved));
    // The restored TSC went on from the saved one: it is later, by less than a minute.
    let ticks = tsc(&again)
        .checked_sub(tsc(&saved))
        .expect("the TSC went back");
    let khz = u64::from(saved.tsc_khz.expect("KVM_GET_TSC_KHZ works here"));
    assert!(ticks < 60_000 * khz, "{ticks} ticks at {khz} kHz");
}

#[test]
fn a_guest_restored_into_a_new_vm_goes_on_counting() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    for expected in 1..=5 {
        assert_eq!(next_count(&mut fd), expected);
    }
    let vcpu_state = save_vcpu(&fd, &source.caps).unwrap();
    let vm_state = source.vm.save_state().unwrap();
    let memory = copy_memory(&source.mem);
    drop(fd);
    drop(source);

    let target = vm_with_memory(memory, false);
    assert_eq!(target.stored_counter(), 5);
    target.vm.restore_state(&vm_state, false).unwrap();
    let mut restored = target.blank_vcpu();
    restore_vcpu(&restored, &target.caps, &vcpu_state).unwrap();
    assert_eq!(next_count(&mut restored), 6);
    assert_eq!(next_count(&mut restored), 7);
    assert_eq!(target.stored_counter(), 7);
}

#[test]
fn a_state_survives_serialisation() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    next_count(&mut fd);
    let saved = save_vcpu(&fd, &source.caps).unwrap();
    let bytes = bincode::serialize(&saved).unwrap();
    let back: VcpuState = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, saved);
}

#[test]
fn an_msr_kvm_cannot_read_is_dropped_and_the_rest_are_read() {
    let source = test_vm(false);
    let fd = source.boot_vcpu();
    // No CPU has MSR 0x12345678, and more than one chunk of MSRs follows it.
    let mut wanted = vec![MSR_IA32_TSC, 0x1234_5678, 0x174];
    wanted.extend(std::iter::repeat_n(0x175, KVM_MAX_MSR_ENTRIES));
    let read = read_msrs(&fd, &wanted).unwrap();
    let indices: Vec<u32> = read.iter().map(|e| e.index).collect();
    assert_eq!(indices.len(), wanted.len() - 1);
    assert_eq!(indices[..2], [MSR_IA32_TSC, 0x174]);
}

#[test]
fn a_refused_msr_write_is_a_partial_write_error() {
    let source = test_vm(false);
    let fd = source.boot_vcpu();
    let msrs = [
        MsrEntry {
            index: 0x174,
            data: 0,
        },
        MsrEntry {
            index: 0x1234_5678,
            data: 0,
        },
    ];
    let err = write_msrs(&fd, &msrs).unwrap_err();
    assert!(
        matches!(err, VcpuStateError::PartialMsrWrite { index: 0x1234_5678 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Failed to set all KVM MSRs for this vCPU. Only a partial write was done."
    );
}

#[test]
fn a_truncated_xsave_area_is_refused_before_anything_is_set() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    next_count(&mut fd);
    let mut state = save_vcpu(&fd, &source.caps).unwrap();
    state.xsave.truncate(100);
    state.regs.rbx = 1000;
    let err = restore_vcpu(&fd, &source.caps, &state).unwrap_err();
    assert!(matches!(err, VcpuStateError::XsaveTooShort(100)), "{err}");
    assert_eq!(fd.get_regs().unwrap().rbx, 1, "the registers were changed");
}

#[test]
fn too_many_cpuid_entries_are_refused_before_anything_is_set() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    next_count(&mut fd);
    let mut state = save_vcpu(&fd, &source.caps).unwrap();
    state.cpuid = vec![state.cpuid[0]; KVM_MAX_CPUID_ENTRIES + 1];
    state.regs.rbx = 1000;
    let err = restore_vcpu(&fd, &source.caps, &state).unwrap_err();
    assert!(matches!(err, VcpuStateError::Buffer("CPUID", _)), "{err}");
    assert_eq!(fd.get_regs().unwrap().rbx, 1, "the registers were changed");
}

#[test]
fn a_restored_guest_with_kvmclock_is_told_it_was_stopped() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    enable_kvmclock(&fd);
    next_count(&mut fd);
    assert!(!guest_was_told_it_stopped(&source));
    let state = save_vcpu(&fd, &source.caps).unwrap();

    let target = vm_with_memory(copy_memory(&source.mem), false);
    let mut restored = target.blank_vcpu();
    restore_vcpu(&restored, &target.caps, &state).unwrap();
    // KVM updates the guest's kvmclock page when the vCPU next runs.
    next_count(&mut restored);
    assert!(guest_was_told_it_stopped(&target));
}

#[test]
fn telling_a_guest_without_kvmclock_only_counts_a_failure() {
    let source = test_vm(false);
    let fd = source.boot_vcpu();
    let before = METRICS.vcpu.kvmclock_ctrl_fails.count();
    notify_guest_stopped(&fd);
    assert!(METRICS.vcpu.kvmclock_ctrl_fails.count() > before);
}

#[test]
fn an_xsave_area_is_padded_to_the_hosts_size() {
    let caps = VcpuStateCaps::new(&[], 4096 + 64);
    let mut words = vec![7u32; LEGACY_XSAVE_WORDS];
    words.push(9);
    let buffer = xsave_buffer(&words, &caps).unwrap();
    assert_eq!(
        buffer.as_fam_struct_ref().xsave.region,
        [7; LEGACY_XSAVE_WORDS]
    );
    assert_eq!(buffer.as_slice().len(), 16);
    assert_eq!(buffer.as_slice()[..2], [9, 0]);
    // A longer saved area than the host's is kept whole.
    let legacy_host = VcpuStateCaps::new(&[], 0);
    assert_eq!(xsave_buffer(&words, &legacy_host).unwrap().as_slice(), [9]);
}

#[test]
fn caps_keep_the_state_msrs_and_a_positive_xsave2_size() {
    let caps = VcpuStateCaps::new(&[0x10, 0x10a, 0x17b, 0x4b56_4d00], -1);
    assert_eq!(caps.msrs(), [0x10, 0x4b56_4d00]);
    assert_eq!(caps.xsave_size, None);
    assert_eq!(VcpuStateCaps::new(&[], 0).xsave_size, None);
    assert_eq!(VcpuStateCaps::new(&[], 8192).xsave_size, Some(8192));
}

#[test]
fn the_tsc_is_scaled_only_beyond_250_ppm() {
    assert!(!tsc_needs_scaling(2_000_000, 2_000_000));
    assert!(!tsc_needs_scaling(2_000_000, 2_000_500));
    assert!(!tsc_needs_scaling(2_000_000, 1_999_500));
    assert!(tsc_needs_scaling(2_000_000, 2_000_501));
    assert!(tsc_needs_scaling(2_000_000, 1_999_499));
    assert!(tsc_needs_scaling(0, 1));
    assert!(tsc_needs_scaling(u32::MAX, 0));
}

#[test]
fn errors_name_the_ioctl() {
    let err = VcpuStateError::ioctl("get the registers (KVM_GET_REGS)")(kvm_ioctls::Error::new(
        libc::EINVAL,
    ));
    assert_eq!(
        err.to_string(),
        "Failed to get the registers (KVM_GET_REGS): Invalid argument (os error 22)"
    );
}
