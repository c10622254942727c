//! A tiny guest on the real `/dev/kvm` for the state tests: a VM with 4 MiB of memory and a
//! boot vCPU configured as the builder configures a Linux guest's (CPUID, FPU, boot MSRs,
//! LAPIC, 64-bit long mode), running a counting loop at [`CODE_ADDR`].
//!
//! The loop increments `rbx`, stores `ebx` at [`DATA_ADDR`] and writes `eax = ebx` to port
//! [`COUNTER_PORT`], so every `KVM_EXIT_IO` shows the counter.
//! Without `/dev/kvm` the tests fail: they are meant to run on a KVM host.

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use squib_arch::cpuid::{host_is_kvm_pvm, setup_cpuid, CpuidConfig};
use squib_arch::kernel::{BootProtocol, LoadedKernel};
use squib_arch::memory::{create_guest_memory, GuestMemoryMmap};
use squib_arch::regs::{setup_boot_vcpu_state, setup_fpu_and_msrs, setup_lapic};
use vm_memory::{Bytes, GuestAddress};

use super::msrs::{write_msrs, MsrEntry};
use super::vcpu_state::VcpuStateCaps;
use super::vm::Vm;

/// Where the loop starts.
pub const CODE_ADDR: u64 = 0x10_0000;
/// The page the loop writes the counter to.
pub const DATA_ADDR: u64 = 0x30_0000;
/// Where KVM keeps the guest's kvmclock (`pvclock_vcpu_time_info`) once it is enabled.
pub const KVMCLOCK_ADDR: u64 = 0x20_0000;
/// The byte of `flags` in `pvclock_vcpu_time_info`, and its "guest stopped" bit.
const PVCLOCK_FLAGS_OFFSET: u64 = 29;
const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;
/// `MSR_KVM_SYSTEM_TIME_NEW`: the kvmclock address, with bit 0 to enable it.
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// The port the loop writes the counter to.
pub const COUNTER_PORT: u16 = 0x10;
const MEM_MIB: usize = 4;

/// `loop: inc rbx; mov [DATA_ADDR], ebx; mov eax, ebx; out COUNTER_PORT, eax; jmp loop`.
const COUNTER_LOOP: [u8; 16] = [
    0x48, 0xff, 0xc3, // inc rbx
    0x89, 0x1c, 0x25, 0x00, 0x00, 0x30, 0x00, // mov [0x300000], ebx
    0x89, 0xd8, // mov eax, ebx
    0xe7, 0x10, // out 0x10, eax
    0xeb, 0xf0, // jmp -16
];

/// A VM with the counting loop in its memory, and what saving its vCPUs needs.
pub struct TestVm {
    pub kvm: Kvm,
    pub vm: Vm,
    pub mem: GuestMemoryMmap,
    pub caps: VcpuStateCaps,
}

/// A new VM whose memory holds the loop, registered with or without dirty-page tracking.
pub fn test_vm(track_dirty_pages: bool) -> TestVm {
    let mem = create_guest_memory(MEM_MIB).unwrap();
    mem.write_slice(&COUNTER_LOOP, GuestAddress(CODE_ADDR))
        .unwrap();
    vm_with_memory(mem, track_dirty_pages)
}

/// A new VM over `mem` (a copy of another VM's memory, for a restore).
pub fn vm_with_memory(mem: GuestMemoryMmap, track_dirty_pages: bool) -> TestVm {
    let kvm = Kvm::new().expect("these tests need /dev/kvm");
    let vm = Vm::new(&kvm).unwrap();
    vm.register_memory(&mem, track_dirty_pages).unwrap();
    let caps = vm.vcpu_state_caps(&kvm).unwrap();
    TestVm { kvm, vm, mem, caps }
}

/// A copy of `mem`'s contents in new memory of the same layout.
pub fn copy_memory(mem: &GuestMemoryMmap) -> GuestMemoryMmap {
    let copy = create_guest_memory(MEM_MIB).unwrap();
    let mut buf = vec![0u8; MEM_MIB << 20];
    mem.read_slice(&mut buf, GuestAddress(0)).unwrap();
    copy.write_slice(&buf, GuestAddress(0)).unwrap();
    copy
}

impl TestVm {
    /// vCPU 0 set up as the builder sets up a boot vCPU, entering the loop in long mode.
    pub fn boot_vcpu(&self) -> VcpuFd {
        let fd = self.vm.fd().create_vcpu(0).unwrap();
        let cfg = CpuidConfig {
            vcpu_index: 0,
            vcpu_count: 1,
            smt: false,
            hide_pvm_unsupported: host_is_kvm_pvm(),
        };
        setup_cpuid(&self.kvm, &fd, &cfg).unwrap();
        setup_fpu_and_msrs(&fd).unwrap();
        setup_lapic(&fd).unwrap();
        let entry = LoadedKernel {
            entry: GuestAddress(CODE_ADDR),
            protocol: BootProtocol::LinuxBoot,
            setup_header: None,
            kernel_end: GuestAddress(CODE_ADDR + COUNTER_LOOP.len() as u64),
        };
        setup_boot_vcpu_state(&fd, &self.mem, &entry).unwrap();
        fd
    }

    /// vCPU 0 as KVM creates it, for a restore.
    pub fn blank_vcpu(&self) -> VcpuFd {
        self.vm.fd().create_vcpu(0).unwrap()
    }

    /// The counter the loop last stored in memory.
    pub fn stored_counter(&self) -> u32 {
        self.mem.read_obj(GuestAddress(DATA_ADDR)).unwrap()
    }
}

/// Enable kvmclock at [`KVMCLOCK_ADDR`] for the vCPU, as a guest kernel would.
pub fn enable_kvmclock(fd: &VcpuFd) {
    let enable = MsrEntry {
        index: MSR_KVM_SYSTEM_TIME_NEW,
        data: KVMCLOCK_ADDR | 1,
    };
    write_msrs(fd, &[enable]).unwrap();
}

/// Whether the guest's kvmclock says the host stopped it (`KVM_KVMCLOCK_CTRL`).
pub fn guest_was_told_it_stopped(vm: &TestVm) -> bool {
    let flags: u8 = vm
        .mem
        .read_obj(GuestAddress(KVMCLOCK_ADDR + PVCLOCK_FLAGS_OFFSET))
        .unwrap();
    flags & PVCLOCK_GUEST_STOPPED != 0
}

/// Run the vCPU to its next counter write and return the counter.
pub fn next_count(fd: &mut VcpuFd) -> u32 {
    match fd.run().unwrap() {
        VcpuExit::IoOut(COUNTER_PORT, data) => u32::from_le_bytes(data.try_into().unwrap()),
        other => panic!("the counting loop exited with {other:?}"),
    }
}
