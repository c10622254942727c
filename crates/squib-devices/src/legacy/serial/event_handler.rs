//! [`SerialInput`]: the event-loop subscriber that feeds host input into COM1's receive FIFO.
//!
//! It watches two fds, level-triggered: the input (stdin by default, any pollable fd) and the
//! serial's buffer-ready eventfd. States:
//! - **Reading**: the input fd is watched. When readable, one `read` of at most the FIFO's
//!   free room (never more, so no byte is held outside the FIFO) is queued for the guest.
//! - **Paused**: the FIFO was full, so the input fd is unwatched (a level-triggered readable
//!   fd would otherwise wake the loop forever). The guest emptying the FIFO writes the
//!   buffer-ready eventfd, which watches the input fd again.
//! - **Detached**: end of file, a read error, or an fd epoll refuses (a regular file or
//!   `/dev/null` as stdin): both fds are unwatched for good and the input is closed.
//!
//! A read only follows a readiness report, so a blocking input fd does not block the loop
//! (unless another process drains the same fd in between). Lock order: the subscriber's own
//! mutex, then the serial's.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{Error as EventManagerError, EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use super::device::{SerialDevice, SerialError};
use super::metrics::UART_METRICS;

/// Largest single read: the 8250 FIFO size in vm-superio (a read is also capped by free room).
const INPUT_CHUNK: usize = 64;

/// Where the input subscriber stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputState {
    /// The input fd is watched.
    Reading,
    /// The FIFO is full; waiting for the guest to empty it.
    Paused,
    /// No more input: end of file, an error, an fd that cannot be polled, or not registered yet.
    Detached,
}

/// What one readiness report on the input fd produced.
enum Pump {
    Queued,
    FifoFull,
    Eof,
    Failed(io::Error),
}

/// Feeds an input fd into a [`SerialDevice`]; register it with an `event_manager::EventManager`.
#[derive(Debug)]
pub struct SerialInput {
    serial: Arc<Mutex<SerialDevice>>,
    input: Option<File>,
    buffer_ready: EventFd,
    state: InputState,
}

impl SerialInput {
    /// A subscriber reading `input` into `serial`.
    ///
    /// # Errors
    /// When the serial's buffer-ready eventfd cannot be created or cloned.
    pub fn new(serial: Arc<Mutex<SerialDevice>>, input: OwnedFd) -> io::Result<Self> {
        Self::with_input(serial, Some(File::from(input)))
    }

    /// A subscriber reading this process's stdin (a duplicate of fd 0) into `serial`. A closed
    /// stdin gives a subscriber that is detached from the start.
    ///
    /// # Errors
    /// When fd 0 cannot be duplicated for another reason than being closed, or the
    /// buffer-ready eventfd cannot be created.
    pub fn stdin(serial: Arc<Mutex<SerialDevice>>) -> io::Result<Self> {
        let input = match io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => Some(File::from(fd)),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                log::info!("serial: stdin is closed, guest console input disabled");
                None
            }
            Err(e) => return Err(e),
        };
        Self::with_input(serial, input)
    }

    fn with_input(serial: Arc<Mutex<SerialDevice>>, input: Option<File>) -> io::Result<Self> {
        let buffer_ready = lock(&serial).buffer_ready_evt().map_err(|e| match e {
            SerialError::BufferReadyEventFd(io) => io,
            other => io::Error::other(other),
        })?;
        Ok(Self {
            serial,
            input,
            buffer_ready,
            state: InputState::Detached,
        })
    }

    /// Where the subscriber stands.
    #[must_use]
    pub fn state(&self) -> InputState {
        self.state
    }

    /// One bounded read from the input into the FIFO, under the serial's lock (so the free
    /// room cannot shrink between the check and the enqueue).
    fn pump(&mut self) -> Pump {
        let Some(mut input) = self.input.as_ref() else {
            return Pump::Eof;
        };
        let mut serial = lock(&self.serial);
        let room = serial.fifo_capacity().min(INPUT_CHUNK);
        if room == 0 {
            return Pump::FifoFull;
        }
        let mut chunk = [0u8; INPUT_CHUNK];
        match input.read(&mut chunk[..room]) {
            Ok(0) => Pump::Eof,
            Ok(n) => {
                if let Err(e) = serial.enqueue_input(&chunk[..n]) {
                    UART_METRICS.error_count.inc();
                    log::debug!("serial: queueing {n} input bytes: {e}");
                }
                Pump::Queued
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Pump::Queued
            }
            Err(e) => Pump::Failed(e),
        }
    }

    fn on_input(&mut self, ops: &mut EventOps) {
        match self.pump() {
            Pump::Queued => {}
            Pump::FifoFull => self.pause(ops),
            Pump::Eof => {
                log::info!("serial: input reached end of file, guest console input detached");
                self.detach(ops);
            }
            Pump::Failed(e) => {
                log::warn!("serial: reading input failed, guest console input detached: {e}");
                self.detach(ops);
            }
        }
    }

    fn on_buffer_ready(&mut self, ops: &mut EventOps) {
        // EAGAIN means another wake-up already consumed the count: nothing to do.
        let _ = self.buffer_ready.read();
        if self.state == InputState::Paused {
            self.resume(ops);
        }
    }

    fn pause(&mut self, ops: &mut EventOps) {
        let Some(input) = &self.input else { return };
        match ops.remove(Events::new(input, EventSet::IN)) {
            Ok(()) => self.state = InputState::Paused,
            Err(e) => {
                log::warn!("serial: cannot pause input fd {}: {e}", input.as_raw_fd());
                self.detach(ops);
            }
        }
    }

    fn resume(&mut self, ops: &mut EventOps) {
        let Some(input) = &self.input else { return };
        match ops.add(Events::new(input, EventSet::IN)) {
            Ok(()) | Err(EventManagerError::FdAlreadyRegistered) => {
                self.state = InputState::Reading;
            }
            Err(e) => {
                log::warn!("serial: cannot resume input fd {}: {e}", input.as_raw_fd());
                self.detach(ops);
            }
        }
    }

    fn detach(&mut self, ops: &mut EventOps) {
        if let Some(input) = self.input.take() {
            // Not registered while paused: the removal error is expected then.
            let _ = ops.remove(Events::new(&input, EventSet::IN));
        }
        let _ = ops.remove(Events::new(&self.buffer_ready, EventSet::IN));
        self.state = InputState::Detached;
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.buffer_ready.as_raw_fd() {
            self.on_buffer_ready(ops);
        } else if self
            .input
            .as_ref()
            .is_some_and(|input| input.as_raw_fd() == fd)
        {
            self.on_input(ops);
        } else {
            log::debug!("serial: event on unexpected fd {fd}");
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let Some(input) = &self.input else { return };
        if let Err(e) = ops.add(Events::new(input, EventSet::IN)) {
            log::info!(
                "serial: input fd {} cannot be polled, guest console input disabled: {e}",
                input.as_raw_fd()
            );
            self.input = None;
            return;
        }
        if let Err(e) = ops.add(Events::new(&self.buffer_ready, EventSet::IN)) {
            log::warn!("serial: cannot watch the buffer-ready eventfd, input disabled: {e}");
            self.detach(ops);
            return;
        }
        self.state = InputState::Reading;
    }
}

fn lock(serial: &Mutex<SerialDevice>) -> std::sync::MutexGuard<'_, SerialDevice> {
    // A poisoned lock means a vCPU panicked while holding it; the UART state is still usable.
    serial.lock().unwrap_or_else(PoisonError::into_inner)
}
