//! [`Block`]: the virtio-blk device — features, config space, queue draining, updates.
//!
//! One request queue of [`QUEUE_SIZE`]. A drain serves at most the queue size of chains and
//! stops once it moved [`MAX_DRAIN_BYTES`] (then re-kicks itself so other event sources get
//! a turn; one request is at most [`super::MAX_REQUEST_BYTES`]), raises at most one interrupt
//! (suppressed per EVENT_IDX through `needs_notification`), and stops early when the rate
//! limiter runs dry: the chain is put back and the limiter's timer resumes the drain.
//! Guest mistakes complete the chain with an error status, bump `invalid_reqs_count` and log
//! at most one warning per second.
//!
//! With the Async engine ([`super::uring`]) reads, writes and flushes are submitted (one
//! `io_uring_enter` per drain) and their used entries written when they complete: completions
//! found right after the submit and those the completion eventfd announces later are
//! gathered into one used-ring update and one interrupt per event. A full engine stops the
//! drain (`io_engine_throttled_events`) until completions free room; a FLUSH waits in the
//! available ring until nothing is in flight. GET_ID, DISCARD and WRITE_ZEROES run inline.

use std::path::Path;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::disk::DiskFile;
use super::request::{self, ExecContext, Request, RequestKind, Segment, MAX_DESCRIPTORS};
use super::uring::{Completion, UringEngine};
use super::{features as blk, status, BlockConfig, BlockError, BlockMetrics, CacheMode, IoEngine};
use super::{MAX_DISCARD_SECTORS, MAX_DRAIN_BYTES, QUEUE_SIZE, SEG_MAX, SIZE_MAX};
use crate::rate_limiter::{BucketUpdate, RateLimiter, TokenType};
use crate::virtio::{
    device_type, features, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt,
    VirtioState,
};

/// Config space bytes: up to `write_zeroes_may_unmap` and its padding (virtio 1.2 §5.2.4).
const CONFIG_LEN: usize = 60;

/// What happened to one popped chain.
enum ChainOutcome {
    /// Completed; bytes written into guest memory (status included).
    Used(u32),
    /// The rate limiter is dry: put the chain back.
    Throttled,
    /// Handed to the Async engine: its used entry is written when it completes.
    Submitted,
    /// A FLUSH while requests are in flight: put it back until they are done.
    WaitForIdle,
}

/// A virtio-blk device backed by a host file.
#[derive(Debug)]
pub struct Block {
    drive_id: String,
    disk: DiskFile,
    read_only: bool,
    cache: CacheMode,
    rate_limiter: RateLimiter,
    state: VirtioState,
    mem: Option<GuestMemoryMmap>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    segs: Vec<Segment>,
    metrics: Arc<BlockMetrics>,
    /// The Async engine; `None` for Sync.
    uring: Option<UringEngine>,
}

impl Block {
    /// Open the backing file and build the device.
    ///
    /// # Errors
    /// [`BlockError`] when the file cannot be opened or measured, or an fd cannot be created.
    pub fn new(cfg: BlockConfig) -> Result<Self, BlockError> {
        let disk = DiskFile::open(&cfg.path, cfg.read_only)?;
        Self::with_disk(cfg, disk)
    }

