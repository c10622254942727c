//! [`Entropy`]: the virtio-rng device — features, queue draining, rate limiting.
//!
//! One request queue of [`QUEUE_SIZE`]. A drain serves at most the queue size of chains and
//! at most [`DRAIN_MAX_BYTES`] of entropy, then re-kicks its own queue eventfd so other event
//! sources get a turn; it raises at most one interrupt. It stops early when the rate limiter
//! runs dry: the chain is put back and the limiter's timer resumes the drain. Random bytes
//! go through one host buffer of [`MAX_ENTROPY_BYTES`] allocated with the device, so serving
//! a request does not allocate.

use std::fmt;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::request::{self, Segment, MAX_DESCRIPTORS};
use super::{EntropyError, EntropyMetrics, MAX_ENTROPY_BYTES, QUEUE_SIZE, RNG_QUEUE};
use crate::rate_limiter::{RateLimiter, TokenType};
use crate::virtio::{
    device_type, features, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt,
    VirtioState,
};

/// Most entropy one drain serves before yielding to other event sources (16 full requests).
pub const DRAIN_MAX_BYTES: u64 = 1 << 20;

/// Where random bytes come from: fills the whole buffer or fails.
pub(crate) type HostRng = fn(&mut [u8]) -> std::io::Result<()>;

/// What happened to one popped chain.
enum ChainOutcome {
    /// Completed; bytes written into guest memory.
    Used(u32),
    /// The rate limiter is dry: put the chain back.
    Throttled,
}

/// A virtio-rng device.
pub struct Entropy {
    rate_limiter: RateLimiter,
    pub(super) state: VirtioState,
    mem: Option<GuestMemoryMmap>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    segs: Vec<Segment>,
    buf: Box<[u8]>,
    host_rng: HostRng,
    metrics: Arc<EntropyMetrics>,
}

impl fmt::Debug for Entropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entropy")
            .field("rate_limiter", &self.rate_limiter)
            .field("state", &self.state)
            .field("activated", &self.mem.is_some())
            .finish_non_exhaustive()
    }
}

impl Entropy {
    /// A device with one queue of [`QUEUE_SIZE`], offering VERSION_1, throttled by
    /// `rate_limiter` (pass [`RateLimiter::unlimited`] for none).
    ///
    /// # Errors
    /// [`EntropyError::EventFd`] when the queue eventfd cannot be created.
    pub fn new(rate_limiter: RateLimiter) -> Result<Self, EntropyError> {
        let state = VirtioState::new(1, QUEUE_SIZE, 1u64 << features::VERSION_1)
            .map_err(EntropyError::EventFd)?;
        Ok(Self {
            rate_limiter,
            state,
            mem: None,
            interrupt: None,
            segs: Vec::with_capacity(MAX_DESCRIPTORS),
            buf: vec![0; MAX_ENTROPY_BYTES as usize].into_boxed_slice(),
            host_rng: host_getrandom,
            metrics: Arc::new(EntropyMetrics::default()),
        })
    }

    /// The device's counters (the VMM registers them under [`super::METRICS_GROUP`]).
    #[must_use]
    pub fn metrics(&self) -> Arc<EntropyMetrics> {
        self.metrics.clone()
    }

    /// The rate limiter (its fd is the timer the event loop watches).
    #[must_use]
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }

    /// Replace the host entropy source (tests: a failing `getrandom`).
    #[cfg(test)]
    pub(crate) fn set_host_rng(&mut self, host_rng: HostRng) {
        self.host_rng = host_rng;
    }

    /// The queue eventfd fired: clear it and drain the queue unless throttled.
    pub fn process_queue_event(&mut self) {
        if let Err(e) = self.state.queue_evts[RNG_QUEUE].read() {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                self.metrics.entropy_event_fails.inc();
                log::error!("entropy: cannot read queue event: {e}");
                return;
            }
        }
        if self.rate_limiter.is_blocked() {
            // The limiter's timer will drain the queue (Firecracker counts this case here).
            self.metrics.rate_limiter_event_count.inc();
            return;
        }
        self.process_queue();
    }

    /// The rate limiter's timer fired: unblock and drain what was held back.
    pub fn process_rate_limiter_event(&mut self) {
        self.metrics.rate_limiter_event_count.inc();
        if let Err(e) = self.rate_limiter.event_handler() {
            self.metrics.entropy_event_fails.inc();
            log::error!("entropy: cannot read rate limiter timer: {e}");
            return;
        }
        self.process_queue();
    }

    /// Serve available chains (within the drain budget), then interrupt once if needed.
    pub fn process_queue(&mut self) {
        let (Some(mem), Some(interrupt)) = (self.mem.as_ref(), self.interrupt.as_ref()) else {
            return;
        };
        let queue = &mut self.state.queues[RNG_QUEUE];
        let mut chains_left = queue.size();
        let mut bytes_left = DRAIN_MAX_BYTES;
        let mut used_any = false;
        let mut server = Server {
            mem,
            segs: &mut self.segs,
            buf: &mut self.buf,
            host_rng: self.host_rng,
            rate_limiter: &mut self.rate_limiter,
            metrics: &self.metrics,
        };
        loop {
            if chains_left == 0 || bytes_left == 0 {
                // More may be waiting: come back after other event sources had a turn.
                if let Err(e) = self.state.queue_evts[RNG_QUEUE].write(1) {
                    server.metrics.entropy_event_fails.inc();
                    log::error!("entropy: cannot re-kick the queue: {e}");
                }
                break;
            }
            chains_left -= 1;
            let chain = match queue.iter(mem) {
                Ok(mut avail) => avail.next(),
                Err(e) => {
                    // avail.idx runs more than a queue ahead: nothing is served until the
                    // driver fixes it (or resets the device).
                    server.metrics.entropy_event_fails.inc();
                    squib_logger::warn_rate_limited!("entropy: available ring: {e}");
                    break;
                }
            };
            let Some(chain) = chain else {
                // Re-enable notifications and catch a chain published meanwhile.
                match queue.enable_notification(mem) {
                    Ok(true) => continue,
                    _ => break,
                }
            };
            let head = chain.head_index();
            if head >= queue.size() {
                // Nothing to complete: the guest published a head outside its table (and
                // virtio-queue's `add_used` would refuse it with an unthrottled log line).
                server.metrics.entropy_event_count.inc();
                server.metrics.entropy_event_fails.inc();
                squib_logger::warn_rate_limited!("entropy: head {head} is out of range");
                continue;
            }
            match server.handle(head, chain) {
                ChainOutcome::Used(len) => {
                    bytes_left = bytes_left.saturating_sub(u64::from(len));
                    if let Err(e) = queue.add_used(mem, head, len) {
                        // The used ring is outside guest memory: the driver's mistake.
                        server.metrics.entropy_event_fails.inc();
                        squib_logger::warn_rate_limited!(
                            "entropy: cannot complete head {head}: {e}"
                        );
                        break;
                    }
                    server.metrics.entropy_bytes.add(u64::from(len));
                    used_any = true;
                }
                ChainOutcome::Throttled => {
                    server.metrics.entropy_rate_limiter_throttled.inc();
                    queue.go_to_previous_position();
                    break;
                }
            }
        }
        if used_any && queue.needs_notification(mem).unwrap_or(true) {
            if let Err(e) = interrupt.signal_used_queue() {
                self.metrics.entropy_event_fails.inc();
                log::error!("entropy: cannot signal used queue: {e}");
            }
        }
    }
}

