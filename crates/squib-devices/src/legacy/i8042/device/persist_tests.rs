//! i8042 snapshot tests: waiting bytes, the command byte and a half-done command survive a
//! restore; the keyboard interrupt is raised again for waiting bytes; a state with more bytes
//! than the buffer is refused.

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::bus::BusDevice;
use crate::legacy::i8042::device::{CMD_READ_CTR, CMD_WRITE_CTR, OFS_COMMAND, OFS_DATA};

fn i8042() -> (I8042Device, EventFd) {
    let reset = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    (I8042Device::new(reset, irq.try_clone().unwrap()), irq)
}

fn read_data(dev: &mut I8042Device) -> u8 {
    let mut byte = [0u8];
    dev.read(OFS_DATA, &mut byte);
    byte[0]
}

#[test]
fn waiting_bytes_and_a_half_done_command_survive() {
    let (mut dev, irq) = i8042();
    dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(read_data(&mut dev), 0x14);
    dev.write(OFS_COMMAND, &[CMD_WRITE_CTR]);
    let state = dev.save();
    assert_eq!(state.output, [0x11, 0xE0, 0x71]);
    assert_eq!(state.pending, PendingWrite::Controller(CMD_WRITE_CTR));
    assert!(state.last_was_command);
    let state: I8042DeviceState =
        bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();
    while irq.read().is_ok() {}

    let (mut restored, irq) = i8042();
    restored.restore(&state).unwrap();
    assert_eq!(restored.save(), state);
    assert_eq!(
        irq.read().unwrap(),
        1,
        "waiting bytes raise the interrupt again"
    );
    let mut status = [0u8];
    restored.read(OFS_COMMAND, &mut status);
    assert_eq!(
        status[0] & 0x09,
        0x09,
        "output full, last write was a command"
    );
    assert_eq!(
        [
            read_data(&mut restored),
            read_data(&mut restored),
            read_data(&mut restored)
        ],
        [0x11, 0xE0, 0x71]
    );
    // The half-done "write command byte" takes its parameter after the restore.
    restored.write(OFS_DATA, &[0x45]);
    restored.write(OFS_COMMAND, &[CMD_READ_CTR]);
    assert_eq!(read_data(&mut restored), 0x45);
}

#[test]
fn no_interrupt_when_nothing_waits_or_the_guest_disabled_it() {
    let (dev, _) = i8042();
    let (mut restored, irq) = i8042();
    restored.restore(&dev.save()).unwrap();
    assert!(irq.read().is_err());
    let mut state = dev.save();
    state.output = vec![1];
    state.control = 0;
    restored.restore(&state).unwrap();
    assert!(irq.read().is_err());
    assert_eq!(read_data(&mut restored), 1);
}

#[test]
fn more_bytes_than_the_buffer_are_refused_and_nothing_changes() {
    let (mut dev, _) = i8042();
    let mut state = dev.save();
    state.output = vec![0xAA; 17];
    state.control = 0;
    let err = dev.restore(&state).unwrap_err();
    assert_eq!(
        err.to_string(),
        "i8042 snapshot holds 17 waiting bytes, more than the 16-byte buffer."
    );
    assert_eq!(
        dev.save().control,
        I8042Device::new(
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap()
        )
        .save()
        .control
    );
}