    /// Build the device over an already open `disk` (`cfg.path` is not opened; tests put a
    /// fault-injecting [`super::disk::DiskIo`] behind `disk`).
    ///
    /// # Errors
    /// [`BlockError::EventFd`] when an fd cannot be created.
    pub fn with_disk(cfg: BlockConfig, disk: DiskFile) -> Result<Self, BlockError> {
        let rate_limiter = match cfg.rate_limiter {
            Some(rl) => rl,
            None => RateLimiter::unlimited().map_err(BlockError::EventFd)?,
        };
        let mut avail_features = (1u64 << features::VERSION_1)
            | (1 << features::RING_EVENT_IDX)
            | (1 << features::RING_INDIRECT_DESC)
            | (1 << blk::SIZE_MAX)
            | (1 << blk::SEG_MAX);
        if cfg.read_only {
            avail_features |= 1 << blk::RO;
        }
        if cfg.cache == CacheMode::Writeback {
            avail_features |= 1 << blk::FLUSH;
        }
        if !cfg.read_only && disk.supports_punch_hole() {
            avail_features |= (1 << blk::DISCARD) | (1 << blk::WRITE_ZEROES);
        }
        let uring = match cfg.engine {
            IoEngine::Sync => None,
            IoEngine::Async => Some(UringEngine::new()?),
        };
        Ok(Self {
            drive_id: cfg.drive_id,
            disk,
            read_only: cfg.read_only,
            cache: cfg.cache,
            rate_limiter,
            state: VirtioState::new(1, QUEUE_SIZE, avail_features).map_err(BlockError::EventFd)?,
            mem: None,
            interrupt: None,
            segs: Vec::with_capacity(MAX_DESCRIPTORS),
            metrics: Arc::new(BlockMetrics::default()),
            uring,
        })
    }

    /// The drive id.
    #[must_use]
    pub fn drive_id(&self) -> &str {
        &self.drive_id
    }

    /// The device's counters (serialise under `block_<drive_id>`).
    #[must_use]
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    /// Disk capacity in 512-byte sectors.
    #[must_use]
    pub fn nsectors(&self) -> u64 {
        self.disk.nsectors()
    }

