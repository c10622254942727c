//! [`VmClock`]: the VMClock page, a `struct vmclock_abi` (Linux `include/uapi/linux/
//! vmclock-abi.h`, version 1) in one 4 KiB guest page, whose counters tell the guest that its
//! clock was disrupted and that it was restored from a snapshot.
//!
//! squib fills in only the constant header and the counters, as Firecracker does: magic
//! "VCLK", size one page, version 1, no usable counter (`counter_id` invalid, clock status
//! unknown), and flags `VM_GEN_COUNTER_PRESENT | NOTIFICATION_PRESENT`. Everything after the
//! structure stays zero. The guest finds the page through `_SB_.VCLK`'s memory resource;
//! Linux's `ptp_vmclock` driver exposes it as `/dev/vmclock0` (readable and mappable) and, with
//! `NOTIFICATION_PRESENT`, wakes pollers on each ACPI notification.
//!
//! On restore the fields change under the ABI's sequence lock: `seq_count` goes odd, then
//! `disruption_marker` and `vm_generation_counter` are incremented (and the constant header
//! rewritten, in case the guest scribbled on it), then `seq_count` goes even; then the VMM
//! calls [`VmClock::notify`]. A guest that reads an odd or changed `seq_count` retries.

use std::sync::atomic::{fence, Ordering};

use serde::{Deserialize, Serialize};
use squib_arch::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{check_area, interrupt_evt, signal, write, AcpiDeviceError};

/// Size of the VMClock area: one guest page, so the guest can map it into user space alone.
pub const VMCLOCK_PAGE_SIZE: u64 = 0x1000;
/// `magic`: "VCLK" read as a little-endian u32.
pub const VMCLOCK_MAGIC: u32 = 0x4b4c_4356;
/// `version` of the ABI squib writes.
pub const VMCLOCK_VERSION: u16 = 1;
/// `counter_id` meaning "no counter/time relationship is provided".
pub const VMCLOCK_COUNTER_INVALID: u8 = 0xff;
/// `clock_status`: unknown.
pub const VMCLOCK_STATUS_UNKNOWN: u8 = 0;
/// `flags` bit: `vm_generation_counter` is maintained (bumped on every snapshot restore).
pub const VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT: u64 = 1 << 8;
/// `flags` bit: the device sends an ACPI notification whenever `seq_count` becomes even.
pub const VMCLOCK_FLAG_NOTIFICATION_PRESENT: u64 = 1 << 9;

/// Byte offsets of the `struct vmclock_abi` fields squib writes, and its size.
const MAGIC_OFFSET: usize = 0;
const SIZE_OFFSET: usize = 4;
const VERSION_OFFSET: usize = 8;
const COUNTER_ID_OFFSET: usize = 10;
const SEQ_COUNT_OFFSET: usize = 12;
const DISRUPTION_MARKER_OFFSET: usize = 16;
const FLAGS_OFFSET: usize = 24;
const CLOCK_STATUS_OFFSET: usize = 34;
const VM_GENERATION_COUNTER_OFFSET: usize = 104;
const ABI_SIZE: usize = 112;
const _: () = assert!(VM_GENERATION_COUNTER_OFFSET + 8 == ABI_SIZE);
const _: () = assert!(ABI_SIZE as u64 <= VMCLOCK_PAGE_SIZE);
/// Name in errors and logs.
const DEVICE: &str = "VMClock";

/// What a snapshot keeps of a [`VmClock`]: where it is, its GSI, and the counters the host
/// owns (the host's copy is authoritative: the guest could have written the page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmClockState {
    /// Guest-physical address of the page (page-aligned).
    pub addr: u64,
    /// GSI of the interrupt that announces an update.
    pub gsi: u32,
    /// `seq_count` last written (even unless a snapshot was taken mid-update, which squib
    /// never does).
    pub seq_count: u32,
    /// `disruption_marker` last written.
    pub disruption_marker: u64,
    /// `vm_generation_counter` last written.
    pub vm_generation_counter: u64,
}

/// The VMClock device.
#[derive(Debug)]
pub struct VmClock {
    addr: u64,
    gsi: u32,
    interrupt_evt: EventFd,
    seq_count: u32,
    disruption_marker: u64,
    vm_generation_counter: u64,
}

impl VmClock {
    /// Creates the device for a booting VM: writes the page at `addr` (page-aligned, inside
    /// `mem`) with the header and all counters zero.
    ///
    /// # Errors
    /// [`AcpiDeviceError`] when `addr` is misaligned or the page is outside guest memory, the
    /// write fails, or the eventfd cannot be created.
    pub fn new(mem: &GuestMemoryMmap, addr: u64, gsi: u32) -> Result<Self, AcpiDeviceError> {
        check_page(mem, addr)?;
        let device = Self {
            addr,
            gsi,
            interrupt_evt: interrupt_evt(DEVICE)?,
            seq_count: 0,
            disruption_marker: 0,
            vm_generation_counter: 0,
        };
        let mut page = [0u8; VMCLOCK_PAGE_SIZE as usize];
        page[..ABI_SIZE].copy_from_slice(&device.abi_bytes());
        write(mem, DEVICE, addr, &page)?;
        Ok(device)
    }

