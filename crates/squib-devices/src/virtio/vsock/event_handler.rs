//! The vsock device's `event_manager` subscription.
//!
//! Registered at `init`, for the device's life: the three queue eventfds (ioeventfds; events
//! before activation are drained and ignored), the host listener and the deadline timerfd.
//! Connection streams come and go: the muxer records what each should be watched for
//! (readable while the guest has credit and no read is queued, writable while guest bytes
//! wait for the host, nothing otherwise) and every `process` call ends with
//! [`Muxer::sync_epoll`](super::muxer::Muxer::sync_epoll) applying that through its
//! `EventOps`. All sources are level-triggered: work left over by a bounded handler shows up
//! again at the next `epoll_wait`.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{Vsock, EVQ_INDEX, RX_INDEX, TX_INDEX};
use crate::virtio::VirtioDevice;

/// Event data of the rx queue eventfd.
pub const PROCESS_RX_QUEUE: u32 = 0;
/// Event data of the tx queue eventfd.
pub const PROCESS_TX_QUEUE: u32 = 1;
/// Event data of the event queue eventfd.
pub const PROCESS_EV_QUEUE: u32 = 2;
/// Event data of the host listener.
pub const PROCESS_LISTENER: u32 = 3;
/// Event data of the deadline timerfd.
pub const PROCESS_TIMER: u32 = 4;
/// Event data of a connection's (or handshake's) stream; the fd says which.
pub const PROCESS_CONN: u32 = 5;

impl Vsock {
    /// Dispatch one event (everything but the epoll sync).
    fn handle_event(&mut self, events: Events) {
        let set = events.event_set();
        match events.data() {
            PROCESS_RX_QUEUE => self.process_rx_queue_event(),
            PROCESS_TX_QUEUE => self.process_tx_queue_event(),
            PROCESS_EV_QUEUE => self.process_evq_event(),
            PROCESS_LISTENER => {
                if !set.contains(EventSet::IN) {
                    self.metrics.muxer_event_fails.inc();
                    log::warn!("vsock: listener reported {set:?}");
                }
                self.muxer_mut().process_listener();
                self.process_rx();
            }
            PROCESS_TIMER => {
                self.muxer_mut().process_timer();
                self.process_rx();
            }
            PROCESS_CONN => {
                self.muxer_mut().process_stream(events.fd(), set);
                self.process_rx();
            }
            other => {
                self.metrics.muxer_event_fails.inc();
                log::warn!("vsock: unknown event source {other}");
            }
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.handle_event(events);
        self.muxer_mut().sync_epoll(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let sources = [
            Events::with_data(
                &self.queue_events()[RX_INDEX],
                PROCESS_RX_QUEUE,
                EventSet::IN,
            ),
            Events::with_data(
                &self.queue_events()[TX_INDEX],
                PROCESS_TX_QUEUE,
                EventSet::IN,
            ),
            Events::with_data(
                &self.queue_events()[EVQ_INDEX],
                PROCESS_EV_QUEUE,
                EventSet::IN,
            ),
            Events::with_data_raw(self.muxer().listener_fd(), PROCESS_LISTENER, EventSet::IN),
            Events::with_data_raw(self.muxer().timer_fd(), PROCESS_TIMER, EventSet::IN),
        ];
        for events in sources {
            if let Err(e) = ops.add(events) {
                self.metrics.muxer_event_fails.inc();
                log::error!("vsock: cannot register event source: {e}");
            }
        }
        self.muxer_mut().sync_epoll(ops);
    }
}
