//! One virtio-blk request: parsing a descriptor chain, checking it, and executing it.
//!
//! A chain is `header (readable, 16 bytes) | data segments | status (writable, 1 byte)`
//! (virtio 1.2 §5.2.6). Parsing never trusts the guest: it caps the number of descriptors
//! (which also ends descriptor loops), checks directions and lengths, and checks the sector
//! range against the disk. A chain whose status byte is usable fails with a status; one
//! without is dropped (completed with length 0). Segments go into a caller-owned buffer that
//! is reused across requests, so the hot path does not allocate.

use std::mem::size_of;
use virtio_queue::DescriptorChain;

use vm_memory::{ByteValued, Bytes, GuestAddress, Le32, Le64};

use super::disk::{DiskFile, DiskIoError};
use super::{request_type, ID_BYTES, MAX_REQUEST_BYTES, SECTOR_SHIFT, SEG_MAX};
use crate::virtio::GuestMemoryMmap;

/// Most descriptors a request may have: header, `SEG_MAX` segments, status.
pub const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 2;

/// `struct virtio_blk_outhdr`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: Le32,
    _reserved: Le32,
    sector: Le64,
}
// SAFETY: plain `repr(C)` data of little-endian integers; every bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}
const _: () = assert!(size_of::<RequestHeader>() == 16);

/// `struct virtio_blk_discard_write_zeroes`: one range of a DISCARD/WRITE_ZEROES request.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RangeSegment {
    sector: Le64,
    num_sectors: Le32,
    flags: Le32,
}
// SAFETY: plain `repr(C)` data of little-endian integers; every bit pattern is valid.
unsafe impl ByteValued for RangeSegment {}
const _: () = assert!(size_of::<RangeSegment>() == 16);

/// One data segment of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// What the request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the segments.
    In,
    /// Write the segments to sectors.
    Out,
    /// Flush the host cache.
    Flush,
    /// Return the drive id.
    GetId,
    /// Deallocate a sector range.
    Discard,
    /// Zero a sector range.
    WriteZeroes,
    /// A type this device does not implement.
    Unsupported(u32),
}

impl RequestKind {
    /// Whether the Async engine submits it (reads, writes, flushes); the rest run inline.
    #[must_use]
    pub fn is_async(self) -> bool {
        matches!(self, Self::In | Self::Out | Self::Flush)
    }
}

/// A parsed request; its segments are in the buffer passed to [`parse`].
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Request type.
    pub kind: RequestKind,
    /// First sector.
    pub sector: u64,
    /// Total bytes of the data segments.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
}

/// A guest mistake in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// More descriptors than a request may have (or a descriptor loop).
    #[error("chain has more than {MAX_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    /// The chain ends in a descriptor that still points to a next one: a loop, a `next`
    /// outside the table, or a descriptor outside guest memory.
    #[error("chain is broken or loops")]
    Broken,
    /// Fewer than two descriptors.
    #[error("chain is too short")]
    TooShort,
    /// The last descriptor is not a writable byte.
    #[error("chain has no writable status byte")]
    NoStatus,
    /// The header descriptor is writable or shorter than 16 bytes.
    #[error("request header descriptor is invalid")]
    BadHeader,
    /// The header is outside guest memory.
    #[error("request header at {0:#x} is outside guest memory")]
    HeaderOutsideMemory(u64),
    /// A data segment has the wrong direction for the request.
    #[error("data descriptor {0} has the wrong direction")]
    WrongDirection(usize),
    /// A read or write moves more than [`MAX_REQUEST_BYTES`].
    #[error("data length {0} is over the {MAX_REQUEST_BYTES}-byte request limit")]
    TooLarge(u64),
    /// The data length is not a whole number of sectors.
    #[error("data length {0} is not a multiple of the sector size")]
    UnalignedLength(u64),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{count} are past the disk end {nsectors}")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sectors asked.
        count: u64,
        /// Disk size in sectors.
        nsectors: u64,
    },
    /// A GET_ID without a writable data segment.
    #[error("GET_ID needs one writable data descriptor")]
    BadGetId,
    /// A DISCARD/WRITE_ZEROES that is not one readable 16-byte range.
    #[error("DISCARD/WRITE_ZEROES needs one readable 16-byte range descriptor")]
    BadRange,
}

