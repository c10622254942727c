//! Devices for squib's microVMs.
//!
//! - [`bus`]: address-range dispatch used by vCPU exits (port I/O and MMIO).
//! - [`legacy`]: the 8250 serial port (COM1), the i8042 controller (reset and Ctrl-Alt-Del)
//!   and the boot timer.
//! - [`virtio`]: the virtio-mmio transport and the virtio devices behind it.
//! - [`rate_limiter`]: token buckets shared by the devices that throttle I/O.
//!
//! Devices reach the rest of the VMM only through what this crate owns: the [`bus::BusDevice`]
//! trait, `EventFd`s (irqfd / ioeventfd) and `event_manager` subscriptions. This crate never
//! depends on `squib-vmm`.
#![warn(missing_docs)]

pub mod acpi;
#[cfg(any(test, feature = "test-utils"))]
pub mod alloc_counter;
pub mod bus;
pub mod legacy;
#[cfg(test)]
mod log_capture;
pub mod rate_limiter;
pub mod virtio;

/// squib-devices' unit tests count heap allocations (the zero-allocation hot-path tests).
#[cfg(test)]
#[global_allocator]
static GLOBAL: alloc_counter::CountingAlloc = alloc_counter::CountingAlloc;
