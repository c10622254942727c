//! Zero heap allocations on the vCPU exit path: [`handle_exit`] for port-I/O
//! and MMIO exits, through the real buses to the serial port, the i8042 and a virtio-mmio
//! transport, allocates nothing once warm. `VcpuExit` borrows its data, so the exits are
//! built here without KVM.
//!
//! Counted per thread by `squib_devices::alloc_counter`.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VcpuExit;
use squib_devices::alloc_counter::CountingAlloc;
use squib_devices::bus::Bus;
use squib_devices::legacy::i8042::I8042Device;
use squib_devices::legacy::serial::SerialDevice;
use squib_devices::virtio::mmio::reg;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::tests::{virtio_block_bus, VIRTIO_BASE};
use super::{handle_exit, Step};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn count_allocations(f: impl FnOnce()) -> u64 {
    squib_devices::alloc_counter::count_allocations(f).1
}

const COM1: u16 = 0x3f8;
const I8042: u16 = 0x60;

struct Buses {
    pio: Bus,
    mmio: Bus,
    _disk: tempfile::NamedTempFile,
}

fn buses() -> Buses {
    let evt = || EventFd::new(EFD_NONBLOCK).unwrap();
    let mut pio = Bus::new();
    let serial = SerialDevice::new(evt(), Box::new(std::io::sink()));
    pio.insert(Arc::new(Mutex::new(serial)), u64::from(COM1), 8)
        .unwrap();
    let i8042 = I8042Device::new(evt(), evt());
    pio.insert(Arc::new(Mutex::new(i8042)), u64::from(I8042), 5)
        .unwrap();

    let (mmio, disk) = virtio_block_bus();
    Buses {
        pio,
        mmio,
        _disk: disk,
    }
}

/// Dispatch `exit` as the vCPU loop does; every I/O exit goes on running the guest.
fn dispatch(b: &Buses, exit: VcpuExit<'_>) {
    assert!(matches!(
        handle_exit(0, exit, &b.pio, &b.mmio),
        Step::Continue
    ));
}

/// One round of the exits a booting guest makes most: serial output and line status, i8042
/// status and data, virtio-mmio InterruptStatus / QueueNotify, and accesses to nothing.
fn exit_round(b: &Buses) {
    let mut byte = [0u8; 1];
    let mut word = [0u8; 4];
    dispatch(b, VcpuExit::IoOut(COM1, b"x"));
    dispatch(b, VcpuExit::IoIn(COM1 + 5, &mut byte));
    dispatch(b, VcpuExit::IoIn(I8042 + 4, &mut byte));
    dispatch(b, VcpuExit::IoIn(I8042, &mut byte));
    dispatch(b, VcpuExit::IoOut(0x80, &[0]));
    dispatch(
        b,
        VcpuExit::MmioRead(VIRTIO_BASE + reg::INTERRUPT_STATUS, &mut word),
    );
    dispatch(
        b,
        VcpuExit::MmioWrite(VIRTIO_BASE + reg::QUEUE_NOTIFY, &[0; 4]),
    );
    dispatch(b, VcpuExit::MmioRead(0x1000, &mut word));
    assert_eq!(word, [0; 4], "an unmapped MMIO read returns zeros");
}

#[test]
fn pio_and_mmio_exit_dispatch_does_not_allocate() {
    let b = buses();
    exit_round(&b);
    for round in 0..4 {
        let allocations = count_allocations(|| exit_round(&b));
        assert_eq!(allocations, 0, "exit round {round} allocated");
    }
}

#[test]
fn the_counted_region_sees_an_allocation() {
    let b = buses();
    exit_round(&b);
    let allocations = count_allocations(|| {
        exit_round(&b);
        std::hint::black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(allocations, 1);
}
