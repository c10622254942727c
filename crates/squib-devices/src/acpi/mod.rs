//! ACPI devices that make restored snapshots clone-safe: [`vmgenid`] (a 128-bit VM
//! generation ID) and [`vmclock`] (the VMClock page with its disruption and generation
//! counters).
//!
//! When one snapshot is restored into many VMs, every clone starts with the same RNG state
//! and clock calibration. On each restore the VMM writes a new generation ID and bumps the
//! VMClock counters in guest memory, then raises the devices' interrupt: the guest's ACPI
//! Generic Event Device notifies `_SB_.VGEN` / `_SB_.VCLK`, and Linux reseeds its RNG
//! (`vmgenid` driver, Linux 5.18 and later) and tells VMClock users their clock was disrupted.
//!
//! The devices only touch guest memory and an `EventFd`. The VMM registers that eventfd as an
//! irqfd for the device's GSI and describes the devices in the DSDT (squib-arch's ACPI tables).
//! Both are plain structs with a serde state ([`vmgenid::VmGenIdState`],
//! [`vmclock::VmClockState`]) for snapshots.

pub mod vmclock;
pub mod vmgenid;

use squib_arch::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Errors creating, restoring or signalling an ACPI device.
#[derive(Debug, thiserror::Error)]
pub enum AcpiDeviceError {
    /// The device's area is not wholly inside guest memory (or wraps around).
    #[error("{device}: area {addr:#x}+{len:#x} is not inside guest memory")]
    OutsideGuestMemory {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// Start of the area.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The device's area is not aligned as the guest driver needs.
    #[error("{device}: address {addr:#x} is not {align:#x}-aligned")]
    Misaligned {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// The address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// The host RNG failed.
    #[error("{device}: cannot get random bytes from the host")]
    Random {
        /// "VMGenID".
        device: &'static str,
        /// What `getrandom` said.
        #[source]
        source: getrandom::Error,
    },
    /// Writing the device's area failed.
    #[error("{device}: cannot write guest memory at {addr:#x}")]
    Write {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// Where the write started.
        addr: u64,
        /// What guest memory said.
        #[source]
        source: GuestMemoryError,
    },
    /// Creating the interrupt eventfd failed.
    #[error("{device}: cannot create the interrupt eventfd")]
    EventFd {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Signalling the interrupt eventfd failed.
    #[error("{device}: cannot signal the guest")]
    Notify {
        /// "VMGenID" or "VMClock".
        device: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `[addr, addr + len)` is inside guest memory, before anything is written, so
/// that a hostile or stale address fails cleanly instead of leaving a half-written area.
fn check_area(
    mem: &GuestMemoryMmap,
    device: &'static str,
    addr: u64,
    len: u64,
) -> Result<(), AcpiDeviceError> {
    let fits = addr.checked_add(len).is_some()
        && usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(addr), len));
    if !fits {
        return Err(AcpiDeviceError::OutsideGuestMemory { device, addr, len });
    }
    Ok(())
}

/// Writes `bytes` at `addr`, naming `device` on failure.
fn write(
    mem: &GuestMemoryMmap,
    device: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), AcpiDeviceError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| AcpiDeviceError::Write {
            device,
            addr,
            source,
        })
}

/// The non-blocking eventfd a device's interrupt goes through (the VMM makes it an irqfd).
fn interrupt_evt(device: &'static str) -> Result<EventFd, AcpiDeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|source| AcpiDeviceError::EventFd { device, source })
}

/// Raises the device's interrupt once.
fn signal(evt: &EventFd, device: &'static str) -> Result<(), AcpiDeviceError> {
    evt.write(1)
        .map_err(|source| AcpiDeviceError::Notify { device, source })
}
