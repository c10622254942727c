//! Guest-physical addresses of everything squib places in an x86_64 guest.
//!
//! One table of constants so that the loaders, the boot structures, the MP and ACPI tables,
//! the device manager and the E820 map agree. The values are Firecracker's
//! (`src/vmm/src/arch/x86_64/layout.rs`), so that a guest sees
//! the same machine under squib as under Firecracker:
//!
//! ```text
//! 0x500 GDT, 0x520 IDT, 0x6000 PVH start info, 0x6040 modlist, 0x7000 zero page / memmap,
//! 0x8ff0 boot stack, 0x9000/0xa000/0xb000 page tables, 0x20000 command line,
//! [0x9fc00, 0xe0000) system memory (E820 reserved): MP table + ACPI tables from the bottom,
//!   0xdeff0 VMGenID (16 bytes), 0xdf000 VMClock page; 0xe0000 RSDP,
//! 1 MiB kernel, [3 GiB, 4 GiB) MMIO hole, RAM resumes at 4 GiB.
//! ```
//!
//! Invariants checked at compile time below: the boot structures do not overlap each other,
//! and everything below 1 MiB stays below [`SYSTEM_MEM_START`] except the system-memory area.

/// Start of high memory: the lowest address a kernel is loaded at, and where E820 RAM resumes.
pub const HIMEM_START: u64 = 0x10_0000;

/// The boot GDT (4 entries of 8 bytes).
pub const BOOT_GDT_START: u64 = 0x500;
/// Number of entries in the boot GDT (null, code, data, TSS).
pub const BOOT_GDT_MAX: usize = 4;
/// The boot IDT (a single null entry).
pub const BOOT_IDT_START: u64 = 0x520;

/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd), right after the start info.
pub const MODLIST_START: u64 = 0x6040;
/// Linux boot zero page (`boot_params`), or the PVH memory map table.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// PVH memory map table (shares the zero page's slot: a guest uses one protocol).
pub const MEMMAP_START: u64 = ZERO_PAGE_START;

/// Initial stack pointer (rsp = rbp) of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Identity page tables for Linux 64-bit boot: PML4, one PDPT, one PD (1 GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory.
pub const PDE_START: u64 = 0xb000;

