//! A vCPU's boot state: general and special registers, the boot GDT/IDT and page tables in
//! guest memory, FPU, boot MSRs and the local APIC's LINT pins.
//!
//! Follows Firecracker (`arch/x86_64/regs.rs`, `msr.rs`, `interrupts.rs`):
//! - Linux 64-bit boot: long mode (EFER LME|LMA, CR0 PE|PG, CR4 PAE, CR3 = [`PML4_START`])
//!   with an identity map of the first 1 GiB in 2 MiB pages, `rip` = entry, `rsp` = `rbp` =
//!   [`BOOT_STACK_POINTER`], `rsi` = [`ZERO_PAGE_START`].
//! - PVH: 32-bit protected mode with paging off (CR0 PE|ET, CR4 0), flat 4 GiB segments,
//!   `rip` = PVH entry, `rbx` = [`PVH_INFO_START`].
//! - Every vCPU: FPU control word 0x37f, MXCSR 0x1f80, the boot MSRs of [`boot_msr_entries`],
//!   LAPIC LINT0 = ExtINT and LINT1 = NMI. Application processors need only these (and CPUID):
//!   the guest starts them through INIT/SIPI on the in-kernel LAPIC.
//!
//! Order: set the vCPU's CPUID before [`setup_boot_vcpu_state`], since KVM refuses EFER.LME
//! for a vCPU whose CPUID lacks long mode. [`setup_lapic`] needs the in-kernel irqchip.
//!
//! The values are computed by pure functions ([`boot_regs`], [`apply_boot_sregs`],
//! [`boot_fpu`], [`boot_msr_entries`], [`set_lint`]) that are tested without `/dev/kvm`.

pub mod gdt;

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::kernel::{BootProtocol, LoadedKernel};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};
use crate::memory::GuestMemoryMmap;
use gdt::{gdt_table, segment_from_gdt, CODE_INDEX, DATA_INDEX, TSS_INDEX};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// rflags with only the always-one bit 1 set.
const RFLAGS_RESERVED: u64 = 0x2;

/// Page-table entry flags: present, writable; and the 2 MiB page-size bit.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PAGE_SIZE: u64 = 0x80;

/// MSR numbers written at boot.
pub mod msr_index {
    /// `IA32_TIME_STAMP_COUNTER`.
    pub const MSR_IA32_TSC: u32 = 0x10;
    /// `IA32_SYSENTER_CS`.
    pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    /// `IA32_SYSENTER_ESP`.
    pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    /// `IA32_SYSENTER_EIP`.
    pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    /// `IA32_MISC_ENABLE`.
    pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    /// `IA32_MTRR_DEF_TYPE`.
    pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    /// `STAR`.
    pub const MSR_STAR: u32 = 0xc000_0081;
    /// `LSTAR`.
    pub const MSR_LSTAR: u32 = 0xc000_0082;
    /// `CSTAR`.
    pub const MSR_CSTAR: u32 = 0xc000_0083;
    /// `SFMASK`.
    pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    /// `KERNEL_GS_BASE`.
    pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
}
use msr_index::*;

/// `IA32_MISC_ENABLE`: fast string operations enabled.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `IA32_MTRR_DEF_TYPE`: MTRRs enabled, default type write-back.
const MTRR_ENABLE: u64 = 0x800;
const MTRR_MEM_TYPE_WB: u64 = 0x6;

/// Local APIC register offsets and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Errors setting a vCPU's boot state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A vCPU ioctl failed.
    #[error("KVM_{ioctl} failed on the vCPU")]
    Ioctl {
        /// Which ioctl (without the `KVM_` prefix).
        ioctl: &'static str,
        /// What KVM said.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM accepted only some of the boot MSRs.
    #[error("KVM set {written} of {expected} boot MSRs; MSR {failed:#x} was refused")]
    MsrsNotAllSet {
        /// MSRs written.
        written: usize,
        /// MSRs requested.
        expected: usize,
        /// The first MSR refused.
        failed: u32,
    },
    /// Building the MSR list failed.
    #[error("cannot build the boot MSR list")]
    MsrList(#[source] vmm_sys_util::fam::Error),
    /// Writing the GDT, IDT or page tables to guest memory failed.
    #[error("cannot write the boot {what} at {addr:#x} to guest memory")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Where.
        addr: u64,
        /// What guest memory said.
        #[source]
        source: GuestMemoryError,
    },
}

