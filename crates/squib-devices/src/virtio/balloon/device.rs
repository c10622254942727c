//! [`Balloon`]: the virtio-balloon device — features, config space, queue processing.
//!
//! Each queue event pops at most the queue's size of chains and about
//! [`MAX_DESCS_PER_EVENT`] descriptors, then re-kicks its queue if more wait (the guest
//! cannot make one event unbounded), and raises at most one interrupt. Every page frame number is checked against
//! guest memory before anything is discarded; a frame outside guest memory, a frame
//! inflated twice or a malformed descriptor is counted in `event_fails`, logged rate
//! limited, skipped, and the chain still completes. The device tracks inflated frames in a
//! bitmap over guest physical memory (one bit per 4 KiB page, built at activation), which
//! is what lets it refuse a second inflate of the same page.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use squib_logger::metrics::BalloonDeviceMetrics;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::timerfd::TimerFd;

use super::discard::{discard_range, in_guest_memory};
use super::hinting::{HintingState, CMD_ID_DONE};
use super::stats::{BalloonStats, MAX_STATS_RECORDS, RECORD_SIZE};
use super::{
    feature, BalloonConfig, BalloonError, BALLOON_PAGE_SIZE, DEFLATE_QUEUE, INFLATE_QUEUE,
    MAX_PFNS_PER_DESC, PAGES_PER_MIB, PFN_SHIFT, QUEUE_SIZE,
};
use crate::virtio::{
    device_type, features, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt,
    VirtioState,
};

/// Descriptors one queue event reads before yielding (a full queue of the Linux driver's
/// one-descriptor chains): with at most [`MAX_PFNS_PER_DESC`] frames each, the work of one
/// event is bounded whatever chains the guest builds.
pub const MAX_DESCS_PER_EVENT: usize = QUEUE_SIZE as usize;

/// One descriptor as popped from a chain.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    write_only: bool,
}

/// A virtio-balloon device.
pub struct Balloon {
    pub(super) config: BalloonConfig,
    pub(super) state: VirtioState,
    /// Config space `num_pages`: the target the host asks for.
    pub(super) num_pages: u32,
    /// Config space `actual`: what the guest says it holds.
    pub(super) actual_pages: u32,
    stats_queue: Option<usize>,
    hinting_queue: Option<usize>,
    reporting_queue: Option<usize>,
    /// Free page hinting's command ids (meaningful when the hinting queue exists).
    pub(super) hinting: HintingState,
    pub(super) stats_timer: TimerFd,
    /// The stats buffer the device holds until the next polling tick.
    pub(super) stats_desc: Option<u16>,
    pub(super) latest_stats: BalloonStats,
    /// One bit per 4 KiB guest page: set while the page is in the balloon.
    inflated: Vec<u64>,
    mem: Option<GuestMemoryMmap>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    metrics: Arc<BalloonDeviceMetrics>,
}

impl fmt::Debug for Balloon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balloon")
            .field("config", &self.config)
            .field("num_pages", &self.num_pages)
            .field("actual_pages", &self.actual_pages)
            .field("activated", &self.mem.is_some())
            .finish_non_exhaustive()
    }
}

impl Balloon {
    /// A balloon as `config` describes: inflate and deflate queues, then the stats queue
    /// (interval > 0) and the reporting queue (reporting on), each of [`QUEUE_SIZE`].
    ///
    /// # Errors
    /// [`BalloonError::TooManyPages`] for a target beyond u32 pages, [`BalloonError::Io`]
    /// when an eventfd or the timerfd cannot be created.
    pub fn new(config: BalloonConfig) -> Result<Self, BalloonError> {
        let num_pages = mib_to_pages(config.amount_mib)?;
        let mut avail = 1u64 << features::VERSION_1;
        let mut count = 2;
        let mut stats_queue = None;
        let mut hinting_queue = None;
        let mut reporting_queue = None;
        if config.deflate_on_oom {
            avail |= 1 << feature::DEFLATE_ON_OOM;
        }
        if config.stats_polling_interval_s > 0 {
            avail |= 1 << feature::STATS_VQ;
            stats_queue = Some(count);
            count += 1;
        }
        if config.free_page_hinting {
            avail |= 1 << feature::FREE_PAGE_HINT;
            hinting_queue = Some(count);
            count += 1;
        }
        if config.free_page_reporting {
            avail |= 1 << feature::FREE_PAGE_REPORTING;
            reporting_queue = Some(count);
            count += 1;
        }
        let state = VirtioState::new(count, QUEUE_SIZE, avail).map_err(BalloonError::Io)?;
        Ok(Self {
            config,
            state,
            num_pages,
            actual_pages: 0,
            stats_queue,
            hinting_queue,
            reporting_queue,
            hinting: HintingState::default(),
            stats_timer: nonblocking_timer().map_err(BalloonError::Io)?,
            stats_desc: None,
            latest_stats: BalloonStats::default(),
            inflated: Vec::new(),
            mem: None,
            interrupt: None,
            metrics: Arc::new(BalloonDeviceMetrics::new()),
        })
    }

