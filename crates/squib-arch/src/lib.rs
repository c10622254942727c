//! x86_64 boot for squib: everything that turns an empty KVM VM into one a Linux kernel can
//! start in, following Firecracker's layout (see `docs/architecture.md`).
//!
//! - [`layout`]: guest-physical addresses of everything squib places in the guest.
//! - [`memory`]: guest RAM regions around the MMIO hole, and creating the guest memory.
//! - [`kernel`]: loading ELF (PVH or 64-bit Linux boot) and bzImage kernels, and the initrd.
//! - [`boot`]: the command line, zero page (Linux boot) or PVH start info, and the E820 map.
//! - [`regs`]: a vCPU's boot registers, segments, page tables, FPU, MSRs and LAPIC.
//! - [`cpu_template`]: CPU templates (custom and Firecracker's static ones): CPUID and MSR
//!   changes applied before the CPUID normalisation and the boot MSRs.
//! - [`cpuid`]: CPUID normalisation for the guest topology, and hiding what the host can't run.
//! - [`mptable`]: the MP table for kernels that do not read ACPI.
//! - [`acpi`]: RSDP, XSDT, FADT, MADT and DSDT.
#![warn(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod cpu_template;
pub mod cpuid;
pub mod kernel;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod regs;
