//! A userfaultfd: creating it, the API handshake, registering ranges, filling pages and
//! reading the kernel's events.

use std::fs::OpenOptions;
use std::io;
use std::mem::size_of_val;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use crate::sys::{
    self, UffdMsg, UffdioApi, UffdioCopy, UffdioRange, UffdioRegister, UffdioZeropage,
    UFFDIO_REGISTER_MODE_MISSING, UFFD_EVENT_PAGEFAULT, UFFD_EVENT_REMOVE,
    UFFD_PAGEFAULT_FLAG_WRITE,
};

/// Where a userfaultfd is created when the device exists: it lets an unprivileged process
/// with access to the device handle kernel-mode faults too.
const USERFAULTFD_DEVICE: &str = "/dev/userfaultfd";

/// An event read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdEvent {
    /// A thread touched a missing page and waits for it.
    PageFault {
        /// The faulting address (not page aligned).
        address: u64,
        /// Whether the access was a write.
        write: bool,
    },
    /// `[start, end)` of registered memory was discarded and reads as zeros from now on.
    Remove {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// An event this crate never asks for (fork, remap, unmap).
    Other {
        /// Its `UFFD_EVENT_*` code.
        event: u8,
    },
}

impl From<&UffdMsg> for UffdEvent {
    fn from(msg: &UffdMsg) -> Self {
        match msg.event {
            UFFD_EVENT_PAGEFAULT => UffdEvent::PageFault {
                address: msg.arg[1],
                write: msg.arg[0] & UFFD_PAGEFAULT_FLAG_WRITE != 0,
            },
            UFFD_EVENT_REMOVE => UffdEvent::Remove {
                start: msg.arg[0],
                end: msg.arg[1],
            },
            event => UffdEvent::Other { event },
        }
    }
}

/// How far a `UFFDIO_COPY` or `UFFDIO_ZEROPAGE` got. Whatever it reports, the first
/// `filled` bytes of the range are now present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The whole range was filled.
    Done,
    /// A page already present stopped it (`EEXIST`): another fill won the race. The page
    /// after the `filled` bytes is the present one.
    Exists {
        /// Bytes filled before it.
        filled: u64,
    },
    /// The memory layout was changing (`EAGAIN`): the pending events must be read before the
    /// rest is retried. A fill that stops part way says `EAGAIN` too.
    Again {
        /// Bytes filled before it stopped.
        filled: u64,
    },
    /// The range is no longer registered memory (`ENOENT`): the VMM unmapped it.
    Unmapped,
    /// The process owning the memory has exited (`ESRCH`).
    Gone,
}

