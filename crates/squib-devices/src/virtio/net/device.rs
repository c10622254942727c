//! [`Net`]: the virtio-net device — features, config space, activation, updates.
//!
//! Two queues, rx ([`RX_INDEX`](super::RX_INDEX)) and tx ([`TX_INDEX`](super::TX_INDEX)), of
//! [`QUEUE_SIZE`]. The data paths live in `rx` (TAP → guest, back-pressure), `rx_buffers` (rx
//! chains held for frames, mergeable buffers) and `tx` (guest → TAP, gathered straight from
//! guest memory); what a snapshot keeps in [`persist`]. Each
//! drain pops at most the negotiated queue size of chains (malformed ones included) and
//! serves at most [`QUEUE_SIZE`] frames, then re-kicks itself so other event sources get a
//! turn, and raises at most one interrupt (suppressed per EVENT_IDX through
//! `needs_notification`).
//! Guest mistakes drop the chain or frame, bump a metric and log at most one warning a second.

pub mod persist;
mod rx;
mod rx_buffers;
mod tx;

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::GuestAddress;

use super::tap::{offload, Tap, TapIo};
use super::{features as net, FrameInterceptor, NetConfig, NetError, NetMetrics};
use super::{RateLimiterUpdate, MAX_BUFFER_LEN, MIN_MTU, QUEUE_SIZE};
use crate::rate_limiter::RateLimiter;
use crate::virtio::{
    device_type, features, has_feature, ActivateError, GuestMemoryMmap, VirtioDevice,
    VirtioInterrupt, VirtioState,
};

/// Config space bytes: mac[6], status, max_virtqueue_pairs, mtu (virtio 1.2 §5.1.4).
const CONFIG_LEN: usize = 12;

/// A chain popped from the rx queue and held until a frame fills it.
#[derive(Clone, Copy, Debug)]
struct RxChain {
    head: u16,
    /// Its writable pieces end at `segs[end_seg]` of [`RxState::segs`] (they start where
    /// the previous held chain's end).
    end_seg: usize,
    /// Bytes its writable pieces hold.
    capacity: u64,
}

/// Receive-side state: the frame waiting for guest buffers and the buffers held for it.
#[derive(Debug)]
struct RxState {
    /// One frame with its vnet header, read from the TAP or injected.
    buf: Vec<u8>,
    /// Length of the frame in `buf` not yet delivered (0 = none).
    pending: usize,
    /// Length of a frame read straight into the held chains, not yet published (0 = none).
    in_guest: usize,
    chains: Vec<RxChain>,
    segs: Vec<(GuestAddress, u32)>,
    capacity: u64,
    /// Chains the current drain may still pop, malformed ones included (bounded work per
    /// event: a guest that keeps refilling the ring cannot pin the event loop).
    pop_budget: u16,
}

/// Transmit-side state.
#[derive(Debug)]
struct TxState {
    segs: Vec<(GuestAddress, u32)>,
    /// A copy of the frame, made only when an interceptor must look at it.
    scratch: Vec<u8>,
    /// The TAP answered `EAGAIN`: wait for it to turn writable.
    blocked_on_tap: bool,
}

/// A virtio-net device backed by a host TAP.
#[derive(Debug)]
pub struct Net {
    iface_id: String,
    tap: Box<dyn TapIo>,
    guest_mac: Option<[u8; 6]>,
    mtu: Option<u16>,
    state: VirtioState,
    rx_rate_limiter: RateLimiter,
    tx_rate_limiter: RateLimiter,
    mem: Option<GuestMemoryMmap>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    rx: RxState,
    tx: TxState,
    interceptor: Option<Box<dyn FrameInterceptor>>,
    metrics: Arc<NetMetrics>,
}

impl Net {
    /// Open the TAP named in `cfg` and build the device.
    ///
    /// # Errors
    /// [`NetError`] when the TAP cannot be opened, the MTU is invalid or an fd cannot be made.
    pub fn new(cfg: NetConfig) -> Result<Self, NetError> {
        check_mtu(cfg.mtu)?;
        let tap = Tap::open(&cfg.tap_name)?;
        Self::with_tap(cfg, Box::new(tap))
    }