    /// Recreates the device after a snapshot restore and bumps `disruption_marker` and
    /// `vm_generation_counter` under the sequence lock. Call [`notify`](Self::notify) before
    /// the vCPUs run.
    ///
    /// # Errors
    /// As [`new`](Self::new); a state whose page is misaligned or outside `mem` is refused
    /// before anything is written.
    pub fn restore(mem: &GuestMemoryMmap, state: &VmClockState) -> Result<Self, AcpiDeviceError> {
        check_page(mem, state.addr)?;
        let mut device = Self {
            addr: state.addr,
            gsi: state.gsi,
            interrupt_evt: interrupt_evt(DEVICE)?,
            seq_count: state.seq_count,
            disruption_marker: state.disruption_marker,
            vm_generation_counter: state.vm_generation_counter,
        };
        device.begin_update(mem)?;
        device.disruption_marker = device.disruption_marker.wrapping_add(1);
        device.vm_generation_counter = device.vm_generation_counter.wrapping_add(1);
        device.finish_update(mem)?;
        log::debug!(
            "vmclock: generation {} (disruption {}) at {:#x}",
            device.vm_generation_counter,
            device.disruption_marker,
            device.addr
        );
        Ok(device)
    }

    /// What a snapshot must keep.
    pub fn state(&self) -> VmClockState {
        VmClockState {
            addr: self.addr,
            gsi: self.gsi,
            seq_count: self.seq_count,
            disruption_marker: self.disruption_marker,
            vm_generation_counter: self.vm_generation_counter,
        }
    }

    /// Raises the device's interrupt: the guest's GED notifies `_SB_.VCLK`.
    ///
    /// # Errors
    /// [`AcpiDeviceError::Notify`] when the eventfd cannot be written.
    pub fn notify(&self) -> Result<(), AcpiDeviceError> {
        signal(&self.interrupt_evt, DEVICE)
    }

    /// The eventfd to register as an irqfd for [`gsi`](Self::gsi).
    pub fn interrupt_evt(&self) -> &EventFd {
        &self.interrupt_evt
    }

    /// Guest-physical address of the page (for the DSDT's `_CRS`).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The device's GSI (for the DSDT's GED and the irqfd).
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Opens the sequence lock: makes `seq_count` odd so that readers retry until
    /// [`finish_update`](Self::finish_update).
    fn begin_update(&mut self, mem: &GuestMemoryMmap) -> Result<(), AcpiDeviceError> {
        // `| 1` rather than `+ 1`: a saved odd value (a corrupt state) stays odd.
        self.seq_count |= 1;
        self.store_seq_count(mem, Ordering::SeqCst)?;
        // Keep the field writes that follow after the odd seq_count (x86 keeps stores in order;
        // this stops the compiler reordering). The vCPUs are paused during a restore, but the
        // page stays consistent for any reader.
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Writes every field but `seq_count`, then closes the sequence lock with an even value.
    fn finish_update(&mut self, mem: &GuestMemoryMmap) -> Result<(), AcpiDeviceError> {
        let abi = self.abi_bytes();
        write(mem, DEVICE, self.addr, &abi[..SEQ_COUNT_OFFSET])?;
        let rest = self.addr + DISRUPTION_MARKER_OFFSET as u64;
        write(mem, DEVICE, rest, &abi[DISRUPTION_MARKER_OFFSET..])?;
        self.seq_count = self.seq_count.wrapping_add(1);
        // Release: every field write above is visible before the even seq_count.
        self.store_seq_count(mem, Ordering::Release)
    }

    /// Stores `seq_count` as one aligned 32-bit write, as the ABI's readers expect.
    fn store_seq_count(
        &self,
        mem: &GuestMemoryMmap,
        order: Ordering,
    ) -> Result<(), AcpiDeviceError> {
        let addr = self.addr + SEQ_COUNT_OFFSET as u64;
        mem.store(self.seq_count.to_le(), GuestAddress(addr), order)
            .map_err(|source| AcpiDeviceError::Write {
                device: DEVICE,
                addr,
                source,
            })
    }

    /// The `struct vmclock_abi` bytes for the current counters (little-endian, as the ABI is).
    fn abi_bytes(&self) -> [u8; ABI_SIZE] {
        let mut abi = [0u8; ABI_SIZE];
        put(&mut abi, MAGIC_OFFSET, &VMCLOCK_MAGIC.to_le_bytes());
        put(
            &mut abi,
            SIZE_OFFSET,
            &(VMCLOCK_PAGE_SIZE as u32).to_le_bytes(),
        );
        put(&mut abi, VERSION_OFFSET, &VMCLOCK_VERSION.to_le_bytes());
        put(&mut abi, COUNTER_ID_OFFSET, &[VMCLOCK_COUNTER_INVALID]);
        put(&mut abi, SEQ_COUNT_OFFSET, &self.seq_count.to_le_bytes());
        put(
            &mut abi,
            DISRUPTION_MARKER_OFFSET,
            &self.disruption_marker.to_le_bytes(),
        );
        let flags = VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT | VMCLOCK_FLAG_NOTIFICATION_PRESENT;
        put(&mut abi, FLAGS_OFFSET, &flags.to_le_bytes());
        put(&mut abi, CLOCK_STATUS_OFFSET, &[VMCLOCK_STATUS_UNKNOWN]);
        put(
            &mut abi,
            VM_GENERATION_COUNTER_OFFSET,
            &self.vm_generation_counter.to_le_bytes(),
        );
        abi
    }
}

/// Copies `bytes` into `abi` at `offset` (every offset is a constant inside the structure).
fn put(abi: &mut [u8; ABI_SIZE], offset: usize, bytes: &[u8]) {
    abi[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// The VMClock area must be one whole, aligned page of guest memory: the guest maps it.
fn check_page(mem: &GuestMemoryMmap, addr: u64) -> Result<(), AcpiDeviceError> {
    if addr % VMCLOCK_PAGE_SIZE != 0 {
        return Err(AcpiDeviceError::Misaligned {
            device: DEVICE,
            addr,
            align: VMCLOCK_PAGE_SIZE,
        });
    }
    check_area(mem, DEVICE, addr, VMCLOCK_PAGE_SIZE)
}

#[cfg(test)]
#[path = "vmclock_tests.rs"]
mod tests;