    /// The rate limiter (its fd is the timer the event loop watches).
    #[must_use]
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }

    /// Swap the backing file (PATCH `path_on_host`); the guest gets a config-change interrupt.
    ///
    /// # Errors
    /// [`BlockError`] when the new file cannot be opened (the old one stays) or the guest
    /// cannot be signalled.
    pub fn update_path(&mut self, path: &Path) -> Result<(), BlockError> {
        let disk = DiskFile::open(path, self.read_only).inspect_err(|_| {
            self.metrics.update_fails.inc();
        })?;
        self.switch_disk(disk)
    }

    /// `PATCH /drives` with a file the VMM already opened (and checked) from `path`.
    ///
    /// # Errors
    /// [`BlockError::Size`] when the file cannot be measured, or the config interrupt fails.
    pub fn update_file(&mut self, file: std::fs::File, path: &Path) -> Result<(), BlockError> {
        let disk = DiskFile::from_file(file, path, self.read_only).inspect_err(|_| {
            self.metrics.update_fails.inc();
        })?;
        self.switch_disk(disk)
    }

    fn switch_disk(&mut self, disk: DiskFile) -> Result<(), BlockError> {
        // In-flight requests name the old file: finish them on it first.
        self.complete_in_flight();
        self.sync_writeback("before switching files");
        self.disk = disk;
        self.metrics.update_count.inc();
        if let Some(interrupt) = &self.interrupt {
            interrupt
                .signal_config_change()
                .map_err(BlockError::Interrupt)?;
        }
        Ok(())
    }

    /// Change the rate limiter's buckets (PATCH `rate_limiter`).
    pub fn update_rate_limiter(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        self.rate_limiter.update_buckets(bandwidth, ops);
        self.metrics.update_count.inc();
    }

    /// The queue eventfd fired: clear it and drain the queue.
    pub fn process_queue_event(&mut self) {
        self.metrics.queue_event_count.inc();
        if let Err(e) = self.state.queue_evts[0].read() {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                self.metrics.event_fails.inc();
                log::error!("block {}: cannot read queue event: {e}", self.drive_id);
            }
        }
        if self.rate_limiter.is_blocked() {
            return;
        }
        self.process_queue();
    }

    /// The rate limiter's timer fired: unblock and drain what was held back.
    pub fn process_rate_limiter_event(&mut self) {
        self.metrics.rate_limiter_event_count.inc();
        if let Err(e) = self.rate_limiter.event_handler() {
            self.metrics.event_fails.inc();
            log::error!(
                "block {}: cannot read rate limiter timer: {e}",
                self.drive_id
            );
            return;
        }
        self.process_queue();
    }

    /// The I/O engine.
    #[must_use]
    pub fn io_engine(&self) -> IoEngine {
        if self.uring.is_some() {
            IoEngine::Async
        } else {
            IoEngine::Sync
        }
    }

    /// The Async engine's completion eventfd (the event loop watches it), if any.
    #[must_use]
    pub fn completion_evt(&self) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.uring.as_ref().map(UringEngine::completion_evt)
    }

    /// Async requests submitted and not completed yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.uring.as_ref().map_or(0, UringEngine::in_flight)
    }

    /// The Async engine's completion eventfd fired: complete what is done, then take more
    /// chains (a full engine or a waiting FLUSH may have stopped the last drain); one
    /// interrupt for both.
    pub fn process_async_completion_event(&mut self) {
        let Some(uring) = &self.uring else {
            return;
        };
        if let Err(e) = uring.completion_evt().read() {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                self.metrics.event_fails.inc();
                log::error!("block {}: cannot read completion event: {e}", self.drive_id);
            }
        }
        let mut used = self.reap_completions();
        if !self.rate_limiter.is_blocked() {
            used |= self.drain_queue();
        }
        self.notify_if(used);
    }

    /// Serve available chains (at most the queue size), then interrupt once if needed.
    pub fn process_queue(&mut self) {
        let used = self.drain_queue();
        self.notify_if(used);
    }

    /// Wait for every Async request in flight and complete it (used entries, one interrupt):
    /// before a snapshot is saved and before the backing file changes.
    pub fn complete_in_flight(&mut self) {
        let Some(uring) = self.uring.as_mut() else {
            return;
        };
        let fd = self.disk.raw_fd();
        let Some(mem) = self.mem.as_ref() else {
            // Not activated: nothing can be in flight, but never leave a request behind.
            uring.wait_idle(fd, |_| {});
            return;
        };
        let queue = &mut self.state.queues[0];
        let mut used = false;
        uring.wait_idle(fd, |c| {
            complete(queue, mem, &self.metrics, &self.drive_id, &c);
            used = true;
        });
        self.notify_if(used);
    }

    /// Used entries for the Async requests that completed; whether there was any.
    fn reap_completions(&mut self) -> bool {
        let (Some(uring), Some(mem)) = (self.uring.as_mut(), self.mem.as_ref()) else {
            return false;
        };
        let queue = &mut self.state.queues[0];
        let mut used = false;
        uring.reap(self.disk.raw_fd(), |c| {
            complete(queue, mem, &self.metrics, &self.drive_id, &c);
            used = true;
        });
        used
    }

    /// Signal the used queue if entries were added and the driver wants to hear of them.
    fn notify_if(&mut self, used: bool) {
        let (Some(mem), Some(interrupt)) = (self.mem.as_ref(), self.interrupt.as_ref()) else {
            return;
        };
        if used && self.state.queues[0].needs_notification(mem).unwrap_or(true) {
            if let Err(e) = interrupt.signal_used_queue() {
                log::error!("block {}: cannot signal used queue: {e}", self.drive_id);
            }
        }
    }

    /// Take chains off the available ring (at most the queue size) and serve or submit
    /// them; whether any used entry was added.
    fn drain_queue(&mut self) -> bool {
        let Some(mem) = self.mem.as_ref() else {
            return false;
        };
        let queue = &mut self.state.queues[0];
        let mut budget = queue.size();
        let mut used_any = false;
        let mut drain = Drain {
            exec: ExecContext {
                mem,
                disk: &self.disk,
                drive_id: &self.drive_id,
                read_only: self.read_only,
            },
            segs: &mut self.segs,
            rate_limiter: &mut self.rate_limiter,
            metrics: &self.metrics,
            io_bytes: 0,
            uring: self.uring.as_mut(),
        };
        loop {
            if budget == 0 || drain.io_bytes >= MAX_DRAIN_BYTES {
                // More may be waiting: come back after other event sources had a turn.
                drain.metrics.remaining_reqs_count.inc();
                let _ = self.state.queue_evts[0].write(1);
                break;
            }
            if drain.uring.as_ref().is_some_and(|u| u.is_full()) {
                // Back-pressure: completions resume the drain (their eventfd fires).
                drain.metrics.io_engine_throttled_events.inc();
                break;
            }
            budget -= 1;
            let chain = match queue.iter(mem) {
                Ok(mut avail) => avail.next(),
                Err(e) => {
                    // avail.idx runs more than a queue ahead: nothing is served until the
                    // driver fixes it (or resets the device).
                    drain.metrics.invalid_reqs_count.inc();
                    drain.warn(format_args!("available ring: {e}"));
                    break;
                }
            };
            let Some(chain) = chain else {
                // With EVENT_IDX, re-arm the notification and catch a race with the driver.
                match queue.enable_notification(mem) {
                    Ok(true) => continue,
                    _ => break,
                }
            };
            let head = chain.head_index();
            if head >= queue.size() {
                // Names no descriptor: nothing to serve or complete.
                drain.metrics.invalid_reqs_count.inc();
                drain.warn(format_args!(
                    "available ring head {head} is outside the queue of {}",
                    queue.size()
                ));
                continue;
            }
            let outcome = drain.handle(head, chain);
            match outcome {
                ChainOutcome::Used(len) => {
                    if let Err(e) = crate::virtio::queue::add_used(queue, mem, head, len) {
                        drain.warn(format_args!("cannot complete head {head}: {e}"));
                    }
                    used_any = true;
                }
                ChainOutcome::Submitted => {}
                ChainOutcome::Throttled => {
                    drain.metrics.rate_limiter_throttled_events.inc();
                    queue.go_to_previous_position();
                    break;
                }
                ChainOutcome::WaitForIdle => {
                    queue.go_to_previous_position();
                    break;
                }
            }
        }
        if let Some(uring) = drain.uring {
            if let Err(e) = uring.submit() {
                log::error!("block {}: io_uring submit failed: {e}", self.drive_id);
            }
            // Requests the kernel finished during the submit (page-cache hits) complete in
            // this same batch.
            uring.reap(self.disk.raw_fd(), |c| {
                complete(queue, mem, &self.metrics, &self.drive_id, &c);
                used_any = true;
            });
        }
        used_any
    }

    /// In [`CacheMode::Writeback`], `fdatasync` what the guest wrote before the disk is let go
    /// (device drop, file swap): writes the guest never flushed still reach stable storage.
    fn sync_writeback(&self, when: &str) {
        if self.cache != CacheMode::Writeback || self.read_only {
            return;
        }
        if let Err(e) = self.disk.sync() {
            log::error!(
                "block {}: cannot sync {} {when}: {e}",
                self.drive_id,
                self.disk.path().display()
            );
        }
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[0..8].copy_from_slice(&self.disk.nsectors().to_le_bytes());
        cfg[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        // max_discard_sectors, max_discard_seg, discard_sector_alignment (4 KiB),
        // max_write_zeroes_sectors, max_write_zeroes_seg, write_zeroes_may_unmap.
        let discard = [MAX_DISCARD_SECTORS, 1, 8, MAX_DISCARD_SECTORS, 1];
        for (i, value) in discard.into_iter().enumerate() {
            cfg[36 + 4 * i..40 + 4 * i].copy_from_slice(&value.to_le_bytes());
        }
        cfg[56] = 1;
        cfg
    }
}

