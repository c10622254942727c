//! KVM state: the VM file descriptor with its memory, interrupt controller and eventfd
//! routes ([`vm`]), and the vCPU threads that run the guest ([`vcpu`]).

pub mod vcpu;
pub mod vm;
