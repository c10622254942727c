//! VM state and dirty-page logging on the real `/dev/kvm`.

use std::time::Duration;

use kvm_bindings::{kvm_pit_state2, KVM_CLOCK_REALTIME};

use super::*;
use crate::vstate::test_guest::{next_count, test_vm, DATA_ADDR};

/// The PIT state without the host timestamps of the last count loads, which KVM sets to the
/// time of the `KVM_SET_PIT2`.
fn pit_without_load_times(pit: &kvm_pit_state2) -> kvm_pit_state2 {
    let mut pit = *pit;
    for channel in &mut pit.channels {
        channel.count_load_time = 0;
    }
    pit
}

fn chip_bytes(chip: &kvm_irqchip) -> Vec<u8> {
    bincode::serialize(chip).unwrap()
}

/// A VM whose PIT, clock and interrupt controllers are away from their initial state, and
/// whose vCPU has run (KVM reports the wall-clock time of its clock only from then on).
fn vm_with_state() -> crate::vstate::test_guest::TestVm {
    let source = test_vm(false);
    let fd = source.vm.fd();
    let mut pit = fd.get_pit2().unwrap();
    pit.channels[0].count = 0x1234;
    pit.channels[0].mode = 2;
    fd.set_pit2(&pit).unwrap();
    fd.set_clock(&kvm_clock_data {
        clock: 50_000_000_000,
        ..Default::default()
    })
    .unwrap();
    // An edge on ISA line 4 is pending in the master PIC and the IOAPIC.
    fd.set_irq_line(4, true).unwrap();
    next_count(&mut source.boot_vcpu());
    source
}

#[test]
fn a_vm_state_restored_into_a_new_vm_saves_back_the_same() {
    let source = vm_with_state();
    let saved = source.vm.save_state().unwrap();
    assert_eq!(saved.pit.channels[0].count, 0x1234);
    assert_eq!(saved.pic_master.chip_id, KVM_IRQCHIP_PIC_MASTER);
    assert_eq!(saved.ioapic.chip_id, KVM_IRQCHIP_IOAPIC);

    let target = test_vm(false);
    let before = target.vm.save_state().unwrap();
    assert_ne!(
        chip_bytes(&before.pic_master),
        chip_bytes(&saved.pic_master)
    );
    assert_ne!(chip_bytes(&before.ioapic), chip_bytes(&saved.ioapic));
    target.vm.restore_state(&saved, false).unwrap();
    let again = target.vm.save_state().unwrap();

    assert_eq!(
        pit_without_load_times(&again.pit),
        pit_without_load_times(&saved.pit)
    );
    for (a, b) in again.chips().into_iter().zip(saved.chips()) {
        assert_eq!(chip_bytes(a), chip_bytes(b), "irqchip {}", b.chip_id);
    }
    // The guest clock resumes from the saved time.
    let ns = again.clock.clock.checked_sub(saved.clock.clock).unwrap();
    assert!(ns < 10_000_000_000, "the clock moved {ns} ns");
}

#[test]
fn clock_realtime_adds_the_wall_time_since_the_save() {
    let source = vm_with_state();
    let saved = source.vm.save_state().unwrap();
    assert_ne!(
        saved.clock.flags & KVM_CLOCK_REALTIME,
        0,
        "this host's KVM clock has no wall-clock time"
    );
    std::thread::sleep(Duration::from_millis(300));

    let plain = test_vm(false);
    plain.vm.restore_state(&saved, false).unwrap();
    let realtime = test_vm(false);
    realtime.vm.restore_state(&saved, true).unwrap();
    let plain_ns = plain.vm.save_state().unwrap().clock.clock - saved.clock.clock;
    let realtime_ns = realtime.vm.save_state().unwrap().clock.clock - saved.clock.clock;
    assert!(plain_ns < 300_000_000, "{plain_ns} ns without realtime");
    assert!(realtime_ns >= 300_000_000, "{realtime_ns} ns with realtime");
}

#[test]
fn clock_realtime_needs_a_saved_wall_clock_time() {
    let source = vm_with_state();
    let mut saved = source.vm.save_state().unwrap();
    saved.clock.flags &= !KVM_CLOCK_REALTIME;
    let target = test_vm(false);
    let err = target.vm.restore_state(&saved, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "clock_realtime requested but not present in the snapshot state"
    );
    target.vm.restore_state(&saved, false).unwrap();
}

#[test]
fn a_chip_state_in_the_wrong_place_is_refused_before_anything_is_set() {
    let source = vm_with_state();
    let mut saved = source.vm.save_state().unwrap();
    std::mem::swap(&mut saved.pic_slave, &mut saved.ioapic);
    let target = test_vm(false);
    let err = target.vm.restore_state(&saved, false).unwrap_err();
    assert!(
        matches!(
            err,
            VmError::IrqchipMismatch {
                place: "PIC slave",
                expected: KVM_IRQCHIP_PIC_SLAVE,
                found: KVM_IRQCHIP_IOAPIC
            }
        ),
        "{err}"
    );
    assert_ne!(
        target.vm.save_state().unwrap().pit.channels[0].count,
        0x1234
    );
}

#[test]
fn a_vm_state_survives_serialisation() {
    let source = vm_with_state();
    let saved = source.vm.save_state().unwrap();
    let back: VmState = bincode::deserialize(&bincode::serialize(&saved).unwrap()).unwrap();
    assert_eq!(back.pit, saved.pit);
    assert_eq!(back.clock, saved.clock);
    for (a, b) in back.chips().into_iter().zip(saved.chips()) {
        assert_eq!(chip_bytes(a), chip_bytes(b));
    }
}

#[test]
fn the_dirty_bitmap_marks_the_page_the_guest_wrote() {
    let source = test_vm(true);
    let mut fd = source.boot_vcpu();
    next_count(&mut fd);
    // The first run also set accessed/dirty bits in the guest page tables: start afresh.
    source.vm.dirty_bitmap(&source.mem).unwrap();
    next_count(&mut fd);

    let bitmaps = source.vm.dirty_bitmap(&source.mem).unwrap();
    assert_eq!(bitmaps.len(), 1, "one bitmap per memory region");
    let page = DATA_ADDR / 4096;
    let dirty: Vec<u64> = (0u64..)
        .zip(
            bitmaps[0]
                .iter()
                .flat_map(|&word| (0..64).map(move |bit| word >> bit & 1)),
        )
        .filter(|&(_, bit)| bit == 1)
        .map(|(page, _)| page)
        .collect();
    assert_eq!(dirty, [page]);
    // Reading the log cleared it.
    let bitmaps = source.vm.dirty_bitmap(&source.mem).unwrap();
    assert!(bitmaps[0].iter().all(|&word| word == 0));
}

#[test]
fn a_dirty_bitmap_needs_tracking() {
    let source = test_vm(false);
    let err = source.vm.dirty_bitmap(&source.mem).unwrap_err();
    assert!(matches!(err, VmError::DirtyTrackingDisabled), "{err}");
}
