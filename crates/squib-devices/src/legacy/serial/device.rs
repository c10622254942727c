//! [`SerialDevice`]: vm-superio's 8250 UART on the port-I/O bus.
//!
//! The UART registers are vm-superio's; this file adds what the VMM needs around them: the
//! interrupt as an `EventFd` (registered by the VMM as an irqfd on GSI 4), the output as any
//! `Write` (stdout or the `serial_out_path` file), Firecracker's `uart` metrics, and the
//! "buffer ready" eventfd that re-arms the input subscriber once the guest drains the FIFO.
//!
//! Only 1-byte accesses at offsets 0..=7 are meaningful; anything else is counted as missed
//! and leaves the guest's buffer untouched, as Firecracker does. Nothing here panics on guest
//! input. The vCPU path does not allocate or log above `debug` (an output failure is logged
//! once per device at `warn`: it is a host problem, not a guest one).

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use vm_superio::serial::{Error as UartError, SerialEvents};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::UART_METRICS;
use crate::bus::BusDevice;

/// Number of registers (ports) of the 8250.
const REGISTER_COUNT: u64 = 8;

/// Why the serial device could not do what the VMM asked.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The receive FIFO has no room: the guest has not read what it holds.
    #[error("Serial input FIFO is full.")]
    FifoFull,
    /// The interrupt eventfd could not be written.
    #[error("Could not trigger the serial interrupt.")]
    Interrupt(#[source] io::Error),
    /// The output writer failed.
    #[error("Could not write the serial output.")]
    Output(#[source] io::Error),
    /// The buffer-ready eventfd could not be created or cloned.
    #[error("Could not create the serial buffer-ready eventfd.")]
    BufferReadyEventFd(#[source] io::Error),
    /// A snapshot's unread input does not fit the receive FIFO.
    #[error("Serial snapshot holds {len} bytes of unread input, more than the FIFO holds.")]
    RestoreFifo {
        /// Bytes in the snapshot's input buffer.
        len: usize,
    },
}

impl From<UartError<io::Error>> for SerialError {
    fn from(err: UartError<io::Error>) -> Self {
        match err {
            UartError::Trigger(e) => Self::Interrupt(e),
            UartError::IOError(e) => Self::Output(e),
            UartError::FullFifo => Self::FifoFull,
        }
    }
}

/// The UART's interrupt line: one write to the irqfd per edge.
struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// vm-superio's event hooks: metrics, and the buffer-ready signal for the input subscriber.
struct SerialHooks {
    /// Written when the guest empties the receive FIFO; set once an input subscriber exists.
    buffer_ready: OnceLock<EventFd>,
}

impl SerialEvents for SerialHooks {
    fn buffer_read(&self) {
        UART_METRICS.read_count.inc();
    }

    fn out_byte(&self) {
        UART_METRICS.write_count.inc();
    }

    fn tx_lost_byte(&self) {
        UART_METRICS.missed_write_count.inc();
    }

    fn in_buffer_empty(&self) {
        if let Some(evt) = self.buffer_ready.get() {
            if evt.write(1).is_err() {
                UART_METRICS.error_count.inc();
            }
        }
    }
}

type Uart = Serial<IrqTrigger, SerialHooks, Box<dyn Write + Send>>;

/// The 8250 UART on COM1.
pub struct SerialDevice {
    uart: Uart,
    /// Whether an output or interrupt failure was already logged (logged once, then counted).
    failure_logged: bool,
}

impl fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialDevice")
            .field("fifo_capacity", &self.uart.fifo_capacity())
            .field("failure_logged", &self.failure_logged)
            .finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART that raises `irq_evt` for its interrupt and writes the guest's output to `out`.
    #[must_use]
    pub fn new(irq_evt: EventFd, out: Box<dyn Write + Send>) -> Self {
        let hooks = SerialHooks {
            buffer_ready: OnceLock::new(),
        };
        Self {
            uart: Serial::with_events(IrqTrigger(irq_evt), hooks, out),
            failure_logged: false,
        }
    }

    /// Free room in the receive FIFO, in bytes.
    #[must_use]
    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queue host input for the guest, as much as the FIFO can take, and raise the receive
    /// interrupt if the guest enabled it. Returns how many bytes were queued (0 for empty
    /// input, or in loopback mode where the line is disconnected).
    ///
    /// # Errors
    /// [`SerialError::FifoFull`] when the FIFO has no room (nothing queued);
    /// [`SerialError::Interrupt`] when the interrupt could not be raised (the bytes stay queued).
    pub fn enqueue_input(&mut self, input: &[u8]) -> Result<usize, SerialError> {
        if input.is_empty() {
            return Ok(0);
        }
        self.uart
            .enqueue_raw_bytes(input)
            .map_err(SerialError::from)
    }

    /// A clone of the eventfd written whenever the guest empties the receive FIFO, created on
    /// first use. The input subscriber waits on it to resume reading.
    ///
    /// # Errors
    /// [`SerialError::BufferReadyEventFd`] when the eventfd cannot be created or cloned.
    pub fn buffer_ready_evt(&self) -> Result<EventFd, SerialError> {
        let cell = &self.uart.events().buffer_ready;
        if cell.get().is_none() {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(SerialError::BufferReadyEventFd)?;
            // Should another caller win a race to set it, its eventfd is kept and `evt` dropped.
            let _ = cell.set(evt);
        }
        cell.get()
            .ok_or_else(|| {
                SerialError::BufferReadyEventFd(io::Error::from(io::ErrorKind::NotFound))
            })?
            .try_clone()
            .map_err(SerialError::BufferReadyEventFd)
    }

    fn record_failure(&mut self, err: &UartError<io::Error>) {
        // A non-blocking output (a FIFO, as `serial_out_path` is opened) that is full drops
        // the byte: vm-superio already counted it in `missed_write_count`. That is the
        // reader's backpressure, not a device failure, and never blocks the vCPU.
        if matches!(err, UartError::IOError(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return;
        }
        UART_METRICS.error_count.inc();
        if !self.failure_logged {
            self.failure_logged = true;
            log::warn!("serial: register write failed (later failures only counted): {err}");
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data, u8::try_from(offset)) {
            ([byte], Ok(reg)) if offset < REGISTER_COUNT => *byte = self.uart.read(reg),
            _ => UART_METRICS.missed_read_count.inc(),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (data, u8::try_from(offset)) {
            ([byte], Ok(reg)) if offset < REGISTER_COUNT => {
                if let Err(err) = self.uart.write(reg, *byte) {
                    self.record_failure(&err);
                }
            }
            _ => UART_METRICS.missed_write_count.inc(),
        }
    }
}

pub mod persist;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const THR: u64 = 0;
    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const IER_RDA: u8 = 0x01;
    const IER_THRE: u8 = 0x02;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;
    const LSR_IDLE: u8 = 0x40;
    const IIR_NONE: u8 = 0x01;
    const IIR_THRE: u8 = 0x02;
    const IIR_RDA: u8 = 0x04;
    const IIR_FIFO: u8 = 0xc0;

    /// A writer the test can inspect after handing a clone to the device.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailingWriter;

    /// A full non-blocking FIFO.
    struct FullWriter;

    impl Write for FullWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial_with(out: Box<dyn Write + Send>) -> (SerialDevice, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        (SerialDevice::new(irq.try_clone().unwrap(), out), irq)
    }

    fn read_reg(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut byte = [0u8];
        dev.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn thr_write_reaches_the_writer() {
        let out = SharedBuf::default();
        let (mut dev, _irq) = serial_with(Box::new(out.clone()));
        let before = UART_METRICS.write_count.count();
        for b in b"hi\n" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");
        assert!(UART_METRICS.write_count.count() >= before + 3);
    }

    #[test]
    fn lsr_reports_transmitter_empty_and_data_ready() {
        let (mut dev, _irq) = serial_with(Box::new(io::sink()));
        assert_eq!(read_reg(&mut dev, LSR), LSR_THR_EMPTY | LSR_IDLE);
        dev.enqueue_input(b"x").unwrap();
        assert_eq!(read_reg(&mut dev, LSR) & LSR_DATA_READY, LSR_DATA_READY);
        assert_eq!(read_reg(&mut dev, RBR), b'x');
        assert_eq!(read_reg(&mut dev, LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn iir_reports_thr_empty_then_no_interrupt() {
        let (mut dev, irq) = serial_with(Box::new(io::sink()));
        assert_eq!(read_reg(&mut dev, IIR), IIR_NONE | IIR_FIFO);
        dev.write(IER, &[IER_THRE]);
        assert_eq!(irq.read().unwrap(), 1, "enabling THRE raises the line");
        assert_eq!(read_reg(&mut dev, IIR), IIR_THRE | IIR_FIFO);
        assert_eq!(
            read_reg(&mut dev, IIR),
            IIR_NONE | IIR_FIFO,
            "reading IIR acknowledges"
        );
        dev.write(THR, b"a");
        assert_eq!(
            irq.read().unwrap(),
            1,
            "a transmitted byte raises THRE again"
        );
    }

    #[test]
    fn input_raises_rda_interrupt_when_enabled() {
        let (mut dev, irq) = serial_with(Box::new(io::sink()));
        dev.write(IER, &[IER_RDA]);
        assert!(irq.read().is_err(), "no interrupt while the FIFO is empty");
        assert_eq!(dev.enqueue_input(b"ab").unwrap(), 2);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read_reg(&mut dev, IIR), IIR_RDA | IIR_FIFO);
        assert_eq!(read_reg(&mut dev, RBR), b'a');
        assert_eq!(read_reg(&mut dev, RBR), b'b');
    }

    #[test]
    fn enqueue_respects_fifo_capacity() {
        let (mut dev, _irq) = serial_with(Box::new(io::sink()));
        let capacity = dev.fifo_capacity();
        assert!(capacity > 0);
        let big = vec![b'z'; capacity + 10];
        assert_eq!(dev.enqueue_input(&big).unwrap(), capacity);
        assert_eq!(dev.fifo_capacity(), 0);
        assert!(matches!(
            dev.enqueue_input(b"q"),
            Err(SerialError::FifoFull)
        ));
        assert_eq!(dev.enqueue_input(&[]).unwrap(), 0);
        assert_eq!(read_reg(&mut dev, RBR), b'z');
        assert_eq!(dev.fifo_capacity(), 1);
    }

    #[test]
    fn loopback_mode_takes_no_host_input() {
        let (mut dev, _irq) = serial_with(Box::new(io::sink()));
        dev.write(MCR, &[0x10]);
        assert_eq!(dev.enqueue_input(b"abc").unwrap(), 0);
        dev.write(THR, b"L");
        assert_eq!(read_reg(&mut dev, RBR), b'L');
    }

    #[test]
    fn draining_the_fifo_writes_buffer_ready() {
        let (mut dev, _irq) = serial_with(Box::new(io::sink()));
        let ready = dev.buffer_ready_evt().unwrap();
        let again = dev.buffer_ready_evt().unwrap();
        dev.enqueue_input(b"ab").unwrap();
        read_reg(&mut dev, RBR);
        assert!(ready.read().is_err(), "not empty yet");
        read_reg(&mut dev, RBR);
        assert_eq!(again.read().unwrap(), 1, "both clones share one eventfd");
    }

    #[test]
    fn odd_sizes_and_offsets_are_missed_and_untouched() {
        let (mut dev, _irq) = serial_with(Box::new(io::sink()));
        dev.enqueue_input(b"k").unwrap();
        let reads = UART_METRICS.missed_read_count.count();
        let writes = UART_METRICS.missed_write_count.count();
        let mut wide = [7u8; 2];
        dev.read(RBR, &mut wide);
        assert_eq!(wide, [7, 7]);
        let mut byte = [9u8];
        dev.read(8, &mut byte);
        dev.read(0x100, &mut byte);
        assert_eq!(byte, [9]);
        dev.write(THR, &[]);
        dev.write(0x1_0000_0000, b"x");
        assert!(UART_METRICS.missed_read_count.count() >= reads + 3);
        assert!(UART_METRICS.missed_write_count.count() >= writes + 2);
        assert_eq!(read_reg(&mut dev, RBR), b'k', "the FIFO was not consumed");
    }

    #[test]
    fn output_failure_is_counted_not_fatal() {
        let (mut dev, irq) = serial_with(Box::new(FailingWriter));
        let errors = UART_METRICS.error_count.count();
        let lost = UART_METRICS.missed_write_count.count();
        dev.write(IER, &[IER_THRE]);
        irq.read().unwrap();
        read_reg(&mut dev, IIR);
        dev.write(THR, b"a");
        dev.write(THR, b"b");
        assert!(UART_METRICS.error_count.count() >= errors + 2);
        assert!(UART_METRICS.missed_write_count.count() >= lost + 2);
        assert_eq!(
            irq.read().unwrap(),
            1,
            "THRE still fires so the driver never stalls"
        );
    }

    #[test]
    fn a_full_nonblocking_output_drops_bytes_without_a_failure() {
        let (mut dev, irq) = serial_with(Box::new(FullWriter));
        let lost = UART_METRICS.missed_write_count.count();
        dev.write(IER, &[IER_THRE]);
        irq.read().unwrap();
        read_reg(&mut dev, IIR);
        dev.write(THR, b"a");
        dev.write(THR, b"b");
        assert!(UART_METRICS.missed_write_count.count() >= lost + 2);
        assert!(!dev.failure_logged, "a full FIFO is not a device failure");
        assert_eq!(irq.read().unwrap(), 1, "THRE still fires");
        // A real failure is still logged (once) and counted.
        let (mut dev, _irq) = serial_with(Box::new(FailingWriter));
        dev.write(THR, b"c");
        assert!(dev.failure_logged);
    }
}
