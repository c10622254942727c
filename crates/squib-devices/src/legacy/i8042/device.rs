//! [`I8042Device`]: the keyboard controller, as much of it as a Linux guest needs.
//!
//! Offsets are relative to port 0x60: 0 is the data port, 4 the status (read) and command
//! (write) port. What the guest sees:
//! - status: OBF while the output FIFO holds bytes, the system flag (from the command byte),
//!   "last write was a command", and "keyboard not inhibited";
//! - controller commands: command byte read/write (0x20/0x60), self test (0xAA → 0x55),
//!   keyboard interface test (0xAB → 0x00), aux test (0xA9 → failure: there is no mouse),
//!   enable/disable keyboard and aux, output port read/write, write keyboard output buffer
//!   (0xD2), and the CPU reset pulse 0xFE, which writes the reset eventfd;
//! - keyboard commands on the data port: reset (ACK, BAT ok), identify (ACK, 0xAB 0x83), echo,
//!   parameters of set-LEDs / scan-code-set / typematic (acked), anything else acked;
//! - a 16-byte output FIFO; keyboard data raises the keyboard IRQ when the command byte
//!   enables it, and again after each read while data remains.
//!
//! Ctrl-Alt-Del is sent as set-2 make codes (Ctrl 0x14, Alt 0x11, Del 0xE0 0x71), as
//! Firecracker does: the command byte has translation off, so the guest decodes set 2.
//! Nothing here panics on guest input; odd sizes and ports are counted as missed.

use std::fmt;

use vmm_sys_util::eventfd::EventFd;

use super::metrics::I8042_METRICS;
use crate::bus::BusDevice;

/// Offset of the data port (0x60).
const OFS_DATA: u64 = 0;
/// Offset of the status/command port (0x64).
const OFS_COMMAND: u64 = 4;

// Controller commands, written to port 0x64.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xA7;
const CMD_ENABLE_AUX: u8 = 0xA8;
const CMD_TEST_AUX: u8 = 0xA9;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_TEST_KBD: u8 = 0xAB;
const CMD_DISABLE_KBD: u8 = 0xAD;
const CMD_ENABLE_KBD: u8 = 0xAE;
const CMD_READ_OUTP: u8 = 0xD0;
const CMD_WRITE_OUTP: u8 = 0xD1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xD2;
const CMD_WRITE_AUX_OUTBUF: u8 = 0xD3;
const CMD_WRITE_AUX: u8 = 0xD4;
const CMD_RESET_CPU: u8 = 0xFE;

// Controller answers.
const SELF_TEST_PASSED: u8 = 0x55;
const PORT_TEST_PASSED: u8 = 0x00;
/// "Clock line stuck low": how a controller without a mouse port answers the aux test.
const PORT_TEST_FAILED: u8 = 0x01;

// Status register bits.
const STS_OUTPUT_FULL: u8 = 0x01;
const STS_SYSTEM_FLAG: u8 = 0x04;
const STS_LAST_WAS_COMMAND: u8 = 0x08;
const STS_NOT_INHIBITED: u8 = 0x10;

// Command byte ("CTR") bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM_FLAG: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;

// Keyboard commands (data port) and answers.
const KBD_CMD_SET_LEDS: u8 = 0xED;
const KBD_CMD_ECHO: u8 = 0xEE;
const KBD_CMD_SCANCODE_SET: u8 = 0xF0;
const KBD_CMD_GET_ID: u8 = 0xF2;
const KBD_CMD_SET_TYPEMATIC: u8 = 0xF3;
const KBD_CMD_RESET: u8 = 0xFF;
const KBD_ACK: u8 = 0xFA;
const KBD_BAT_PASSED: u8 = 0xAA;
const KBD_ID: [u8; 2] = [0xAB, 0x83];
const KBD_SCANCODE_SET_2: u8 = 0x02;

// Set-2 make codes of Ctrl-Alt-Del.
const KEY_CTRL: &[u8] = &[0x14];
const KEY_ALT: &[u8] = &[0x11];
const KEY_DEL: &[u8] = &[0xE0, 0x71];
const CTRL_ALT_DEL_LEN: usize = 4;

/// Size of the output FIFO, in bytes.
const FIFO_SIZE: usize = 16;

