//! The host side of a virtio-net device: a TAP opened through `/dev/net/tun`.
//!
//! [`Tap::open`] attaches to (or, with CAP_NET_ADMIN, creates) the named TAP with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, sets the vnet header to the 12-byte
//! `virtio_net_hdr_v1` and makes the fd non-blocking. Offloads start off and follow what the
//! guest negotiates ([`TapIo::set_offload`], `TUNSETOFFLOAD`).
//!
//! The device talks to its backend through [`TapIo`], one frame per call: a TAP (and a
//! `SOCK_DGRAM`/`SOCK_SEQPACKET` socket, which tests use) keeps frame boundaries. Transmit
//! goes straight from guest memory with `writev` ([`crate::virtio::iovec::writev_guest`]), no copy.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::GuestAddress;

use super::{NetError, VNET_HDR_LEN};
use crate::virtio::iovec::{readv_guest, writev_guest};
use crate::virtio::GuestMemoryMmap;

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
pub const TUNSETIFF: u64 = 0x4004_54ca;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: u64 = 0x4004_54d0;
/// `TUNSETVNETHDRSZ`: `_IOW('T', 216, int)`.
pub const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;
/// A TAP (Ethernet) device.
pub const IFF_TAP: i16 = 0x0002;
/// No packet-information prefix.
pub const IFF_NO_PI: i16 = 0x1000;
/// Frames carry a virtio-net header.
pub const IFF_VNET_HDR: i16 = 0x4000;

/// `TUNSETOFFLOAD` flags.
pub mod offload {
    /// The guest accepts partial checksums.
    pub const TUN_F_CSUM: u32 = 0x01;
    /// The guest accepts TSOv4.
    pub const TUN_F_TSO4: u32 = 0x02;
    /// The guest accepts TSOv6.
    pub const TUN_F_TSO6: u32 = 0x04;
    /// The guest accepts UFO.
    pub const TUN_F_UFO: u32 = 0x10;
}

/// Longest interface name (IFNAMSIZ without the NUL).
const MAX_NAME_LEN: usize = 15;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// What a [`super::Net`] needs from its backend: whole frames in, whole frames out.
pub trait TapIo: AsRawFd + Send + std::fmt::Debug {
    /// Read one frame (vnet header included) into `buf`; `WouldBlock` when none is queued.
    ///
    /// # Errors
    /// The OS error of the read.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Read one frame (vnet header included) straight into pieces of guest memory.
    ///
    /// # Errors
    /// The OS error of the read (`WouldBlock` when none is queued).
    fn read_frame_into(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize>;

    /// Write one frame gathered from guest memory (vnet header included).
    ///
    /// # Errors
    /// The OS error of the write (`WouldBlock` when the backend is full).
    fn write_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize>;

    /// Set the offloads the guest accepts ([`offload`] flags).
    ///
    /// # Errors
    /// The OS error of `TUNSETOFFLOAD`.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// An open, non-blocking TAP with a 12-byte virtio-net header.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Open `/dev/net/tun` and attach it to the TAP `name`.
    ///
    /// # Errors
    /// [`NetError::InvalidTapName`] or [`NetError::TapOpen`] with the OS error.
    pub fn open(name: &str) -> Result<Self, NetError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(NetError::InvalidTapName {
                name: name.to_owned(),
            });
        }
        let fail = |source: io::Error| NetError::TapOpen {
            name: name.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(fail)?;
        let fd = OwnedFd::from(file);
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `fd` is an open tun fd; TUNSETIFF reads (and may update) a `struct ifreq`,
        // which `IfReq` lays out in full (40 bytes) and which outlives the call.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if ret < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, valid for the call.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) };
        if ret < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let mut tap = Self {
            fd,
            name: name.to_owned(),
        };
        tap.set_offload(0).map_err(fail)?;
        Ok(tap)
    }

    /// The TAP's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_frame_fd(self.fd.as_raw_fd(), buf)
    }

    fn read_frame_into(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        readv_guest(self.fd.as_raw_fd(), mem, segs)
    }

    fn write_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        writev_guest(self.fd.as_raw_fd(), mem, segs)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // TUNSETOFFLOAD takes the flags by value.
        // SAFETY: `fd` is an attached tun fd; the argument is an integer, no memory is passed.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `read(2)` one frame from `fd` into `buf`.
///
/// # Errors
/// The OS error (`WouldBlock` on an empty non-blocking fd).
pub fn read_frame_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        let iow = |nr: u64| (1u64 << 30) | (4 << 16) | (u64::from(b'T') << 8) | nr;
        assert_eq!(TUNSETIFF, iow(202));
        assert_eq!(TUNSETOFFLOAD, iow(208));
        assert_eq!(TUNSETVNETHDRSZ, iow(216));
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn open_rejects_bad_names() {
        for name in ["", "a-name-longer-than-15", "ta\0p"] {
            let err = Tap::open(name).unwrap_err();
            assert!(matches!(err, NetError::InvalidTapName { .. }), "{name:?}");
        }
    }

    #[test]
    fn open_failure_carries_name_and_os_error() {
        // Unprivileged: EPERM creating the TAP; privileged: may succeed (then nothing to test).
        if let Err(err) = Tap::open("sqbnotap0") {
            let text = err.to_string();
            assert!(text.contains("sqbnotap0"), "{text}");
            assert!(text.contains("os error"), "{text}");
        }
    }
}
