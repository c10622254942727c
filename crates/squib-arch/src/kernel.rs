//! Loading the guest kernel (ELF `vmlinux` or bzImage) and the initrd into guest memory.
//!
//! Order and rules follow Firecracker:
//! - ELF first, with linux-loader's `Elf` loader and high memory at [`HIMEM_START`]. If the
//!   image carries the Xen `PHYS32_ENTRY` note the guest starts with the PVH protocol at that
//!   entry; otherwise with the Linux 64-bit boot protocol at the ELF entry.
//! - Without the ELF magic, a bzImage with linux-loader's `BzImage` loader: boot protocol 2.12
//!   or later with `XLF_KERNEL_64`, entered at its 64-bit entry, load address + 0x200. Its
//!   setup header seeds the zero page (see [`crate::boot`]).
//! - The initrd goes page-aligned at the top of the RAM below the MMIO hole, where the kernel
//!   (loaded low, from 1 MiB) and its early allocations are least likely to meet it.
//!
//! Sizes are checked against guest memory before anything is copied, so a kernel or initrd
//! larger than the guest fails with an error naming both sizes, not a bare read failure. An
//! ELF is measured by what it loads (its `PT_LOAD` segments, bss included), not by its file
//! size: a `vmlinux` with debug sections is often larger on disk than the guest it boots in.

use std::io::{Read, Seek, SeekFrom};

use linux_loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{Error as LoaderError, KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, ReadVolatile};

use crate::layout::{HIMEM_START, MMIO32_START, PAGE_SIZE};
use crate::memory::GuestMemoryMmap;

/// Lowest bzImage boot protocol accepted (2.12: `xloadflags`, 64-bit entry).
pub const MIN_BZIMAGE_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point in a loaded bzImage.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen PVH: 32-bit protected mode, paging off, `rbx` = start info.
    Pvh,
    /// Linux 64-bit boot: long mode, identity page tables, `rsi` = zero page.
    LinuxBoot,
}

/// Where the kernel landed and how to enter it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// First instruction the boot vCPU runs.
    pub entry: GuestAddress,
    /// Boot protocol the entry expects.
    pub protocol: BootProtocol,
    /// The bzImage setup header (with `code32_start` set to the load address); `None` for ELF.
    pub setup_header: Option<setup_header>,
    /// First byte after the loaded kernel.
    pub kernel_end: GuestAddress,
}

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdConfig {
    /// Guest-physical address of its first byte (page-aligned).
    pub address: GuestAddress,
    /// Size in bytes.
    pub size: usize,
}

