//! Serial snapshot tests: unread input, registers and a pending interrupt survive a restore
//! onto a freshly built UART, which keeps its own output and eventfds; a state longer than
//! the FIFO is refused; arbitrary register values never panic the restored device.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::bus::BusDevice;

const DATA: u64 = 0;
const IER: u64 = 1;
const LCR: u64 = 3;
const LSR: u64 = 5;
const SCRATCH: u64 = 7;
const IER_RDA: u8 = 0x01;
const LSR_DATA_READY: u8 = 0x01;

/// A writer the test can read after handing a clone to the device.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn serial() -> (SerialDevice, EventFd, Output) {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let out = Output::default();
    let dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
    (dev, irq, out)
}

fn read_reg(dev: &mut SerialDevice, offset: u64) -> u8 {
    let mut byte = [0u8];
    dev.read(offset, &mut byte);
    byte[0]
}

#[test]
fn unread_input_and_registers_survive_and_the_interrupt_is_raised_again() {
    let (mut dev, irq, _) = serial();
    dev.write(IER, &[IER_RDA]);
    dev.write(SCRATCH, &[0x5c]);
    dev.write(LCR, &[0x1b]);
    dev.enqueue_input(b"hi").unwrap();
    assert_eq!(irq.read().unwrap(), 1);
    let state = dev.save();
    assert_eq!(state.in_buffer, b"hi");
    let state: SerialDeviceState =
        bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();

    let (mut restored, irq, out) = serial();
    let ready = restored.buffer_ready_evt().unwrap();
    restored.restore(&state).unwrap();
    assert_eq!(restored.save(), state);
    assert_eq!(
        irq.read().unwrap(),
        1,
        "the receive interrupt is pending and enabled"
    );
    assert_eq!(read_reg(&mut restored, SCRATCH), 0x5c);
    assert_eq!(read_reg(&mut restored, LCR), 0x1b);
    assert_eq!(
        read_reg(&mut restored, LSR) & LSR_DATA_READY,
        LSR_DATA_READY
    );
    assert_eq!(read_reg(&mut restored, DATA), b'h');
    assert_eq!(read_reg(&mut restored, DATA), b'i');
    assert_eq!(
        ready.read().unwrap(),
        1,
        "the input subscriber's eventfd is kept"
    );
    // The restored UART writes to the device's own output.
    restored.write(DATA, b"!");
    assert_eq!(out.0.lock().unwrap().as_slice(), b"!");
}

#[test]
fn input_longer_than_the_fifo_is_refused_and_nothing_changes() {
    let (mut dev, _irq, out) = serial();
    dev.write(SCRATCH, &[9]);
    let mut state = dev.save();
    state.in_buffer = vec![b'x'; 65];
    let err = dev.restore(&state).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Serial snapshot holds 65 bytes of unread input, more than the FIFO holds."
    );
    assert_eq!(read_reg(&mut dev, SCRATCH), 9);
    dev.write(DATA, b"k");
    assert_eq!(out.0.lock().unwrap().as_slice(), b"k", "the output is kept");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever register values a snapshot holds, the restored UART answers every access.
    #[test]
    fn arbitrary_registers_never_panic(
        regs in prop::array::uniform9(any::<u8>()),
        input in prop::collection::vec(any::<u8>(), 0..=64),
        ops in prop::collection::vec((0u64..8, any::<u8>(), any::<bool>()), 0..32),
    ) {
        let state = SerialDeviceState {
            baud_divisor_low: regs[0],
            baud_divisor_high: regs[1],
            interrupt_enable: regs[2],
            interrupt_identification: regs[3],
            line_control: regs[4],
            line_status: regs[5],
            modem_control: regs[6],
            modem_status: regs[7],
            scratch: regs[8],
            in_buffer: input,
        };
        let (mut dev, _irq, _out) = serial();
        dev.restore(&state).unwrap();
        for (offset, value, write) in ops {
            if write {
                dev.write(offset, &[value]);
            } else {
                read_reg(&mut dev, offset);
            }
        }
        dev.enqueue_input(b"z").ok();
    }
}
