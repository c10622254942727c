//! The block device's `event_manager` subscription.
//!
//! Two sources, both registered at `init` so nothing changes when the guest activates the
//! device: the queue eventfd (an ioeventfd the guest kicks; events before activation are
//! drained and ignored) and the rate limiter's timerfd (the same fd for the device's life,
//! since PATCH updates the buckets in place), plus, with the Async engine, the io_uring's
//! completion eventfd.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::Block;
use crate::virtio::VirtioDevice;

/// Event data of the request-queue eventfd.
pub const PROCESS_VIRTQ: u32 = 0;
/// Event data of the rate limiter's timerfd.
pub const PROCESS_RATE_LIMITER: u32 = 1;
/// Event data of the Async engine's completion eventfd.
pub const PROCESS_ASYNC_COMPLETION: u32 = 2;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            self.metrics().event_fails.inc();
            log::warn!(
                "block {}: unexpected event set {:?}",
                self.drive_id(),
                events.event_set()
            );
            return;
        }
        match events.data() {
            PROCESS_VIRTQ => self.process_queue_event(),
            PROCESS_RATE_LIMITER => self.process_rate_limiter_event(),
            PROCESS_ASYNC_COMPLETION => self.process_async_completion_event(),
            other => {
                self.metrics().event_fails.inc();
                log::warn!("block {}: unknown event source {other}", self.drive_id());
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let sources = [
            Some(Events::with_data(
                &self.queue_events()[0],
                PROCESS_VIRTQ,
                EventSet::IN,
            )),
            Some(Events::with_data(
                self.rate_limiter(),
                PROCESS_RATE_LIMITER,
                EventSet::IN,
            )),
            self.completion_evt()
                .map(|fd| Events::with_data(fd, PROCESS_ASYNC_COMPLETION, EventSet::IN)),
        ];
        for events in sources.into_iter().flatten() {
            if let Err(e) = ops.add(events) {
                self.metrics().event_fails.inc();
                log::error!(
                    "block {}: cannot register event source: {e}",
                    self.drive_id()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, SubscriberOps};

    use crate::virtio::block::device::tests::harness::{default_block, BlockHarness};
    use crate::virtio::VirtioDevice;

    #[test]
    fn event_manager_drives_queue_processing() {
        let mut h = BlockHarness::new(default_block(4096, false));
        let block = h.block.clone();
        let mut manager: EventManager<Arc<Mutex<crate::virtio::block::Block>>> =
            EventManager::new().unwrap();
        manager.add_subscriber(block.clone());
        h.read_request(0, 512);
        block.lock().unwrap().queue_events()[0].write(1).unwrap();
        let n = manager.run_with_timeout(1000).unwrap();
        assert!(n >= 1);
        assert_eq!(h.vq.used_idx(), 1);
        assert_eq!(block.lock().unwrap().metrics().read_count.count(), 1);
    }
}
