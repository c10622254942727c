//! The userfaultfd kernel ABI (`include/uapi/linux/userfaultfd.h`): ioctl numbers, flags and
//! the structures the ioctls and `read(2)` exchange.
//!
//! Written out here rather than generated, so building needs no libclang.

/// The API version `UFFDIO_API` must be given.
pub const UFFD_API: u64 = 0xAA;
/// The ioctl type of the userfaultfd ioctls.
const UFFDIO: u32 = 0xAA;
/// The ioctl type of `/dev/userfaultfd`.
const USERFAULTFD_IOC: u32 = 0xAA;

/// `UFFDIO_API` feature: report `madvise(MADV_DONTNEED/MADV_REMOVE)` of registered memory as
/// [`UFFD_EVENT_REMOVE`].
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;

/// `UFFDIO_REGISTER` mode: report faults on pages that are not present.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;

/// Bit number of `UFFDIO_COPY` in `UffdioRegister::ioctls`.
pub const _UFFDIO_COPY: u32 = 0x03;
/// Bit number of `UFFDIO_ZEROPAGE` in `UffdioRegister::ioctls`.
pub const _UFFDIO_ZEROPAGE: u32 = 0x04;

/// `uffd_msg.event`: a thread touched a missing page.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `uffd_msg.event`: a range of registered memory was discarded (balloon, free page
/// reporting, `madvise(MADV_DONTNEED)`).
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
/// `pagefault.flags`: the fault was a write.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    /// In: [`UFFD_API`].
    pub api: u64,
    /// In: features required; out: features available.
    pub features: u64,
    /// Out: bitmask of the ioctls available on the userfaultfd.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    /// Start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRegister {
    /// The range to register.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Out: bitmask (`1 << _UFFDIO_*`) of the ioctls usable on the range.
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioCopy {
    /// Destination: registered memory, page aligned.
    pub dst: u64,
    /// Source in the caller's address space, page aligned.
    pub src: u64,
    /// Bytes to copy, a multiple of the destination's page size.
    pub len: u64,
    /// `UFFDIO_COPY_MODE_*`.
    pub mode: u64,
    /// Out: bytes copied, or a negative errno.
    pub copy: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioZeropage {
    /// The range to fill with zeros.
    pub range: UffdioRange,
    /// `UFFDIO_ZEROPAGE_MODE_*`.
    pub mode: u64,
    /// Out: bytes zeroed, or a negative errno.
    pub zeropage: i64,
}

/// `struct uffd_msg`: what `read(2)` on a userfaultfd returns, 32 bytes per event. The kernel
/// declares it packed; its fields fall on their natural alignment anyway, so this `repr(C)`
/// twin has the same layout. `arg` is the union, decoded by event in [`crate::uffd`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdMsg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// The event's arguments: for a page fault `flags, address, ptid`; for a remove
    /// `start, end`.
    pub arg: [u64; 3],
}

/// The ioctl request numbers, as the functions `vmm_sys_util`'s macros declare (which cannot
/// carry documentation): `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd`, the `UFFDIO_*` ones on
/// a userfaultfd.
#[allow(missing_docs)]
mod request {
    use super::{
        UffdioApi, UffdioCopy, UffdioRange, UffdioRegister, UffdioZeropage, UFFDIO, USERFAULTFD_IOC,
    };
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

    ioctl_io_nr!(USERFAULTFD_IOC_NEW, USERFAULTFD_IOC, 0x00);
    ioctl_iowr_nr!(UFFDIO_API, UFFDIO, 0x3F, UffdioApi);
    ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, UffdioRegister);
    ioctl_ior_nr!(UFFDIO_UNREGISTER, UFFDIO, 0x01, UffdioRange);
    ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, UffdioRange);
    ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, UffdioCopy);
    ioctl_iowr_nr!(UFFDIO_ZEROPAGE, UFFDIO, 0x04, UffdioZeropage);
}
pub use request::*;

/// The host's base page size.
pub fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a value of the running kernel.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // sysconf(_SC_PAGESIZE) cannot fail on Linux; 4 KiB is every x86_64 host's answer.
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    #[test]
    fn structures_have_the_kernel_sizes() {
        assert_eq!(size_of::<UffdioApi>(), 24);
        assert_eq!(size_of::<UffdioRange>(), 16);
        assert_eq!(size_of::<UffdioRegister>(), 32);
        assert_eq!(size_of::<UffdioCopy>(), 40);
        assert_eq!(size_of::<UffdioZeropage>(), 32);
        assert_eq!(size_of::<UffdMsg>(), 32);
        assert_eq!(std::mem::offset_of!(UffdMsg, arg), 8);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(USERFAULTFD_IOC_NEW(), 0xaa00);
        assert_eq!(UFFDIO_API(), 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER(), 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER(), 0x8010_aa01);
        assert_eq!(UFFDIO_WAKE(), 0x8010_aa02);
        assert_eq!(UFFDIO_COPY(), 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE(), 0xc020_aa04);
    }
}