/// Why the VMM's request to the i8042 failed.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// The output FIFO has no room: the guest is not reading the keyboard.
    #[error("i8042 internal buffer full.")]
    InternalBufferFull,
    /// The keyboard interrupt eventfd could not be written.
    #[error("Could not trigger keyboard interrupt: {0}.")]
    KbdInterruptFailure(std::io::Error),
    /// A snapshot holds more waiting bytes than the output buffer.
    #[error("i8042 snapshot holds {len} waiting bytes, more than the {FIFO_SIZE}-byte buffer.")]
    RestoreOutput {
        /// Bytes in the snapshot.
        len: usize,
    },
}

/// The bytes waiting for the guest on the data port, oldest first. Never allocates.
#[derive(Debug, Default)]
struct OutputFifo {
    bytes: [u8; FIFO_SIZE],
    head: usize,
    len: usize,
}

impl OutputFifo {
    fn room(&self) -> usize {
        FIFO_SIZE - self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, byte: u8) -> Result<(), I8042Error> {
        if self.len == FIFO_SIZE {
            return Err(I8042Error::InternalBufferFull);
        }
        self.bytes[(self.head + self.len) % FIFO_SIZE] = byte;
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.head];
        self.head = (self.head + 1) % FIFO_SIZE;
        self.len -= 1;
        Some(byte)
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// What the next data-port write means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// A keyboard command.
    Nothing,
    /// The parameter of this controller command.
    Controller(u8),
    /// The parameter of this keyboard command.
    Keyboard(u8),
}

/// The i8042 controller with its keyboard.
pub struct I8042Device {
    reset_evt: EventFd,
    kbd_irq_evt: EventFd,
    control: u8,
    output_port: u8,
    last_was_command: bool,
    pending: Pending,
    fifo: OutputFifo,
}

impl fmt::Debug for I8042Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042Device")
            .field("control", &self.control)
            .field("pending", &self.pending)
            .field("queued", &self.fifo.len)
            .finish_non_exhaustive()
    }
}

impl I8042Device {
    /// A controller that writes `reset_evt` when the guest resets the CPU and `kbd_irq_evt`
    /// (the VMM's irqfd for GSI 1) when keyboard data is ready.
    #[must_use]
    pub fn new(reset_evt: EventFd, kbd_irq_evt: EventFd) -> Self {
        Self {
            reset_evt,
            kbd_irq_evt,
            // Keyboard interrupt on, POST passed, translation off (the guest reads set 2).
            control: CTR_KBD_INT | CTR_SYSTEM_FLAG,
            // Bit 0 high: the reset line is not asserted; bit 1: A20 enabled.
            output_port: 0x03,
            last_was_command: false,
            pending: Pending::Nothing,
            fifo: OutputFifo::default(),
        }
    }

