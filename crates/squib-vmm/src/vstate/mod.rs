//! KVM state: the VM file descriptor with its memory, interrupt controller and eventfd
//! routes ([`vm`]), the vCPU threads that run the guest ([`vcpu`]), and the snapshot state of
//! both: [`vm_state`] for the VM's in-kernel devices and clock, [`vcpu_state`] (with the MSR
//! selection of [`msrs`]) for each vCPU.

pub mod msrs;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;

#[cfg(test)]
pub(crate) mod test_guest;
