//! Working-set prefetch for `PUT /snapshot/load` with squib's `working_set` option (File
//! memory backend only).
//!
//! A load whose working-set file exists reads the pages it lists before the guest resumes:
//! `POSIX_FADV_WILLNEED` over every run first (the kernel reads them in large sequential
//! requests), then `MADV_POPULATE_READ` maps them, so the guest neither waits on the disk for
//! them nor takes a page fault on them. A load whose file does not exist yet records one:
//! `record_ms` after the guest resumes, a thread reads `/proc/self/pagemap` over guest memory
//! and saves the pages that are present (read or written by the guest, or by a device on its
//! behalf) as the working set of the next load. Pages that never got touched stay lazily
//! mapped from the memory file, as without the option.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use squib_api::schemas::snapshot::WorkingSetConfig;
use squib_arch::memory::GuestMemoryMmap;
use squib_snapshot::{PageRun, WorkingSet, PAGE_SIZE};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// `MADV_POPULATE_READ` (Linux 5.14); the libc crate does not name it for every target.
const MADV_POPULATE_READ: libc::c_int = 22;
/// `/proc/self/pagemap` bits: the page is in RAM, or in swap (touched either way).
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_SWAPPED: u64 = 1 << 62;
/// Pagemap entries read per `pread` (8 bytes each: 512 KiB, 256 MiB of guest memory).
const PAGEMAP_BATCH: usize = 64 * 1024;

/// Where one guest memory region lives in this process and in the memory file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappedRegion {
    host_addr: usize,
    len: usize,
    file_offset: u64,
}

impl MappedRegion {
    /// Bytes in the region.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The file-backed regions of `mem` (every region of a File-backend restore).
pub(crate) fn mapped_regions(mem: &GuestMemoryMmap) -> Vec<MappedRegion> {
    mem.iter()
        .filter_map(|region| {
            let file_offset = region.file_offset()?.start();
            Some(MappedRegion {
                host_addr: region.as_ptr() as usize,
                len: usize::try_from(region.len()).ok()?,
                file_offset,
            })
        })
        .collect()
}

/// What a prefetch did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Prefetched {
    pub pages: u64,
    pub runs: usize,
}

/// Reads in and maps every page of `set` (see the module doc).
///
/// # Errors
/// The `madvise` error, other than `EINVAL` from a kernel without `MADV_POPULATE_READ`
/// (then each page is read once by hand instead).
pub(crate) fn prefetch(
    file: &File,
    regions: &[MappedRegion],
    set: &WorkingSet,
) -> io::Result<Prefetched> {
    for run in set.runs() {
        // Advice only: a failure costs speed, not correctness.
        // SAFETY: plain syscall on a descriptor `file` owns; no pointers.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                run.offset as libc::off_t,
                run.len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
    for run in set.runs() {
        for (addr, len) in host_ranges(regions, *run) {
            populate(addr, len)?;
        }
    }
    Ok(Prefetched {
        pages: set.pages(),
        runs: set.runs().len(),
    })
}

/// The host address ranges of `run` (a run may span regions that are adjacent in the file).
fn host_ranges(
    regions: &[MappedRegion],
    run: PageRun,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let run_end = run.offset.saturating_add(run.len);
    regions.iter().filter_map(move |r| {
        let region_end = r.file_offset + r.len as u64;
        let start = run.offset.max(r.file_offset);
        let end = run_end.min(region_end);
        // Both differences fit the region's usize length.
        (start < end).then(|| {
            (
                r.host_addr + (start - r.file_offset) as usize,
                (end - start) as usize,
            )
        })
    })
}

/// Maps `len` bytes at `addr` (inside guest memory) by reading them.
fn populate(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: `addr..addr + len` lies inside a guest memory mapping this process owns
    // (`host_ranges` clips runs to the regions); MADV_POPULATE_READ only faults pages in and
    // never changes their contents.
    let ret = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_POPULATE_READ) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // A kernel before 5.14: read one byte of every page.
    for page in (addr..addr + len).step_by(PAGE_SIZE) {
        // SAFETY: `page` is inside the same guest memory mapping (see above); a volatile
        // read of one byte has no effect but the fault that maps the page.
        let _ = unsafe { std::ptr::read_volatile(page as *const u8) };
    }
    Ok(())
}

/// The memory-file offsets of the pages of `regions` that are present (or swapped) in this
/// process, ascending.
fn touched_pages(regions: &[MappedRegion]) -> io::Result<Vec<u64>> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut entries = vec![0u8; PAGEMAP_BATCH * 8];
    let mut pages = Vec::new();
    let mut sorted = regions.to_vec();
    sorted.sort_by_key(|r| r.file_offset);
    for region in sorted {
        let first = region.host_addr / PAGE_SIZE;
        let count = region.len / PAGE_SIZE;
        let mut done = 0;
        while done < count {
            let batch = (count - done).min(PAGEMAP_BATCH);
            let bytes = &mut entries[..batch * 8];
            pagemap.read_exact_at(bytes, ((first + done) * 8) as u64)?;
            for (i, entry) in bytes.chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(entry.try_into().unwrap_or_default());
                if entry & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0 {
                    pages.push(region.file_offset + ((done + i) * PAGE_SIZE) as u64);
                }
            }
            done += batch;
        }
    }
    Ok(pages)
}

/// Records the working set of a restored guest, once it has run for the window.
#[derive(Debug)]
pub(crate) struct WorkingSetRecorder {
    path: PathBuf,
    window: Duration,
    regions: Vec<MappedRegion>,
    memory_len: u64,
}

impl WorkingSetRecorder {
    pub(crate) fn new(config: &WorkingSetConfig, regions: Vec<MappedRegion>) -> Self {
        let memory_len = regions.iter().map(|r| r.len as u64).sum();
        Self {
            path: config.path.clone(),
            window: Duration::from_millis(config.record_ms),
            regions,
            memory_len,
        }
    }

    /// Starts the window now (the guest was just resumed); a thread saves the set at its end.
    /// The thread only reads this process's page table; if the VM is gone by then, it
    /// records what is left or nothing.
    pub(crate) fn start(self) {
        let spawned = std::thread::Builder::new()
            .name("squib_ws_record".to_owned())
            .spawn(move || {
                let started = Instant::now();
                std::thread::sleep(self.window);
                match self.record() {
                    Ok(set) => log::info!(
                        "Working set: {} pages in {} runs, {} ms after the resume, saved to {} \
                         (scan took {} us).",
                        set.pages(),
                        set.runs().len(),
                        self.window.as_millis(),
                        self.path.display(),
                        started.elapsed().saturating_sub(self.window).as_micros()
                    ),
                    Err(e) => log::warn!("Working set: cannot record {}: {e}", self.path.display()),
                }
            });
        if let Err(e) = spawned {
            log::warn!("Working set: cannot start the recorder thread: {e}");
        }
    }

    fn record(&self) -> Result<WorkingSet, String> {
        let pages = touched_pages(&self.regions).map_err(|e| format!("reading pagemap: {e}"))?;
        let set = WorkingSet::from_pages(self.memory_len, pages);
        squib_snapshot::save_working_set(&self.path, &set).map_err(|e| e.to_string())?;
        Ok(set)
    }
}

#[cfg(test)]
#[path = "working_set_tests.rs"]
mod tests;
