//! Legacy PC devices on the port-I/O and MMIO buses.
//!
//! - [`serial`]: the 8250 UART on COM1 (0x3f8, GSI 4), console output and stdin input.
//! - [`i8042`]: the keyboard controller: the guest's reset (`reboot=k`) and Ctrl-Alt-Del.
//! - [`boot_timer`]: the MMIO byte a guest init writes to report that boot finished.

pub mod boot_timer;
pub mod i8042;
pub mod serial;
