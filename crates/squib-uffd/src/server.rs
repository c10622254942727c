//! The handler side's work: fill a restored guest's memory from its snapshot memory file as
//! the guest touches it, until the VMM goes away.
//!
//! One thread polls the userfaultfd and the VMM's connection. A page fault is answered with
//! `UFFDIO_COPY` of the page from the memory file, or, in [`FaultMode::FaultAll`], the first
//! one with a copy of all the memory. Memory the guest discards (balloon inflation, free page
//! reporting: a `REMOVE` event) reads as zeros afterwards, not as the file's contents: base
//! pages there are filled with `UFFDIO_ZEROPAGE`; hugetlbfs ranges, which have no zero-page
//! ioctl, are unregistered so the kernel fills them with zeros itself.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::FileOffset;

use crate::error::HandlerError;
use crate::mapping::GuestRegionUffdMapping;
use crate::removed::RemovedRanges;
use crate::sys::host_page_size;
use crate::uffd::{Fill, Uffd, UffdEvent};

/// How much memory a page fault fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// The faulting page only.
    OnDemand,
    /// All guest memory at the first fault, then single pages (only discarded memory can
    /// fault again).
    FaultAll,
}

/// What a [`PageServer`] has done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    /// Page faults received.
    pub faults: u64,
    /// Pages copied from the memory file.
    pub pages_copied: u64,
    /// Pages filled with zeros because the guest had discarded them.
    pub pages_zeroed: u64,
    /// Discard (`REMOVE`) events received.
    pub removes: u64,
}

/// Whether serving goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The process owning the guest memory has exited.
    VmmGone,
}

/// Serves the page faults of one VMM's guest memory from a memory file.
#[derive(Debug)]
pub struct PageServer {
    uffd: Uffd,
    /// Sorted by address, checked against each other and the file.
    regions: Vec<GuestRegionUffdMapping>,
    /// The memory file, mapped private and read-only: the source of every copy.
    file: MmapRegion,
    host_page: u64,
    removed: RemovedRanges,
    /// Faulting addresses read but not yet served.
    pending: VecDeque<u64>,
    faulted_all: bool,
    stats: ServeStats,
}

