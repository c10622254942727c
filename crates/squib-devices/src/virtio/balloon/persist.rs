//! [`BalloonState`]: what a snapshot keeps of the balloon, as plain data.
//!
//! The queues and features, the config space (`num_pages`, `actual`), the polling interval
//! (it may have changed since boot), the stats buffer the device holds, the latest
//! statistics and the hinting command ids (a run in progress ends at restore: DONE). The inflated-page bitmap is not kept: after a restore the device accepts a
//! deflate of any guest page and an inflate of a page it has not seen since.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::hinting::{HintingState, CMD_ID_DONE};
use super::stats::{BalloonStats, MAX_STATS_RECORDS};
use super::{Balloon, DEFLATE_QUEUE, INFLATE_QUEUE, QUEUE_SIZE};
use crate::virtio::persist::{restore_device, RestoreError, VirtioDeviceState};
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

/// The balloon's snapshot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BalloonState {
    /// Queue, features, activation.
    pub virtio: VirtioDeviceState,
    /// Config space `num_pages`.
    pub num_pages: u32,
    /// Config space `actual`.
    pub actual_pages: u32,
    /// Statistics polling interval in seconds.
    pub stats_polling_interval_s: u16,
    /// The stats buffer the device holds until the next tick.
    pub stats_desc_index: Option<u16>,
    /// Free page hinting's command ids (meaningful when hinting is on).
    pub hinting: HintingState,
    /// The latest statistics the guest sent, as `(tag, value)` records.
    pub latest_stats: Vec<(u16, u64)>,
}

impl Balloon {
    /// The state to put in a snapshot.
    #[must_use]
    pub fn save(&self) -> BalloonState {
        BalloonState {
            virtio: self
                .state
                .save(crate::virtio::VirtioDevice::is_activated(self)),
            num_pages: self.num_pages,
            actual_pages: self.actual_pages,
            stats_polling_interval_s: self.config.stats_polling_interval_s,
            stats_desc_index: self.stats_desc,
            hinting: self.hinting,
            latest_stats: self.latest_stats.records(),
        }
    }

    /// Apply `state` to this freshly built device (same configuration); if it was activated,
    /// activate it with `mem` and `interrupt` and kick its queues.
    ///
    /// # Errors
    /// [`RestoreError`] when the state does not fit the device: the common checks, a
    /// polling interval that switches statistics on or off, or a held stats buffer outside
    /// the queue.
    pub fn restore(
        &mut self,
        state: &BalloonState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), RestoreError> {
        let stats_on = self.stats_queue().is_some();
        if (state.stats_polling_interval_s > 0) != stats_on
            || (state.stats_desc_index.is_some() && !stats_on)
            || state.stats_desc_index.is_some_and(|i| i >= QUEUE_SIZE)
        {
            return Err(RestoreError::InFlight {
                device: "balloon".into(),
                reason: format!(
                    "statistics state (interval {}s, held buffer {:?}) does not fit the device",
                    state.stats_polling_interval_s, state.stats_desc_index
                ),
            });
        }
        restore_device(self, &state.virtio, mem, interrupt, |dev| {
            dev.num_pages = state.num_pages;
            dev.actual_pages = state.actual_pages;
            dev.config.stats_polling_interval_s = state.stats_polling_interval_s;
            dev.config.amount_mib = state.num_pages / super::PAGES_PER_MIB;
            let mut stats = BalloonStats::default();
            for &(tag, value) in state.latest_stats.iter().take(MAX_STATS_RECORDS) {
                stats.update(tag, value);
            }
            dev.latest_stats = stats;
            // As Firecracker: a run cannot survive a restore; DONE hands the guest its
            // hinted pages back.
            dev.hinting = HintingState {
                host_cmd: CMD_ID_DONE,
                ..state.hinting
            };
            Ok(())
        })?;
        // Activation (and its timer arming) ran inside restore_device; the held buffer
        // survives it.
        self.stats_desc = state.stats_desc_index;
        if state.virtio.activated {
            let mut kick = vec![INFLATE_QUEUE, DEFLATE_QUEUE];
            kick.extend(self.stats_queue());
            kick.extend(self.hinting_queue());
            kick.extend(self.reporting_queue());
            self.state.kick_queues(&kick)?;
            if self.hinting_queue().is_some() && state.hinting.host_cmd != CMD_ID_DONE {
                self.signal_config().map_err(|e| RestoreError::InFlight {
                    device: "balloon".into(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(())
    }
}