    /// Build the device on an already open backend (`cfg.tap_name` is not opened).
    ///
    /// # Errors
    /// [`NetError`] when the MTU is invalid or an eventfd or timerfd cannot be created.
    pub fn with_tap(cfg: NetConfig, tap: Box<dyn TapIo>) -> Result<Self, NetError> {
        check_mtu(cfg.mtu)?;
        let limiter = |rl: Option<RateLimiter>| match rl {
            Some(rl) => Ok(rl),
            None => RateLimiter::unlimited().map_err(NetError::EventFd),
        };
        Ok(Self {
            iface_id: cfg.iface_id,
            tap,
            guest_mac: cfg.guest_mac,
            mtu: cfg.mtu,
            state: VirtioState::new(
                2,
                QUEUE_SIZE,
                offered_features(cfg.guest_mac.is_some(), cfg.mtu.is_some()),
            )
            .map_err(NetError::EventFd)?,
            rx_rate_limiter: limiter(cfg.rx_rate_limiter)?,
            tx_rate_limiter: limiter(cfg.tx_rate_limiter)?,
            mem: None,
            interrupt: None,
            rx: RxState {
                buf: vec![0; MAX_BUFFER_LEN],
                pending: 0,
                in_guest: 0,
                chains: Vec::with_capacity(QUEUE_SIZE.into()),
                segs: Vec::with_capacity(QUEUE_SIZE.into()),
                capacity: 0,
                pop_budget: 0,
            },
            tx: TxState {
                segs: Vec::with_capacity(QUEUE_SIZE.into()),
                scratch: Vec::new(),
                blocked_on_tap: false,
            },
            interceptor: None,
            metrics: Arc::new(NetMetrics::default()),
        })
    }

    /// The interface id.
    #[must_use]
    pub fn iface_id(&self) -> &str {
        &self.iface_id
    }

    /// The MAC address in config space, if any.
    #[must_use]
    pub fn guest_mac(&self) -> Option<[u8; 6]> {
        self.guest_mac
    }

    /// The device's counters (serialise under `net_<iface_id>`).
    #[must_use]
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The backend (its fd is what the event loop watches).
    #[must_use]
    pub fn tap(&self) -> &dyn TapIo {
        self.tap.as_ref()
    }

    /// The rx rate limiter (its fd is a timer the event loop watches).
    #[must_use]
    pub fn rx_rate_limiter(&self) -> &RateLimiter {
        &self.rx_rate_limiter
    }

    /// The tx rate limiter (its fd is a timer the event loop watches).
    #[must_use]
    pub fn tx_rate_limiter(&self) -> &RateLimiter {
        &self.tx_rate_limiter
    }

    /// Install (or remove) the hook that sees every tx frame first (MMDS).
    pub fn set_interceptor(&mut self, interceptor: Option<Box<dyn FrameInterceptor>>) {
        if interceptor.is_some() && self.tx.scratch.is_empty() {
            self.tx.scratch = vec![0; MAX_BUFFER_LEN];
        }
        self.interceptor = interceptor;
    }

    /// Apply a PATCH to the rx and tx rate limiters (timer fds stay the same).
    pub fn update_rate_limiters(&mut self, rx: RateLimiterUpdate, tx: RateLimiterUpdate) {
        self.rx_rate_limiter.update_buckets(rx.bandwidth, rx.ops);
        self.tx_rate_limiter.update_buckets(tx.bandwidth, tx.ops);
    }

    /// Log a guest-triggered warning, rate limited so a hostile guest cannot flood the log.
    fn warn(&self, what: std::fmt::Arguments<'_>) {
        squib_logger::warn_rate_limited!("net {}: {what}", self.iface_id);
    }

    /// Raise the used-ring interrupt if the guest asked for one on queue `index`.
    fn signal_used(&mut self, index: usize) {
        let (Some(mem), Some(interrupt)) = (self.mem.as_ref(), self.interrupt.as_ref()) else {
            return;
        };
        if self.state.queues[index]
            .needs_notification(mem)
            .unwrap_or(true)
        {
            if let Err(e) = interrupt.signal_used_queue() {
                self.metrics.event_fails.inc();
                log::error!("net {}: cannot signal used queue: {e}", self.iface_id);
            }
        }
    }

