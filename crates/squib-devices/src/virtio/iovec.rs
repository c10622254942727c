//! Zero-copy transfers between a host file descriptor and pieces of guest memory:
//! `readv(2)`/`writev(2)` over iovecs pointing straight into guest RAM. Used by the devices
//! whose backends are sockets or TAPs (virtio-net, vsock).
//!
//! The kernel writes guest memory through raw pointers here, which vm-memory does not see, so
//! [`readv_guest`] marks the bytes it received in the dirty-page bitmap itself.

use std::io;
use std::os::fd::RawFd;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::GuestMemoryMmap;

/// Largest queue any squib device offers: no chain has more pieces.
const MAX_QUEUE_SIZE: u16 = 256;

/// Most pieces one transfer may have (one per descriptor of a queue).
const MAX_PIECES: usize = MAX_QUEUE_SIZE as usize;

/// iovecs for `segs` of guest memory; the count used.
fn guest_iovecs(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
    iov: &mut [libc::iovec; MAX_PIECES],
) -> io::Result<libc::c_int> {
    if segs.len() > iov.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (slot, &(addr, len)) in iov.iter_mut().zip(segs) {
        let len = len as usize;
        let slice = mem
            .get_slice(addr, len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // The mapping outlives `mem`'s borrow; the guard only matters for mappings that are
        // created per access (Xen), which squib does not use.
        *slot = libc::iovec {
            iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
            iov_len: len,
        };
    }
    Ok(segs.len() as libc::c_int)
}

const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// `writev(2)` the pieces `segs` of guest memory to `fd`, without copying.
///
/// # Errors
/// `InvalidInput` when a piece is outside guest memory (or within one region) or there are
/// more than the queue size of pieces; otherwise the OS error.
pub fn writev_guest(
    fd: RawFd,
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
) -> io::Result<usize> {
    let mut iov = [EMPTY_IOVEC; MAX_PIECES];
    let count = guest_iovecs(mem, segs, &mut iov)?;
    // SAFETY: the first `count` iovecs point into guest memory mapped for their full lengths
    // (checked by `get_slice`) while `mem` is borrowed; the kernel only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), count) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `readv(2)` from `fd` straight into the pieces `segs` of guest memory, without copying.
///
/// # Errors
/// As [`writev_guest`].
pub fn readv_guest(
    fd: RawFd,
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
) -> io::Result<usize> {
    let mut iov = [EMPTY_IOVEC; MAX_PIECES];
    let count = guest_iovecs(mem, segs, &mut iov)?;
    // SAFETY: the first `count` iovecs point into guest RAM mapped writable for their full
    // lengths (checked by `get_slice`) while `mem` is borrowed; the guest owns these buffers
    // (popped, not yet used), so the kernel writing them races with no one in squib.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), count) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    mark_written(mem, segs, n);
    Ok(n)
}

/// Marks the first `n` bytes of `segs` dirty: `readv` fills the pieces in order.
fn mark_written(mem: &GuestMemoryMmap, segs: &[(GuestAddress, u32)], mut n: usize) {
    for &(addr, len) in segs {
        if n == 0 {
            break;
        }
        let written = n.min(len as usize);
        // `guest_iovecs` already found every piece inside guest memory.
        if let Ok(slice) = mem.get_slice(addr, written) {
            slice.bitmap().mark_dirty(0, written);
        }
        n -= written;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    use vm_memory::Bytes;

    use super::*;
    use crate::virtio::test_utils::{clear_dirty, dirty_pages, single_region_mem};

    #[test]
    fn writev_gathers_guest_pieces_into_one_datagram() {
        let mem = single_region_mem(0x10000);
        mem.write_slice(b"hello ", GuestAddress(0x100)).unwrap();
        mem.write_slice(b"world", GuestAddress(0x800)).unwrap();
        let (a, b) = UnixDatagram::pair().unwrap();
        let segs = [(GuestAddress(0x100), 6), (GuestAddress(0x800), 5)];
        assert_eq!(writev_guest(a.as_raw_fd(), &mem, &segs).unwrap(), 11);
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello world");
    }

    #[test]
    fn writev_rejects_pieces_outside_guest_memory() {
        let mem = single_region_mem(0x1000);
        let (a, _b) = UnixDatagram::pair().unwrap();
        let segs = [(GuestAddress(0xff0), 0x20)];
        let err = writev_guest(a.as_raw_fd(), &mem, &segs).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn readv_marks_the_pages_it_filled_dirty_and_no_others() {
        let mem = single_region_mem(0x10000);
        let (a, b) = UnixDatagram::pair().unwrap();
        a.send(b"0123456789").unwrap();
        // The 10 bytes fill the first piece (4 bytes at the end of page 0) and 6 bytes of the
        // second (page 2); the third piece, on page 5, gets none.
        let segs = [
            (GuestAddress(0xffc), 4),
            (GuestAddress(0x2000), 100),
            (GuestAddress(0x5000), 10),
        ];
        assert_eq!(readv_guest(b.as_raw_fd(), &mem, &segs).unwrap(), 10);
        assert_eq!(dirty_pages(&mem), [0x0, 0x2000]);

        clear_dirty(&mem);
        a.send(b"ab").unwrap();
        // A piece across a page boundary dirties both pages it was written into.
        let segs = [(GuestAddress(0x3fff), 2)];
        assert_eq!(readv_guest(b.as_raw_fd(), &mem, &segs).unwrap(), 2);
        assert_eq!(dirty_pages(&mem), [0x3000, 0x4000]);
    }

    #[test]
    fn writev_leaves_guest_memory_clean() {
        let mem = single_region_mem(0x10000);
        mem.write_slice(b"hello", GuestAddress(0x100)).unwrap();
        clear_dirty(&mem);
        let (a, _b) = UnixDatagram::pair().unwrap();
        writev_guest(a.as_raw_fd(), &mem, &[(GuestAddress(0x100), 5)]).unwrap();
        assert!(dirty_pages(&mem).is_empty());
    }
}