/// Errors loading the kernel or the initrd.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Neither an ELF nor a bzImage.
    #[error("the kernel image is not an ELF or bzImage kernel")]
    NotAKernel,
    /// A malformed ELF kernel.
    #[error("cannot load the ELF kernel")]
    Elf(#[source] LoaderError),
    /// A malformed bzImage.
    #[error("cannot load the bzImage kernel")]
    BzImage(#[source] LoaderError),
    /// A bzImage older than boot protocol 2.12.
    #[error("bzImage boot protocol {version:#06x} is older than the 2.12 squib needs")]
    BzImageProtocolTooOld {
        /// The image's boot protocol version.
        version: u16,
    },
    /// A bzImage without a 64-bit entry point.
    #[error("bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set)")]
    BzImageNot64Bit,
    /// The kernel needs more memory than the guest has.
    #[error(
        "kernel of {size} bytes does not fit the {available} bytes of guest memory above 1 MiB"
    )]
    KernelTooLarge {
        /// Bytes the kernel needs.
        size: u64,
        /// Bytes available to it.
        available: u64,
    },
    /// The initrd needs more memory than the guest has.
    #[error(
        "initrd of {size} bytes does not fit the {available} bytes of guest memory available to it"
    )]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
        /// Bytes available to it.
        available: u64,
    },
    /// An empty initrd file.
    #[error("the initrd is empty")]
    InitrdEmpty,
    /// Reading or sizing an image failed.
    #[error("cannot read the {what} image")]
    Read {
        /// "kernel" or "initrd".
        what: &'static str,
        /// What the file said.
        #[source]
        source: std::io::Error,
    },
    /// Copying the initrd into guest memory failed.
    #[error("cannot copy the initrd to guest memory at {addr:#x}")]
    InitrdCopy {
        /// Where the copy started.
        addr: u64,
        /// What guest memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Loads `kernel` (ELF tried first, then bzImage) into `mem` and says how to enter it.
pub fn load_kernel<F>(mem: &GuestMemoryMmap, kernel: &mut F) -> Result<LoadedKernel, KernelError>
where
    F: Read + ReadVolatile + Seek,
{
    let available = low_ram_end(mem).saturating_sub(HIMEM_START);
    let size = match elf_load_end(kernel)? {
        // Segments end past RAM: refuse before copying (a bare read error otherwise).
        Some(end) if end > low_ram_end(mem) => end.saturating_sub(HIMEM_START),
        Some(_) => 0,
        // A bzImage is loaded as it is on disk.
        None => image_size(kernel, "kernel")?,
    };
    if size > available {
        return Err(KernelError::KernelTooLarge { size, available });
    }
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded = match Elf::load(mem, None, kernel, himem) {
        Ok(result) => from_elf(&result),
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber | ElfError::ReadElfHeader)) => {
            load_bzimage(mem, kernel)?
        }
        Err(e) => return Err(KernelError::Elf(e)),
    };
    check_fits(mem, &loaded)?;
    if loaded.protocol == BootProtocol::Pvh {
        log::info!("Kernel loaded using PVH boot protocol");
    }
    Ok(loaded)
}

/// The kernel description for a loaded ELF: PVH when it has the PVH note.
fn from_elf(result: &KernelLoaderResult) -> LoadedKernel {
    let (entry, protocol) = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (addr, BootProtocol::Pvh),
        _ => (result.kernel_load, BootProtocol::LinuxBoot),
    };
    LoadedKernel {
        entry,
        protocol,
        setup_header: None,
        kernel_end: GuestAddress(result.kernel_end),
    }
}

/// Loads a bzImage and checks it has a 64-bit entry point.
fn load_bzimage<F>(mem: &GuestMemoryMmap, kernel: &mut F) -> Result<LoadedKernel, KernelError>
where
    F: Read + ReadVolatile + Seek,
{
    use linux_loader::loader::bzimage::Error as BzError;
    let result = match BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => result,
        Err(LoaderError::Bzimage(
            BzError::InvalidBzImage | BzError::ReadBzImageHeader | BzError::Underflow,
        )) => return Err(KernelError::NotAKernel),
        Err(e) => return Err(KernelError::BzImage(e)),
    };
    let header = result.setup_header.ok_or(KernelError::NotAKernel)?;
    let version = header.version;
    if version < MIN_BZIMAGE_PROTOCOL {
        return Err(KernelError::BzImageProtocolTooOld { version });
    }
    if header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(KernelError::BzImageNot64Bit);
    }
    // The decompressor needs `init_size` bytes from the load address.
    let end = result.kernel_load.0 + u64::from(header.init_size);
    Ok(LoadedKernel {
        entry: GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
        protocol: BootProtocol::LinuxBoot,
        setup_header: Some(header),
        kernel_end: GuestAddress(end.max(result.kernel_end)),
    })
}

/// Refuses a kernel whose memory image (bss or decompression area included) ends past RAM.
fn check_fits(mem: &GuestMemoryMmap, kernel: &LoadedKernel) -> Result<(), KernelError> {
    let ram_end = low_ram_end(mem);
    if kernel.kernel_end.0 > ram_end {
        return Err(KernelError::KernelTooLarge {
            size: kernel.kernel_end.0.saturating_sub(HIMEM_START),
            available: ram_end.saturating_sub(HIMEM_START),
        });
    }
    Ok(())
}