    /// Queue the make codes of Ctrl, Alt and Del and raise the keyboard interrupt (unless the
    /// guest disabled it, which is not an error).
    ///
    /// # Errors
    /// [`I8042Error::InternalBufferFull`] when the FIFO cannot take the 4 bytes (nothing is
    /// queued then); [`I8042Error::KbdInterruptFailure`] when the interrupt eventfd fails.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if self.fifo.room() < CTRL_ALT_DEL_LEN {
            return Err(I8042Error::InternalBufferFull);
        }
        for key in [KEY_CTRL, KEY_ALT, KEY_DEL] {
            for byte in key {
                self.fifo.push(*byte)?;
            }
            self.raise_kbd_irq()?;
        }
        Ok(())
    }

    fn status(&self) -> u8 {
        let mut status = STS_NOT_INHIBITED;
        if !self.fifo.is_empty() {
            status |= STS_OUTPUT_FULL;
        }
        if self.control & CTR_SYSTEM_FLAG != 0 {
            status |= STS_SYSTEM_FLAG;
        }
        if self.last_was_command {
            status |= STS_LAST_WAS_COMMAND;
        }
        status
    }

    fn raise_kbd_irq(&self) -> Result<(), I8042Error> {
        if self.control & CTR_KBD_INT == 0 {
            return Ok(());
        }
        self.kbd_irq_evt
            .write(1)
            .map_err(I8042Error::KbdInterruptFailure)
    }

    /// Raise the keyboard interrupt on a guest-driven path: a failure is counted, not returned.
    fn raise_kbd_irq_for_guest(&self) {
        if let Err(e) = self.raise_kbd_irq() {
            I8042_METRICS.error_count.inc();
            log::debug!("i8042: {e}");
        }
    }

    /// Replace whatever is queued with a controller's or keyboard's answer.
    fn respond(&mut self, bytes: &[u8]) {
        self.fifo.clear();
        for byte in bytes {
            // At most 3 bytes into an emptied 16-byte FIFO: cannot fail.
            let _ = self.fifo.push(*byte);
        }
    }

    fn reset_cpu(&self) {
        I8042_METRICS.reset_count.inc();
        if let Err(e) = self.reset_evt.write(1) {
            I8042_METRICS.error_count.inc();
            squib_logger::error_rate_limited!("i8042: cannot signal the guest's CPU reset: {e}");
        }
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.fifo.pop().unwrap_or(0);
        if !self.fifo.is_empty() {
            self.raise_kbd_irq_for_guest();
        }
        byte
    }

    /// A controller command; `false` when it is not one this controller knows.
    fn write_command(&mut self, cmd: u8) -> bool {
        self.last_was_command = true;
        self.pending = Pending::Nothing;
        match cmd {
            CMD_READ_CTR => self.respond(&[self.control]),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF
            | CMD_WRITE_AUX => self.pending = Pending::Controller(cmd),
            CMD_DISABLE_AUX => self.control |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.control &= !CTR_AUX_DISABLED,
            CMD_TEST_AUX => self.respond(&[PORT_TEST_FAILED]),
            CMD_SELF_TEST => {
                self.control |= CTR_SYSTEM_FLAG;
                self.respond(&[SELF_TEST_PASSED]);
            }
            CMD_TEST_KBD => self.respond(&[PORT_TEST_PASSED]),
            CMD_DISABLE_KBD => self.control |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => self.control &= !CTR_KBD_DISABLED,
            CMD_READ_OUTP => self.respond(&[self.output_port]),
            CMD_RESET_CPU => self.reset_cpu(),
            // Pulses of the other output lines: nothing is wired to them.
            0xF0..=0xFF => {}
            _ => return false,
        }
        true
    }

    fn write_data(&mut self, byte: u8) {
        self.last_was_command = false;
        match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Controller(CMD_WRITE_CTR) => {
                self.control = byte;
                if !self.fifo.is_empty() {
                    self.raise_kbd_irq_for_guest();
                }
            }
            Pending::Controller(CMD_WRITE_OUTP) => self.output_port = byte,
            Pending::Controller(CMD_WRITE_KBD_OUTBUF) => {
                if self.fifo.push(byte).is_ok() {
                    self.raise_kbd_irq_for_guest();
                }
            }
            // Bytes for the aux port: there is no mouse behind it.
            Pending::Controller(_) => {}
            Pending::Keyboard(cmd) => self.keyboard_parameter(cmd, byte),
            Pending::Nothing => self.keyboard_command(byte),
        }
    }

    fn keyboard_command(&mut self, cmd: u8) {
        match cmd {
            KBD_CMD_RESET => self.respond(&[KBD_ACK, KBD_BAT_PASSED]),
            KBD_CMD_GET_ID => self.respond(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_CMD_ECHO => self.respond(&[KBD_CMD_ECHO]),
            KBD_CMD_SET_LEDS | KBD_CMD_SCANCODE_SET | KBD_CMD_SET_TYPEMATIC => {
                self.pending = Pending::Keyboard(cmd);
                self.respond(&[KBD_ACK]);
            }
            _ => self.respond(&[KBD_ACK]),
        }
        self.raise_kbd_irq_for_guest();
    }

    fn keyboard_parameter(&mut self, cmd: u8, param: u8) {
        if cmd == KBD_CMD_SCANCODE_SET && param == 0 {
            self.respond(&[KBD_ACK, KBD_SCANCODE_SET_2]);
        } else {
            self.respond(&[KBD_ACK]);
        }
        self.raise_kbd_irq_for_guest();
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [byte] = data else {
            I8042_METRICS.missed_read_count.inc();
            return;
        };
        match offset {
            OFS_DATA => *byte = self.read_data(),
            OFS_COMMAND => *byte = self.status(),
            _ => {
                I8042_METRICS.missed_read_count.inc();
                return;
            }
        }
        I8042_METRICS.read_count.inc();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let handled = match (offset, data) {
            (OFS_DATA, [byte]) => {
                self.write_data(*byte);
                true
            }
            (OFS_COMMAND, [cmd]) => self.write_command(*cmd),
            _ => false,
        };
        if handled {
            I8042_METRICS.write_count.inc();
        } else {
            I8042_METRICS.missed_write_count.inc();
        }
    }
}