/// The device state one drain needs besides the queue (disjoint borrows of [`Block`]).
struct Drain<'a> {
    exec: ExecContext<'a>,
    segs: &'a mut Vec<Segment>,
    rate_limiter: &'a mut RateLimiter,
    metrics: &'a BlockMetrics,
    /// Bytes of reads and writes this drain executed (see [`MAX_DRAIN_BYTES`]).
    io_bytes: u64,
    /// The Async engine, if the device has one.
    uring: Option<&'a mut UringEngine>,
}

impl Drain<'_> {
    /// Parse and serve one chain; a malformed one completes with IOERR (or is dropped).
    fn handle(&mut self, head: u16, chain: DescriptorChain<&GuestMemoryMmap>) -> ChainOutcome {
        let nsectors = self.exec.disk.nsectors();
        match request::parse(self.exec.mem, chain, self.segs, nsectors) {
            Ok(req) => {
                let outcome = match self.uring.as_deref_mut() {
                    Some(uring) if req.kind.is_async() => submit(
                        head,
                        &req,
                        self.segs,
                        &self.exec,
                        self.rate_limiter,
                        self.metrics,
                        uring,
                    ),
                    _ => serve(&req, self.segs, &self.exec, self.rate_limiter, self.metrics),
                };
                if matches!(outcome, ChainOutcome::Used(_) | ChainOutcome::Submitted)
                    && matches!(req.kind, RequestKind::In | RequestKind::Out)
                {
                    self.io_bytes += req.data_len;
                }
                outcome
            }
            Err((err, status_addr)) => {
                self.metrics.invalid_reqs_count.inc();
                self.warn(format_args!("head {head}: {err}"));
                let mem = self.exec.mem;
                ChainOutcome::Used(status_addr.map_or(0, |a| write_status(mem, a, status::IOERR)))
            }
        }
    }

    /// Log a guest-triggered warning, rate limited so a hostile guest cannot flood the log.
    fn warn(&self, what: std::fmt::Arguments<'_>) {
        squib_logger::warn_rate_limited!("block {}: {what}", self.exec.drive_id);
    }
}

