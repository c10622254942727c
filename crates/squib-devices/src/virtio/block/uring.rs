//! The `Async` block engine: requests go to the backing file through an io_uring, so up to
//! [`RING_ENTRIES`] of them are in flight at once and the event loop never waits on the disk.
//!
//! - Reads and writes are `readv`/`writev` whose iovecs point straight into guest memory (no
//!   bounce buffer); a FLUSH is an `fdatasync` (`IORING_OP_FSYNC` with `DATASYNC`) marked
//!   `IOSQE_IO_DRAIN`, and the device submits it only when nothing else is in flight, so it
//!   starts after every earlier write completed (short transfers included) and nothing
//!   submitted later starts before it is done.
//! - The kernel writes each completion to the ring and signals [`UringEngine::completion_evt`],
//!   which the device registers with the event loop; [`UringEngine::reap`] hands completed
//!   requests back, and the device writes their status and used entries only then.
//! - A short transfer is resubmitted for the rest, as the sync engine retries; one that moves
//!   nothing (end of file, a zero-length write) is an error, as are negative results.
//! - The engine holds at most [`RING_ENTRIES`] requests ([`UringEngine::is_full`]): the
//!   completion ring (twice as large) never overflows, and a full engine stops the device
//!   from taking more chains until completions arrive.
//!
//! Reads mark the guest pages they fill dirty when they are submitted: the kernel writes
//! them behind vm-memory's back, and a snapshot waits for every in-flight request first.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{RequestKind, Segment};
use crate::virtio::GuestMemoryMmap;

/// Requests one device keeps in flight (submission ring entries; the completion ring has
/// twice as many, so it cannot overflow).
pub const RING_ENTRIES: u32 = 128;

/// The sysctl that disables io_uring host-wide (2) or for unprivileged users (1).
pub const DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Why the Async engine cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    /// `kernel.io_uring_disabled` is 2.
    #[error(
        "the Async io_engine needs io_uring, which this host disables \
         (kernel.io_uring_disabled = 2); use the Sync io_engine"
    )]
    Disabled,
    /// `io_uring_setup` failed (ENOSYS: a kernel without io_uring; EPERM: disabled for us).
    #[error(
        "the Async io_engine needs io_uring, which this host does not offer \
         (io_uring_setup: {0}); use the Sync io_engine"
    )]
    Setup(#[source] io::Error),
    /// The completion eventfd cannot be created or registered.
    #[error("cannot set up the io_uring completion eventfd: {0}")]
    EventFd(#[source] io::Error),
}

/// Check that this host can run the Async engine: io_uring is not disabled and a ring can
/// be set up. `PUT /drives` calls it so that the error comes at configuration time.
///
/// # Errors
/// [`UringError::Disabled`] or [`UringError::Setup`].
pub fn probe() -> Result<(), UringError> {
    probe_with(Path::new(DISABLED_SYSCTL))
}

/// [`probe`] with the sysctl read from `sysctl` (tests point it at a file of their own).
///
/// # Errors
/// As [`probe`].
pub fn probe_with(sysctl: &Path) -> Result<(), UringError> {
    let disabled = std::fs::read_to_string(sysctl)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    if disabled == Some(2) {
        return Err(UringError::Disabled);
    }
    IoUring::new(1).map(drop).map_err(UringError::Setup)
}

/// `struct iovec` with plain integers, so the engine stays `Send` (a pointer field would
/// not be); the layout is `libc::iovec`'s, asserted below.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct IoVec {
    base: usize,
    len: usize,
}
const _: () = assert!(size_of::<IoVec>() == size_of::<libc::iovec>());
const _: () = assert!(align_of::<IoVec>() == align_of::<libc::iovec>());

/// What a slot's operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
}

/// One request in flight.
#[derive(Debug, Default)]
struct Slot {
    head: u16,
    op: Option<Op>,
    status_addr: GuestAddress,
    /// Bytes the request moves.
    data_len: u64,
    /// File offset of its first byte.
    offset: u64,
    /// Bytes moved so far.
    done: u64,
    /// The request's pieces of guest memory; `iov[first..]` is what is left to move.
    iov: Vec<IoVec>,
    first: usize,
}

/// A request whose I/O finished, successfully or not.
#[derive(Debug)]
pub struct Completion {
    /// The chain's head index.
    pub head: u16,
    /// Read, write or flush.
    pub kind: RequestKind,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
    /// Bytes the request moved (reads and writes).
    pub data_len: u64,
    /// The host's verdict.
    pub result: io::Result<()>,
}