impl PageServer {
    /// Checks `mappings` (as received from the VMM) against each other and against
    /// `memory_file`, which must hold every region's contents, and maps the file (private,
    /// populated up front so faults are served from memory).
    pub fn new(
        mut mappings: Vec<GuestRegionUffdMapping>,
        uffd: Uffd,
        memory_file: &File,
    ) -> Result<Self, HandlerError> {
        let host_page = host_page_size();
        let needed_bytes = check_regions(&mut mappings, host_page)?;
        let file_bytes = memory_file
            .metadata()
            .map_err(HandlerError::MemoryFile)?
            .len();
        if needed_bytes > file_bytes {
            return Err(HandlerError::MemoryFileTooShort {
                file_bytes,
                needed_bytes,
            });
        }
        let map_len = usize::try_from(needed_bytes).map_err(|_| {
            HandlerError::MemoryFile(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the regions are larger than this address space",
            ))
        })?;
        let file_offset = FileOffset::new(
            memory_file.try_clone().map_err(HandlerError::MemoryFile)?,
            0,
        );
        let file = MmapRegionBuilder::new(map_len)
            .with_mmap_prot(libc::PROT_READ)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_POPULATE)
            .with_file_offset(file_offset)
            .build()
            .map_err(HandlerError::MapMemoryFile)?;
        Ok(PageServer {
            uffd,
            regions: mappings,
            file,
            host_page,
            removed: RemovedRanges::default(),
            pending: VecDeque::new(),
            faulted_all: false,
            stats: ServeStats::default(),
        })
    }

    /// The regions served, sorted by address.
    pub fn regions(&self) -> &[GuestRegionUffdMapping] {
        &self.regions
    }

    /// What has been done so far.
    pub fn stats(&self) -> ServeStats {
        self.stats
    }

    /// Serves faults until the VMM closes `vmm` (its connection) or exits. In
    /// [`FaultMode::FaultAll`], `on_faulted_all` is told how long copying everything took.
    pub fn serve(
        &mut self,
        vmm: &UnixStream,
        mode: FaultMode,
        mut on_faulted_all: impl FnMut(Duration),
    ) -> Result<ServeStats, HandlerError> {
        loop {
            let [uffd_events, vmm_events] = poll_both(&self.uffd, vmm)?;
            if uffd_events & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(HandlerError::UffdBroken {
                    revents: uffd_events,
                });
            }
            // Faults first: a VMM that closed its connection right after touching memory
            // may still have a thread waiting.
            if uffd_events & libc::POLLIN != 0
                && self.handle_events(mode, &mut on_faulted_all)? == Flow::VmmGone
            {
                return Ok(self.stats);
            }
            if vmm_events != 0 && vmm_has_gone(vmm)? {
                return Ok(self.stats);
            }
        }
    }

    /// Reads the queued events and serves every fault read.
    fn handle_events<F: FnMut(Duration)>(
        &mut self,
        mode: FaultMode,
        on_faulted_all: &mut F,
    ) -> Result<Flow, HandlerError> {
        self.read_events()?;
        while let Some(address) = self.pending.pop_front() {
            self.stats.faults += 1;
            if mode == FaultMode::FaultAll && !self.faulted_all {
                self.faulted_all = true;
                let started = Instant::now();
                if self.fill_everything()? == Flow::VmmGone {
                    return Ok(Flow::VmmGone);
                }
                on_faulted_all(started.elapsed());
            }
            if self.serve_fault(address)? == Flow::VmmGone {
                return Ok(Flow::VmmGone);
            }
        }
        Ok(Flow::Continue)
    }

    /// Reads what the kernel has queued: discards take effect at once, faults are queued.
    /// Returns how many events there were.
    fn read_events(&mut self) -> Result<usize, HandlerError> {
        let mut events = Vec::new();
        self.uffd
            .read_events(&mut events)
            .map_err(HandlerError::ReadEvents)?;
        for &event in &events {
            match event {
                UffdEvent::PageFault { address, .. } => self.pending.push_back(address),
                UffdEvent::Remove { start, end } => self.remove(start, end)?,
                UffdEvent::Other { event } => {
                    log::warn!("Ignoring userfaultfd event {event:#x}, which was not requested")
                }
            }
        }
        Ok(events.len())
    }

    /// The guest discarded `[start, end)`: from now on it reads as zeros.
    fn remove(&mut self, start: u64, end: u64) -> Result<(), HandlerError> {
        self.stats.removes += 1;
        for region in &self.regions {
            let Some(region_end) = region.end() else {
                continue;
            };
            // Only whole pages are discarded; the kernel reports page-aligned ranges.
            let from = start
                .max(region.base_host_virt_addr)
                .next_multiple_of(region.page_size);
            let to = end.min(region_end) / region.page_size * region.page_size;
            if from >= to {
                continue;
            }
            if region.page_size == self.host_page {
                self.removed.insert(from, to);
            } else {
                self.uffd
                    .unregister(from, to - from)
                    .map_err(|source| HandlerError::Ioctl {
                        op: "UFFDIO_UNREGISTER",
                        start: from,
                        len: to - from,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Fills the page holding `address`, and wakes its waiters if someone else filled it.
    fn serve_fault(&mut self, address: u64) -> Result<Flow, HandlerError> {
        let index = self
            .region_index(address)
            .ok_or(HandlerError::FaultOutsideRegions { address })?;
        let page_size = self.regions[index].page_size;
        let page = address & !(page_size - 1);
        let (flow, found_present) = self.fill(index, page, page + page_size)?;
        if flow == Flow::Continue && found_present {
            // A fill that finds the page present wakes nobody.
            self.uffd
                .wake(page, page_size)
                .map_err(|source| HandlerError::Ioctl {
                    op: "UFFDIO_WAKE",
                    start: page,
                    len: page_size,
                    source,
                })?;
        }
        Ok(flow)
    }

    /// Fills every region.
    fn fill_everything(&mut self) -> Result<Flow, HandlerError> {
        for index in 0..self.regions.len() {
            let region = self.regions[index];
            // Cannot overflow: checked when the server was made.
            let end = region.base_host_virt_addr + region.size;
            if self.fill(index, region.base_host_virt_addr, end)?.0 == Flow::VmmGone {
                return Ok(Flow::VmmGone);
            }
        }
        Ok(Flow::Continue)
    }

    /// Fills the missing pages of `[start, end)` (page aligned, inside region `index`): from
    /// the memory file, or with zeros where the guest discarded them. Pages already present
    /// are left alone; the second value says whether there were any.
    fn fill(&mut self, index: usize, start: u64, end: u64) -> Result<(Flow, bool), HandlerError> {
        let region = self.regions[index];
        let page_size = region.page_size;
        // Discards are tracked for base pages only (see `remove`).
        let tracks_discards = page_size == self.host_page;
        let mut found_present = false;
        let mut pos = start;
        while pos < end {
            let discarded_until = tracks_discards
                .then(|| self.removed.covering(pos))
                .flatten();
            let (op, span_end, result) = match discarded_until {
                Some(until) => {
                    let span_end = until.min(end);
                    let result = self.uffd.zeropage(pos, span_end - pos);
                    ("UFFDIO_ZEROPAGE", span_end, result)
                }
                None => {
                    let next_discard = tracks_discards
                        .then(|| self.removed.next_after(pos))
                        .flatten();
                    let span_end = next_discard.map_or(end, |next| next.min(end));
                    // In bounds: `pos` is inside the region, whose contents end within the
                    // mapped file (checked in `new`).
                    let file_offset = region.offset + (pos - region.base_host_virt_addr);
                    let src = self.file.as_ptr().wrapping_add(file_offset as usize);
                    // SAFETY: `[src, src + span_end - pos)` lies inside the file mapping,
                    // which is readable and lives as long as `self`.
                    let result = unsafe { self.uffd.copy(pos, src, span_end - pos) };
                    ("UFFDIO_COPY", span_end, result)
                }
            };
            let zeroed = discarded_until.is_some();
            let outcome = result.map_err(|source| HandlerError::Ioctl {
                op,
                start: pos,
                len: span_end - pos,
                source,
            })?;
            match outcome {
                Fill::Done => {
                    self.count(zeroed, span_end - pos, page_size);
                    pos = span_end;
                }
                Fill::Exists { filled } => {
                    self.count(zeroed, filled, page_size);
                    found_present = true;
                    pos += filled + page_size;
                }
                Fill::Again { filled } => {
                    self.count(zeroed, filled, page_size);
                    pos += filled;
                    // The layout is changing: the event saying how is queued, or about to
                    // be. Read it, then retry with what it changed.
                    if self.read_events()? == 0 {
                        std::thread::yield_now();
                    }
                }
                Fill::Unmapped => {
                    log::warn!(
                        "Guest memory [{pos:#x}, {span_end:#x}) is no longer mapped by the VMM; \
                         not filled"
                    );
                    pos = span_end;
                }
                Fill::Gone => return Ok((Flow::VmmGone, found_present)),
            }
        }
        Ok((Flow::Continue, found_present))
    }

    fn count(&mut self, zeroed: bool, bytes: u64, page_size: u64) {
        let pages = bytes / page_size;
        if zeroed {
            self.stats.pages_zeroed += pages;
        } else {
            self.stats.pages_copied += pages;
        }
    }

    /// The region holding `address`.
    fn region_index(&self, address: u64) -> Option<usize> {
        let after = self
            .regions
            .partition_point(|region| region.base_host_virt_addr <= address);
        let index = after.checked_sub(1)?;
        self.regions[index].contains(address).then_some(index)
    }
}

/// Checks each region, sorts them by address and checks they do not overlap. Returns how
/// many bytes of the memory file they need.
fn check_regions(
    mappings: &mut [GuestRegionUffdMapping],
    host_page: u64,
) -> Result<u64, HandlerError> {
    if mappings.is_empty() {
        return Err(HandlerError::NoRegions);
    }
    let mut needed_bytes = 0u64;
    for (index, mapping) in mappings.iter().enumerate() {
        let invalid = |reason| HandlerError::InvalidRegion {
            index,
            mapping: serde_json::to_string(mapping).unwrap_or_default(),
            reason,
        };
        let page_size = mapping.page_size;
        if !page_size.is_power_of_two() || page_size < host_page {
            return Err(invalid(
                "page_size is not a power of two of at least the host page size",
            ));
        }
        if mapping.size == 0
            || mapping.size % page_size != 0
            || mapping.base_host_virt_addr % page_size != 0
        {
            return Err(invalid(
                "base_host_virt_addr and size are not a non-empty run of whole pages",
            ));
        }
        if mapping.end().is_none() {
            return Err(invalid("base_host_virt_addr + size overflows"));
        }
        if mapping.offset % host_page != 0 {
            return Err(invalid("offset is not a multiple of the host page size"));
        }
        let file_end = mapping
            .offset
            .checked_add(mapping.size)
            .ok_or_else(|| invalid("offset + size overflows"))?;
        needed_bytes = needed_bytes.max(file_end);
    }
    mappings.sort_by_key(|mapping| mapping.base_host_virt_addr);
    for (index, pair) in mappings.windows(2).enumerate() {
        // Both ends were checked above.
        if pair[0].base_host_virt_addr + pair[0].size > pair[1].base_host_virt_addr {
            return Err(HandlerError::InvalidRegion {
                index: index + 1,
                mapping: serde_json::to_string(&pair[1]).unwrap_or_default(),
                reason: "it overlaps another region (index after sorting by address)",
            });
        }
    }
    Ok(needed_bytes)
}

/// Waits until the userfaultfd or the VMM's connection has something to say. Returns their
/// `revents`.
fn poll_both(uffd: &Uffd, vmm: &UnixStream) -> Result<[i16; 2], HandlerError> {
    let mut fds = [
        libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: vmm.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: poll reads and writes exactly the `fds.len()` structures of `fds`.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ret >= 0 {
            return Ok([fds[0].revents, fds[1].revents]);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(HandlerError::Poll(err));
        }
    }
}

/// The VMM's connection is readable or hung up: whether it has been closed. The protocol has
/// nothing after the hand-off, so bytes sent anyway are logged and dropped.
fn vmm_has_gone(mut vmm: &UnixStream) -> Result<bool, HandlerError> {
    let mut buf = [0u8; 512];
    match vmm.read(&mut buf) {
        Ok(0) => Ok(true),
        Ok(read) => {
            log::warn!("The VMM sent {read} unexpected bytes after the hand-off; dropped");
            Ok(false)
        }
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(true),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(HandlerError::Connection(err)),
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
