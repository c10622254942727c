//! COM1: the 8250 UART the guest console uses (PIO 0x3f8, 8 ports, GSI 4).
//!
//! - [`device`]: [`SerialDevice`], vm-superio's 8250 behind the [`crate::bus::BusDevice`]
//!   trait, its output writer and its interrupt eventfd.
//!   [`device::persist`]: [`SerialDeviceState`], its registers and unread input for a snapshot.
//! - [`event_handler`]: [`SerialInput`], the event-loop subscriber feeding host input (stdin by
//!   default) into the receive FIFO without ever reading more than the FIFO can take.
//! - [`metrics`]: [`UART_METRICS`], Firecracker's `uart` metrics group.
//! - [`output`]: the serial `rate_limiter` and the standard-output pump that keeps a stalled
//!   reader from ever blocking a vCPU.
//!
//! Flow control: the input fd is watched only while the FIFO has room. When it fills, the
//! subscriber stops watching the fd; when the guest empties the FIFO, vm-superio's
//! `in_buffer_empty` hook writes a "buffer ready" eventfd and the subscriber watches the fd
//! again.

pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod output;

pub use device::persist::SerialDeviceState;
pub use device::{SerialDevice, SerialError};
pub use event_handler::{InputState, SerialInput};
pub use metrics::{SerialMetrics, UART_METRICS};
pub use output::{RateLimitedOutput, StdoutPump};
