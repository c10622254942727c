//! [`I8042DeviceState`]: what a snapshot keeps of the i8042 controller — its command byte,
//! output port, status flags, a half-done command and the bytes waiting on the data port —
//! and its restore.
//!
//! The reset and keyboard-interrupt eventfds come from the VMM as at boot. When bytes wait
//! and the command byte enables the keyboard interrupt, the restore raises it again, as the
//! 8250 restore does: the guest must not sit on data it was never told about.

use serde::{Deserialize, Serialize};

use super::{I8042Device, I8042Error, OutputFifo, Pending, FIFO_SIZE};

/// What the next data-port write means, as saved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingWrite {
    /// A keyboard command.
    Nothing,
    /// The parameter of this controller command.
    Controller(u8),
    /// The parameter of this keyboard command.
    Keyboard(u8),
}

/// The i8042's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct I8042DeviceState {
    /// The command byte ("CTR").
    pub control: u8,
    /// The output port (A20, reset line).
    pub output_port: u8,
    /// Status bit 3: the last write went to the command port.
    pub last_was_command: bool,
    /// A command waiting for its parameter.
    pub pending: PendingWrite,
    /// Bytes waiting on the data port, oldest first (at most 16).
    pub output: Vec<u8>,
}

impl I8042Device {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> I8042DeviceState {
        let fifo = &self.fifo;
        let output = (0..fifo.len)
            .map(|i| fifo.bytes[(fifo.head + i) % FIFO_SIZE])
            .collect();
        I8042DeviceState {
            control: self.control,
            output_port: self.output_port,
            last_was_command: self.last_was_command,
            pending: match self.pending {
                Pending::Nothing => PendingWrite::Nothing,
                Pending::Controller(cmd) => PendingWrite::Controller(cmd),
                Pending::Keyboard(cmd) => PendingWrite::Keyboard(cmd),
            },
            output,
        }
    }

    /// Put `state` into this device (its eventfds stay), raising the keyboard interrupt
    /// when bytes wait and the command byte enables it.
    ///
    /// # Errors
    /// [`I8042Error::RestoreOutput`] when more bytes wait than the 16-byte buffer holds
    /// (nothing changes); [`I8042Error::KbdInterruptFailure`] when the interrupt cannot be
    /// raised (the state is restored).
    pub fn restore(&mut self, state: &I8042DeviceState) -> Result<(), I8042Error> {
        if state.output.len() > FIFO_SIZE {
            return Err(I8042Error::RestoreOutput {
                len: state.output.len(),
            });
        }
        let mut fifo = OutputFifo::default();
        for &byte in &state.output {
            fifo.push(byte)?;
        }
        self.fifo = fifo;
        self.control = state.control;
        self.output_port = state.output_port;
        self.last_was_command = state.last_was_command;
        self.pending = match state.pending {
            PendingWrite::Nothing => Pending::Nothing,
            PendingWrite::Controller(cmd) => Pending::Controller(cmd),
            PendingWrite::Keyboard(cmd) => Pending::Keyboard(cmd),
        };
        if self.fifo.is_empty() {
            return Ok(());
        }
        self.raise_kbd_irq()
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
