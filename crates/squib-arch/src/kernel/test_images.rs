//! Hand-built kernel images for tests: a minimal x86_64 ELF (optionally with the Xen PVH
//! entry note) and a minimal bzImage, laid out byte by byte as the loaders read them.

/// The `xloadflags` bit for a 64-bit entry point.
pub const XLF_KERNEL_64: u16 = 1;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// A minimal x86_64 ELF entered at 2 MiB + 0x40: one PT_LOAD of `payload` at 2 MiB (`memsz`
/// bytes in memory), and a PT_NOTE with the Xen PVH entry note when `pvh_entry` is set.
pub fn elf_image(payload: &[u8], memsz: u64, pvh_entry: Option<u32>) -> Vec<u8> {
    const LOAD_ADDR: u64 = 0x20_0000;
    let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
    let note_off = 0x200usize;
    let data_off = 0x1000usize;
    let mut img = vec![0u8; data_off + payload.len()];
    put(&mut img, 0, b"\x7fELF");
    img[4] = 2; // 64-bit
    img[5] = 1; // little-endian
    img[6] = 1; // version
    put(&mut img, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut img, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut img, 20, &1u32.to_le_bytes());
    put(&mut img, 24, &(LOAD_ADDR + 0x40).to_le_bytes()); // e_entry
    put(&mut img, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut img, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut img, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut img, 56, &phnum.to_le_bytes());
    let load = phdr(1, data_off as u64, LOAD_ADDR, payload.len() as u64, memsz);
    put(&mut img, 64, &load);
    put(&mut img, data_off, payload);
    if let Some(entry) = pvh_entry {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&4u32.to_le_bytes()); // descsz
        note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.to_le_bytes());
        put(&mut img, note_off, &note);
        let nphdr = phdr(4, note_off as u64, 0, note.len() as u64, note.len() as u64);
        put(&mut img, 64 + 56, &nphdr);
    }
    img
}

fn phdr(p_type: u32, offset: u64, paddr: u64, filesz: u64, memsz: u64) -> [u8; 56] {
    let mut p = [0u8; 56];
    put(&mut p, 0, &p_type.to_le_bytes());
    put(&mut p, 8, &offset.to_le_bytes());
    put(&mut p, 16, &paddr.to_le_bytes()); // p_vaddr
    put(&mut p, 24, &paddr.to_le_bytes()); // p_paddr
    put(&mut p, 32, &filesz.to_le_bytes());
    put(&mut p, 40, &memsz.to_le_bytes());
    put(&mut p, 48, &0x1000u64.to_le_bytes());
    p
}

/// A minimal bzImage: one setup sector after the boot sector, then `payload`.
pub fn bzimage(version: u16, xloadflags: u16, payload: &[u8]) -> Vec<u8> {
    let setup_len = 2 * 512;
    let mut img = vec![0u8; setup_len + payload.len()];
    img[0x1f1] = 1; // setup_sects
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &version.to_le_bytes());
    img[0x211] = 1; // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut img, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &xloadflags.to_le_bytes());
    put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut img, 0x260, &0x40_0000u32.to_le_bytes()); // init_size
    put(&mut img, setup_len, payload);
    img
}
