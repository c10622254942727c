//! The KVM VM: in-kernel interrupt controller and PIT, guest memory slots, irqfds and
//! ioeventfds.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// Why the VM could not be set up.
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
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

/// A KVM VM with an in-kernel irqchip and PIT.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
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
        Ok(Self { fd })
    }

    /// The VM file descriptor (for creating vCPUs).
    #[must_use]
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Map every region of `mem` into the guest, one KVM slot per region.
    ///
    /// # Errors
    /// [`VmError`] when KVM refuses a slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = u32::try_from(slot).expect("fewer than 2^32 memory regions");
            let region_desc = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the host range [as_ptr, as_ptr + len) is a live mmap owned by `mem`,
            // which the caller keeps alive as long as the VM (the builder stores both in the
            // running VM), and slots do not overlap because guest regions do not.
            unsafe { self.fd.set_user_memory_region(region_desc) }
                .map_err(ioctl("set user memory region"))?;
        }
        Ok(())
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