/// Wraps a vCPU ioctl error with the ioctl's name.
fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Ioctl { ioctl, source }
}

/// Sets up the boot vCPU to enter `kernel`: GDT/IDT (and page tables for Linux boot) in
/// `mem`, special and general registers, FPU and boot MSRs.
pub fn setup_boot_vcpu_state(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<(), RegsError> {
    setup_fpu_and_msrs(vcpu)?;
    write_gdt_idt(mem, kernel.protocol)?;
    if kernel.protocol == BootProtocol::LinuxBoot {
        write_page_tables(mem)?;
    }
    let mut sregs = vcpu.get_sregs().map_err(ioctl("GET_SREGS"))?;
    apply_boot_sregs(&mut sregs, kernel.protocol);
    vcpu.set_sregs(&sregs).map_err(ioctl("SET_SREGS"))?;
    vcpu.set_regs(&boot_regs(kernel)).map_err(ioctl("SET_REGS"))
}

/// Sets the FPU and the boot MSRs: what every vCPU, boot or not, needs.
pub fn setup_fpu_and_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    vcpu.set_fpu(&boot_fpu()).map_err(ioctl("SET_FPU"))?;
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(RegsError::MsrList)?;
    let written = vcpu.set_msrs(&msrs).map_err(ioctl("SET_MSRS"))?;
    if written != entries.len() {
        return Err(RegsError::MsrsNotAllSet {
            written,
            expected: entries.len(),
            failed: entries.get(written).map_or(0, |e| e.index),
        });
    }
    Ok(())
}

/// Sets the local APIC's LINT0 to ExtINT and LINT1 to NMI (needs the in-kernel irqchip).
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(ioctl("GET_LAPIC"))?;
    set_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(ioctl("SET_LAPIC"))
}

/// General registers at the kernel entry.
pub fn boot_regs(kernel: &LoadedKernel) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: kernel.entry.0,
        ..Default::default()
    };
    match kernel.protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO_START,
        BootProtocol::LinuxBoot => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    regs
}

/// Sets segments, descriptor tables, control registers and EFER in `sregs` for `protocol`,
/// keeping what KVM filled in for the rest (APIC base, ...).
pub fn apply_boot_sregs(sregs: &mut kvm_sregs, protocol: BootProtocol) {
    let table = gdt_table(protocol);
    let code = segment_from_gdt(table[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = segment_from_gdt(table[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = segment_from_gdt(table[usize::from(TSS_INDEX)], TSS_INDEX);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
        }
        BootProtocol::LinuxBoot => {
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
}

/// FPU state at reset: x87 control word 0x37f, MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// The MSRs written on every vCPU: syscall/sysenter MSRs zeroed, TSC 0, fast strings on,
/// MTRRs on with write-back default.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets LVT LINT0 to ExtINT and LVT LINT1 to NMI, keeping their other bits.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let value = lapic_reg(lapic, offset);
        set_lapic_reg(lapic, offset, (value & !0x700) | (mode << 8));
    }
}

/// Reads the 32-bit LAPIC register at `offset` (little-endian bytes of `regs`).
pub fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as std::os::raw::c_char;
    }
}

/// Writes the boot GDT at [`BOOT_GDT_START`] and a null IDT at [`BOOT_IDT_START`].
pub fn write_gdt_idt(mem: &GuestMemoryMmap, protocol: BootProtocol) -> Result<(), RegsError> {
    for (i, entry) in gdt_table(protocol).into_iter().enumerate() {
        write_u64(mem, "GDT", BOOT_GDT_START + 8 * i as u64, entry)?;
    }
    write_u64(mem, "IDT", BOOT_IDT_START, 0)
}

/// Writes identity page tables for the first 1 GiB (512 pages of 2 MiB).
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    write_u64(mem, "PML4", PML4_START, PDPTE_START | PTE_PRESENT_RW)?;
    write_u64(mem, "PDPT", PDPTE_START, PDE_START | PTE_PRESENT_RW)?;
    let pde: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | PDE_PAGE_SIZE | PTE_PRESENT_RW).to_le_bytes())
        .collect();
    mem.write_slice(&pde, GuestAddress(PDE_START))
        .map_err(|source| RegsError::Write {
            what: "page directory",
            addr: PDE_START,
            source,
        })
}

fn write_u64(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    val: u64,
) -> Result<(), RegsError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| RegsError::Write { what, addr, source })
}

#[cfg(test)]
mod tests;
