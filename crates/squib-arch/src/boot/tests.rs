//! Unit tests for the zero page and the PVH start info, read back from guest memory.

use linux_loader::bootparam::setup_header;

use super::*;
use crate::layout::{
    RSDP_ADDR, SYSTEM_TABLES_END, VMCLOCK_ADDR, VMCLOCK_SIZE, VMGENID_ADDR, VMGENID_SIZE,
};

const MIB: usize = 1 << 20;

fn mem(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

fn kernel(protocol: BootProtocol, setup_header: Option<setup_header>) -> LoadedKernel {
    LoadedKernel {
        entry: GuestAddress(0x100_0000),
        protocol,
        setup_header,
        kernel_end: GuestAddress(0x200_0000),
    }
}

fn cmdline(text: &str) -> Cmdline {
    let mut c = Cmdline::new(4096).unwrap();
    c.insert_str(text).unwrap();
    c
}

fn config<'a>(kernel: &'a LoadedKernel, cmdline: &'a Cmdline) -> BootConfig<'a> {
    BootConfig {
        kernel,
        cmdline,
        initrd: Some(InitrdConfig {
            address: GuestAddress(0x700_0000),
            size: 0x1234,
        }),
        rsdp_addr: Some(GuestAddress(RSDP_ADDR)),
        num_cpus: 2,
    }
}

fn read_cstr(mem: &GuestMemoryMmap, addr: u64) -> String {
    let mut buf = vec![0u8; CMDLINE_MAX_SIZE];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

#[test]
fn zero_page_for_elf_has_magic_cmdline_initrd_rsdp_and_e820() {
    let mem = mem(128 * MIB);
    let k = kernel(BootProtocol::LinuxBoot, None);
    let c = cmdline("console=ttyS0 reboot=k");
    configure_system(&mem, &config(&k, &c)).unwrap();
    let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = p.hdr;
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!({ hdr.kernel_alignment }, 0x0100_0000);
    assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
    assert_eq!({ hdr.cmdline_size }, 23);
    assert_eq!(
        ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
        (0x700_0000, 0x1234)
    );
    assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
    assert_eq!(read_cstr(&mem, CMDLINE_START), "console=ttyS0 reboot=k");
    assert_eq!(p.e820_entries, 3);
    let e820 = p.e820_table;
    let got: Vec<(u64, u64, u32)> = e820[..3]
        .iter()
        .map(|e| ({ e.addr }, { e.size }, { e.r#type }))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 0x9fc00, E820_RAM),
            (0x9fc00, 0xe0000 - 0x9fc00, E820_RESERVED),
            (0x10_0000, 127 << 20, E820_RAM),
        ]
    );
}

#[test]
fn zero_page_for_bzimage_keeps_the_setup_header() {
    let mem = mem(64 * MIB);
    let header = setup_header {
        version: 0x020f,
        loadflags: 1,
        code32_start: 0x10_0000,
        kernel_alignment: 0x20_0000,
        xloadflags: 1,
        init_size: 0x80_0000,
        ..Default::default()
    };
    let k = kernel(BootProtocol::LinuxBoot, Some(header));
    let c = cmdline("panic=1");
    let mut cfg = config(&k, &c);
    cfg.initrd = None;
    cfg.rsdp_addr = None;
    configure_system(&mem, &cfg).unwrap();
    let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = p.hdr;
    assert_eq!({ hdr.version }, 0x020f);
    assert_eq!({ hdr.code32_start }, 0x10_0000);
    assert_eq!({ hdr.kernel_alignment }, 0x20_0000);
    assert_eq!({ hdr.init_size }, 0x80_0000);
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!(({ hdr.ramdisk_image }, { hdr.ramdisk_size }), (0, 0));
    assert_eq!({ p.acpi_rsdp_addr }, 0);
}

#[test]
fn pvh_start_info_points_at_cmdline_memmap_module_and_rsdp() {
    let mem = mem(128 * MIB);
    let k = kernel(BootProtocol::Pvh, None);
    let c = cmdline("console=ttyS0");
    configure_system(&mem, &config(&k, &c)).unwrap();
    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
    assert_eq!(info.magic, 0x336e_c578);
    assert_eq!(info.version, 1);
    assert_eq!(info.cmdline_paddr, CMDLINE_START);
    assert_eq!(info.rsdp_paddr, 0xe0000);
    assert_eq!((info.nr_modules, info.modlist_paddr), (1, MODLIST_START));
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(MODLIST_START)).unwrap();
    assert_eq!((module.paddr, module.size), (0x700_0000, 0x1234));
    assert_eq!((info.memmap_paddr, info.memmap_entries), (MEMMAP_START, 3));
    let last: hvm_memmap_table_entry = mem.read_obj(GuestAddress(MEMMAP_START + 48)).unwrap();
    assert_eq!(
        (last.addr, last.size, last.type_),
        (0x10_0000, 127 << 20, 1)
    );
    let reserved: hvm_memmap_table_entry = mem.read_obj(GuestAddress(MEMMAP_START + 24)).unwrap();
    assert_eq!((reserved.addr, reserved.type_), (0x9fc00, E820_RESERVED));
    // No zero page is written for PVH: the boot_flag slot stays untouched.
    assert_eq!(
        mem.read_obj::<u16>(GuestAddress(ZERO_PAGE_START + 0x1fe))
            .unwrap(),
        0
    );
}

#[test]
fn pvh_without_initrd_lists_no_module() {
    let mem = mem(32 * MIB);
    let k = kernel(BootProtocol::Pvh, None);
    let c = cmdline("x");
    let mut cfg = config(&k, &c);
    cfg.initrd = None;
    configure_system(&mem, &cfg).unwrap();
    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
    assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
}

#[test]
fn memory_map_skips_the_mmio_hole() {
    let regions = crate::memory::arch_memory_regions((3 << 30) + 256 * MIB);
    let mem = GuestMemoryMmap::from_ranges(&regions).unwrap();
    let map = memory_map(&mem);
    assert_eq!(map.len(), 4);
    assert_eq!(
        map[2],
        MemoryMapEntry {
            addr: HIMEM_START,
            size: (3 << 30) - HIMEM_START,
            kind: E820_RAM
        }
    );
    assert_eq!(
        map[3],
        MemoryMapEntry {
            addr: 4 << 30,
            size: 256 << 20,
            kind: E820_RAM
        }
    );
}

#[test]
fn overlong_cmdline_and_zero_cpus_are_refused() {
    let mem = mem(32 * MIB);
    let k = kernel(BootProtocol::LinuxBoot, None);
    let long = cmdline(&"a".repeat(CMDLINE_MAX_SIZE));
    let err = configure_system(&mem, &config(&k, &long)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel command line of 2049 bytes is longer than the 2048 bytes allowed"
    );
    let c = cmdline("x");
    let mut cfg = config(&k, &c);
    cfg.num_cpus = 0;
    assert!(matches!(
        configure_system(&mem, &cfg),
        Err(BootError::NoCpus)
    ));
}

#[test]
fn memory_too_small_for_the_boot_structures_is_an_error() {
    let mem = mem(0x1000);
    let k = kernel(BootProtocol::LinuxBoot, None);
    let c = cmdline("x");
    assert!(matches!(
        configure_system(&mem, &config(&k, &c)),
        Err(BootError::CmdlineWrite(_))
    ));
}

/// Whether `[addr, addr + len)` lies inside one entry of `kind` and touches no RAM entry.
fn only_in(map: &[MemoryMapEntry], kind: u32, addr: u64, len: u64) -> bool {
    let end = addr + len;
    let inside = map
        .iter()
        .any(|e| e.kind == kind && e.addr <= addr && end <= e.addr + e.size);
    let touches_ram = map
        .iter()
        .any(|e| e.kind == E820_RAM && e.addr < end && addr < e.addr + e.size);
    inside && !touches_ram
}

#[test]
fn tables_vmgenid_and_vmclock_are_reserved_in_both_memory_maps() {
    let areas = [
        (SYSTEM_MEM_START, SYSTEM_TABLES_END - SYSTEM_MEM_START),
        (VMGENID_ADDR, VMGENID_SIZE),
        (VMCLOCK_ADDR, VMCLOCK_SIZE),
    ];
    let mem = mem(128 * MIB);
    for (addr, len) in areas {
        assert!(
            only_in(&memory_map(&mem), E820_RESERVED, addr, len),
            "{addr:#x}+{len:#x}"
        );
    }

    // What the kernel actually receives: the zero page's E820 table...
    let k = kernel(BootProtocol::LinuxBoot, None);
    let c = cmdline("x");
    configure_system(&mem, &config(&k, &c)).unwrap();
    let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let e820 = p.e820_table;
    let zero_page_map: Vec<MemoryMapEntry> = e820[..usize::from(p.e820_entries)]
        .iter()
        .map(|e| MemoryMapEntry {
            addr: e.addr,
            size: e.size,
            kind: e.r#type,
        })
        .collect();
    // ...and the PVH memory map.
    let k = kernel(BootProtocol::Pvh, None);
    configure_system(&mem, &config(&k, &c)).unwrap();
    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
    let pvh_map: Vec<MemoryMapEntry> = (0..u64::from(info.memmap_entries))
        .map(|i| {
            let e: hvm_memmap_table_entry = mem
                .read_obj(GuestAddress(info.memmap_paddr + 24 * i))
                .unwrap();
            MemoryMapEntry {
                addr: e.addr,
                size: e.size,
                kind: e.type_,
            }
        })
        .collect();
    for map in [&zero_page_map, &pvh_map] {
        for (addr, len) in areas {
            assert!(only_in(map, E820_RESERVED, addr, len), "{addr:#x}+{len:#x}");
        }
    }
}
