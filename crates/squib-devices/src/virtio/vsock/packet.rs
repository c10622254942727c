//! The vsock packet: `virtio_vsock_hdr` (virtio 1.2 §5.10.6) and the chains that carry it.
//!
//! A packet is a 44-byte little-endian header followed by `len` data bytes, laid across the
//! descriptors of one chain: device-readable ones on the tx queue, device-writable ones on
//! the rx queue. The header is parsed into a stack struct; data moves straight between guest
//! memory and the host socket (see [`crate::virtio::iovec`]). Chains
//! are checked piece by piece (direction, inside guest memory) before anything is read.

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::virtio::GuestMemoryMmap;

/// Length of `virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// `type`: stream socket, the only type the device supports.
pub const TYPE_STREAM: u16 = 1;

/// `op` values (virtio 1.2 §5.10.6).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused or aborted).
    pub const RST: u16 = 3;
    /// One or both directions closed (see the shutdown flags).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Unsolicited credit information.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Please send a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `flags` of `OP_SHUTDOWN`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `flags` of `OP_SHUTDOWN`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// `virtio_vsock_hdr`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Data bytes after the header.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// Decode the little-endian wire form.
    #[must_use]
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encode to the little-endian wire form.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Pieces of guest memory, in chain order.
pub type Segments = Vec<(GuestAddress, u32)>;

/// Why a chain cannot carry a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A descriptor goes the wrong way (device-writable on tx, device-readable on rx).
    WrongDirection,
    /// A descriptor lies (partly) outside guest memory.
    OutOfMemory,
    /// The chain holds fewer bytes than needed (a header, an event).
    TooShort,
    /// The chain has more pieces than a queue has descriptors (an indirect table).
    TooManyPieces,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WrongDirection => "descriptor in the wrong direction",
            Self::OutOfMemory => "descriptor outside guest memory",
            Self::TooShort => "chain too short",
            Self::TooManyPieces => "chain with more pieces than the queue size",
        })
    }
}

/// Collect the pieces of `descs` into `out` (cleared first), all of them device-writable when
/// `writable`, else all device-readable, each inside guest memory, at most
/// [`QUEUE_SIZE`](super::QUEUE_SIZE) of them (what one `readv`/`writev` takes). Returns their
/// total length.
///
/// # Errors
/// [`ChainError`] when a piece breaks those rules or the total is shorter than `min_len`.
pub fn collect_segments<I>(
    mem: &GuestMemoryMmap,
    descs: I,
    writable: bool,
    min_len: u64,
    out: &mut Segments,
) -> Result<u64, ChainError>
where
    I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
{
    out.clear();
    let access = if writable {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut total = 0u64;
    for desc in descs {
        if desc.is_write_only() != writable {
            return Err(ChainError::WrongDirection);
        }
        let len = desc.len();
        if !mem.check_range(desc.addr(), len as usize, access) {
            return Err(ChainError::OutOfMemory);
        }
        if len > 0 {
            if out.len() == usize::from(super::QUEUE_SIZE) {
                return Err(ChainError::TooManyPieces);
            }
            out.push((desc.addr(), len));
            total += u64::from(len);
        }
    }
    if total < min_len {
        return Err(ChainError::TooShort);
    }
    Ok(total)
}

/// Put into `out` (cleared first) the pieces of `segs` covering bytes `offset..offset + len`.
/// Returns how many bytes they cover (less than `len` when `segs` ends first).
pub fn sub_segments(
    segs: &[(GuestAddress, u32)],
    offset: u64,
    len: u64,
    out: &mut Segments,
) -> u64 {
    out.clear();
    let mut skip = offset;
    let mut left = len;
    for &(addr, seg_len) in segs {
        if left == 0 {
            break;
        }
        let seg_len = u64::from(seg_len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(left);
        // Pieces were checked inside guest memory, so `addr + skip` cannot overflow.
        out.push((GuestAddress(addr.0 + skip), n as u32));
        left -= n;
        skip = 0;
    }
    len - left
}

/// Read the header from the first [`HDR_LEN`] bytes of `segs`.
#[must_use]
pub fn read_header(mem: &GuestMemoryMmap, segs: &[(GuestAddress, u32)]) -> Option<VsockHeader> {
    let mut raw = [0u8; HDR_LEN];
    copy_from_guest(mem, segs, 0, &mut raw).then(|| VsockHeader::from_bytes(&raw))
}

/// Copy bytes `offset..offset + buf.len()` of `segs` into `buf`; `false` if they do not exist.
pub fn copy_from_guest(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
    offset: u64,
    buf: &mut [u8],
) -> bool {
    let mut skip = offset;
    let mut done = 0;
    for &(addr, seg_len) in segs {
        if done == buf.len() {
            break;
        }
        let seg_len = u64::from(seg_len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = ((seg_len - skip) as usize).min(buf.len() - done);
        if mem
            .read_slice(&mut buf[done..done + n], GuestAddress(addr.0 + skip))
            .is_err()
        {
            return false;
        }
        done += n;
        skip = 0;
    }
    done == buf.len()
}

/// Write `data` at the start of `segs`; `false` if it does not fit.
pub fn copy_to_guest(mem: &GuestMemoryMmap, segs: &[(GuestAddress, u32)], data: &[u8]) -> bool {
    let mut done = 0;
    for &(addr, seg_len) in segs {
        if done == data.len() {
            break;
        }
        let n = (seg_len as usize).min(data.len() - done);
        if mem.write_slice(&data[done..done + n], addr).is_err() {
            return false;
        }
        done += n;
    }
    done == data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::single_region_mem;

    #[test]
    fn header_round_trips_little_endian() {
        let hdr = VsockHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: SHUTDOWN_SEND,
            buf_alloc: 65536,
            fwd_cnt: 0xdead_beef,
        };
        let raw = hdr.to_bytes();
        assert_eq!(&raw[0..8], &3u64.to_le_bytes());
        assert_eq!(&raw[30..32], &5u16.to_le_bytes());
        assert_eq!(&raw[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(VsockHeader::from_bytes(&raw), hdr);
    }

    #[test]
    fn sub_segments_skips_and_limits() {
        let segs = [(GuestAddress(0x100), 10), (GuestAddress(0x800), 40)];
        let mut out = Vec::new();
        assert_eq!(sub_segments(&segs, 8, 20, &mut out), 20);
        assert_eq!(
            out,
            vec![(GuestAddress(0x108), 2), (GuestAddress(0x800), 18)]
        );
        assert_eq!(sub_segments(&segs, 45, 20, &mut out), 5);
        assert_eq!(out, vec![(GuestAddress(0x823), 5)]);
    }

    #[test]
    fn header_spanning_two_pieces_is_read() {
        let mem = single_region_mem(0x10000);
        let hdr = VsockHeader {
            op: op::REQUEST,
            src_port: 9,
            ..VsockHeader::default()
        };
        let raw = hdr.to_bytes();
        mem.write_slice(&raw[..10], GuestAddress(0x100)).unwrap();
        mem.write_slice(&raw[10..], GuestAddress(0x2000)).unwrap();
        let segs = [(GuestAddress(0x100), 10), (GuestAddress(0x2000), 100)];
        assert_eq!(read_header(&mem, &segs), Some(hdr));
        assert_eq!(read_header(&mem, &segs[..1]), None);
    }
}