/// An owned userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Creates a close-on-exec, non-blocking userfaultfd: through `/dev/userfaultfd` when it
    /// exists (an error opening it is returned, not worked around), else with the
    /// `userfaultfd(2)` system call.
    pub fn new() -> io::Result<Self> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(USERFAULTFD_DEVICE);
        let fd = match device {
            Ok(device) => {
                // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns a new
                // descriptor or -1; `device` is an open /dev/userfaultfd.
                let fd = unsafe {
                    ioctl_with_val(&device, sys::USERFAULTFD_IOC_NEW(), flags as libc::c_ulong)
                };
                if fd < 0 {
                    let err = io::Error::last_os_error();
                    return Err(io::Error::new(
                        err.kind(),
                        format!("USERFAULTFD_IOC_NEW on {USERFAULTFD_DEVICE}: {err}"),
                    ));
                }
                fd
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // SAFETY: userfaultfd(2) takes its flags by value and returns a new descriptor
                // or -1; no memory is passed.
                let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
                if fd < 0 {
                    let err = io::Error::last_os_error();
                    return Err(io::Error::new(err.kind(), format!("userfaultfd(2): {err}")));
                }
                // A descriptor always fits a c_int.
                fd as RawFd
            }
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot open {USERFAULTFD_DEVICE}: {err}"),
                ))
            }
        };
        // SAFETY: `fd` was just returned by the kernel as a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Uffd { fd })
    }

    /// The `UFFDIO_API` handshake, which must come before any other ioctl, enabling
    /// `features`. Returns every feature the kernel offers.
    pub fn api(&self, features: u64) -> io::Result<u64> {
        let mut api = UffdioApi {
            api: sys::UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
        let ret = unsafe { ioctl_with_mut_ref(&self.fd, sys::UFFDIO_API(), &mut api) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("UFFDIO_API: {err}")));
        }
        if api.features & features != features {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "UFFDIO_API: the kernel lacks features {:#x}",
                    features & !api.features
                ),
            ));
        }
        Ok(api.features)
    }

    /// Registers `[start, start + len)` for missing-page faults. Returns the bitmask
    /// (`1 << _UFFDIO_*`) of the ioctls the kernel allows on the range.
    pub fn register_missing(&self, start: u64, len: u64) -> io::Result<u64> {
        let mut register = UffdioRegister {
            range: UffdioRange { start, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`, which
        // `register` is; the kernel checks the range itself.
        let ret = unsafe { ioctl_with_mut_ref(&self.fd, sys::UFFDIO_REGISTER(), &mut register) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(register.ioctls)
    }

    /// Stops tracking `[start, start + len)`: missing pages there are then filled by the
    /// kernel as for any anonymous memory (with zeros).
    pub fn unregister(&self, start: u64, len: u64) -> io::Result<()> {
        let range = UffdioRange { start, len };
        // SAFETY: UFFDIO_UNREGISTER reads a `struct uffdio_range`, which `range` is.
        let ret = unsafe { ioctl_with_ref(&self.fd, sys::UFFDIO_UNREGISTER(), &range) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wakes the threads waiting on faults in `[start, start + len)`, for pages that became
    /// present without a fill of this handler waking them.
    pub fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let range = UffdioRange { start, len };
        // SAFETY: UFFDIO_WAKE reads a `struct uffdio_range`, which `range` is.
        let ret = unsafe { ioctl_with_ref(&self.fd, sys::UFFDIO_WAKE(), &range) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` in this process into the missing pages at `dst` and wakes
    /// the threads waiting on them.
    ///
    /// # Safety
    ///
    /// `[src, src + len)` must be readable memory of this process.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64) -> io::Result<Fill> {
        let mut copy = UffdioCopy {
            dst,
            src: src as u64,
            len,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads and writes a `struct uffdio_copy`, which `copy` is; it
        // reads `len` bytes at `src`, which the caller guarantees readable, and writes only
        // into the registered range at `dst`, which this process never accesses through a
        // Rust reference.
        let ret = unsafe { ioctl_with_mut_ref(&self.fd, sys::UFFDIO_COPY(), &mut copy) };
        fill_outcome(ret, copy.copy)
    }

    /// Maps the zero page at the missing pages `[dst, dst + len)` and wakes the threads
    /// waiting on them. Not available on hugetlbfs memory.
    pub fn zeropage(&self, dst: u64, len: u64) -> io::Result<Fill> {
        let mut zeropage = UffdioZeropage {
            range: UffdioRange { start: dst, len },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE reads and writes a `struct uffdio_zeropage`, which
        // `zeropage` is; it only changes the registered range at `dst`.
        let ret = unsafe { ioctl_with_mut_ref(&self.fd, sys::UFFDIO_ZEROPAGE(), &mut zeropage) };
        fill_outcome(ret, zeropage.zeropage)
    }

    /// Appends to `events` every event the kernel has queued, without waiting.
    pub fn read_events(&self, events: &mut Vec<UffdEvent>) -> io::Result<()> {
        let mut msgs = [UffdMsg::default(); 16];
        loop {
            // SAFETY: reads at most `size_of_val(&msgs)` bytes into `msgs`, plain integers
            // for which any bytes are valid.
            let ret = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr().cast(),
                    size_of_val(&msgs),
                )
            };
            if ret < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            // The kernel returns whole messages only.
            let count = ret as usize / size_of_val(&msgs[0]);
            events.extend(msgs[..count].iter().map(UffdEvent::from));
            if count < msgs.len() {
                return Ok(());
            }
        }
    }

    /// Makes reads and fills on a received userfaultfd return instead of waiting (the
    /// descriptor's file status is shared with the sender, which set this already when it
    /// followed Firecracker), and keeps it out of programs this process executes.
    pub fn set_nonblocking_cloexec(&self) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: fcntl F_GETFL/F_SETFL/F_SETFD on an owned descriptor take and return plain
        // integers.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0
                || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
                || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Decodes a fill ioctl's return value and its `copy`/`zeropage` output field.
fn fill_outcome(ret: libc::c_int, done: i64) -> io::Result<Fill> {
    if ret == 0 {
        return Ok(Fill::Done);
    }
    let err = io::Error::last_os_error();
    // On error the output field holds the bytes filled before it, or a negative errno.
    let filled = u64::try_from(done).unwrap_or(0);
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(Fill::Exists { filled }),
        Some(libc::EAGAIN) => Ok(Fill::Again { filled }),
        Some(libc::ENOENT) => Ok(Fill::Unmapped),
        Some(libc::ESRCH) => Ok(Fill::Gone),
        _ => Err(err),
    }
}

impl From<OwnedFd> for Uffd {
    /// Wraps a userfaultfd received from another process.
    fn from(fd: OwnedFd) -> Self {
        Uffd { fd }
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
#[path = "uffd_tests.rs"]
mod tests;