    /// The device's counters (the VMM registers them under [`super::METRICS_GROUP`]).
    #[must_use]
    pub fn metrics(&self) -> Arc<BalloonDeviceMetrics> {
        self.metrics.clone()
    }

    /// The configuration, with the current target and polling interval.
    #[must_use]
    pub fn config(&self) -> BalloonConfig {
        self.config
    }

    /// Index of the stats queue, when statistics are on.
    #[must_use]
    pub fn stats_queue(&self) -> Option<usize> {
        self.stats_queue
    }

    /// Index of the free page hinting queue, when hinting is on.
    #[must_use]
    pub fn hinting_queue(&self) -> Option<usize> {
        self.hinting_queue
    }

    /// `PATCH /balloon/hinting/start`: a new run, announced through config space.
    ///
    /// # Errors
    /// [`BalloonError::HintingNotEnabled`], [`BalloonError::DeviceNotActive`], or
    /// [`BalloonError::Io`] when the interrupt fails.
    pub fn start_hinting(&mut self, acknowledge_on_stop: bool) -> Result<(), BalloonError> {
        self.hinting_interrupt()?;
        self.hinting.start(acknowledge_on_stop);
        self.signal_config()
    }

    /// `PATCH /balloon/hinting/stop`: DONE in config space (the guest takes its pages back).
    ///
    /// # Errors
    /// As [`Balloon::start_hinting`].
    pub fn stop_hinting(&mut self) -> Result<(), BalloonError> {
        self.hinting_interrupt()?;
        self.hinting.host_cmd = CMD_ID_DONE;
        self.signal_config()
    }

    /// `GET /balloon/hinting/status`.
    ///
    /// # Errors
    /// [`BalloonError::HintingNotEnabled`].
    pub fn hinting_status(&self) -> Result<HintingState, BalloonError> {
        if self.hinting_queue.is_none() {
            return Err(BalloonError::HintingNotEnabled);
        }
        Ok(self.hinting)
    }

    /// The checks of a hinting action.
    fn hinting_interrupt(&self) -> Result<(), BalloonError> {
        if self.hinting_queue.is_none() {
            return Err(BalloonError::HintingNotEnabled);
        }
        if self.interrupt.is_none() {
            return Err(BalloonError::DeviceNotActive);
        }
        Ok(())
    }

    pub(super) fn signal_config(&self) -> Result<(), BalloonError> {
        match self.interrupt.as_ref() {
            Some(i) => i.signal_config_change().map_err(BalloonError::Io),
            None => Ok(()),
        }
    }

    /// Index of the free page reporting queue, when reporting is on.
    #[must_use]
    pub fn reporting_queue(&self) -> Option<usize> {
        self.reporting_queue
    }

    /// The statistics timer (the event loop watches its fd).
    #[must_use]
    pub fn stats_timer(&self) -> &TimerFd {
        &self.stats_timer
    }

    /// `PATCH /balloon`: a new target, written to config space with a config-change
    /// interrupt.
    ///
    /// # Errors
    /// [`BalloonError::DeviceNotActive`] before the guest activated the device,
    /// [`BalloonError::TooManyPages`], or [`BalloonError::Io`] when the interrupt fails.
    pub fn update_size(&mut self, amount_mib: u32) -> Result<(), BalloonError> {
        let Some(interrupt) = self.interrupt.as_ref() else {
            return Err(BalloonError::DeviceNotActive);
        };
        self.num_pages = mib_to_pages(amount_mib)?;
        self.config.amount_mib = amount_mib;
        interrupt.signal_config_change().map_err(BalloonError::Io)
    }

