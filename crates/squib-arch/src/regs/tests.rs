//! Unit tests for the boot register values and the structures written to guest memory.

use kvm_bindings::kvm_sregs;

use super::*;

fn kernel(protocol: BootProtocol) -> LoadedKernel {
    LoadedKernel {
        entry: GuestAddress(0x100_0000),
        protocol,
        setup_header: None,
        kernel_end: GuestAddress(0x200_0000),
    }
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

#[test]
fn linux_boot_regs_point_at_zero_page_and_stack() {
    let regs = boot_regs(&kernel(BootProtocol::LinuxBoot));
    assert_eq!(regs.rip, 0x100_0000);
    assert_eq!((regs.rsp, regs.rbp), (0x8ff0, 0x8ff0));
    assert_eq!(regs.rsi, 0x7000);
    assert_eq!((regs.rflags, regs.rbx), (2, 0));
}

#[test]
fn pvh_regs_point_rbx_at_start_info() {
    let regs = boot_regs(&kernel(BootProtocol::Pvh));
    assert_eq!((regs.rip, regs.rbx, regs.rflags), (0x100_0000, 0x6000, 2));
    assert_eq!(regs.rsi, 0);
}

#[test]
fn linux_boot_sregs_enter_long_mode_with_paging() {
    let mut sregs = kvm_sregs::default();
    apply_boot_sregs(&mut sregs, BootProtocol::LinuxBoot);
    assert_eq!(sregs.cr3, 0x9000);
    assert_eq!(
        sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
        X86_CR0_PE | X86_CR0_PG
    );
    assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
    assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 31));
    assert_eq!((sregs.idt.base, sregs.idt.limit), (0x520, 7));
    assert_eq!((sregs.cs.selector, sregs.cs.l), (8, 1));
    assert_eq!(
        (sregs.ss.selector, sregs.ds.selector, sregs.tr.selector),
        (0x10, 0x10, 0x18)
    );
}

#[test]
fn pvh_sregs_are_protected_mode_without_paging() {
    let mut sregs = kvm_sregs {
        cr4: X86_CR4_PAE,
        ..Default::default()
    };
    apply_boot_sregs(&mut sregs, BootProtocol::Pvh);
    assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
    assert_eq!(sregs.cr4, 0);
    assert_eq!(sregs.efer & EFER_LME, 0);
    assert_eq!(
        (sregs.cs.l, sregs.cs.db, sregs.cs.limit),
        (0, 1, 0xffff_ffff)
    );
}

#[test]
fn fpu_and_msrs_have_firecracker_values() {
    let fpu = boot_fpu();
    assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
    let msrs = boot_msr_entries();
    assert_eq!(msrs.len(), 11);
    let get = |index| msrs.iter().find(|e| e.index == index).unwrap().data;
    assert_eq!(get(MSR_IA32_MISC_ENABLE), 1);
    assert_eq!(get(MSR_MTRR_DEF_TYPE), 0x806);
    assert_eq!(get(MSR_LSTAR), 0);
    assert_eq!(get(MSR_IA32_TSC), 0);
}

#[test]
fn lint0_becomes_extint_and_lint1_nmi_keeping_other_bits() {
    let mut lapic = kvm_lapic_state::default();
    set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000); // masked
    set_lapic_reg(&mut lapic, APIC_LVT1, 0x0000_0400 | 0x0001_0000);
    set_lint(&mut lapic);
    assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
    assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x0001_0400);
}

#[test]
fn gdt_idt_and_page_tables_are_written_where_the_sregs_point() {
    let mem = mem();
    write_gdt_idt(&mem, BootProtocol::LinuxBoot).unwrap();
    write_page_tables(&mem).unwrap();
    let gdt = gdt_table(BootProtocol::LinuxBoot);
    for (i, entry) in gdt.iter().enumerate() {
        let got: u64 = mem.read_obj(GuestAddress(0x500 + 8 * i as u64)).unwrap();
        assert_eq!(got, *entry);
    }
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0x520)).unwrap(), 0);
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0x9000)).unwrap(), 0xa003);
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0xa000)).unwrap(), 0xb003);
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0xb000)).unwrap(), 0x83);
    let last: u64 = mem.read_obj(GuestAddress(0xb000 + 511 * 8)).unwrap();
    assert_eq!(last, (511 << 21) | 0x83);
}

#[test]
fn writes_outside_guest_memory_name_the_structure() {
    let tiny = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let err = write_page_tables(&tiny).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot write the boot PML4 at 0x9000 to guest memory"
    );
}
