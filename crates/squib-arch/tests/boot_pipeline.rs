//! The builder's boot steps end to end, without KVM: guest memory, kernel and initrd from real
//! files, then the zero page or PVH start info, read back as the guest would.

use std::io::Write;

use linux_loader::bootparam::boot_params;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::elf::start_info::{hvm_modlist_entry, hvm_start_info};
use squib_arch::boot::{configure_system, BootConfig};
use squib_arch::kernel::test_images::{bzimage, elf_image, XLF_KERNEL_64};
use squib_arch::kernel::{load_initrd_above, load_kernel, BootProtocol};
use squib_arch::layout::{CMDLINE_START, PVH_INFO_START, RSDP_ADDR, ZERO_PAGE_START};
use squib_arch::memory::create_guest_memory;
use vm_memory::{Bytes, GuestAddress};

fn file_with(bytes: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn cmdline(text: &str) -> Cmdline {
    let mut c = Cmdline::new(2048).unwrap();
    c.insert_str(text).unwrap();
    c
}

#[test]
fn pvh_elf_with_initrd_boots_from_start_info() {
    let mem = create_guest_memory(64).unwrap();
    let mut kernel_file = file_with(&elf_image(&[0xf4; 0x200], 0x10_0000, Some(0x20_0100)));
    let kernel = load_kernel(&mem, &mut kernel_file).unwrap();
    assert_eq!(kernel.protocol, BootProtocol::Pvh);
    let initrd_bytes = vec![0x5a; 3 * 4096 + 17];
    let initrd = load_initrd_above(&mem, &mut file_with(&initrd_bytes), kernel.kernel_end).unwrap();
    assert!(initrd.address.0 >= kernel.kernel_end.0);
    assert_eq!(initrd.address.0 + 4 * 4096, 64 << 20);

    let c = cmdline("console=ttyS0 reboot=k panic=1");
    let cfg = BootConfig {
        kernel: &kernel,
        cmdline: &c,
        initrd: Some(initrd),
        rsdp_addr: Some(GuestAddress(RSDP_ADDR)),
        num_cpus: 1,
    };
    configure_system(&mem, &cfg).unwrap();

    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
    assert_eq!((info.magic, info.nr_modules), (0x336e_c578, 1));
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    let mut back = vec![0u8; module.size as usize];
    mem.read_slice(&mut back, GuestAddress(module.paddr))
        .unwrap();
    assert_eq!(back, initrd_bytes);
    let mut line = vec![0u8; 31];
    mem.read_slice(&mut line, GuestAddress(info.cmdline_paddr))
        .unwrap();
    assert_eq!(&line[..30], b"console=ttyS0 reboot=k panic=1");
    assert_eq!(line[30], 0);
}

#[test]
fn bzimage_boots_from_a_zero_page_seeded_by_its_header() {
    let mem = create_guest_memory(32).unwrap();
    let mut kernel_file = file_with(&bzimage(0x020f, XLF_KERNEL_64, &[0x90; 4096]));
    let kernel = load_kernel(&mem, &mut kernel_file).unwrap();
    assert_eq!(kernel.entry, GuestAddress(0x10_0200));
    let c = cmdline("console=ttyS0");
    let cfg = BootConfig {
        kernel: &kernel,
        cmdline: &c,
        initrd: None,
        rsdp_addr: None,
        num_cpus: 2,
    };
    configure_system(&mem, &cfg).unwrap();

    let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = params.hdr;
    assert_eq!({ hdr.version }, 0x020f);
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!(params.e820_entries, 3);
}