/// Rate-limit, execute and complete a valid request; returns the used length.
fn serve(
    req: &Request,
    segs: &[Segment],
    ctx: &ExecContext<'_>,
    rate_limiter: &mut RateLimiter,
    metrics: &BlockMetrics,
) -> ChainOutcome {
    if !rate_limiter.consume(1, TokenType::Ops) {
        return ChainOutcome::Throttled;
    }
    let moves_data = matches!(req.kind, RequestKind::In | RequestKind::Out);
    if moves_data && !rate_limiter.consume(req.data_len, TokenType::Bytes) {
        rate_limiter.manual_replenish(1, TokenType::Ops);
        return ChainOutcome::Throttled;
    }
    let (code, len) = match req.kind {
        RequestKind::Unsupported(_) => (status::UNSUPP, 0),
        _ => match req.execute(segs, ctx) {
            Ok(len) => {
                count_success(req, metrics);
                (status::OK, len)
            }
            Err(e) => {
                metrics.execute_fails.inc();
                squib_logger::log_rate_limited!(
                    log::Level::Debug,
                    "block {}: sector {}: {e}",
                    ctx.drive_id,
                    req.sector
                );
                (status::IOERR, 0)
            }
        },
    };
    let written = write_status(ctx.mem, req.status_addr, code);
    ChainOutcome::Used(if written == 0 {
        0
    } else {
        len.saturating_add(1)
    })
}

/// Rate-limit a read, write or flush and hand it to the Async engine.
fn submit(
    head: u16,
    req: &Request,
    segs: &[Segment],
    ctx: &ExecContext<'_>,
    rate_limiter: &mut RateLimiter,
    metrics: &BlockMetrics,
    uring: &mut UringEngine,
) -> ChainOutcome {
    if req.kind == RequestKind::Flush && uring.in_flight() > 0 {
        // Every earlier write must be complete before the fsync starts.
        return ChainOutcome::WaitForIdle;
    }
    if !rate_limiter.consume(1, TokenType::Ops) {
        return ChainOutcome::Throttled;
    }
    if req.kind != RequestKind::Flush && !rate_limiter.consume(req.data_len, TokenType::Bytes) {
        rate_limiter.manual_replenish(1, TokenType::Ops);
        return ChainOutcome::Throttled;
    }
    let fd = ctx.disk.raw_fd();
    let pushed = match req.kind {
        RequestKind::Out if ctx.read_only => {
            metrics.execute_fails.inc();
            return ChainOutcome::Used(write_status(ctx.mem, req.status_addr, status::IOERR));
        }
        RequestKind::Flush => uring.push_flush(fd, head, req.status_addr),
        _ => uring.push_rw(
            fd,
            ctx.mem,
            head,
            req.kind,
            req.sector << super::SECTOR_SHIFT,
            segs,
            req.status_addr,
        ),
    };
    match pushed {
        Ok(()) => ChainOutcome::Submitted,
        Err(e) => {
            metrics.execute_fails.inc();
            squib_logger::log_rate_limited!(
                log::Level::Debug,
                "block {}: sector {}: {e}",
                ctx.drive_id,
                req.sector
            );
            ChainOutcome::Used(write_status(ctx.mem, req.status_addr, status::IOERR))
        }
    }
}