/// Parse `chain` into a request, filling `segs` (cleared first) with its data segments.
///
/// On error, the status byte address is returned when the chain has a usable one.
///
/// # Errors
/// The [`RequestError`] and the status address, if any.
pub fn parse(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segs: &mut Vec<Segment>,
    nsectors: u64,
) -> Result<Request, (RequestError, Option<GuestAddress>)> {
    segs.clear();
    let mut header_desc = None;
    let mut last = None;
    let mut writes = 0usize;
    let mut count = 0usize;
    for desc in chain {
        count += 1;
        if count > MAX_DESCRIPTORS {
            return Err((RequestError::TooManyDescriptors, None));
        }
        if header_desc.is_none() {
            header_desc = Some(desc);
        } else if let Some(prev) = last.replace(desc) {
            let prev: virtio_queue::desc::split::Descriptor = prev;
            writes += usize::from(prev.is_write_only());
            segs.push(Segment {
                addr: prev.addr(),
                len: prev.len(),
            });
        }
    }
    if last.or(header_desc).is_some_and(|d| d.has_next()) {
        return Err((RequestError::Broken, None));
    }
    let (Some(header_desc), Some(status_desc)) = (header_desc, last) else {
        return Err((RequestError::TooShort, None));
    };
    if !status_desc.is_write_only() || status_desc.len() < 1 {
        return Err((RequestError::NoStatus, None));
    }
    let status_addr = status_desc.addr();
    let fail = |e| (e, Some(status_addr));
    if header_desc.is_write_only() || (header_desc.len() as usize) < size_of::<RequestHeader>() {
        return Err(fail(RequestError::BadHeader));
    }
    let Ok(header) = mem.read_obj::<RequestHeader>(header_desc.addr()) else {
        return Err(fail(RequestError::HeaderOutsideMemory(
            header_desc.addr().0,
        )));
    };
    let data_len: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
    let request = Request {
        kind: kind_of(header.request_type.into()),
        sector: header.sector.into(),
        data_len,
        status_addr,
    };
    check(&request, segs.len(), writes, nsectors).map_err(fail)?;
    Ok(request)
}

fn kind_of(raw: u32) -> RequestKind {
    match raw {
        request_type::IN => RequestKind::In,
        request_type::OUT => RequestKind::Out,
        request_type::FLUSH => RequestKind::Flush,
        request_type::GET_ID => RequestKind::GetId,
        request_type::DISCARD => RequestKind::Discard,
        request_type::WRITE_ZEROES => RequestKind::WriteZeroes,
        other => RequestKind::Unsupported(other),
    }
}

/// Direction, alignment and range checks for a parsed request.
fn check(req: &Request, nsegs: usize, writes: usize, nsectors: u64) -> Result<(), RequestError> {
    match req.kind {
        RequestKind::In | RequestKind::Out => {
            let want_writes = if req.kind == RequestKind::In {
                nsegs
            } else {
                0
            };
            if writes != want_writes {
                return Err(RequestError::WrongDirection(writes.min(nsegs)));
            }
            if req.data_len > MAX_REQUEST_BYTES {
                return Err(RequestError::TooLarge(req.data_len));
            }
            if req.data_len % (1 << SECTOR_SHIFT) != 0 {
                return Err(RequestError::UnalignedLength(req.data_len));
            }
            let count = req.data_len >> SECTOR_SHIFT;
            if req
                .sector
                .checked_add(count)
                .is_none_or(|end| end > nsectors)
            {
                return Err(RequestError::OutOfRange {
                    sector: req.sector,
                    count,
                    nsectors,
                });
            }
        }
        RequestKind::GetId if nsegs != 1 || writes != 1 => return Err(RequestError::BadGetId),
        RequestKind::Discard | RequestKind::WriteZeroes
            if nsegs != 1 || writes != 0 || req.data_len != size_of::<RangeSegment>() as u64 =>
        {
            return Err(RequestError::BadRange)
        }
        RequestKind::GetId
        | RequestKind::Flush
        | RequestKind::Discard
        | RequestKind::WriteZeroes
        | RequestKind::Unsupported(_) => {}
    }
    Ok(())
}