    /// Write queue `index`'s eventfd so its drain resumes after other sources had a turn.
    fn kick_self(&self, index: usize) {
        if let Err(e) = self.state.queue_evts[index].write(1) {
            self.metrics.event_fails.inc();
            log::error!("net {}: cannot re-kick queue {index}: {e}", self.iface_id);
        }
    }

    /// Clear a queue eventfd; `false` when reading it failed for a reason other than empty.
    fn consume_queue_event(&self, index: usize) -> bool {
        match self.state.queue_evts[index].read() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => {
                self.metrics.event_fails.inc();
                log::error!(
                    "net {}: cannot read queue {index} event: {e}",
                    self.iface_id
                );
                false
            }
        }
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut cfg = [0u8; CONFIG_LEN];
        if let Some(mac) = self.guest_mac {
            cfg[..6].copy_from_slice(&mac);
        }
        // status (VIRTIO_NET_F_STATUS is not offered) stays 0; one queue pair.
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        cfg
    }

    /// The TUNSETOFFLOAD flags matching what the driver accepted.
    fn tap_offloads(&self) -> u32 {
        let acked = self.state.acked_features;
        let mut flags = 0;
        for (bit, flag) in [
            (net::GUEST_CSUM, offload::TUN_F_CSUM),
            (net::GUEST_TSO4, offload::TUN_F_TSO4),
            (net::GUEST_TSO6, offload::TUN_F_TSO6),
            (net::GUEST_UFO, offload::TUN_F_UFO),
        ] {
            if has_feature(acked, bit) {
                flags |= flag;
            }
        }
        flags
    }
}

fn check_mtu(mtu: Option<u16>) -> Result<(), NetError> {
    match mtu {
        Some(mtu) if mtu < MIN_MTU => Err(NetError::InvalidMtu { mtu }),
        _ => Ok(()),
    }
}

/// Feature bits offered: offloads and mergeable buffers always, MAC and MTU when configured.
fn offered_features(mac: bool, mtu: bool) -> u64 {
    let mut bits = [
        features::VERSION_1,
        features::RING_EVENT_IDX,
        net::CSUM,
        net::GUEST_CSUM,
        net::GUEST_TSO4,
        net::GUEST_TSO6,
        net::GUEST_UFO,
        net::HOST_TSO4,
        net::HOST_TSO6,
        net::HOST_UFO,
        net::MRG_RXBUF,
    ]
    .iter()
    .fold(0u64, |acc, &bit| acc | (1 << bit));
    if mac {
        bits |= 1 << net::MAC;
    }
    if mtu {
        bits |= 1 << net::MTU;
    }
    bits
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
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

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only the MAC is writable (legacy drivers set it); the rest is read-only.
        let end = offset.checked_add(data.len() as u64);
        match (self.guest_mac.as_mut(), end) {
            (Some(mac), Some(end)) if end <= 6 => {
                mac[offset as usize..end as usize].copy_from_slice(data);
                self.metrics.mac_address_updates.inc();
            }
            _ => {
                self.metrics.cfg_fails.inc();
                squib_logger::log_rate_limited!(
                    log::Level::Debug,
                    "net {}: config write at {offset:#x} ignored",
                    self.iface_id
                );
            }
        }
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
        let flags = self.tap_offloads();
        if let Err(e) = self.tap.set_offload(flags) {
            // The TAP then sends plain frames, which the guest always accepts.
            squib_logger::warn_rate_limited!(
                "net {}: cannot set TAP offloads {flags:#x}: {e}",
                self.iface_id
            );
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
        self.rx.pending = 0;
        self.rx.in_guest = 0;
        self.rx.chains.clear();
        self.rx.segs.clear();
        self.rx.capacity = 0;
        self.tx.blocked_on_tap = false;
    }

    crate::virtio::persist::persist_as_device_state!(Net, "net");
}

#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod log_flood_tests;
#[cfg(test)]
pub(crate) mod tests;