/// The device state one drain needs besides the queue (disjoint borrows of [`Entropy`]).
struct Server<'a> {
    mem: &'a GuestMemoryMmap,
    segs: &'a mut Vec<Segment>,
    buf: &'a mut [u8],
    host_rng: HostRng,
    rate_limiter: &'a mut RateLimiter,
    metrics: &'a EntropyMetrics,
}

impl Server<'_> {
    /// Parse, rate-limit and serve one chain; a malformed one completes with length 0.
    fn handle(&mut self, head: u16, chain: DescriptorChain<&GuestMemoryMmap>) -> ChainOutcome {
        let requested = match request::parse(self.mem, chain, self.segs) {
            Ok(requested) => requested,
            Err(e) => {
                self.metrics.entropy_event_count.inc();
                self.metrics.entropy_event_fails.inc();
                squib_logger::warn_rate_limited!("entropy: head {head}: {e}");
                return ChainOutcome::Used(0);
            }
        };
        if !self.rate_limiter.consume(1, TokenType::Ops) {
            return ChainOutcome::Throttled;
        }
        if !self.rate_limiter.consume(requested, TokenType::Bytes) {
            self.rate_limiter.manual_replenish(1, TokenType::Ops);
            return ChainOutcome::Throttled;
        }
        self.metrics.entropy_event_count.inc();
        // At most MAX_ENTROPY_BYTES (64 KiB), so the conversions cannot truncate.
        let len = requested.min(u64::from(MAX_ENTROPY_BYTES)) as usize;
        if len == 0 {
            return ChainOutcome::Used(0);
        }
        let bytes = &mut self.buf[..len];
        if let Err(e) = (self.host_rng)(bytes) {
            self.metrics.host_rng_fails.inc();
            self.metrics.entropy_event_fails.inc();
            squib_logger::error_rate_limited!("entropy: host getrandom failed: {e}");
            return ChainOutcome::Used(0);
        }
        ChainOutcome::Used(self.scatter(len))
    }

    /// Copy the first `len` bytes of the buffer into the segments in order; returns the
    /// number written (`len` unless guest memory changed under a parsed chain).
    fn scatter(&self, len: usize) -> u32 {
        let mut done = 0usize;
        for seg in self.segs.iter() {
            if done == len {
                break;
            }
            let n = (seg.len as usize).min(len - done);
            if let Err(e) = self.mem.write_slice(&self.buf[done..done + n], seg.addr) {
                self.metrics.entropy_event_fails.inc();
                squib_logger::warn_rate_limited!("entropy: buffer {:#x}: {e}", seg.addr.0);
                break;
            }
            done += n;
        }
        // done <= MAX_ENTROPY_BYTES.
        done as u32
    }
}

/// Fill `buf` from the kernel's random pool (`getrandom(2)`, blocking only until the pool is
/// first initialised), retrying short reads and `EINTR`.
fn host_getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, exclusively borrowed byte slice; the kernel writes at
        // most `rest.len()` bytes at its start.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(0) => return Err(std::io::Error::other("getrandom returned no bytes")),
            Ok(n) => done += n,
            Err(_) => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

impl VirtioDevice for Entropy {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn state(&self) -> &VirtioState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut VirtioState {
        &mut self.state
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no config space (virtio 1.2 §5.4.4).
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("entropy: config write at {offset:#x} ignored");
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
        self.mem = None;
        self.interrupt = None;
        self.state.reset();
    }

    crate::virtio::persist::persist_as_device_state!(Entropy, "entropy");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_getrandom_fills_large_buffers() {
        let mut a = vec![0u8; MAX_ENTROPY_BYTES as usize];
        let mut b = vec![0u8; MAX_ENTROPY_BYTES as usize];
        host_getrandom(&mut a).unwrap();
        host_getrandom(&mut b).unwrap();
        assert_ne!(a, b);
        // 64 KiB of zeros from a working generator has probability 2^-524288.
        assert!(a[MAX_ENTROPY_BYTES as usize - 4096..]
            .iter()
            .any(|&x| x != 0));
    }
}
