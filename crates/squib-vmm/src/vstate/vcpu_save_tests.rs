//! Saving vCPU state through real vCPU threads that run the counting guest on `/dev/kvm`: a
//! paused thread saves, a running one refuses, and a thread given a restored state stays
//! paused until it is resumed.

use super::*;
use crate::vstate::test_guest::{
    copy_memory, enable_kvmclock, guest_was_told_it_stopped, next_count, test_vm, vm_with_memory,
    TestVm,
};
use crate::vstate::vcpu_state::restore_vcpu;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A runner for `fd`, with no devices: the guest's port writes go nowhere and it goes on.
fn runner(vm: &TestVm, fd: VcpuFd) -> VcpuRunner {
    register_kick_signal_handler().unwrap();
    VcpuRunner {
        index: 0,
        fd,
        pio_bus: Arc::new(Bus::new()),
        mmio_bus: Arc::new(Bus::new()),
        stop: StopNotifier::new(Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
        instance_start: None,
        state_caps: Arc::new(vm.caps.clone()),
    }
}

/// Wait until the counter the guest stores in memory passes `count`.
fn wait_for_count_above(vm: &TestVm, count: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while vm.stored_counter() <= count {
        assert!(
            Instant::now() < deadline,
            "the guest did not count past {count}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pause the vCPU and drop its handle: the thread then ends without running the guest again.
fn stop(handle: VcpuHandle) {
    handle.command(VcpuCommand::Pause, TIMEOUT).unwrap();
    drop(handle);
}

#[test]
fn a_running_vcpu_refuses_to_save_and_a_paused_one_saves() {
    let vm = test_vm(false);
    let fd = vm.boot_vcpu();
    enable_kvmclock(&fd);
    let handle = runner(&vm, fd).spawn().unwrap();
    handle.start().unwrap();
    wait_for_count_above(&vm, 0);
    assert!(!guest_was_told_it_stopped(&vm));

    let err = handle.save_state(TIMEOUT).unwrap_err();
    assert!(matches!(err, VcpuControlError::NotPaused(0)), "{err}");
    assert_eq!(
        err.to_string(),
        "vCPU 0 cannot save its state: save/restore unavailable while running"
    );

    handle.command(VcpuCommand::Pause, TIMEOUT).unwrap();
    let first = handle.save_state(TIMEOUT).unwrap();
    assert!(first.regs.rbx > 0);
    // The pause may have caught the loop between its increment and its store.
    assert!(first.regs.rbx - u64::from(vm.stored_counter()) <= 1);
    let second = save_all(std::slice::from_ref(&handle), TIMEOUT).unwrap();
    assert_eq!(second.len(), 1);
    // Only the TSC moves while paused.
    assert_eq!(second[0].regs, first.regs, "a paused guest moved");
    assert_eq!(second[0].lapic, first.lapic);

    handle.command(VcpuCommand::Resume, TIMEOUT).unwrap();
    wait_for_count_above(&vm, u32::try_from(first.regs.rbx).unwrap());
    // The pause went through kvmclock to the guest (KVM wrote it when the vCPU resumed).
    assert!(guest_was_told_it_stopped(&vm));
    let err = handle.save_state(TIMEOUT).unwrap_err();
    assert!(matches!(err, VcpuControlError::NotPaused(0)), "{err}");
    stop(handle);
}

#[test]
fn a_vcpu_restored_from_a_state_stays_paused_until_resumed() {
    let source = test_vm(false);
    let mut fd = source.boot_vcpu();
    for _ in 0..5 {
        next_count(&mut fd);
    }
    let state = save_vcpu(&fd, &source.caps).unwrap();

    let target = vm_with_memory(copy_memory(&source.mem), false);
    let restored = target.blank_vcpu();
    restore_vcpu(&restored, &target.caps, &state).unwrap();
    let handle = runner(&target, restored).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        target.stored_counter(),
        5,
        "the restored guest ran unresumed"
    );
    let parked = handle.save_state(TIMEOUT).unwrap();
    assert_eq!(parked.regs, state.regs);

    // A restored VM needs no start: the resume of `resume_vm` lets it run.
    resume_all(std::slice::from_ref(&handle), TIMEOUT).unwrap();
    wait_for_count_above(&target, 5);
    stop(handle);
}