/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Start of the EBDA: the last KiB of base memory ("system memory" starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the reserved system-memory area: MP table then ACPI tables.
pub const SYSTEM_MEM_START: u64 = EBDA_START;
/// Size of the system-memory area (up to the RSDP at 0xe0000).
pub const SYSTEM_MEM_SIZE: u64 = RSDP_ADDR - SYSTEM_MEM_START;
/// Where the ACPI RSDP sits (the BIOS read-only area Linux scans).
pub const RSDP_ADDR: u64 = 0xe0000;

/// Size of the VMClock structure's area: one whole page, so that a guest can map it into user
/// space without exposing anything else.
pub const VMCLOCK_SIZE: u64 = PAGE_SIZE;
/// The VMClock page: the last page of system memory (where Firecracker puts it too). Being
/// inside the E820-reserved system memory, the guest kernel never uses it as RAM.
pub const VMCLOCK_ADDR: u64 = RSDP_ADDR - VMCLOCK_SIZE;
/// Size of the VM generation ID: 128 bits.
pub const VMGENID_SIZE: u64 = 16;
/// The VM generation ID, right below the VMClock page (outside it, so that mapping the VMClock
/// page into guest user space never reveals the ID the guest kernel seeds its RNG with).
pub const VMGENID_ADDR: u64 = VMCLOCK_ADDR - VMGENID_SIZE;
/// End of the room the MP and ACPI tables may use: VMGenID and VMClock own the rest of system
/// memory.
pub const SYSTEM_TABLES_END: u64 = VMGENID_ADDR;

/// Start of the 32-bit MMIO hole (3 GiB): no RAM between here and 4 GiB.
pub const MMIO32_START: u64 = 0xC000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO32_SIZE: u64 = 1 << 30;
/// Where RAM that does not fit below the hole continues (4 GiB).
pub const RAM_64BIT_START: u64 = MMIO32_START + MMIO32_SIZE;

/// The boot timer device (4 KiB, no IRQ).
pub const BOOT_TIMER_ADDR: u64 = MMIO32_START;
/// Size of the boot timer's window.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// First virtio-mmio slot.
pub const VIRTIO_MMIO_START: u64 = 0xC000_1000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;

/// GSI of COM1.
pub const IRQ_SERIAL: u32 = 4;
/// GSI of the i8042 keyboard controller.
pub const IRQ_I8042: u32 = 1;
/// GSI of the first virtio-mmio device; each next device takes the next GSI.
pub const FIRST_VIRTIO_GSI: u32 = 5;
/// Last GSI the I/O APIC has (24 pins).
pub const LAST_GSI: u32 = 23;
/// GSI of the ACPI Generic Event Device that tells the guest to re-read VMGenID and VMClock.
/// The virtio devices own 5..=23, COM1 4, the i8042 1, the PIT 0 and the PIC cascade 2, so
/// the one ISA line nothing else drives is 3 (COM2's, and squib has no COM2). Like every
/// squib interrupt it is edge-triggered, active high.
pub const ACPI_GED_GSI: u32 = 3;

/// I/O APIC MMIO base.
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// Local APIC MMIO base.
pub const APIC_ADDR: u64 = 0xFEE0_0000;

/// Where KVM places the three-page TSS it needs (`KVM_SET_TSS_ADDR`), inside the MMIO hole.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Page size of the guest.
pub const PAGE_SIZE: u64 = 0x1000;

// The boot structures must not overlap one another.
const _: () = assert!(BOOT_GDT_START + (BOOT_GDT_MAX as u64) * 8 <= BOOT_IDT_START);
const _: () = assert!(BOOT_IDT_START + 8 <= PVH_INFO_START);
const _: () = assert!(PVH_INFO_START + 0x38 <= MODLIST_START);
const _: () = assert!(MODLIST_START + 0x20 <= ZERO_PAGE_START);
const _: () = assert!(ZERO_PAGE_START + PAGE_SIZE <= BOOT_STACK_POINTER);
const _: () = assert!(BOOT_STACK_POINTER < PML4_START);
const _: () = assert!(PDE_START + PAGE_SIZE <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= SYSTEM_MEM_START);
const _: () = assert!(RSDP_ADDR < HIMEM_START);
const _: () = assert!(VIRTIO_MMIO_START == BOOT_TIMER_ADDR + BOOT_TIMER_SIZE);
const _: () = assert!(IRQ_SERIAL < FIRST_VIRTIO_GSI && IRQ_I8042 < FIRST_VIRTIO_GSI);
// The GED's line is below the virtio range and is none of COM1, the i8042, the PIT (0) or
// the cascade (2).
const _: () = assert!(ACPI_GED_GSI < FIRST_VIRTIO_GSI);
const _: () = assert!(ACPI_GED_GSI != IRQ_SERIAL && ACPI_GED_GSI != IRQ_I8042);
const _: () = assert!(ACPI_GED_GSI != 0 && ACPI_GED_GSI != 2);
// VMClock is a whole aligned page, VMGenID sits below it, both inside system memory.
const _: () = assert!(VMCLOCK_ADDR % PAGE_SIZE == 0 && VMCLOCK_ADDR + VMCLOCK_SIZE <= RSDP_ADDR);
const _: () = assert!(VMGENID_ADDR + VMGENID_SIZE <= VMCLOCK_ADDR);
const _: () = assert!(VMGENID_ADDR % 8 == 0 && SYSTEM_TABLES_END > SYSTEM_MEM_START);
const _: () = assert!(KVM_TSS_ADDRESS > MMIO32_START && KVM_TSS_ADDRESS < RAM_64BIT_START);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_addresses_are_pinned() {
        assert_eq!(HIMEM_START, 1 << 20);
        assert_eq!(SYSTEM_MEM_START + SYSTEM_MEM_SIZE, 0xe0000);
        assert_eq!(SYSTEM_MEM_SIZE, 0x40400);
        assert_eq!(MMIO32_START + MMIO32_SIZE, 1 << 32);
        assert_eq!(
            (PML4_START, PDPTE_START, PDE_START),
            (0x9000, 0xa000, 0xb000)
        );
    }

    #[test]
    fn virtio_gsis_fit_the_ioapic() {
        let slots = LAST_GSI - FIRST_VIRTIO_GSI + 1;
        assert_eq!(slots, 19);
        assert!(VIRTIO_MMIO_START + u64::from(slots) * VIRTIO_MMIO_SLOT_SIZE < IOAPIC_ADDR);
    }

    #[test]
    fn clone_safety_devices_take_the_top_of_system_memory_and_gsi_3() {
        assert_eq!(VMCLOCK_ADDR, 0xdf000);
        assert_eq!(VMGENID_ADDR, 0xdeff0);
        assert_eq!(SYSTEM_TABLES_END, VMGENID_ADDR);
        assert_eq!(ACPI_GED_GSI, 3);
        let virtio = FIRST_VIRTIO_GSI..=LAST_GSI;
        assert!(!virtio.contains(&ACPI_GED_GSI));
    }
}
