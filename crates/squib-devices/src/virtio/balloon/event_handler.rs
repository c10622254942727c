//! The balloon's `event_manager` subscription: one eventfd per queue and the statistics
//! timerfd, all registered at `init` (events before activation are drained and ignored).

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{Balloon, DEFLATE_QUEUE, INFLATE_QUEUE};
use crate::virtio::VirtioDevice;

/// Event data of the inflate queue.
pub const INFLATE_EVENT: u32 = 0;
/// Event data of the deflate queue.
pub const DEFLATE_EVENT: u32 = 1;
/// Event data of the stats queue.
pub const STATS_EVENT: u32 = 2;
/// Event data of the reporting queue.
pub const REPORTING_EVENT: u32 = 3;
/// Event data of the statistics timer.
pub const STATS_TIMER_EVENT: u32 = 4;
/// Event data of the hinting queue.
pub const HINTING_EVENT: u32 = 5;

impl Balloon {
    /// Clear queue `index`'s eventfd; false when it cannot be read.
    fn clear_queue_event(&self, index: usize) -> bool {
        match self.queue_events()[index].read() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => {
                self.metrics().event_fails.inc();
                log::error!("balloon: cannot read queue {index} event: {e}");
                false
            }
        }
    }
}

impl MutEventSubscriber for Balloon {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            self.metrics().event_fails.inc();
            log::warn!("balloon: unexpected event set {:?}", events.event_set());
            return;
        }
        match events.data() {
            INFLATE_EVENT if self.clear_queue_event(INFLATE_QUEUE) => self.process_inflate(),
            DEFLATE_EVENT if self.clear_queue_event(DEFLATE_QUEUE) => self.process_deflate(),
            STATS_EVENT => {
                if let Some(i) = self.stats_queue() {
                    if self.clear_queue_event(i) {
                        self.process_stats();
                    }
                }
            }
            REPORTING_EVENT => {
                if let Some(i) = self.reporting_queue() {
                    if self.clear_queue_event(i) {
                        self.process_reporting();
                    }
                }
            }
            HINTING_EVENT => {
                if let Some(i) = self.hinting_queue() {
                    if self.clear_queue_event(i) {
                        self.process_hinting();
                    }
                }
            }
            STATS_TIMER_EVENT => self.process_stats_timer(),
            INFLATE_EVENT | DEFLATE_EVENT => {}
            other => {
                self.metrics().event_fails.inc();
                log::warn!("balloon: unknown event source {other}");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let evts = self.queue_events();
        let mut sources = vec![
            Events::with_data(&evts[INFLATE_QUEUE], INFLATE_EVENT, EventSet::IN),
            Events::with_data(&evts[DEFLATE_QUEUE], DEFLATE_EVENT, EventSet::IN),
        ];
        if let Some(i) = self.stats_queue() {
            sources.push(Events::with_data(&evts[i], STATS_EVENT, EventSet::IN));
            sources.push(Events::with_data(
                self.stats_timer(),
                STATS_TIMER_EVENT,
                EventSet::IN,
            ));
        }
        if let Some(i) = self.hinting_queue() {
            sources.push(Events::with_data(&evts[i], HINTING_EVENT, EventSet::IN));
        }
        if let Some(i) = self.reporting_queue() {
            sources.push(Events::with_data(&evts[i], REPORTING_EVENT, EventSet::IN));
        }
        for events in sources {
            if let Err(e) = ops.add(events) {
                self.metrics().event_fails.inc();
                log::error!("balloon: cannot register event source: {e}");
            }
        }
    }
}