/// Loads `initrd` page-aligned at the top of the RAM below the MMIO hole.
pub fn load_initrd<F>(mem: &GuestMemoryMmap, initrd: &mut F) -> Result<InitrdConfig, KernelError>
where
    F: ReadVolatile + Seek,
{
    load_initrd_above(mem, initrd, GuestAddress(HIMEM_START))
}

/// Like [`load_initrd`], but refuses to place the initrd below `lowest` (pass the loaded
/// kernel's `kernel_end` to keep the two apart).
pub fn load_initrd_above<F>(
    mem: &GuestMemoryMmap,
    initrd: &mut F,
    lowest: GuestAddress,
) -> Result<InitrdConfig, KernelError>
where
    F: ReadVolatile + Seek,
{
    let size = image_size(initrd, "initrd")?;
    if size == 0 {
        return Err(KernelError::InitrdEmpty);
    }
    let top = low_ram_end(mem);
    let available = top.saturating_sub(lowest.0.next_multiple_of(PAGE_SIZE));
    let too_large = KernelError::InitrdTooLarge { size, available };
    let address = top.checked_sub(size).ok_or(too_large)? & !(PAGE_SIZE - 1);
    if address < lowest.0 {
        return Err(KernelError::InitrdTooLarge { size, available });
    }
    let size =
        usize::try_from(size).map_err(|_| KernelError::InitrdTooLarge { size, available })?;
    initrd
        .seek(SeekFrom::Start(0))
        .map_err(|source| KernelError::Read {
            what: "initrd",
            source,
        })?;
    mem.read_exact_volatile_from(GuestAddress(address), initrd, size)
        .map_err(|source| KernelError::InitrdCopy {
            addr: address,
            source,
        })?;
    Ok(InitrdConfig {
        address: GuestAddress(address),
        size,
    })
}

/// End of the RAM region that starts at 0, capped at the MMIO hole.
fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.find_region(GuestAddress(0))
        .map_or(0, |r| (r.start_addr().0 + r.len()).min(MMIO32_START))
}

/// Where an ELF image's `PT_LOAD` segments end in guest memory (`None` if the image is not
/// a readable 64-bit ELF: the loaders then say what is wrong). Leaves the image at its start.
fn elf_load_end<F: Read + Seek>(image: &mut F) -> Result<Option<u64>, KernelError> {
    const PT_LOAD: u32 = 1;
    let read_err = |source| KernelError::Read {
        what: "kernel",
        source,
    };
    let mut end = None;
    let mut ehdr = [0u8; 64];
    image.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if image.read_exact(&mut ehdr).is_ok() && ehdr[..4] == *b"\x7fELF" && ehdr[4] == 2 {
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at =
            |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let phoff = u64_at(&ehdr, 32);
        let phentsize = u64::from(u16_at(&ehdr, 54));
        let mut phdr = [0u8; 56];
        for i in 0..u64::from(u16_at(&ehdr, 56)) {
            let at = phoff.saturating_add(i.saturating_mul(phentsize));
            if phentsize < 56
                || image.seek(SeekFrom::Start(at)).is_err()
                || image.read_exact(&mut phdr).is_err()
            {
                end = None;
                break;
            }
            if u32::from_le_bytes([phdr[0], phdr[1], phdr[2], phdr[3]]) == PT_LOAD {
                let seg_end = u64_at(&phdr, 24).saturating_add(u64_at(&phdr, 40));
                end = Some(end.map_or(seg_end, |e: u64| e.max(seg_end)));
            }
        }
    }
    image.seek(SeekFrom::Start(0)).map_err(read_err)?;
    Ok(end)
}

/// Length of a seekable image, left positioned at its start.
fn image_size<F: Seek>(image: &mut F, what: &'static str) -> Result<u64, KernelError> {
    let read_err = |source| KernelError::Read { what, source };
    let size = image.seek(SeekFrom::End(0)).map_err(read_err)?;
    image.seek(SeekFrom::Start(0)).map_err(read_err)?;
    Ok(size)
}

#[cfg(any(test, feature = "test-utils"))]
pub mod test_images;
#[cfg(test)]
mod tests;