    /// `PATCH /balloon/statistics`: a new polling interval. Statistics cannot be switched on
    /// or off once the device exists (the stats queue is fixed at build time).
    ///
    /// # Errors
    /// [`BalloonError::StatisticsStateChange`], or [`BalloonError::Io`] when the timer
    /// cannot be re-armed.
    pub fn update_stats_interval(&mut self, interval_s: u16) -> Result<(), BalloonError> {
        if interval_s == self.config.stats_polling_interval_s {
            return Ok(());
        }
        if interval_s == 0 || self.config.stats_polling_interval_s == 0 {
            return Err(BalloonError::StatisticsStateChange);
        }
        self.config.stats_polling_interval_s = interval_s;
        if self.is_activated() {
            // Hand the held buffer back now so the new period starts from fresh numbers.
            self.stats_tick();
            self.arm_stats_timer().map_err(BalloonError::Io)?;
        }
        Ok(())
    }

    /// `GET /balloon/statistics`: the latest guest statistics with target and size.
    ///
    /// # Errors
    /// [`BalloonError::StatisticsDisabled`] when the polling interval is 0.
    pub fn latest_stats(&self) -> Result<BalloonStats, BalloonError> {
        if self.stats_queue.is_none() {
            return Err(BalloonError::StatisticsDisabled);
        }
        Ok(BalloonStats {
            target_pages: self.num_pages,
            actual_pages: self.actual_pages,
            target_mib: self.num_pages / PAGES_PER_MIB,
            actual_mib: self.actual_pages / PAGES_PER_MIB,
            ..self.latest_stats.clone()
        })
    }

    /// Pages currently in the balloon by the device's own count.
    #[must_use]
    pub fn inflated_pages(&self) -> u64 {
        self.inflated
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    pub(super) fn arm_stats_timer(&mut self) -> std::io::Result<()> {
        let period = Duration::from_secs(u64::from(self.config.stats_polling_interval_s));
        if period.is_zero() {
            return self.stats_timer.clear().map_err(Into::into);
        }
        self.stats_timer
            .reset(period, Some(period))
            .map_err(Into::into)
    }

    /// Pop at most a queue's worth of chains from queue `index`, each as its head and
    /// descriptors; the chain walk itself is bounded by `virtio-queue` (a chain cannot be
    /// longer than the queue).
    fn pop_chains(&mut self, index: usize) -> Vec<(u16, Vec<Desc>)> {
        let mut out = Vec::new();
        let Some(mem) = self.mem.as_ref() else {
            return out;
        };
        let queue = &mut self.state.queues[index];
        let mut left = queue.size();
        let mut descs_left = MAX_DESCS_PER_EVENT;
        while left > 0 {
            if descs_left == 0 {
                // More may be waiting: come back after other event sources had a turn.
                if let Err(e) = self.state.queue_evts[index].write(1) {
                    self.metrics.event_fails.inc();
                    log::error!("balloon: cannot re-kick queue {index}: {e}");
                }
                break;
            }
            left -= 1;
            let chain = match queue.iter(mem) {
                Ok(mut avail) => avail.next(),
                Err(e) => {
                    self.metrics.event_fails.inc();
                    squib_logger::warn_rate_limited!("balloon: queue {index}: {e}");
                    break;
                }
            };
            let Some(chain) = chain else {
                match queue.enable_notification(mem) {
                    Ok(true) => continue,
                    _ => break,
                }
            };
            let head = chain.head_index();
            if head >= queue.size() {
                self.metrics.event_fails.inc();
                squib_logger::warn_rate_limited!(
                    "balloon: queue {index}: head {head} out of range"
                );
                continue;
            }
            let descs = chain
                .map(|d| Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    write_only: d.is_write_only(),
                })
                .collect::<Vec<_>>();
            descs_left = descs_left.saturating_sub(descs.len());
            out.push((head, descs));
        }
        out
    }

    /// Return `heads` to the guest with length 0, then interrupt once if needed.
    fn complete(&mut self, index: usize, heads: &[u16]) {
        let (Some(mem), Some(interrupt)) = (self.mem.as_ref(), self.interrupt.as_ref()) else {
            return;
        };
        if heads.is_empty() {
            return;
        }
        let queue = &mut self.state.queues[index];
        for &head in heads {
            if let Err(e) = queue.add_used(mem, head, 0) {
                self.metrics.event_fails.inc();
                squib_logger::warn_rate_limited!("balloon: cannot complete head {head}: {e}");
                return;
            }
        }
        if queue.needs_notification(mem).unwrap_or(true) {
            if let Err(e) = interrupt.signal_used_queue() {
                self.metrics.event_fails.inc();
                log::error!("balloon: cannot signal used queue: {e}");
            }
        }
    }

