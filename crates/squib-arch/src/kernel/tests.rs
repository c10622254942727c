//! Unit tests for kernel and initrd loading, on hand-built ELF and bzImage images.

use std::io::Cursor;

use vm_memory::Bytes;

use super::test_images::{bzimage, elf_image};
use super::*;

const MIB: usize = 1 << 20;

fn mem(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

#[test]
fn elf_without_pvh_note_boots_64bit_at_its_entry() {
    let mem = mem(16 * MIB);
    let img = elf_image(&[0xf4; 0x100], 0x3000, None);
    let k = load_kernel(&mem, &mut Cursor::new(img)).unwrap();
    assert_eq!(k.protocol, BootProtocol::LinuxBoot);
    assert_eq!(k.entry, GuestAddress(0x20_0040));
    assert_eq!(k.kernel_end, GuestAddress(0x20_3000));
    assert!(k.setup_header.is_none());
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x20_00ff)).unwrap(), 0xf4);
}

#[test]
fn elf_with_pvh_note_boots_pvh_at_the_note_entry() {
    let mem = mem(16 * MIB);
    let img = elf_image(&[0x90; 0x40], 0x40, Some(0x20_0010));
    let k = load_kernel(&mem, &mut Cursor::new(img)).unwrap();
    assert_eq!(k.protocol, BootProtocol::Pvh);
    assert_eq!(k.entry, GuestAddress(0x20_0010));
}

#[test]
fn bzimage_enters_at_load_address_plus_0x200_with_its_header() {
    let mem = mem(16 * MIB);
    let img = bzimage(0x020f, XLF_KERNEL_64, &[0xab; 0x800]);
    let k = load_kernel(&mem, &mut Cursor::new(img)).unwrap();
    assert_eq!(k.protocol, BootProtocol::LinuxBoot);
    assert_eq!(k.entry, GuestAddress(0x10_0200));
    let hdr = k.setup_header.unwrap();
    assert_eq!({ hdr.code32_start }, 0x10_0000);
    assert_eq!({ hdr.kernel_alignment }, 0x20_0000);
    // init_size (4 MiB) dominates the 2 KiB payload.
    assert_eq!(k.kernel_end, GuestAddress(0x50_0000));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_07ff)).unwrap(), 0xab);
}

#[test]
fn old_or_32bit_only_bzimage_is_refused() {
    let mem = mem(16 * MIB);
    let old = bzimage(0x020a, XLF_KERNEL_64, &[0; 16]);
    let err = load_kernel(&mem, &mut Cursor::new(old)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bzImage boot protocol 0x020a is older than the 2.12 squib needs"
    );
    let no64 = bzimage(0x020f, 0, &[0; 16]);
    assert!(matches!(
        load_kernel(&mem, &mut Cursor::new(no64)),
        Err(KernelError::BzImageNot64Bit)
    ));
}

#[test]
fn garbage_and_empty_images_are_not_kernels() {
    let mem = mem(16 * MIB);
    for img in [vec![0x55u8; 4096], Vec::new(), b"#!/bin/sh\n".to_vec()] {
        let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the kernel image is not an ELF or bzImage kernel"
        );
    }
}

#[test]
fn truncated_elf_is_an_elf_error() {
    let mem = mem(16 * MIB);
    let mut img = elf_image(&[0x90; 0x100], 0x100, None);
    img.truncate(0x1010);
    assert!(matches!(
        load_kernel(&mem, &mut Cursor::new(img)),
        Err(KernelError::Elf(_))
    ));
}

#[test]
fn kernel_larger_than_memory_is_refused_by_size() {
    let mem = mem(4 * MIB);
    // The file fits, its bss does not.
    let img = elf_image(&[0x90; 0x100], 8 << 20, None);
    let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
    assert!(matches!(err, KernelError::KernelTooLarge { .. }), "{err:?}");
    // The file itself does not fit.
    let img = bzimage(0x020f, XLF_KERNEL_64, &vec![0; 4 * MIB]);
    let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel of 4195328 bytes does not fit the 3145728 bytes of guest memory above 1 MiB"
    );
}

#[test]
fn elf_is_measured_by_its_segments_not_its_file_size() {
    let mem = mem(4 * MIB);
    // 4 MiB of debug sections after a small segment: the file is larger than the guest.
    let mut img = elf_image(&[0x90; 0x100], 0x1000, None);
    img.resize(img.len() + 4 * MIB, 0);
    let k = load_kernel(&mem, &mut Cursor::new(img)).unwrap();
    assert_eq!(k.kernel_end, GuestAddress(0x20_1000));
}

#[test]
fn elf_segments_past_memory_are_refused_by_size_before_copying() {
    let mem = mem(4 * MIB);
    let img = elf_image(&vec![0x90; 3 * MIB], 3 << 20, None);
    let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel of 4194304 bytes does not fit the 3145728 bytes of guest memory above 1 MiB"
    );
}

#[test]
fn initrd_goes_page_aligned_at_the_top_of_low_ram() {
    let mem = mem(16 * MIB);
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let cfg = load_initrd(&mem, &mut Cursor::new(data.clone())).unwrap();
    assert_eq!(cfg.size, 5000);
    assert_eq!(cfg.address, GuestAddress((16 << 20) - 0x2000));
    let mut back = vec![0u8; 5000];
    mem.read_slice(&mut back, cfg.address).unwrap();
    assert_eq!(back, data);
}

#[test]
fn initrd_stays_below_the_mmio_hole() {
    let regions = crate::memory::arch_memory_regions((3 << 30) + MIB);
    // Only map a little of each region's start to keep the test cheap: the low region must
    // still end at 3 GiB for the placement to be checked.
    let mem = GuestMemoryMmap::from_ranges(&regions).unwrap();
    let cfg = load_initrd(&mem, &mut Cursor::new(vec![1u8; 100])).unwrap();
    assert_eq!(cfg.address, GuestAddress(MMIO32_START - PAGE_SIZE));
}

#[test]
fn initrd_too_large_or_empty_is_refused() {
    let mem = mem(4 * MIB);
    let err = load_initrd(&mem, &mut Cursor::new(vec![0u8; 4 * MIB])).unwrap_err();
    assert!(matches!(err, KernelError::InitrdTooLarge { .. }), "{err:?}");
    let err = load_initrd_above(
        &mem,
        &mut Cursor::new(vec![0u8; 2 * MIB]),
        GuestAddress(0x30_0000),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "initrd of 2097152 bytes does not fit the 1048576 bytes of guest memory available to it"
    );
    assert!(matches!(
        load_initrd(&mem, &mut Cursor::new(Vec::new())),
        Err(KernelError::InitrdEmpty)
    ));
}
