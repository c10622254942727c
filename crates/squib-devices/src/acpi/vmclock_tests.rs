//! Tests for the VMClock page: the header a booting guest sees, and the sequence-locked
//! counter bump on restore, read back from guest memory at the ABI's offsets.

use squib_arch::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::*;

const ADDR: u64 = 0xdf000;
const GSI: u32 = 3;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

fn u32_at(mem: &GuestMemoryMmap, offset: u64) -> u32 {
    u32::from_le(mem.read_obj(GuestAddress(ADDR + offset)).unwrap())
}

fn u64_at(mem: &GuestMemoryMmap, offset: u64) -> u64 {
    u64::from_le(mem.read_obj(GuestAddress(ADDR + offset)).unwrap())
}

fn u8_at(mem: &GuestMemoryMmap, offset: u64) -> u8 {
    mem.read_obj(GuestAddress(ADDR + offset)).unwrap()
}

/// (seq_count, disruption_marker, vm_generation_counter) as the guest reads them.
fn counters(mem: &GuestMemoryMmap) -> (u32, u64, u64) {
    (u32_at(mem, 12), u64_at(mem, 16), u64_at(mem, 104))
}

fn saved(seq_count: u32, disruption_marker: u64, vm_generation_counter: u64) -> VmClockState {
    VmClockState {
        addr: ADDR,
        gsi: GSI,
        seq_count,
        disruption_marker,
        vm_generation_counter,
    }
}

#[test]
fn new_writes_the_header_and_zeroes_the_rest_of_the_page() {
    let mem = mem();
    mem.write_slice(&[0xaa; 0x1000], GuestAddress(ADDR))
        .unwrap();
    let device = VmClock::new(&mem, ADDR, GSI).unwrap();
    assert_eq!(u32_at(&mem, 0), 0x4b4c_4356, "magic \"VCLK\"");
    assert_eq!(u32_at(&mem, 4), 0x1000, "size: one page");
    assert_eq!(u32_at(&mem, 8) & 0xffff, 1, "version");
    assert_eq!(u8_at(&mem, 10), 0xff, "counter_id: invalid");
    assert_eq!(u8_at(&mem, 11), 0, "time_type");
    assert_eq!(u64_at(&mem, 24), (1 << 8) | (1 << 9), "flags");
    assert_eq!(u8_at(&mem, 34), 0, "clock_status: unknown");
    assert_eq!(counters(&mem), (0, 0, 0));
    let mut rest = vec![0xffu8; 0x1000 - 112];
    mem.read_slice(&mut rest, GuestAddress(ADDR + 112)).unwrap();
    assert!(rest.iter().all(|b| *b == 0));
    // The bytes between the fields squib sets are zero too (pad, time fields, ...).
    assert_eq!(u64_at(&mem, 40), 0);
    assert_eq!(u64_at(&mem, 72), 0);
    assert_eq!(device.state(), saved(0, 0, 0));
    assert_eq!((device.addr(), device.gsi()), (ADDR, GSI));
}

#[test]
fn restore_bumps_both_counters_and_leaves_seq_count_even() {
    let mem = mem();
    VmClock::new(&mem, ADDR, GSI).unwrap();
    let restored = VmClock::restore(&mem, &saved(4, 10, 2)).unwrap();
    assert_eq!(counters(&mem), (6, 11, 3));
    assert_eq!(restored.state(), saved(6, 11, 3));
    // A second restore of the same snapshot bumps from the saved values again; a snapshot of
    // the restored VM carries the bumped ones.
    VmClock::restore(&mem, &saved(4, 10, 2)).unwrap();
    assert_eq!(counters(&mem), (6, 11, 3));
    VmClock::restore(&mem, &restored.state()).unwrap();
    assert_eq!(counters(&mem), (8, 12, 4));
}

#[test]
fn seq_count_is_odd_while_the_counters_change() {
    let mem = mem();
    let mut device = VmClock::new(&mem, ADDR, GSI).unwrap();
    device.begin_update(&mem).unwrap();
    assert_eq!(counters(&mem), (1, 0, 0), "odd, counters not yet written");
    device.disruption_marker += 1;
    device.vm_generation_counter += 1;
    device.finish_update(&mem).unwrap();
    assert_eq!(counters(&mem), (2, 1, 1));
}

#[test]
fn restore_rewrites_a_header_the_guest_scribbled_on() {
    let mem = mem();
    VmClock::new(&mem, ADDR, GSI).unwrap();
    mem.write_slice(&[0x55; 112], GuestAddress(ADDR)).unwrap();
    VmClock::restore(&mem, &saved(0, 0, 0)).unwrap();
    assert_eq!(u32_at(&mem, 0), VMCLOCK_MAGIC);
    assert_eq!(u64_at(&mem, 24), (1 << 8) | (1 << 9));
    assert_eq!(counters(&mem), (2, 1, 1));
}

#[test]
fn odd_or_wrapping_saved_counters_still_end_even() {
    let mem = mem();
    VmClock::restore(&mem, &saved(7, 0, 0)).unwrap();
    assert_eq!(counters(&mem).0, 8);
    VmClock::restore(&mem, &saved(u32::MAX, u64::MAX, u64::MAX)).unwrap();
    assert_eq!(counters(&mem), (0, 0, 0));
}

#[test]
fn notify_makes_the_interrupt_eventfd_readable() {
    let mem = mem();
    let device = VmClock::restore(&mem, &saved(0, 0, 0)).unwrap();
    assert!(
        device.interrupt_evt().read().is_err(),
        "nothing pending yet"
    );
    device.notify().unwrap();
    assert_eq!(device.interrupt_evt().read().unwrap(), 1);
}

#[test]
fn misaligned_or_outside_pages_are_refused_without_writing() {
    let mem = mem();
    let err = VmClock::restore(
        &mem,
        &VmClockState {
            addr: ADDR + 8,
            ..saved(0, 0, 0)
        },
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "VMClock: address 0xdf008 is not 0x1000-aligned"
    );
    for addr in [1 << 20, 1 << 32, !0xfff] {
        let err = VmClock::restore(
            &mem,
            &VmClockState {
                addr,
                ..saved(0, 0, 0)
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, AcpiDeviceError::OutsideGuestMemory { len: 0x1000, .. }),
            "{addr:#x}: {err}"
        );
    }
    // A page that straddles the end of guest memory is refused as a whole.
    let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xdf800)]).unwrap();
    assert!(VmClock::new(&small, ADDR, GSI).is_err());
    let mut untouched = [0xffu8; 0x800];
    small
        .read_slice(&mut untouched, GuestAddress(ADDR))
        .unwrap();
    assert!(untouched.iter().all(|b| *b == 0));
}

#[test]
fn state_round_trips_through_serde() {
    let state = saved(6, 11, 3);
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<VmClockState>(&text).unwrap(), state);
}
