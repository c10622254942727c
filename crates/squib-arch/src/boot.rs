//! What the kernel reads at entry: the command line, the memory map, the initrd and the RSDP
//! address, as a Linux zero page (`boot_params`) or as a PVH `hvm_start_info`.
//!
//! Follows Firecracker (`arch/x86_64/mod.rs` `configure_system`):
//! - the command line goes to [`CMDLINE_START`] (at most [`CMDLINE_MAX_SIZE`] bytes with NUL);
//! - the memory map is [0, [`EBDA_START`]) RAM, the system-memory area
//!   [[`SYSTEM_MEM_START`], [`RSDP_ADDR`]) reserved (MP and ACPI tables, the VMGenID ID and
//!   the VMClock page: the guest must never use them as RAM), then RAM from
//!   [`HIMEM_START`] to the end of each region (the MMIO hole is left out);
//! - Linux boot: a zero page at [`ZERO_PAGE_START`], seeded from the bzImage setup header when
//!   there is one, with boot_flag 0xaa55, `HdrS`, loader type 0xff (undefined), a 16 MiB
//!   kernel alignment for ELF kernels, the command line, the initrd and `acpi_rsdp_addr`;
//! - PVH: `hvm_start_info` (magic 0x336ec578, version 1) at [`PVH_INFO_START`], its memory
//!   map at [`MEMMAP_START`] and the initrd as the one module at [`MODLIST_START`].
//!
//! [`RSDP_ADDR`]: crate::layout::RSDP_ADDR
//!
//! The structures are linux-loader's `#[repr(C)]` types, which it already marks `ByteValued`.

use linux_loader::bootparam::{boot_e820_entry, boot_params, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use linux_loader::loader::load_cmdline;
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
};

use crate::kernel::{BootProtocol, InitrdConfig, LoadedKernel};
use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MEMMAP_START, MODLIST_START,
    PVH_INFO_START, SYSTEM_MEM_SIZE, SYSTEM_MEM_START, ZERO_PAGE_START,
};
use crate::memory::GuestMemoryMmap;

/// E820 / PVH memory map type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 / PVH memory map type: reserved.
pub const E820_RESERVED: u32 = 2;

/// `boot_flag` every zero page carries.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header` every zero page carries: "HdrS".
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined boot loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Physical alignment a relocatable ELF kernel is told it may use.
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Most memory map entries squib writes to the PVH table (it writes at most a handful).
const MAX_PVH_MEMMAP_ENTRIES: usize = 64;

/// Everything [`configure_system`] writes for the kernel.
#[derive(Clone, Copy, Debug)]
pub struct BootConfig<'a> {
    /// The loaded kernel (boot protocol and bzImage setup header).
    pub kernel: &'a LoadedKernel,
    /// The kernel command line.
    pub cmdline: &'a Cmdline,
    /// The loaded initrd, if any.
    pub initrd: Option<InitrdConfig>,
    /// Where the ACPI RSDP is, if ACPI tables were written.
    pub rsdp_addr: Option<GuestAddress>,
    /// Number of vCPUs.
    pub num_cpus: u8,
}