    /// Read the PFNs of one device-readable descriptor (at most [`MAX_PFNS_PER_DESC`]).
    fn read_pfns(&self, desc: Desc, out: &mut Vec<u32>) -> bool {
        out.clear();
        let Some(mem) = self.mem.as_ref() else {
            return false;
        };
        if desc.write_only || desc.len % 4 != 0 {
            return false;
        }
        let count = (desc.len / 4) as usize;
        if count > MAX_PFNS_PER_DESC {
            return false;
        }
        let mut buf = vec![0u8; count * 4];
        if mem.read_slice(&mut buf, GuestAddress(desc.addr)).is_err() {
            return false;
        }
        out.extend(
            buf.chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        true
    }

    /// Whether `pfn` is a page of guest memory (and its bit index).
    fn page_bit(&self, pfn: u32) -> Option<usize> {
        let mem = self.mem.as_ref()?;
        let addr = u64::from(pfn) << PFN_SHIFT;
        if !in_guest_memory(mem, addr, BALLOON_PAGE_SIZE) {
            return None;
        }
        let bit = pfn as usize;
        (bit / 64 < self.inflated.len()).then_some(bit)
    }

    fn bit(&self, bit: usize) -> bool {
        self.inflated[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set_bit(&mut self, bit: usize, on: bool) {
        if on {
            self.inflated[bit / 64] |= 1 << (bit % 64);
        } else {
            self.inflated[bit / 64] &= !(1 << (bit % 64));
        }
    }

    /// The inflate queue fired: discard every valid, not yet inflated page.
    pub fn process_inflate(&mut self) {
        let chains = self.pop_chains(INFLATE_QUEUE);
        let mut pfns = Vec::with_capacity(MAX_PFNS_PER_DESC);
        let mut heads = Vec::with_capacity(chains.len());
        for (head, descs) in chains {
            self.metrics.inflate_count.inc();
            for desc in descs {
                if !self.read_pfns(desc, &mut pfns) {
                    self.metrics.event_fails.inc();
                    squib_logger::warn_rate_limited!(
                        "balloon: inflate head {head}: bad descriptor {:#x}+{:#x}",
                        desc.addr,
                        desc.len
                    );
                    continue;
                }
                let mut run: Option<(u32, u32)> = None;
                for &pfn in &pfns {
                    let Some(bit) = self.page_bit(pfn) else {
                        self.metrics.event_fails.inc();
                        squib_logger::warn_rate_limited!(
                            "balloon: inflate of page frame {pfn:#x} outside guest memory"
                        );
                        continue;
                    };
                    if self.bit(bit) {
                        self.metrics.event_fails.inc();
                        squib_logger::warn_rate_limited!(
                            "balloon: page frame {pfn:#x} inflated twice"
                        );
                        continue;
                    }
                    self.set_bit(bit, true);
                    // Consecutive frames go out as one range (one system call).
                    run = match run {
                        Some((start, n)) if start.checked_add(n) == Some(pfn) => {
                            Some((start, n + 1))
                        }
                        Some((start, n)) => {
                            self.discard_pages(start, n);
                            Some((pfn, 1))
                        }
                        None => Some((pfn, 1)),
                    };
                }
                if let Some((start, n)) = run {
                    self.discard_pages(start, n);
                }
            }
            heads.push(head);
        }
        self.complete(INFLATE_QUEUE, &heads);
    }

    fn discard_pages(&self, start: u32, count: u32) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        let addr = u64::from(start) << PFN_SHIFT;
        if let Err(e) = discard_range(mem, addr, u64::from(count) * BALLOON_PAGE_SIZE) {
            self.metrics.event_fails.inc();
            squib_logger::warn_rate_limited!("balloon: {e}");
        }
    }

    /// The deflate queue fired: the pages are the guest's again (they come back zeroed, on
    /// first touch); only the bookkeeping changes.
    pub fn process_deflate(&mut self) {
        let chains = self.pop_chains(DEFLATE_QUEUE);
        let mut pfns = Vec::with_capacity(MAX_PFNS_PER_DESC);
        let mut heads = Vec::with_capacity(chains.len());
        for (head, descs) in chains {
            self.metrics.deflate_count.inc();
            for desc in descs {
                if !self.read_pfns(desc, &mut pfns) {
                    self.metrics.event_fails.inc();
                    squib_logger::warn_rate_limited!(
                        "balloon: deflate head {head}: bad descriptor"
                    );
                    continue;
                }
                for &pfn in &pfns {
                    match self.page_bit(pfn) {
                        Some(bit) => self.set_bit(bit, false),
                        None => {
                            self.metrics.event_fails.inc();
                            squib_logger::warn_rate_limited!(
                                "balloon: deflate of page frame {pfn:#x} outside guest memory"
                            );
                        }
                    }
                }
            }
            heads.push(head);
        }
        self.complete(DEFLATE_QUEUE, &heads);
    }

    /// The stats queue fired: read the guest's records and keep its buffer until the next
    /// polling tick.
    pub fn process_stats(&mut self) {
        let Some(index) = self.stats_queue else {
            return;
        };
        let chains = self.pop_chains(index);
        let mut give_back = Vec::new();
        for (head, descs) in chains {
            if let Some(prev) = self.stats_desc.replace(head) {
                // The driver keeps one buffer in flight; a second one means the first is
                // lost to it unless returned.
                self.metrics.stats_update_fails.inc();
                give_back.push(prev);
            }
            let Some(desc) = descs.first().copied() else {
                self.metrics.stats_update_fails.inc();
                continue;
            };
            let len = (desc.len as usize).min(MAX_STATS_RECORDS * RECORD_SIZE);
            let mut buf = vec![0u8; len];
            let read = self.mem.as_ref().is_some_and(|m| {
                !desc.write_only && m.read_slice(&mut buf, GuestAddress(desc.addr)).is_ok()
            });
            if !read {
                self.metrics.stats_update_fails.inc();
                squib_logger::warn_rate_limited!("balloon: unreadable stats buffer at head {head}");
                continue;
            }
            self.latest_stats.update_from(&buf);
            self.metrics.stats_updates_count.inc();
        }
        self.complete(index, &give_back);
    }

    /// The polling timer fired: give the held buffer back so the guest refills it.
    pub fn process_stats_timer(&mut self) {
        if let Err(e) = self.stats_timer.wait() {
            let e = std::io::Error::from(e);
            if e.kind() == std::io::ErrorKind::WouldBlock {
                // Re-armed (by a new interval) between the event and now: no tick is due.
                return;
            }
            self.metrics.event_fails.inc();
            log::error!("balloon: cannot read the stats timer: {e}");
            return;
        }
        self.stats_tick();
    }

    fn stats_tick(&mut self) {
        let (Some(index), Some(head)) = (self.stats_queue, self.stats_desc.take()) else {
            return;
        };
        self.complete(index, &[head]);
    }

    /// The reporting queue fired: every reported range is free in the guest; discard it.
    pub fn process_reporting(&mut self) {
        let Some(index) = self.reporting_queue else {
            return;
        };
        let chains = self.pop_chains(index);
        let mut heads = Vec::with_capacity(chains.len());
        for (head, descs) in chains {
            for desc in descs {
                self.metrics.free_page_report_count.inc();
                let (addr, len) = (desc.addr, u64::from(desc.len));
                let aligned = addr % BALLOON_PAGE_SIZE == 0 && len % BALLOON_PAGE_SIZE == 0;
                let result = match self.mem.as_ref() {
                    Some(mem) if aligned => {
                        discard_range(mem, addr, len).map_err(|e| e.to_string())
                    }
                    _ => Err(format!("unaligned range {addr:#x}+{len:#x}")),
                };
                match result {
                    Ok(()) => self.metrics.free_page_report_freed.add(len),
                    Err(e) => {
                        self.metrics.free_page_report_fails.inc();
                        squib_logger::warn_rate_limited!("balloon: reported range: {e}");
                    }
                }
            }
            heads.push(head);
        }
        self.complete(index, &heads);
    }

    /// The hinting queue fired: command ids (device-readable u32) and, inside the current
    /// run, free ranges (device-writable) to discard.
    pub fn process_hinting(&mut self) {
        let Some(index) = self.hinting_queue else {
            return;
        };
        let chains = self.pop_chains(index);
        let mut heads = Vec::with_capacity(chains.len());
        let mut config_changed = false;
        for (head, descs) in chains {
            for desc in descs {
                if desc.write_only {
                    self.hint_range(desc);
                    continue;
                }
                let mut id = [0u8; 4];
                let read = desc.len >= 4
                    && self
                        .mem
                        .as_ref()
                        .is_some_and(|m| m.read_slice(&mut id, GuestAddress(desc.addr)).is_ok());
                if !read {
                    self.metrics.free_page_hint_fails.inc();
                    squib_logger::warn_rate_limited!("balloon: unreadable hinting command");
                    continue;
                }
                config_changed |= self.hinting.guest_command(u32::from_le_bytes(id));
            }
            heads.push(head);
        }
        self.complete(index, &heads);
        if config_changed {
            if let Err(e) = self.signal_config() {
                self.metrics.event_fails.inc();
                log::error!("balloon: cannot signal config change: {e}");
            }
        }
    }

    /// One hinted free range: discarded only inside the current run.
    fn hint_range(&mut self, desc: Desc) {
        if !self.hinting.in_run() {
            return;
        }
        self.metrics.free_page_hint_count.inc();
        let (addr, len) = (desc.addr, u64::from(desc.len));
        let aligned = addr % BALLOON_PAGE_SIZE == 0 && len % BALLOON_PAGE_SIZE == 0;
        let result = match self.mem.as_ref() {
            Some(mem) if aligned => discard_range(mem, addr, len).map_err(|e| e.to_string()),
            _ => Err(format!("unaligned range {addr:#x}+{len:#x}")),
        };
        match result {
            Ok(()) => self.metrics.free_page_hint_freed.add(len),
            Err(e) => {
                self.metrics.free_page_hint_fails.inc();
                squib_logger::warn_rate_limited!("balloon: hinted range: {e}");
            }
        }
    }

    /// The config space as the guest sees it: `num_pages`, `actual`,
    /// `free_page_hint_cmd_id` (little-endian; the last one 0 without hinting).
    fn config_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.num_pages.to_le_bytes());
        b[4..8].copy_from_slice(&self.actual_pages.to_le_bytes());
        if self.hinting_queue.is_some() {
            b[8..].copy_from_slice(&self.hinting.host_cmd.to_le_bytes());
        }
        b
    }
}