/// Status byte, metrics and used entry for an Async request that completed.
fn complete(
    queue: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    metrics: &BlockMetrics,
    drive_id: &str,
    c: &Completion,
) {
    let (code, len) = match &c.result {
        Ok(()) => {
            count_kind_success(c.kind, c.data_len, metrics);
            let len = if c.kind == RequestKind::In {
                // data_len ≤ MAX_REQUEST_BYTES < u32::MAX (checked by `parse`).
                u32::try_from(c.data_len).unwrap_or(u32::MAX)
            } else {
                0
            };
            (status::OK, len)
        }
        Err(e) => {
            metrics.execute_fails.inc();
            squib_logger::log_rate_limited!(
                log::Level::Debug,
                "block {drive_id}: head {}: {e}",
                c.head
            );
            (status::IOERR, 0)
        }
    };
    let written = write_status(mem, c.status_addr, code);
    let used_len = if written == 0 {
        0
    } else {
        len.saturating_add(1)
    };
    if let Err(e) = crate::virtio::queue::add_used(queue, mem, c.head, used_len) {
        squib_logger::warn_rate_limited!("block {drive_id}: cannot complete head {}: {e}", c.head);
    }
}

fn count_success(req: &Request, metrics: &BlockMetrics) {
    count_kind_success(req.kind, req.data_len, metrics);
}

fn count_kind_success(kind: RequestKind, data_len: u64, metrics: &BlockMetrics) {
    match kind {
        RequestKind::In => {
            metrics.read_count.inc();
            metrics.read_bytes.add(data_len);
        }
        RequestKind::Out => {
            metrics.write_count.inc();
            metrics.write_bytes.add(data_len);
        }
        RequestKind::Flush => metrics.flush_count.inc(),
        RequestKind::Discard | RequestKind::WriteZeroes => metrics.write_count.inc(),
        RequestKind::GetId | RequestKind::Unsupported(_) => {}
    }
}

/// Write the status byte; returns 1 when written, 0 when the address is unusable.
fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, code: u8) -> u32 {
    u32::from(mem.write_obj(code, addr).is_ok())
}

impl Block {
    /// The VMM is exiting: in Writeback mode, `fdatasync` what the guest wrote, even though
    /// vCPU threads may still hold the device (so it would never be dropped).
    pub fn sync_at_exit(&self) {
        self.sync_writeback("at exit");
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.complete_in_flight();
        self.sync_writeback("at exit");
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn state(&self) -> &VirtioState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut VirtioState {
        &mut self.state
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !crate::virtio::read_config_space(&self.config_space(), offset, data) {
            self.metrics.cfg_fails.inc();
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // capacity and seg_max are read-only; no writable field is offered.
        self.metrics.cfg_fails.inc();
        squib_logger::log_rate_limited!(
            log::Level::Debug,
            "block {}: config write at {offset:#x} ignored",
            self.drive_id
        );
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
        self.mem = Some(mem);
        self.interrupt = Some(interrupt);
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.mem.is_some()
    }

    fn reset(&mut self) {
        // The driver gave up its buffers: let in-flight requests finish, report nothing.
        if let Some(uring) = self.uring.as_mut() {
            uring.wait_idle(self.disk.raw_fd(), |_| {});
        }
        self.mem = None;
        self.interrupt = None;
        self.state.reset();
    }

    fn prepare_save(&mut self) {
        self.complete_in_flight();
    }

    crate::virtio::persist::persist_as_device_state!(Block, "block");
}

pub mod persist;

#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod async_tests;
#[cfg(test)]
mod bounded_work_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod data_safety_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod log_flood_tests;
#[cfg(test)]
pub(crate) mod tests;
