//! The KVM VM: in-kernel interrupt controller and PIT, guest memory slots (optionally with
//! dirty-page logging), irqfds and ioeventfds.

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use squib_arch::memory::GuestMemoryMmap;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::vcpu_state::VcpuStateCaps;

/// Why setting up the VM, saving or restoring its state, or reading its dirty log failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("Cannot open /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl on the VM failed.
    #[error("KVM {what} failed: {source}")]
    Ioctl {
        /// The operation.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A dirty bitmap was asked of a VM whose memory was registered without dirty-page
    /// tracking.
    #[error("Dirty page tracking is not enabled for this microVM")]
    DirtyTrackingDisabled,
    /// `clock_realtime` was asked for but the saved clock has no wall-clock time.
    #[error("clock_realtime requested but not present in the snapshot state")]
    ClockRealtimeMissing,
    /// A saved interrupt controller state is for another chip than its place says.
    #[error("Invalid VM state: the {place} state is for irqchip {found}, not {expected}")]
    IrqchipMismatch {
        /// Which of the saved states.
        place: &'static str,
        /// The chip it must be.
        expected: u32,
        /// The chip it names.
        found: u32,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

/// A KVM VM with an in-kernel irqchip and PIT.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    /// Whether the memory slots log dirty pages (set by [`Vm::register_memory`]).
    dirty_tracking: AtomicBool,
}

impl Vm {
    /// Create the VM and its in-kernel interrupt controllers.
    ///
    /// # Errors
    /// [`VmError`] naming the KVM call that failed.
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(ioctl("create VM"))?;
        fd.set_tss_address(squib_arch::layout::KVM_TSS_ADDRESS as usize)
            .map_err(ioctl("set TSS address"))?;
        fd.create_irq_chip().map_err(ioctl("create irqchip"))?;
        // The PIT's speaker port is a dummy: a guest beeping must not reach the host.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(ioctl("create PIT"))?;
        Ok(Self {
            fd,
            dirty_tracking: AtomicBool::new(false),
        })
    }

    /// The VM file descriptor (for creating vCPUs).
    #[must_use]
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Map every region of `mem` into the guest, one KVM slot per region (slot `i` is region
    /// `i`). With `track_dirty_pages`, KVM logs the pages the guest writes, for
    /// [`Vm::dirty_bitmap`].
    ///
    /// # Errors
    /// [`VmError`] when KVM refuses a slot.
    pub fn register_memory(
        &self,
        mem: &GuestMemoryMmap,
        track_dirty_pages: bool,
    ) -> Result<(), VmError> {
        let flags = if track_dirty_pages {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        for (slot, region) in mem.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot_id(slot),
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags,
            };
            // SAFETY: the host range [as_ptr, as_ptr + len) is a live mmap owned by `mem`,
            // which the caller keeps alive as long as the VM (the builder stores both in the
            // running VM), and slots do not overlap because guest regions do not.
            unsafe { self.fd.set_user_memory_region(region_desc) }
                .map_err(ioctl("set user memory region"))?;
        }
        self.dirty_tracking
            .store(track_dirty_pages, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the memory slots log the pages the guest writes (`track_dirty_pages`).
    #[must_use]
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking.load(Ordering::Relaxed)
    }

    /// The pages the guest wrote since the previous call (or since the memory was
    /// registered): one bitmap per region of `mem`, bit `i` of word `w` for page `64 w + i` of
    /// the region. Reading the log clears it (`KVM_GET_DIRTY_LOG`).
    ///
    /// # Errors
    /// [`VmError::DirtyTrackingDisabled`] when the memory was registered without tracking;
    /// [`VmError::Ioctl`] when KVM refuses a slot's log.
    pub fn dirty_bitmap(&self, mem: &GuestMemoryMmap) -> Result<Vec<Vec<u64>>, VmError> {
        if !self.dirty_tracking() {
            return Err(VmError::DirtyTrackingDisabled);
        }
        mem.iter()
            .enumerate()
            .map(|(slot, region)| {
                let len = usize::try_from(region.len()).expect("a mapped region fits in usize");
                self.fd
                    .get_dirty_log(slot_id(slot), len)
                    .map_err(ioctl("get dirty log (KVM_GET_DIRTY_LOG)"))
            })
            .collect()
    }

    /// What saving and restoring vCPU state needs to know about this host's KVM: the MSRs to
    /// save and the XSAVE buffer size.
    ///
    /// # Errors
    /// [`VmError::Ioctl`] when KVM cannot list its MSRs.
    pub fn vcpu_state_caps(&self, kvm: &Kvm) -> Result<VcpuStateCaps, VmError> {
        let index_list = kvm
            .get_msr_index_list()
            .map_err(ioctl("get MSR index list (KVM_GET_MSR_INDEX_LIST)"))?;
        let xsave2_size = self.fd.check_extension_int(Cap::Xsave2);
        Ok(VcpuStateCaps::new(index_list.as_slice(), xsave2_size))
    }

    /// Route writes of `evt` to interrupt line `gsi`.
    ///
    /// # Errors
    /// [`VmError`] when KVM refuses the irqfd.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(ioctl("register irqfd"))
    }

    /// Signal `evt` when the guest writes `datamatch` (32-bit) at MMIO `addr`, without a vCPU
    /// exit to user space.
    ///
    /// # Errors
    /// [`VmError`] when KVM refuses the ioeventfd.
    pub fn register_mmio_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(ioctl("register ioeventfd"))
    }
}

/// The KVM slot of region `index` of the guest memory.
fn slot_id(index: usize) -> u32 {
    // KVM allows at most 32767 slots, and squib maps a handful of regions.
    u32::try_from(index).expect("fewer than 2^32 memory regions")
}
