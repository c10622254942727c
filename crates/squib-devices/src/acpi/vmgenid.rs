//! [`VmGenId`]: the Virtual Machine Generation ID, 16 random bytes in guest memory that change
//! whenever the VM is restored from a snapshot.
//!
//! The guest finds the ID through `_SB_.VGEN`'s `ADDR` in the DSDT; Linux's `vmgenid` driver
//! reads it at probe and again on each ACPI notification, and when it changed feeds it to
//! `add_vmfork_randomness`, which reseeds the kernel's CRNG so two clones of one snapshot do
//! not produce the same random numbers.
//!
//! Boot: [`VmGenId::new`] writes a fresh ID; nothing needs to be signalled. Restore:
//! [`VmGenId::restore`] writes a *new* ID (never the saved one), then the VMM calls
//! [`VmGenId::notify`] once the interrupt controller is restored and before the vCPUs run
//! (an irqfd registered after the write still fires: KVM checks a signalled eventfd when it
//! is attached).

use serde::{Deserialize, Serialize};
use squib_arch::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{check_area, interrupt_evt, signal, write, AcpiDeviceError};

/// Size of the generation ID: 128 bits.
pub const VMGENID_SIZE: usize = 16;
/// Name in errors and logs.
const DEVICE: &str = "VMGenID";

/// What a snapshot keeps of a [`VmGenId`]. The ID itself is not kept: a restore always makes
/// a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmGenIdState {
    /// Guest-physical address of the 16-byte ID.
    pub addr: u64,
    /// GSI of the interrupt that announces a new ID.
    pub gsi: u32,
}

/// The VM generation ID device.
#[derive(Debug)]
pub struct VmGenId {
    addr: u64,
    gsi: u32,
    interrupt_evt: EventFd,
}

impl VmGenId {
    /// Creates the device for a booting VM: writes a fresh random ID at `addr`, which must be
    /// inside `mem` (and, for the guest, inside an E820-reserved area).
    ///
    /// # Errors
    /// [`AcpiDeviceError`] when `addr` is outside guest memory, the host RNG or the write
    /// fails, or the eventfd cannot be created.
    pub fn new(mem: &GuestMemoryMmap, addr: u64, gsi: u32) -> Result<Self, AcpiDeviceError> {
        check_area(mem, DEVICE, addr, VMGENID_SIZE as u64)?;
        let device = Self {
            addr,
            gsi,
            interrupt_evt: interrupt_evt(DEVICE)?,
        };
        device.write_fresh_id(mem)?;
        Ok(device)
    }

    /// Recreates the device after a snapshot restore and writes a *new* random ID, so that the
    /// guest, once notified, knows it is a clone. Call [`notify`](Self::notify) before the
    /// vCPUs run.
    ///
    /// # Errors
    /// As [`new`](Self::new); a state whose address is outside `mem` is refused before anything
    /// is written.
    pub fn restore(mem: &GuestMemoryMmap, state: &VmGenIdState) -> Result<Self, AcpiDeviceError> {
        let device = Self::new(mem, state.addr, state.gsi)?;
        log::debug!("vmgenid: new generation ID written at {:#x}", state.addr);
        Ok(device)
    }

    /// What a snapshot must keep.
    pub fn state(&self) -> VmGenIdState {
        VmGenIdState {
            addr: self.addr,
            gsi: self.gsi,
        }
    }

    /// Raises the device's interrupt: the guest's GED notifies `_SB_.VGEN` and the guest
    /// re-reads the ID.
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

    /// Guest-physical address of the ID (for the DSDT's `ADDR`).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The device's GSI (for the DSDT's GED and the irqfd).
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Draws 16 bytes from the host RNG and writes them at the ID's address.
    fn write_fresh_id(&self, mem: &GuestMemoryMmap) -> Result<(), AcpiDeviceError> {
        let mut id = [0u8; VMGENID_SIZE];
        getrandom::fill(&mut id).map_err(|source| AcpiDeviceError::Random {
            device: DEVICE,
            source,
        })?;
        write(mem, DEVICE, self.addr, &id)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    const ADDR: u64 = 0xdeff0;
    const GSI: u32 = 3;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn id_at(mem: &GuestMemoryMmap, addr: u64) -> [u8; VMGENID_SIZE] {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn new_writes_a_random_id_and_nothing_else() {
        let mem = mem();
        let device = VmGenId::new(&mem, ADDR, GSI).unwrap();
        let id = id_at(&mem, ADDR);
        // 128 random bits: all zero, or fewer than 4 distinct bytes, would mean no RNG.
        let mut distinct = id.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 4, "{id:02x?}");
        // The bytes around the ID are untouched.
        assert_eq!(mem.read_obj::<u64>(GuestAddress(ADDR - 8)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(ADDR + 16)).unwrap(), 0);
        assert_eq!(
            device.state(),
            VmGenIdState {
                addr: ADDR,
                gsi: GSI
            }
        );
        assert_eq!((device.addr(), device.gsi()), (ADDR, GSI));
        // Two VMs booted side by side get different IDs.
        VmGenId::new(&mem, ADDR + 16, GSI).unwrap();
        assert_ne!(id_at(&mem, ADDR + 16), id);
    }

    #[test]
    fn restore_writes_a_new_id_at_the_saved_address() {
        let mem = mem();
        let booted = VmGenId::new(&mem, ADDR, GSI).unwrap();
        let before = id_at(&mem, ADDR);
        let state = booted.state();
        let restored = VmGenId::restore(&mem, &state).unwrap();
        let after = id_at(&mem, ADDR);
        assert_ne!(after, before);
        assert_ne!(after, [0; VMGENID_SIZE]);
        assert_eq!(restored.state(), state);
        // Each restore of the same snapshot is a new generation.
        VmGenId::restore(&mem, &state).unwrap();
        assert_ne!(id_at(&mem, ADDR), after);
    }

    #[test]
    fn notify_makes_the_interrupt_eventfd_readable() {
        let mem = mem();
        let device = VmGenId::new(&mem, ADDR, GSI).unwrap();
        // Nothing pending after new: a booting guest reads the ID at probe.
        assert!(device.interrupt_evt().read().is_err());
        device.notify().unwrap();
        assert_eq!(device.interrupt_evt().read().unwrap(), 1);
    }

    #[test]
    fn addresses_outside_guest_memory_are_refused() {
        let mem = mem();
        for addr in [1 << 20, (1 << 20) - 8, u64::MAX - 4, u64::MAX] {
            let err = VmGenId::restore(&mem, &VmGenIdState { addr, gsi: GSI }).unwrap_err();
            assert!(
                matches!(err, AcpiDeviceError::OutsideGuestMemory { addr: a, len: 16, .. } if a == addr),
                "{addr:#x}: {err}"
            );
        }
        let err = VmGenId::new(&mem, 1 << 20, GSI).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VMGenID: area 0x100000+0x10 is not inside guest memory"
        );
    }

    #[test]
    fn state_round_trips_through_serde() {
        let state = VmGenIdState {
            addr: 0x1_2345_6780,
            gsi: 7,
        };
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<VmGenIdState>(&text).unwrap(), state);
    }
}
