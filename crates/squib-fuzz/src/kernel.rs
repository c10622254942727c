//! `kernel_loader`: the kernel and initrd loaders of `squib-arch` on arbitrary bytes as the
//! image (ELF with or without the PVH note, bzImage, neither), into 4 MiB of guest RAM, so
//! every header field, segment bound and size check meets hostile values.
//!
//! Scenario: byte 0 (`% 3`: kernel, then the image's second half as initrd above it;
//! initrd only; initrd above a 32-bit floor from the next bytes), then the image.

use std::io::Cursor;

use squib_arch::kernel::{load_initrd, load_initrd_above, load_kernel};
use squib_arch::memory::GuestMemoryMmap;
use vm_memory::GuestAddress;

use crate::Input;

/// Guest RAM of the target.
pub const MEM_SIZE: usize = 4 << 20;

/// The `kernel_loader` target.
pub fn kernel_loader(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 3;
    let floor = if mode == 2 { u64::from(input.u32()) } else { 0 };
    let image = input.rest();
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else {
        return;
    };
    match mode {
        0 => {
            if let Ok(kernel) = load_kernel(&mem, &mut Cursor::new(image)) {
                let initrd = &image[image.len() / 2..];
                let _ = load_initrd_above(&mem, &mut Cursor::new(initrd), kernel.kernel_end);
            }
        }
        1 => {
            let _ = load_initrd(&mem, &mut Cursor::new(image));
        }
        _ => {
            let _ = load_initrd_above(&mem, &mut Cursor::new(image), GuestAddress(floor));
        }
    }
}