/// Why a request could not be submitted (it completes at once with IOERR).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A data segment is not inside guest memory.
    #[error("data segment {addr:#x}+{len} is outside guest memory")]
    Memory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// The engine is full (the device checks [`UringEngine::is_full`] first).
    #[error("the io_uring is full")]
    Full,
}

/// An io_uring and the requests in flight on it.
pub struct UringEngine {
    ring: IoUring,
    completion_evt: EventFd,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Entries pushed since the last successful submit.
    unsubmitted: bool,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl UringEngine {
    /// A ring of [`RING_ENTRIES`] with its completion eventfd registered.
    ///
    /// # Errors
    /// [`UringError::Setup`] when the host has no io_uring, [`UringError::EventFd`].
    pub fn new() -> Result<Self, UringError> {
        let ring = IoUring::new(RING_ENTRIES).map_err(UringError::Setup)?;
        let completion_evt = EventFd::new(EFD_NONBLOCK).map_err(UringError::EventFd)?;
        ring.submitter()
            .register_eventfd(completion_evt.as_raw_fd())
            .map_err(UringError::EventFd)?;
        let slots = (0..RING_ENTRIES).map(|_| Slot::default()).collect();
        // Popped from the end: slot 0 is used first.
        let free = (0..RING_ENTRIES as u16).rev().collect();
        Ok(Self {
            ring,
            completion_evt,
            slots,
            free,
            unsubmitted: false,
        })
    }

    /// The eventfd the kernel signals for each completion.
    #[must_use]
    pub fn completion_evt(&self) -> &EventFd {
        &self.completion_evt
    }

    /// Requests submitted and not yet reaped.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// No room for another request.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Queue a read (`In`) or write (`Out`) of `segs` at file `offset` on `fd`; it reaches
    /// the kernel at the next [`UringEngine::submit`].
    ///
    /// # Errors
    /// [`SubmitError`]; nothing is queued then.
    #[allow(clippy::too_many_arguments)]
    pub fn push_rw(
        &mut self,
        fd: RawFd,
        mem: &GuestMemoryMmap,
        head: u16,
        kind: RequestKind,
        offset: u64,
        segs: &[Segment],
        status_addr: GuestAddress,
    ) -> Result<(), SubmitError> {
        let op = if kind == RequestKind::In {
            Op::Read
        } else {
            Op::Write
        };
        let &index = self.free.last().ok_or(SubmitError::Full)?;
        let slot = &mut self.slots[usize::from(index)];
        slot.iov.clear();
        let mut data_len = 0u64;
        for seg in segs {
            let bad = || SubmitError::Memory {
                addr: seg.addr.0,
                len: seg.len,
            };
            for piece in GuestMemoryBackend::get_slices(mem, seg.addr, seg.len as usize) {
                let piece = piece.map_err(|_| bad())?;
                if op == Op::Read {
                    piece.bitmap().mark_dirty(0, piece.len());
                }
                // The mapping outlives `mem`'s borrow (squib's guest memory is never mapped
                // per access), so the address stays valid while the request is in flight.
                slot.iov.push(IoVec {
                    base: piece.ptr_guard_mut().as_ptr() as usize,
                    len: piece.len(),
                });
            }
            data_len += u64::from(seg.len);
        }
        slot.head = head;
        slot.op = Some(op);
        slot.status_addr = status_addr;
        slot.data_len = data_len;
        slot.offset = offset;
        slot.done = 0;
        slot.first = 0;
        self.free.pop();
        self.push_slot(fd, index);
        Ok(())
    }

    /// Queue an `fdatasync` of `fd` that starts once everything submitted before it is done.
    ///
    /// # Errors
    /// [`SubmitError::Full`].
    pub fn push_flush(
        &mut self,
        fd: RawFd,
        head: u16,
        status_addr: GuestAddress,
    ) -> Result<(), SubmitError> {
        let index = self.free.pop().ok_or(SubmitError::Full)?;
        let slot = &mut self.slots[usize::from(index)];
        slot.head = head;
        slot.op = Some(Op::Flush);
        slot.status_addr = status_addr;
        slot.data_len = 0;
        slot.iov.clear();
        self.push_slot(fd, index);
        Ok(())
    }

    /// Put slot `index`'s operation (what is left of it) on the submission ring.
    fn push_slot(&mut self, fd: RawFd, index: u16) {
        let slot = &self.slots[usize::from(index)];
        let fd = types::Fd(fd);
        let entry = match slot.op {
            Some(Op::Flush) => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .flags(squeue::Flags::IO_DRAIN),
            Some(op) => {
                let rest = &slot.iov[slot.first..];
                let iov = rest.as_ptr().cast::<libc::iovec>();
                // At most SEG_MAX segments, each split by at most the region count.
                let count = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                let at = slot.offset + slot.done;
                if op == Op::Read {
                    opcode::Readv::new(fd, iov, count).offset(at).build()
                } else {
                    opcode::Writev::new(fd, iov, count).offset(at).build()
                }
            }
            None => return,
        }
        .user_data(u64::from(index));
        // SAFETY: the iovecs live in the slot, which is neither touched nor freed until the
        // request's completion is reaped, and point into guest memory that stays mapped for
        // the device's life (the VMM holds the mapping); the fd outlives the request because
        // the device waits for in-flight requests before it swaps or drops its file.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        // A free slot means a free submission entry: at most RING_ENTRIES are ever queued.
        debug_assert!(pushed.is_ok(), "submission ring full with a free slot");
        self.unsubmitted = true;
    }

    /// Hand the queued entries to the kernel (one `io_uring_enter`).
    ///
    /// # Errors
    /// The OS error; the entries stay queued and the next submit retries them.
    pub fn submit(&mut self) -> io::Result<()> {
        if !self.unsubmitted {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => {
                    self.unsubmitted = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Take every completion the kernel posted: requests that are done go to `done`; short
    /// transfers are resubmitted for the rest (on `fd`) and stay in flight.
    pub fn reap(&mut self, fd: RawFd, mut done: impl FnMut(Completion)) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            let Ok(index) = u16::try_from(cqe.user_data()) else {
                continue;
            };
            if let Some(finished) = self.settle(fd, index, cqe.result()) {
                done(finished);
            }
        }
        // Resubmitted remainders.
        if let Err(e) = self.submit() {
            log::error!("io_uring: cannot resubmit short transfers: {e}");
        }
    }

    /// Account for result `res` of slot `index`: the finished request, or `None` when it was
    /// resubmitted.
    fn settle(&mut self, fd: RawFd, index: u16, res: i32) -> Option<Completion> {
        let slot = self.slots.get_mut(usize::from(index))?;
        let op = slot.op?;
        let result = match (op, res) {
            (_, r) if r == -libc::EINTR => {
                self.push_slot(fd, index);
                return None;
            }
            (_, r) if r < 0 => Err(io::Error::from_raw_os_error(-r)),
            (Op::Flush, _) => Ok(()),
            (_, 0) if slot.done < slot.data_len => Err(if op == Op::Read {
                io::ErrorKind::UnexpectedEof.into()
            } else {
                io::ErrorKind::WriteZero.into()
            }),
            (_, r) => {
                slot.advance(r.unsigned_abs() as usize);
                if slot.done < slot.data_len {
                    self.push_slot(fd, index);
                    return None;
                }
                Ok(())
            }
        };
        let slot = &mut self.slots[usize::from(index)];
        slot.op = None;
        self.free.push(index);
        Some(Completion {
            head: slot.head,
            kind: match op {
                Op::Read => RequestKind::In,
                Op::Write => RequestKind::Out,
                Op::Flush => RequestKind::Flush,
            },
            status_addr: slot.status_addr,
            data_len: slot.data_len,
            result,
        })
    }

    /// Block until every request in flight is done, handing each to `done` (snapshot, file
    /// swap, reset, drop).
    pub fn wait_idle(&mut self, fd: RawFd, mut done: impl FnMut(Completion)) {
        while self.in_flight() > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("io_uring: cannot wait for in-flight requests: {e}");
                    return;
                }
            }
            self.unsubmitted = false;
            self.reap(fd, &mut done);
        }
    }
}

impl Slot {
    /// `n` more bytes moved: drop the iovecs (and part of one) they covered.
    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        let mut left = n;
        while left > 0 {
            let Some(iov) = self.iov.get_mut(self.first) else {
                break;
            };
            if left < iov.len {
                iov.base += left;
                iov.len -= left;
                break;
            }
            left -= iov.len;
            self.first += 1;
        }
    }
}

#[cfg(test)]
#[path = "uring_tests.rs"]
mod tests;
