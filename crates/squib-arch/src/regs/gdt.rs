//! The boot GDT and the KVM segment descriptors derived from it.
//!
//! A 64-bit GDT entry packs base, limit and access flags in a fixed bit layout (Intel SDM
//! vol. 3 §3.4.5); KVM wants the same segment unpacked into a `kvm_segment`. Both sides are
//! computed here from one table so that what the guest sees in memory at [`BOOT_GDT_START`]
//! and what is loaded into the hidden segment registers always agree.
//!
//! The tables are Firecracker's: null, code, data, TSS. Linux boot uses a 64-bit code segment
//! (`L` set); PVH uses flat 4 GiB 32-bit code and data segments.
//!
//! [`BOOT_GDT_START`]: crate::layout::BOOT_GDT_START

use kvm_bindings::kvm_segment;

use crate::kernel::BootProtocol;
use crate::layout::BOOT_GDT_MAX;

/// Index of the code segment in the boot GDT.
pub const CODE_INDEX: u8 = 1;
/// Index of the data segment in the boot GDT.
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS in the boot GDT.
pub const TSS_INDEX: u8 = 3;

/// Packs a GDT entry from its access/flags word (`0xFA0T`: flags nibble, access byte), its base
/// and its 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | (((flags as u64) & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The four boot GDT entries for `protocol`.
pub const fn gdt_table(protocol: BootProtocol) -> [u64; BOOT_GDT_MAX] {
    match protocol {
        BootProtocol::LinuxBoot => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code, execute/read, accessed
            gdt_entry(0xc093, 0, 0xfffff), // 32-bit data, read/write, accessed, 4 KiB pages
            gdt_entry(0x808b, 0, 0xfffff), // busy 64-bit TSS
        ],
        BootProtocol::Pvh => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xc09b, 0, 0xffff_ffff), // flat 4 GiB 32-bit code
            gdt_entry(0xc093, 0, 0xffff_ffff), // flat 4 GiB data
            gdt_entry(0x008b, 0, 0x67),        // busy 32-bit TSS, 104 bytes
        ],
    }
}

/// The `kvm_segment` a selector for GDT slot `index` holding `entry` loads.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let present = bit(47);
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The byte-granular limit of a GDT entry (scaled by 4 KiB when `G` is set).
fn limit(entry: u64) -> u32 {
    let raw = (((entry >> 32) & 0x000f_0000) | (entry & 0x0000_ffff)) as u32;
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_boot_code_segment_is_64bit_flat() {
        let table = gdt_table(BootProtocol::LinuxBoot);
        assert_eq!(table[0], 0);
        assert_eq!(table[1], 0x00af_9b00_0000_ffff);
        let cs = segment_from_gdt(table[1], CODE_INDEX);
        assert_eq!((cs.selector, cs.type_, cs.l, cs.db), (8, 0xb, 1, 0));
        assert_eq!(
            (cs.present, cs.s, cs.dpl, cs.g, cs.unusable),
            (1, 1, 0, 1, 0)
        );
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
    }

    #[test]
    fn data_and_tss_segments_decode_like_the_table_says() {
        let table = gdt_table(BootProtocol::LinuxBoot);
        let ds = segment_from_gdt(table[2], DATA_INDEX);
        assert_eq!(
            (ds.selector, ds.type_, ds.db, ds.l, ds.s),
            (0x10, 3, 1, 0, 1)
        );
        let tr = segment_from_gdt(table[3], TSS_INDEX);
        assert_eq!((tr.selector, tr.type_, tr.s, tr.present), (0x18, 0xb, 0, 1));
    }

    #[test]
    fn pvh_segments_are_flat_32bit() {
        let table = gdt_table(BootProtocol::Pvh);
        assert_eq!(table[1], 0x00cf_9b00_0000_ffff);
        let cs = segment_from_gdt(table[1], CODE_INDEX);
        assert_eq!((cs.l, cs.db, cs.limit), (0, 1, 0xffff_ffff));
        let tr = segment_from_gdt(table[3], TSS_INDEX);
        assert_eq!((tr.limit, tr.g, tr.type_), (0x67, 0, 0xb));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let entry = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let seg = segment_from_gdt(entry, 5);
        assert_eq!(
            (seg.base, seg.limit, seg.selector),
            (0x1234_5678, 0xabcde, 40)
        );
    }

    #[test]
    fn null_entry_is_unusable() {
        let seg = segment_from_gdt(0, 0);
        assert_eq!((seg.present, seg.unusable), (0, 1));
    }
}
