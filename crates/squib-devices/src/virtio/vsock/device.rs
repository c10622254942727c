//! [`Vsock`]: the virtio-vsock device — features, config space, activation, transport reset.
//!
//! Three queues of [`QUEUE_SIZE`]: rx ([`RX_INDEX`], packets to the guest), tx ([`TX_INDEX`],
//! packets from the guest) and event ([`EVQ_INDEX`], `TRANSPORT_RESET`). The data paths live
//! in `queues`; connections and the host side in [`Muxer`]. Each drain serves at most
//! [`PACKET_BUDGET`](super::PACKET_BUDGET) chains, then re-kicks its queue eventfd so other
//! event sources get a turn, and raises at most one interrupt (EVENT_IDX-aware). Guest
//! mistakes drop the packet (or answer `RST`), log at most a few warnings a second and
//! leave the device running.

pub mod persist;
mod queues;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::QueueT;

use super::muxer::Muxer;
use super::packet::{collect_segments, copy_to_guest, Segments};
use super::{
    VsockError, VsockMetrics, EVQ_INDEX, QUEUE_SIZE, RX_INDEX, TX_INDEX, VIRTIO_F_IN_ORDER,
};
use crate::virtio::{
    device_type, features, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt,
    VirtioState,
};

/// `virtio_vsock_event.id` of a transport reset.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// A virtio-vsock device backed by Unix sockets (Firecracker's hybrid vsock).
#[derive(Debug)]
pub struct Vsock {
    guest_cid: u64,
    state: VirtioState,
    mem: Option<GuestMemoryMmap>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    muxer: Muxer,
    pub(super) metrics: Arc<VsockMetrics>,
    /// The current chain's pieces (reused).
    segs: Segments,
    /// The current packet's data pieces (reused).
    data_segs: Segments,
    /// A `TRANSPORT_RESET` waits for an event-queue buffer.
    reset_event_pending: bool,
    /// A `TRANSPORT_RESET` was delivered and the guest has not refilled the event queue
    /// since: nothing goes to the guest until it has handled the reset (Firecracker's
    /// `pending_event_ack`).
    rx_gated: bool,
}

impl Vsock {
    /// Bind `uds_path` now (non-blocking) and build the device for guest `guest_cid`.
    ///
    /// # Errors
    /// [`VsockError::Bind`] when the socket cannot be bound (its text is what Firecracker
    /// reports after `Vsock config error: `), or an fd cannot be created.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        let metrics = Arc::new(VsockMetrics::default());
        let muxer = Muxer::new(guest_cid, uds_path, metrics.clone())?;
        let avail_features = [
            features::VERSION_1,
            features::RING_EVENT_IDX,
            VIRTIO_F_IN_ORDER,
        ]
        .iter()
        .fold(0u64, |acc, &bit| acc | (1 << bit));
        Ok(Self {
            guest_cid,
            state: VirtioState::new(3, QUEUE_SIZE, avail_features).map_err(VsockError::EventFd)?,
            mem: None,
            interrupt: None,
            muxer,
            metrics,
            segs: Vec::with_capacity(QUEUE_SIZE.into()),
            data_segs: Vec::with_capacity(QUEUE_SIZE.into()),
            reset_event_pending: false,
            rx_gated: false,
        })
    }

    /// The guest's CID.
    #[must_use]
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host socket path.
    #[must_use]
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// The device's counters.
    #[must_use]
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }

    /// Print this device's counters under Firecracker's `vsock` key in every metrics line.
    pub fn register_metrics(&self) {
        squib_logger::metrics::register_group("vsock", self.metrics.clone());
    }

    /// The connections (read-only).
    #[must_use]
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// The connections (tests shorten the kill deadline through this).
    pub(crate) fn muxer_mut(&mut self) -> &mut Muxer {
        &mut self.muxer
    }

    /// Tell the guest its connections are gone (after a snapshot restore): queue a
    /// `TRANSPORT_RESET` event and drop every connection. The event waits for an event-queue
    /// buffer if the guest has posted none (or the device is not active yet); once it is
    /// delivered, the rx queue is held until the guest refills the event queue.
    pub fn send_transport_reset(&mut self) {
        self.muxer.drop_connections();
        self.reset_event_pending = true;
        self.deliver_reset_event();
    }

    /// Write a pending `TRANSPORT_RESET` into the next event-queue buffer, if there is one.
    fn deliver_reset_event(&mut self) {
        if !self.reset_event_pending {
            return;
        }
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        let queue = &mut self.state.queues[EVQ_INDEX];
        let Some(chain) = queues::pop_chain(queue, mem) else {
            squib_logger::warn_rate_limited!(
                "vsock: no event-queue buffer for TRANSPORT_RESET yet"
            );
            return;
        };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let used = match collect_segments(mem, chain, true, 4, &mut self.segs) {
            Ok(_) if copy_to_guest(mem, &self.segs, &event) => {
                self.reset_event_pending = false;
                self.rx_gated = true;
                4
            }
            Ok(_) | Err(_) => {
                squib_logger::warn_rate_limited!("vsock: event head {head}: malformed chain");
                0
            }
        };
        if let Err(e) = queue.add_used(mem, head, used) {
            squib_logger::warn_rate_limited!("vsock: cannot complete event head {head}: {e}");
        }
        self.signal_used(EVQ_INDEX);
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
                self.metrics.muxer_event_fails.inc();
                log::error!("vsock: cannot signal used queue {index}: {e}");
            }
        }
    }

    /// Write queue `index`'s eventfd so its drain resumes after other sources had a turn.
    fn kick_self(&self, index: usize) {
        if let Err(e) = self.state.queue_evts[index].write(1) {
            self.queue_event_fail(index);
            log::error!("vsock: cannot re-kick queue {index}: {e}");
        }
    }

    /// Clear a queue eventfd; `false` when reading it failed for a reason other than empty.
    fn consume_queue_event(&self, index: usize) -> bool {
        match self.state.queue_evts[index].read() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => {
                self.queue_event_fail(index);
                log::error!("vsock: cannot read queue {index} event: {e}");
                false
            }
        }
    }

    fn queue_event_fail(&self, index: usize) {
        match index {
            RX_INDEX => self.metrics.rx_queue_event_fails.inc(),
            TX_INDEX => self.metrics.tx_queue_event_fails.inc(),
            _ => self.metrics.ev_queue_event_fails.inc(),
        }
    }

    /// The event queue was notified: the guest posted event buffers (after handling a
    /// transport reset, which releases the rx queue).
    pub fn process_evq_event(&mut self) {
        if !self.consume_queue_event(EVQ_INDEX) {
            return;
        }
        self.deliver_reset_event();
        if self.rx_gated && !self.reset_event_pending {
            self.rx_gated = false;
            self.process_rx();
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn state(&self) -> &VirtioState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut VirtioState {
        &mut self.state
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !crate::virtio::read_config_space(&self.guest_cid.to_le_bytes(), offset, data) {
            self.metrics.cfg_fails.inc();
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.metrics.cfg_fails.inc();
        log::debug!("vsock: config write at {offset:#x} ignored (guest_cid is read-only)");
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
        self.muxer.set_guest_ready(true);
        self.deliver_reset_event();
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.mem.is_some()
    }

    fn reset(&mut self) {
        self.mem = None;
        self.interrupt = None;
        self.muxer.set_guest_ready(false);
        self.muxer.drop_connections();
        self.reset_event_pending = false;
        self.rx_gated = false;
        self.state.reset();
    }

    crate::virtio::persist::persist_as_device_state!(Vsock, "vsock");
}