/// Why a valid request failed on the host.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Data transfer failed.
    #[error(transparent)]
    Disk(#[from] DiskIoError),
    /// `fdatasync` failed.
    #[error("flush failed: {0}")]
    Flush(#[source] std::io::Error),
    /// Writing to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// Writing the GET_ID answer failed.
    #[error("cannot write the drive id to guest memory")]
    GetId,
    /// The DISCARD/WRITE_ZEROES range is outside guest memory.
    #[error("cannot read the discard range from guest memory")]
    RangeMemory,
    /// The DISCARD/WRITE_ZEROES range reaches past the end of the disk.
    #[error("discard range {sector}+{count} is past the disk end")]
    RangeOutOfDisk {
        /// First sector.
        sector: u64,
        /// Sector count.
        count: u64,
    },
    /// Punching the hole failed.
    #[error("punching a hole failed: {0}")]
    PunchHole(#[source] std::io::Error),
}

/// What executing a request needs from the device.
pub struct ExecContext<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// Backing file.
    pub disk: &'a DiskFile,
    /// Drive id (GET_ID).
    pub drive_id: &'a str,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl Request {
    /// Run the request; returns the bytes written into guest memory (excluding the status).
    ///
    /// # Errors
    /// [`ExecuteError`] when the host side fails.
    pub fn execute(&self, segs: &[Segment], ctx: &ExecContext<'_>) -> Result<u32, ExecuteError> {
        let mut offset = self.sector << SECTOR_SHIFT;
        match self.kind {
            RequestKind::In => {
                for s in segs {
                    ctx.disk
                        .read_to_guest(ctx.mem, s.addr, s.len as usize, offset)?;
                    offset += u64::from(s.len);
                }
                // data_len ≤ MAX_REQUEST_BYTES < u32::MAX (checked by `parse`).
                Ok(u32::try_from(self.data_len).unwrap_or(u32::MAX))
            }
            RequestKind::Out => {
                if ctx.read_only {
                    return Err(ExecuteError::ReadOnly);
                }
                for s in segs {
                    ctx.disk
                        .write_from_guest(ctx.mem, s.addr, s.len as usize, offset)?;
                    offset += u64::from(s.len);
                }
                Ok(0)
            }
            // Whatever the cache mode (Firecracker syncs on every FLUSH too): a driver that
            // sends one wants its writes on stable storage before it hears OK.
            RequestKind::Flush => {
                ctx.disk.sync().map_err(ExecuteError::Flush)?;
                Ok(0)
            }
            RequestKind::GetId => {
                let mut id = [0u8; ID_BYTES];
                let src = ctx.drive_id.as_bytes();
                let n = src.len().min(ID_BYTES);
                id[..n].copy_from_slice(&src[..n]);
                let seg = segs.first().ok_or(ExecuteError::GetId)?;
                let len = ID_BYTES.min(seg.len as usize);
                ctx.mem
                    .write_slice(&id[..len], seg.addr)
                    .map_err(|_| ExecuteError::GetId)?;
                Ok(len as u32)
            }
            RequestKind::Discard | RequestKind::WriteZeroes => {
                if ctx.read_only {
                    return Err(ExecuteError::ReadOnly);
                }
                deallocate(segs, ctx).map(|()| 0)
            }
            RequestKind::Unsupported(_) => Ok(0),
        }
    }
}

/// DISCARD / WRITE_ZEROES: punch a hole over the range (later reads return zeros).
fn deallocate(segs: &[Segment], ctx: &ExecContext<'_>) -> Result<(), ExecuteError> {
    let seg = segs.first().ok_or(ExecuteError::RangeMemory)?;
    let range: RangeSegment = ctx
        .mem
        .read_obj(seg.addr)
        .map_err(|_| ExecuteError::RangeMemory)?;
    let sector: u64 = range.sector.into();
    let count = u64::from(u32::from(range.num_sectors));
    if sector
        .checked_add(count)
        .is_none_or(|end| end > ctx.disk.nsectors())
    {
        return Err(ExecuteError::RangeOutOfDisk { sector, count });
    }
    ctx.disk
        .punch_hole(sector << SECTOR_SHIFT, count << SECTOR_SHIFT)
        .map_err(ExecuteError::PunchHole)
}
