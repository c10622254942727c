//! The hostile guest: random offsets, access sizes and bytes thrown at each legacy device
//! through a real `Bus`. None may panic; only a 1-byte 0xFE on port 0x64 may reset.

use std::io;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use squib_devices::bus::Bus;
use squib_devices::legacy::boot_timer::{BootTimer, TimestampUs};
use squib_devices::legacy::i8042::I8042Device;
use squib_devices::legacy::serial::SerialDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const COM1: u64 = 0x3f8;
const I8042: u64 = 0x60;
const BOOT_TIMER: u64 = 0xC000_0000;

#[derive(Debug, Clone)]
enum Access {
    Read { addr: u64, len: usize },
    Write { addr: u64, bytes: Vec<u8> },
}

/// Random accesses around `[base, base + span)`, plus, now and then, the one write that
/// has an effect (`special`), so that both outcomes are exercised.
fn access(base: u64, span: u64, special: (u64, u8)) -> impl Strategy<Value = Access> {
    // Include addresses just outside the device to exercise the bus edges too.
    let addr = (base.saturating_sub(2))..(base + span + 2);
    let (special_addr, special_byte) = special;
    prop_oneof![
        4 => (addr.clone(), 0usize..9).prop_map(|(addr, len)| Access::Read { addr, len }),
        4 => (addr, prop::collection::vec(any::<u8>(), 0..9))
            .prop_map(|(addr, bytes)| Access::Write { addr, bytes }),
        1 => Just(Access::Write { addr: special_addr, bytes: vec![special_byte] }),
    ]
}

fn apply(bus: &Bus, accesses: &[Access]) {
    for a in accesses {
        match a {
            Access::Read { addr, len } => {
                let mut buf = vec![0u8; *len];
                bus.read(*addr, &mut buf);
            }
            Access::Write { addr, bytes } => {
                bus.write(*addr, bytes);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn serial_survives_random_accesses(accesses in prop::collection::vec(access(COM1, 8, (COM1, b'x')), 0..200)) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let serial = Arc::new(Mutex::new(SerialDevice::new(irq, Box::new(io::sink()))));
        let mut bus = Bus::new();
        bus.insert(serial.clone(), COM1, 8).unwrap();
        serial.lock().unwrap().enqueue_input(b"input").unwrap();
        apply(&bus, &accesses);
        prop_assert!(serial.lock().unwrap().fifo_capacity() <= 64);
    }

    #[test]
    fn i8042_survives_random_accesses(accesses in prop::collection::vec(access(I8042, 5, (I8042 + 4, 0xFE)), 0..200)) {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = Arc::new(Mutex::new(I8042Device::new(reset.try_clone().unwrap(), irq)));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), I8042, 5).unwrap();
        apply(&bus, &accesses);
        let resets_sent = accesses.iter().filter(|a| {
            matches!(a, Access::Write { addr, bytes } if *addr == I8042 + 4 && bytes.as_slice() == [0xFE])
        }).count();
        let resets_seen = reset.read().unwrap_or(0);
        prop_assert_eq!(resets_seen, resets_sent as u64);
        // Whatever state the guest left, the VMM's request either fits or reports a full FIFO.
        let _ = dev.lock().unwrap().trigger_ctrl_alt_del();
    }

    #[test]
    fn boot_timer_survives_random_accesses(
        accesses in prop::collection::vec(access(BOOT_TIMER, 0x1000, (BOOT_TIMER, 123)), 0..200)
    ) {
        let timer = Arc::new(Mutex::new(BootTimer::new(TimestampUs::now())));
        let mut bus = Bus::new();
        bus.insert(timer.clone(), BOOT_TIMER, 0x1000).unwrap();
        apply(&bus, &accesses);
        let magic = accesses.iter().any(|a| {
            matches!(a, Access::Write { addr, bytes } if *addr == BOOT_TIMER && bytes.as_slice() == [123])
        });
        prop_assert_eq!(timer.lock().unwrap().last_boot_time().is_some(), magic);
    }
}
