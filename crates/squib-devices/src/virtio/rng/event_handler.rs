//! The entropy device's `event_manager` subscription.
//!
//! Two sources, both registered at `init` so nothing changes when the guest activates the
//! device: the queue eventfd (an ioeventfd the guest kicks, and that a drain over budget
//! kicks itself; events before activation are drained and ignored) and the rate limiter's
//! timerfd (the same fd for the device's life).

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{Entropy, RNG_QUEUE};
use crate::virtio::VirtioDevice;

/// Event data of the request-queue eventfd.
pub const PROCESS_ENTROPY_QUEUE: u32 = 0;
/// Event data of the rate limiter's timerfd.
pub const PROCESS_RATE_LIMITER: u32 = 1;

impl MutEventSubscriber for Entropy {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            self.metrics().entropy_event_fails.inc();
            log::warn!("entropy: unexpected event set {:?}", events.event_set());
            return;
        }
        match events.data() {
            PROCESS_ENTROPY_QUEUE => self.process_queue_event(),
            PROCESS_RATE_LIMITER => self.process_rate_limiter_event(),
            other => {
                self.metrics().entropy_event_fails.inc();
                log::warn!("entropy: unknown event source {other}");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let sources = [
            Events::with_data(
                &self.queue_events()[RNG_QUEUE],
                PROCESS_ENTROPY_QUEUE,
                EventSet::IN,
            ),
            Events::with_data(self.rate_limiter(), PROCESS_RATE_LIMITER, EventSet::IN),
        ];
        for events in sources {
            if let Err(e) = ops.add(events) {
                self.metrics().entropy_event_fails.inc();
                log::error!("entropy: cannot register event source: {e}");
            }
        }
    }
}
