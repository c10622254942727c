//! Keeps the squib binary statically linked (issue #17: the jailer's chroot holds nothing but
//! the binary): fails when the binary under test asks for a dynamic loader (a `PT_INTERP`
//! program header) or needs shared libraries (a `PT_DYNAMIC` segment with `DT_NEEDED`).
//! `.cargo/config.toml` makes every build static; this test notices if that ever changes.

use std::fs;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// (p_type, p_offset, p_filesz) of every program header of a 64-bit little-endian ELF file.
fn program_headers(elf: &[u8]) -> Vec<(u32, usize, usize)> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    assert_eq!(elf[5], 1, "not a little-endian ELF file");
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = u16_at(elf, 0x36) as usize;
    let phnum = u16_at(elf, 0x38) as usize;
    (0..phnum)
        .map(|i| {
            let ph = phoff + i * phentsize;
            (
                u32_at(elf, ph),
                u64_at(elf, ph + 8) as usize,
                u64_at(elf, ph + 0x20) as usize,
            )
        })
        .collect()
}

/// How many `DT_NEEDED` entries (shared libraries) a dynamic section names.
fn needed_libraries(dynamic: &[u8]) -> usize {
    dynamic
        .chunks_exact(16)
        .map(|e| u64_at(e, 0))
        .take_while(|&tag| tag != DT_NULL)
        .filter(|&tag| tag == DT_NEEDED)
        .count()
}

fn assert_static(path: &str) {
    let elf = fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let headers = program_headers(&elf);
    assert!(!headers.is_empty(), "{path}: no program headers");
    for (kind, off, size) in headers {
        assert_ne!(
            kind, PT_INTERP,
            "{path} is dynamically linked (it names a program interpreter): build it with \
             the workspace's .cargo/config.toml (static-pie, +crt-static)"
        );
        if kind == PT_DYNAMIC {
            let needed = needed_libraries(&elf[off..off + size]);
            assert_eq!(needed, 0, "{path} needs {needed} shared libraries");
        }
    }
}

#[test]
fn squib_binary_is_statically_linked() {
    assert_static(env!("CARGO_BIN_EXE_squib"));
}

#[test]
fn the_check_recognises_a_dynamic_binary() {
    // /bin/sh is dynamically linked on every distribution this runs on: the check must say so.
    let result = std::panic::catch_unwind(|| assert_static("/bin/sh"));
    let Err(panic) = result else {
        panic!("/bin/sh passed as static: the check reads the wrong headers");
    };
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("dynamically linked"), "{msg}");
}