pub mod persist;

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    struct Harness {
        dev: I8042Device,
        reset: EventFd,
        irq: EventFd,
    }

    impl Harness {
        fn new() -> Self {
            let reset = EventFd::new(EFD_NONBLOCK).unwrap();
            let irq = EventFd::new(EFD_NONBLOCK).unwrap();
            let dev = I8042Device::new(reset.try_clone().unwrap(), irq.try_clone().unwrap());
            Self { dev, reset, irq }
        }

        fn command(&mut self, cmd: u8) {
            self.dev.write(OFS_COMMAND, &[cmd]);
        }

        fn data_out(&mut self, byte: u8) {
            self.dev.write(OFS_DATA, &[byte]);
        }

        fn data_in(&mut self) -> u8 {
            let mut b = [0xEEu8];
            self.dev.read(OFS_DATA, &mut b);
            b[0]
        }

        fn status(&mut self) -> u8 {
            let mut b = [0u8];
            self.dev.read(OFS_COMMAND, &mut b);
            b[0]
        }

        /// Interrupts raised since the last call (0 when none).
        fn irqs(&self) -> u64 {
            self.irq.read().unwrap_or(0)
        }
    }

    #[test]
    fn reset_command_writes_the_reset_eventfd() {
        let mut h = Harness::new();
        let resets = I8042_METRICS.reset_count.count();
        h.command(CMD_RESET_CPU);
        assert_eq!(h.reset.read().unwrap(), 1);
        assert!(I8042_METRICS.reset_count.count() > resets);
        h.dev.write(OFS_DATA, &[CMD_RESET_CPU]);
        h.dev.write(OFS_COMMAND, &[CMD_RESET_CPU, CMD_RESET_CPU]);
        assert!(
            h.reset.read().is_err(),
            "only a 1-byte 0xFE on port 0x64 resets"
        );
    }

    #[test]
    fn self_test_answers_0x55_and_sets_the_system_flag() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_CTR);
        h.data_out(CTR_KBD_INT);
        assert_eq!(h.status() & STS_SYSTEM_FLAG, 0);
        h.command(CMD_SELF_TEST);
        assert_eq!(
            h.status() & (STS_OUTPUT_FULL | STS_SYSTEM_FLAG),
            STS_OUTPUT_FULL | STS_SYSTEM_FLAG
        );
        assert_eq!(h.data_in(), SELF_TEST_PASSED);
        assert_eq!(h.status() & STS_OUTPUT_FULL, 0);
        assert_eq!(
            h.irqs(),
            0,
            "controller answers are polled, not interrupted"
        );
    }

    #[test]
    fn port_tests_pass_for_keyboard_and_fail_for_aux() {
        let mut h = Harness::new();
        h.command(CMD_TEST_KBD);
        assert_eq!(h.data_in(), PORT_TEST_PASSED);
        h.command(CMD_TEST_AUX);
        assert_eq!(h.data_in(), PORT_TEST_FAILED);
    }

    #[test]
    fn command_byte_round_trips_and_status_tracks_last_port() {
        let mut h = Harness::new();
        h.command(CMD_READ_CTR);
        assert_eq!(h.data_in(), CTR_KBD_INT | CTR_SYSTEM_FLAG);
        h.command(CMD_WRITE_CTR);
        assert_ne!(h.status() & STS_LAST_WAS_COMMAND, 0);
        h.data_out(0x47);
        assert_eq!(h.status() & STS_LAST_WAS_COMMAND, 0);
        h.command(CMD_READ_CTR);
        assert_eq!(h.data_in(), 0x47);
        assert_eq!(
            h.irqs(),
            0,
            "a command byte write is not a keyboard command"
        );
    }

    #[test]
    fn enable_and_disable_toggle_the_command_byte() {
        let mut h = Harness::new();
        let ctr = |h: &mut Harness| {
            h.command(CMD_READ_CTR);
            h.data_in()
        };
        h.command(CMD_DISABLE_KBD);
        h.command(CMD_DISABLE_AUX);
        assert_eq!(
            ctr(&mut h) & (CTR_KBD_DISABLED | CTR_AUX_DISABLED),
            CTR_KBD_DISABLED | CTR_AUX_DISABLED
        );
        h.command(CMD_ENABLE_KBD);
        h.command(CMD_ENABLE_AUX);
        assert_eq!(ctr(&mut h) & (CTR_KBD_DISABLED | CTR_AUX_DISABLED), 0);
    }

    #[test]
    fn output_port_round_trips() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_OUTP);
        h.data_out(0x5a);
        h.command(CMD_READ_OUTP);
        assert_eq!(h.data_in(), 0x5a);
        assert!(
            h.reset.read().is_err(),
            "the output port does not reset the CPU"
        );
    }

    #[test]
    fn keyboard_commands_are_answered_with_interrupts() {
        let mut h = Harness::new();
        h.data_out(KBD_CMD_RESET);
        assert_eq!(h.irqs(), 1);
        assert_eq!([h.data_in(), h.data_in()], [KBD_ACK, KBD_BAT_PASSED]);
        h.data_out(KBD_CMD_GET_ID);
        assert_eq!(
            [h.data_in(), h.data_in(), h.data_in()],
            [KBD_ACK, 0xAB, 0x83]
        );
        h.data_out(KBD_CMD_SCANCODE_SET);
        assert_eq!(h.data_in(), KBD_ACK);
        h.data_out(0);
        assert_eq!([h.data_in(), h.data_in()], [KBD_ACK, KBD_SCANCODE_SET_2]);
        h.data_out(KBD_CMD_SET_LEDS);
        h.data_out(0x07);
        assert_eq!(h.data_in(), KBD_ACK, "the LED parameter is acked");
        h.data_out(KBD_CMD_ECHO);
        assert_eq!(h.data_in(), KBD_CMD_ECHO);
        assert_eq!(h.data_in(), 0, "an empty FIFO reads 0");
    }

    #[test]
    fn ctrl_alt_del_queues_set2_make_codes_and_interrupts() {
        let mut h = Harness::new();
        h.dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(h.irqs(), 3, "one interrupt per key");
        assert_ne!(h.status() & STS_OUTPUT_FULL, 0);
        let codes: Vec<u8> = (0..4).map(|_| h.data_in()).collect();
        assert_eq!(codes, [0x14, 0x11, 0xE0, 0x71]);
        assert_eq!(h.irqs(), 3, "each read with data left re-raises the line");
        assert_eq!(h.status() & STS_OUTPUT_FULL, 0);
    }

    #[test]
    fn ctrl_alt_del_fails_when_the_fifo_is_full() {
        let mut h = Harness::new();
        for _ in 0..FIFO_SIZE / CTRL_ALT_DEL_LEN {
            h.dev.trigger_ctrl_alt_del().unwrap();
        }
        let err = h.dev.trigger_ctrl_alt_del().unwrap_err();
        assert!(matches!(err, I8042Error::InternalBufferFull));
        assert_eq!(err.to_string(), "i8042 internal buffer full.");
        assert_eq!(h.dev.fifo.len, FIFO_SIZE, "a failed trigger queues nothing");
    }

    #[test]
    fn no_interrupt_while_the_guest_disables_it_then_one_on_enable() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_CTR);
        h.data_out(CTR_SYSTEM_FLAG);
        h.dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(h.irqs(), 0);
        h.command(CMD_WRITE_CTR);
        h.data_out(CTR_SYSTEM_FLAG | CTR_KBD_INT);
        assert_eq!(
            h.irqs(),
            1,
            "enabling the interrupt with data queued raises it"
        );
        assert_eq!(h.data_in(), 0x14);
    }

    #[test]
    fn write_keyboard_output_buffer_injects_a_byte() {
        let mut h = Harness::new();
        h.command(CMD_WRITE_KBD_OUTBUF);
        h.data_out(0x1c);
        assert_eq!(h.irqs(), 1);
        assert_eq!(h.data_in(), 0x1c);
        assert_eq!(h.irqs(), 0);
    }

    #[test]
    fn garbage_is_counted_and_never_panics() {
        let mut h = Harness::new();
        let missed_writes = I8042_METRICS.missed_write_count.count();
        let missed_reads = I8042_METRICS.missed_read_count.count();
        for offset in 0..8 {
            for byte in 0..=u8::MAX {
                if (offset, byte) != (OFS_COMMAND, CMD_RESET_CPU) {
                    h.dev.write(offset, &[byte]);
                }
                h.dev.write(offset, &[byte, byte]);
                let mut two = [1u8, 2];
                h.dev.read(offset, &mut two);
                assert_eq!(two, [1, 2]);
            }
            h.dev.write(offset, &[]);
            h.dev.read(offset, &mut []);
        }
        assert!(
            h.reset.read().is_err(),
            "garbage without 0xFE on 0x64 never resets"
        );
        assert!(I8042_METRICS.missed_write_count.count() > missed_writes + 8 * 256);
        assert!(I8042_METRICS.missed_read_count.count() > missed_reads + 8 * 256);
    }
}