/// A disarmed timerfd whose reads never block: the event loop must not wait on a timer
/// that a new polling interval re-armed after epoll reported it.
fn nonblocking_timer() -> std::io::Result<TimerFd> {
    let timer = TimerFd::new().map_err(std::io::Error::from)?;
    let fd = timer.as_raw_fd();
    // SAFETY: `fd` is the timerfd just created and owned by `timer`; F_GETFL/F_SETFL only
    // read and set its status flags.
    let ret = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(timer)
}

/// `amount_mib` in 4 KiB pages.
fn mib_to_pages(amount_mib: u32) -> Result<u32, BalloonError> {
    amount_mib
        .checked_mul(PAGES_PER_MIB)
        .ok_or(BalloonError::TooManyPages)
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn state(&self) -> &VirtioState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut VirtioState {
        &mut self.state
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !crate::virtio::read_config_space(&self.config_bytes(), offset, data) {
            self.metrics.cfg_fails.inc();
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is the driver's to write.
        if offset != 4 || data.len() != 4 {
            self.metrics.cfg_fails.inc();
            squib_logger::warn_rate_limited!(
                "balloon: config write of {} bytes at {offset:#x} refused",
                data.len()
            );
            return;
        }
        self.actual_pages = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        if let Err(e) = self.state.check_activation(self.mem.is_some()) {
            self.metrics.activate_fails.inc();
            return Err(e);
        }
        let pages = (mem.last_addr().0 >> PFN_SHIFT) + 1;
        // One bit per guest page: 32 KiB per GiB of guest physical address space.
        self.inflated = vec![0; usize::try_from(pages.div_ceil(64)).unwrap_or(0)];
        self.mem = Some(mem);
        self.interrupt = Some(interrupt);
        // A driver may queue buffers and kick before DRIVER_OK (Linux primes the stats queue
        // with its first statistics in probe): those kicks found the device inactive and were
        // drained unprocessed, so every queue is looked at again now.
        for (index, evt) in self.state.queue_evts.iter().enumerate() {
            if let Err(e) = evt.write(1) {
                self.metrics.event_fails.inc();
                log::error!("balloon: cannot kick queue {index} at activation: {e}");
            }
        }
        if self.stats_queue.is_some() {
            if let Err(e) = self.arm_stats_timer() {
                self.metrics.activate_fails.inc();
                log::error!("balloon: cannot arm the stats timer: {e}");
            }
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.mem.is_some()
    }

    fn reset(&mut self) {
        self.mem = None;
        self.interrupt = None;
        self.stats_desc = None;
        self.inflated = Vec::new();
        self.actual_pages = 0;
        if let Err(e) = self.stats_timer.clear() {
            log::error!("balloon: cannot disarm the stats timer: {e}");
        }
        self.state.reset();
    }

    crate::virtio::persist::persist_as_device_state!(Balloon, "balloon");
}
