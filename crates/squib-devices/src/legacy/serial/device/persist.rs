//! [`SerialDeviceState`]: what a snapshot keeps of COM1 — the 8250 registers and the input
//! bytes the guest has not read yet — and its restore.
//!
//! vm-superio's `SerialState` holds exactly that but has no serde; this is its serde mirror.
//! The restore keeps the device's interrupt eventfd, output writer and buffer-ready eventfd
//! (the input subscriber keeps working) and puts the registers and FIFO behind them. As in
//! vm-superio, an interrupt the restored registers say is pending and enabled is raised again.

use std::io;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as UartError, SerialState};
use vm_superio::Serial;

use super::{IrqTrigger, SerialDevice, SerialError, SerialHooks};

/// COM1's snapshot state: every 8250 register and the unread input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SerialDeviceState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt Enable Register.
    pub interrupt_enable: u8,
    /// Interrupt Identification Register.
    pub interrupt_identification: u8,
    /// Line Control Register.
    pub line_control: u8,
    /// Line Status Register.
    pub line_status: u8,
    /// Modem Control Register.
    pub modem_control: u8,
    /// Modem Status Register.
    pub modem_status: u8,
    /// Scratch Register.
    pub scratch: u8,
    /// Input the guest has not read yet, oldest first (at most the 64-byte FIFO).
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialDeviceState> for SerialState {
    fn from(s: &SerialDeviceState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

impl SerialDevice {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> SerialDeviceState {
        self.uart.state().into()
    }

    /// Put the registers and unread input of `state` into this device, keeping its
    /// interrupt, output and buffer-ready eventfd.
    ///
    /// # Errors
    /// [`SerialError::RestoreFifo`] when the input is longer than the FIFO (nothing changes),
    /// [`SerialError::Interrupt`] when a pending interrupt cannot be raised again, or
    /// [`SerialError::BufferReadyEventFd`] when an eventfd cannot be duplicated.
    pub fn restore(&mut self, state: &SerialDeviceState) -> Result<(), SerialError> {
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(SerialError::Interrupt)?;
        let buffer_ready = OnceLock::new();
        if let Some(evt) = self.uart.events().buffer_ready.get() {
            let evt = evt.try_clone().map_err(SerialError::BufferReadyEventFd)?;
            // A fresh cell: cannot be set already.
            let _ = buffer_ready.set(evt);
        }
        let hooks = SerialHooks { buffer_ready };
        // The writer is swapped in only once the new UART exists, so a refused state loses
        // no output.
        let sink: Box<dyn io::Write + Send> = Box::new(io::sink());
        let mut uart = Serial::from_state(&state.into(), IrqTrigger(irq), hooks, sink).map_err(
            |e| match e {
                UartError::FullFifo => SerialError::RestoreFifo {
                    len: state.in_buffer.len(),
                },
                UartError::Trigger(e) | UartError::IOError(e) => SerialError::Interrupt(e),
            },
        )?;
        std::mem::swap(uart.writer_mut(), self.uart.writer_mut());
        self.uart = uart;
        Ok(())
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
