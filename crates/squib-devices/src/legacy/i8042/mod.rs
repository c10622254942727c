//! The i8042 PS/2 controller (PIO 0x60 data, 0x64 status/command; keyboard on GSI 1).
//!
//! - [`device`]: [`I8042Device`], enough of the controller for Linux's i8042 and atkbd
//!   drivers (booted with `i8042.noaux i8042.nomux i8042.dumbkbd`): the guest's CPU reset
//!   (`reboot=k` writes 0xFE to 0x64), and Ctrl-Alt-Del key presses for `SendCtrlAltDel`.
//!   [`device::persist`]: [`I8042DeviceState`], its registers and waiting bytes for a snapshot.
//! - [`metrics`]: [`I8042_METRICS`], Firecracker's `i8042` metrics group.

pub mod device;
pub mod metrics;

pub use device::persist::I8042DeviceState;
pub use device::{I8042Device, I8042Error};
pub use metrics::{I8042Metrics, I8042_METRICS};
