//! Guarded calls into `virtio-queue` for everything a guest controls.
//!
//! `virtio_queue::Queue` logs an `error!` under its own target (`virtio_queue::queue`) for
//! several guest mistakes and returns a bare `bool` or `()`: an invalid `QueueNum`, a
//! misaligned ring address (`set_size`, `set_*_address`), an inaccessible ring (`is_valid`)
//! and an out-of-range head (`add_used`). A guest repeating one of them would write a line per
//! attempt, past squib's rate limits. So squib never reaches those paths: the functions here
//! validate first (or use the `try_` setters, which do not log) and return a reason, which the
//! caller logs through a rate-limited call site.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::GuestMemoryMmap;

/// Why a queue register write or a completion was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `QueueNum` is zero, not a power of two, or above `QueueNumMax`.
    #[error("queue size {size} is not a power of two up to {max}")]
    InvalidSize {
        /// The size the driver wrote.
        size: u32,
        /// `QueueNumMax`.
        max: u16,
    },
    /// A ring address breaks the split-ring alignment (virtio 1.2 §2.7).
    #[error("{ring} at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Which ring.
        ring: Ring,
        /// The address the driver wrote.
        addr: u64,
        /// The alignment it needs.
        align: u64,
    },
    /// A ring does not lie in guest memory.
    #[error("{ring} at {addr:#x} ({len:#x} bytes) is outside guest memory")]
    RingOutsideMemory {
        /// Which ring.
        ring: Ring,
        /// Its guest address.
        addr: u64,
        /// Its length for the queue size.
        len: u64,
    },
    /// An available-ring entry names no descriptor.
    #[error("head {head} is outside the queue of {size}")]
    HeadOutOfRange {
        /// The head the driver published.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// Writing the used ring failed.
    #[error("cannot write the used ring")]
    Used(#[source] virtio_queue::Error),
}

/// The three areas of a split virtqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// The descriptor table (16-byte aligned).
    Descriptors,
    /// The available (driver) ring (2-byte aligned).
    Available,
    /// The used (device) ring (4-byte aligned).
    Used,
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Descriptors => "descriptor table",
            Self::Available => "available ring",
            Self::Used => "used ring",
        })
    }
}

impl Ring {
    fn align(self) -> u64 {
        match self {
            Self::Descriptors => 16,
            Self::Available => 2,
            Self::Used => 4,
        }
    }

    /// Bytes the ring takes for a queue of `size` (virtio 1.2 §2.7, with the event fields).
    fn len(self, size: u16) -> u64 {
        let size = u64::from(size);
        match self {
            Self::Descriptors => 16 * size,
            Self::Available => 6 + 2 * size,
            Self::Used => 6 + 8 * size,
        }
    }

    fn address(self, queue: &Queue) -> u64 {
        match self {
            Self::Descriptors => queue.desc_table(),
            Self::Available => queue.avail_ring(),
            Self::Used => queue.used_ring(),
        }
    }
}

/// Set the queue size the driver wrote to `QueueNum`; an invalid one leaves the queue as is.
///
/// # Errors
/// [`QueueError::InvalidSize`].
pub fn set_size(queue: &mut Queue, size: u32) -> Result<(), QueueError> {
    let max = queue.max_size();
    if u16::try_from(size).is_ok_and(|size| queue.try_set_size(size).is_ok()) {
        Ok(())
    } else {
        Err(QueueError::InvalidSize { size, max })
    }
}

/// Set the low (`high == false`) or high half of `ring`'s address; a misaligned result leaves
/// the queue as is.
///
/// # Errors
/// [`QueueError::Misaligned`].
pub fn set_ring_half(
    queue: &mut Queue,
    ring: Ring,
    high: bool,
    value: u32,
) -> Result<(), QueueError> {
    let current = ring.address(queue);
    let addr = if high {
        (current & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (current & !0xffff_ffff) | u64::from(value)
    };
    let result = match ring {
        Ring::Descriptors => queue.try_set_desc_table_address(GuestAddress(addr)),
        Ring::Available => queue.try_set_avail_ring_address(GuestAddress(addr)),
        Ring::Used => queue.try_set_used_ring_address(GuestAddress(addr)),
    };
    result.map_err(|_| QueueError::Misaligned {
        ring,
        addr,
        align: ring.align(),
    })
}

/// Whether a ready queue's rings lie in `mem` (what `Queue::is_valid` checks, without its
/// logging). A queue that is not ready is not checked.
///
/// # Errors
/// [`QueueError::RingOutsideMemory`] for the first ring that does not fit.
pub fn check_layout(queue: &Queue, mem: &GuestMemoryMmap) -> Result<(), QueueError> {
    if !queue.ready() {
        return Ok(());
    }
    for ring in [Ring::Descriptors, Ring::Available, Ring::Used] {
        let (addr, len) = (ring.address(queue), ring.len(queue.size()));
        let access = if ring == Ring::Used {
            Permissions::Write
        } else {
            Permissions::Read
        };
        let fits =
            usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(addr), len, access));
        if !fits {
            return Err(QueueError::RingOutsideMemory { ring, addr, len });
        }
    }
    Ok(())
}

/// Put `head` in the used ring with `len` bytes written, if it names a descriptor.
///
/// # Errors
/// [`QueueError::HeadOutOfRange`] (nothing is written), or [`QueueError::Used`].
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    let size = queue.size();
    if head >= size {
        return Err(QueueError::HeadOutOfRange { head, size });
    }
    queue.add_used(mem, head, len).map_err(QueueError::Used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{single_region_mem, VirtQueue};

    #[test]
    fn invalid_sizes_and_misaligned_rings_are_refused_and_named() {
        let mut q = <Queue as QueueT>::new(256).unwrap();
        assert!(matches!(
            set_size(&mut q, 3),
            Err(QueueError::InvalidSize { size: 3, max: 256 })
        ));
        assert!(set_size(&mut q, 0x1_0010).is_err(), "no truncation to 16");
        assert!(set_size(&mut q, 16).is_ok());
        assert_eq!(q.size(), 16);
        let err = set_ring_half(&mut q, Ring::Descriptors, false, 0x1008).unwrap_err();
        assert_eq!(
            err.to_string(),
            "descriptor table at 0x1008 is not 16-byte aligned"
        );
        assert!(set_ring_half(&mut q, Ring::Used, false, 0x3004).is_ok());
        assert!(set_ring_half(&mut q, Ring::Used, true, 1).is_ok());
        assert_eq!(q.used_ring(), 0x1_0000_3004);
    }

    #[test]
    fn layout_outside_memory_is_named_and_out_of_range_heads_are_refused() {
        let mem = single_region_mem(0x1_0000);
        let mut q = <Queue as QueueT>::new(16).unwrap();
        VirtQueue::new(&mem, GuestAddress(0), 16).configure(&mut q);
        assert!(check_layout(&q, &mem).is_ok());
        assert!(add_used(&mut q, &mem, 15, 0).is_ok());
        assert!(matches!(
            add_used(&mut q, &mem, 16, 0),
            Err(QueueError::HeadOutOfRange { head: 16, size: 16 })
        ));
        VirtQueue::new(&mem, GuestAddress(0xff80), 16).configure(&mut q);
        assert!(matches!(
            check_layout(&q, &mem),
            Err(QueueError::RingOutsideMemory { .. })
        ));
    }
}
