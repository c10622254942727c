//! Applies the boot vCPU state to real KVM vCPUs and reads it back: CPUID, registers,
//! segments, FPU, MSRs and the LAPIC, for both boot protocols. Needs `/dev/kvm`.

use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use squib_arch::cpuid::{host_is_kvm_pvm, setup_cpuid, CpuidConfig};
use squib_arch::kernel::{BootProtocol, LoadedKernel};
use squib_arch::layout::KVM_TSS_ADDRESS;
use squib_arch::memory::create_guest_memory;
use squib_arch::regs::msr_index::{MSR_IA32_MISC_ENABLE, MSR_MTRR_DEF_TYPE};
use squib_arch::regs::{lapic_reg, setup_boot_vcpu_state, setup_lapic};
use vm_memory::GuestAddress;

/// A VM with the in-kernel irqchip, or `None` when this machine has no KVM.
fn vm() -> Option<(Kvm, VmFd)> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return None;
    }
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.set_tss_address(KVM_TSS_ADDRESS as usize).unwrap();
    vm.create_irq_chip().unwrap();
    Some((kvm, vm))
}

fn kernel(protocol: BootProtocol) -> LoadedKernel {
    LoadedKernel {
        entry: GuestAddress(0x100_0000),
        protocol,
        setup_header: None,
        kernel_end: GuestAddress(0x200_0000),
    }
}

fn vcpu_with_cpuid(kvm: &Kvm, vm: &VmFd, index: u8, count: u8) -> VcpuFd {
    let vcpu = vm.create_vcpu(u64::from(index)).unwrap();
    let cfg = CpuidConfig {
        vcpu_index: index,
        vcpu_count: count,
        smt: false,
        hide_pvm_unsupported: host_is_kvm_pvm(),
    };
    setup_cpuid(kvm, &vcpu, &cfg).unwrap();
    vcpu
}

fn read_msr(vcpu: &VcpuFd, index: u32) -> u64 {
    let entry = kvm_msr_entry {
        index,
        ..Default::default()
    };
    let mut msrs = Msrs::from_entries(&[entry]).unwrap();
    assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 1);
    msrs.as_slice()[0].data
}

#[test]
fn linux_boot_state_reads_back_from_kvm() {
    let Some((kvm, vm)) = vm() else { return };
    let mem = create_guest_memory(64).unwrap();
    let vcpu = vcpu_with_cpuid(&kvm, &vm, 0, 2);
    setup_boot_vcpu_state(&vcpu, &mem, &kernel(BootProtocol::LinuxBoot)).unwrap();
    setup_lapic(&vcpu).unwrap();

    let regs = vcpu.get_regs().unwrap();
    assert_eq!(
        (regs.rip, regs.rsi, regs.rsp, regs.rflags),
        (0x100_0000, 0x7000, 0x8ff0, 2)
    );
    let sregs = vcpu.get_sregs().unwrap();
    assert_eq!(sregs.cr3, 0x9000);
    assert_ne!(sregs.efer & (1 << 10), 0, "long mode active");
    assert_eq!((sregs.cs.selector, sregs.cs.l), (8, 1));
    assert_eq!((sregs.gdt.base, sregs.idt.base), (0x500, 0x520));
    let fpu = vcpu.get_fpu().unwrap();
    assert_eq!(fpu.fcw, 0x37f);
    // kvm_pvm reports MXCSR as 0 whatever was set; real KVM round-trips it.
    if !host_is_kvm_pvm() {
        assert_eq!(fpu.mxcsr, 0x1f80);
    }
    assert_eq!(read_msr(&vcpu, MSR_IA32_MISC_ENABLE) & 1, 1);
    assert_eq!(read_msr(&vcpu, MSR_MTRR_DEF_TYPE), 0x806);
    let lapic = vcpu.get_lapic().unwrap();
    assert_eq!((lapic_reg(&lapic, 0x350) >> 8) & 7, 7, "LINT0 ExtINT");
    assert_eq!((lapic_reg(&lapic, 0x360) >> 8) & 7, 4, "LINT1 NMI");
}

#[test]
fn pvh_state_and_normalised_cpuid_read_back_from_kvm() {
    let Some((kvm, vm)) = vm() else { return };
    let mem = create_guest_memory(64).unwrap();
    let _boot = vcpu_with_cpuid(&kvm, &vm, 0, 2);
    let vcpu = vcpu_with_cpuid(&kvm, &vm, 1, 2);
    setup_boot_vcpu_state(&vcpu, &mem, &kernel(BootProtocol::Pvh)).unwrap();

    let regs = vcpu.get_regs().unwrap();
    assert_eq!((regs.rip, regs.rbx), (0x100_0000, 0x6000));
    let sregs = vcpu.get_sregs().unwrap();
    assert_eq!(sregs.cr0 & 0x8000_0011, 0x11, "PE|ET, paging off");
    assert_eq!(sregs.cr4, 0);
    assert_eq!((sregs.cs.db, sregs.cs.l), (1, 0));

    let cpuid = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
    let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
    assert_eq!(leaf1.ebx >> 24, 1, "initial APIC id");
    assert_eq!((leaf1.ebx >> 16) & 0xff, 2, "logical processor count");
    assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
    // Not checked: the hidden features. kvm_pvm answers KVM_GET_CPUID2 with the host's
    // native leaf 1 ECX/EDX and leaf 7 whatever was set (see `cpuid::pvm`).
}