/// One memory map entry, shared by the E820 table and the PVH memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Errors writing the boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Zero vCPUs.
    #[error("a guest needs at least one vCPU")]
    NoCpus,
    /// The command line cannot be turned into a C string.
    #[error("invalid kernel command line")]
    InvalidCmdline(#[source] linux_loader::cmdline::Error),
    /// The command line is longer than its slot.
    #[error("kernel command line of {len} bytes is longer than the {max} bytes allowed")]
    CmdlineTooLong {
        /// Length including the terminating NUL.
        len: usize,
        /// Most bytes allowed, NUL included.
        max: usize,
    },
    /// Copying the command line to guest memory failed.
    #[error("cannot write the kernel command line to guest memory")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    /// The memory map has more entries than the structure holds.
    #[error("memory map of {count} entries is more than the {max} the boot structure holds")]
    TooManyMemoryMapEntries {
        /// Entries needed.
        count: usize,
        /// Most entries supported.
        max: usize,
    },
    /// Writing a boot structure to guest memory failed.
    #[error("cannot write the {what} at {addr:#x} to guest memory")]
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

/// Writes the command line and the zero page (Linux boot) or PVH start info into `mem`.
pub fn configure_system(mem: &GuestMemoryMmap, cfg: &BootConfig) -> Result<(), BootError> {
    if cfg.num_cpus == 0 {
        return Err(BootError::NoCpus);
    }
    let cmdline_size = write_cmdline(mem, cfg.cmdline)?;
    let map = memory_map(mem);
    match cfg.kernel.protocol {
        BootProtocol::LinuxBoot => {
            let params = zero_page(cfg, cmdline_size, &map)?;
            write(mem, "zero page", ZERO_PAGE_START, params)
        }
        BootProtocol::Pvh => write_pvh(mem, cfg, &map),
    }
}

/// Writes the command line at [`CMDLINE_START`]; returns its size with the NUL.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<u32, BootError> {
    let len = cmdline
        .as_cstring()
        .map_err(BootError::InvalidCmdline)?
        .as_bytes_with_nul()
        .len();
    if len > CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len,
            max: CMDLINE_MAX_SIZE,
        });
    }
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(BootError::CmdlineWrite)?;
    // At most CMDLINE_MAX_SIZE, so it fits.
    Ok(len as u32)
}

/// The guest's memory map: low RAM, the reserved system-memory area, RAM from 1 MiB on.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<MemoryMapEntry> {
    let mut map = vec![
        MemoryMapEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemoryMapEntry {
            addr: SYSTEM_MEM_START,
            size: SYSTEM_MEM_SIZE,
            kind: E820_RESERVED,
        },
    ];
    for region in mem.iter() {
        let start = region.start_addr().0.max(HIMEM_START);
        let end = region.start_addr().0 + region.len();
        if end > start {
            map.push(MemoryMapEntry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// The Linux zero page for `cfg`.
fn zero_page(
    cfg: &BootConfig,
    cmdline_size: u32,
    map: &[MemoryMapEntry],
) -> Result<boot_params, BootError> {
    if map.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyMemoryMapEntries {
            count: map.len(),
            max: E820_MAX_ENTRIES_ZEROPAGE,
        });
    }
    let mut params = boot_params::default();
    if let Some(header) = cfg.kernel.setup_header {
        params.hdr = header;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some(initrd) = cfg.initrd {
        // The initrd lies below the 3 GiB hole, so both fit 32 bits.
        params.hdr.ramdisk_image = initrd.address.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    if let Some(rsdp) = cfg.rsdp_addr {
        params.acpi_rsdp_addr = rsdp.0;
    }
    let mut table = params.e820_table;
    for (slot, entry) in table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_table = table;
    // Bounded by E820_MAX_ENTRIES_ZEROPAGE (128) above.
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the PVH start info, its memory map and the initrd module.
fn write_pvh(
    mem: &GuestMemoryMmap,
    cfg: &BootConfig,
    map: &[MemoryMapEntry],
) -> Result<(), BootError> {
    if map.len() > MAX_PVH_MEMMAP_ENTRIES {
        return Err(BootError::TooManyMemoryMapEntries {
            count: map.len(),
            max: MAX_PVH_MEMMAP_ENTRIES,
        });
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: MEMMAP_START,
        // Bounded by MAX_PVH_MEMMAP_ENTRIES above.
        memmap_entries: map.len() as u32,
        rsdp_paddr: cfg.rsdp_addr.map_or(0, |a| a.0),
        ..Default::default()
    };
    if let Some(initrd) = cfg.initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.address.0,
            size: initrd.size as u64,
            ..Default::default()
        };
        write(mem, "PVH module list", MODLIST_START, module)?;
        info.nr_modules = 1;
        info.modlist_paddr = MODLIST_START;
    }
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (addr, entry) in (MEMMAP_START..).step_by(entry_size as usize).zip(map) {
        let entry = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        };
        write(mem, "PVH memory map", addr, entry)?;
    }
    write(mem, "PVH start info", PVH_INFO_START, info)
}

/// Writes `value` at `addr`, naming `what` on failure.
fn write<T: ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    value: T,
) -> Result<(), BootError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| BootError::Write { what, addr, source })
}

#[cfg(test)]
mod tests;
