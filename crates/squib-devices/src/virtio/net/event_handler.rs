//! The network device's `event_manager` subscription.
//!
//! Five sources, all registered at `init` so nothing changes when the guest activates the
//! device: the rx and tx queue eventfds (ioeventfds; events before activation are drained
//! and ignored), the TAP, and the two rate limiters' timerfds (the same fds for the device's
//! life, since PATCH updates the buckets in place). The TAP is edge-triggered for both
//! readable and writable: the rx path reads it until `EAGAIN` (or stops for a reason with its
//! own wake-up), and a writable edge matters only after a write hit `EAGAIN`, so neither
//! direction can spin the event loop.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{Net, RX_INDEX, TX_INDEX};
use crate::virtio::VirtioDevice;

/// Event data of the rx queue eventfd.
pub const PROCESS_VIRTQ_RX: u32 = 0;
/// Event data of the tx queue eventfd.
pub const PROCESS_VIRTQ_TX: u32 = 1;
/// Event data of the TAP fd.
pub const PROCESS_TAP: u32 = 2;
/// Event data of the rx rate limiter's timerfd.
pub const PROCESS_RX_RATE_LIMITER: u32 = 3;
/// Event data of the tx rate limiter's timerfd.
pub const PROCESS_TX_RATE_LIMITER: u32 = 4;

impl Net {
    fn process_tap_event(&mut self, set: EventSet) {
        if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            self.metrics().event_fails.inc();
            log::warn!("net {}: TAP reported {set:?}", self.iface_id());
        }
        if set.contains(EventSet::IN) {
            self.process_tap_rx_event();
        }
        if set.contains(EventSet::OUT) {
            self.process_tap_tx_event();
        }
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let set = events.event_set();
        if events.data() == PROCESS_TAP {
            self.process_tap_event(set);
            return;
        }
        if !set.contains(EventSet::IN) {
            self.metrics().event_fails.inc();
            log::warn!("net {}: unexpected event set {set:?}", self.iface_id());
            return;
        }
        match events.data() {
            PROCESS_VIRTQ_RX => self.process_rx_queue_event(),
            PROCESS_VIRTQ_TX => self.process_tx_queue_event(),
            PROCESS_RX_RATE_LIMITER => self.process_rx_rate_limiter_event(),
            PROCESS_TX_RATE_LIMITER => self.process_tx_rate_limiter_event(),
            other => {
                self.metrics().event_fails.inc();
                log::warn!("net {}: unknown event source {other}", self.iface_id());
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let tap_set = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        let sources = [
            Events::with_data(
                &self.queue_events()[RX_INDEX],
                PROCESS_VIRTQ_RX,
                EventSet::IN,
            ),
            Events::with_data(
                &self.queue_events()[TX_INDEX],
                PROCESS_VIRTQ_TX,
                EventSet::IN,
            ),
            Events::with_data_raw(self.tap().as_raw_fd(), PROCESS_TAP, tap_set),
            Events::with_data(
                self.rx_rate_limiter(),
                PROCESS_RX_RATE_LIMITER,
                EventSet::IN,
            ),
            Events::with_data(
                self.tx_rate_limiter(),
                PROCESS_TX_RATE_LIMITER,
                EventSet::IN,
            ),
        ];
        for events in sources {
            if let Err(e) = ops.add(events) {
                self.metrics().event_fails.inc();
                log::error!("net {}: cannot register event source: {e}", self.iface_id());
            }
        }
    }
}
