//! One virtio-rng request: the device-writable buffers of a descriptor chain.
//!
//! A request is a chain of device-writable descriptors (virtio 1.2 §5.4.6). Parsing never
//! trusts the guest: it caps the number of descriptors (which also ends descriptor loops),
//! requires every descriptor to be writable and inside guest memory, and reports a chain that
//! ends on a descriptor still pointing to a next one (a loop, a `next` outside the table, an
//! unreadable descriptor). Segments go into a caller-owned buffer reused across requests, so
//! the hot path does not allocate.

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::QUEUE_SIZE;
use crate::virtio::GuestMemoryMmap;

/// Most descriptors a request may have (a full queue's worth; indirect tables can be longer).
pub const MAX_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// One guest buffer to fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes (never 0).
    pub len: u32,
}

/// A guest mistake in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head's descriptor cannot be read (a head outside the table, a bad indirect table).
    #[error("chain has no readable descriptor")]
    Empty,
    /// More descriptors than a request may have.
    #[error("chain has more than {MAX_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    /// The chain ends in a descriptor that still points to a next one.
    #[error("chain is broken or loops")]
    Broken,
    /// A descriptor the device may only read.
    #[error("descriptor {index} is not device-writable")]
    ReadOnly {
        /// Position in the chain.
        index: usize,
    },
    /// A buffer outside guest memory.
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Guest address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
}

/// Collect the buffers of `chain` into `segs` (cleared first; zero-length buffers are left
/// out) and return the total length the guest asked for.
///
/// # Errors
/// The [`RequestError`] describing the guest's mistake.
pub fn parse(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segs: &mut Vec<Segment>,
) -> Result<u64, RequestError> {
    segs.clear();
    let mut requested = 0u64;
    let mut count = 0usize;
    let mut ends_with_next = false;
    for desc in chain {
        if count == MAX_DESCRIPTORS {
            return Err(RequestError::TooManyDescriptors);
        }
        if !desc.is_write_only() {
            return Err(RequestError::ReadOnly { index: count });
        }
        let (addr, len) = (desc.addr(), desc.len());
        // u32 always fits in usize on the 64-bit hosts squib supports.
        if !mem.check_range(addr, len as usize, Permissions::Write) {
            return Err(RequestError::OutsideMemory { addr: addr.0, len });
        }
        if len > 0 {
            segs.push(Segment { addr, len });
        }
        requested += u64::from(len);
        ends_with_next = desc.has_next();
        count += 1;
    }
    if count == 0 {
        return Err(RequestError::Empty);
    }
    if ends_with_next {
        return Err(RequestError::Broken);
    }
    Ok(requested)
}
