//! Free page hinting (virtio 1.2 §5.5.6.4): the host asks for a run with a command id, the
//! guest answers with that id, then hands over free ranges until it sends STOP; the host
//! discards the ranges of the current run and, when asked to, acknowledges with DONE so the
//! guest takes the pages back.
//!
//! Command ids 0 (STOP) and 1 (DONE) are never used for a run: ids count up from 2 and wrap
//! back to 2. Ranges that arrive outside the current run (stale, or before the guest echoed
//! the id) are completed without being discarded.

use serde::{Deserialize, Serialize};

/// The guest's "run over" / the host's "stop now" command id.
pub const CMD_ID_STOP: u32 = 0;
/// The host's "run acknowledged, take the pages back" command id.
pub const CMD_ID_DONE: u32 = 1;
/// The first id a run uses.
pub const FIRST_RUN_ID: u32 = 2;

/// Where hinting stands, as `GET /balloon/hinting/status` shows it (`host_cmd`,
/// `guest_cmd`) plus what the next start needs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintingState {
    /// The command id in config space.
    pub host_cmd: u32,
    /// The last command id the guest sent, if any.
    pub guest_cmd: Option<u32>,
    /// The id of the last run started.
    pub last_run_id: u32,
    /// Answer the guest's STOP with DONE on its own.
    pub acknowledge_on_stop: bool,
}

impl Default for HintingState {
    fn default() -> Self {
        Self {
            host_cmd: CMD_ID_DONE,
            guest_cmd: None,
            last_run_id: CMD_ID_DONE,
            acknowledge_on_stop: true,
        }
    }
}

impl HintingState {
    /// Start a new run: the next id (never STOP or DONE).
    pub fn start(&mut self, acknowledge_on_stop: bool) -> u32 {
        let next = self.last_run_id.wrapping_add(1).max(FIRST_RUN_ID);
        self.last_run_id = next;
        self.host_cmd = next;
        self.acknowledge_on_stop = acknowledge_on_stop;
        next
    }

    /// Whether a range the guest reports now belongs to the current run.
    #[must_use]
    pub fn in_run(&self) -> bool {
        self.host_cmd >= FIRST_RUN_ID && self.guest_cmd == Some(self.host_cmd)
    }

    /// The guest sent command `id`; returns true when config space changed (DONE
    /// acknowledging a STOP) and the guest must be told.
    pub fn guest_command(&mut self, id: u32) -> bool {
        self.guest_cmd = Some(id);
        if id == CMD_ID_STOP && self.acknowledge_on_stop && self.host_cmd != CMD_ID_DONE {
            self.host_cmd = CMD_ID_DONE;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_skip_stop_and_done_and_wrap() {
        let mut h = HintingState::default();
        assert_eq!(h.start(true), 2);
        assert_eq!(h.start(true), 3);
        h.last_run_id = u32::MAX;
        assert_eq!(h.start(false), FIRST_RUN_ID);
        assert!(!h.acknowledge_on_stop);
    }

    #[test]
    fn ranges_count_only_inside_the_echoed_run() {
        let mut h = HintingState::default();
        assert!(!h.in_run());
        let id = h.start(true);
        assert!(!h.in_run());
        assert!(!h.guest_command(id));
        assert!(h.in_run());
        assert!(h.guest_command(CMD_ID_STOP));
        assert_eq!(h.host_cmd, CMD_ID_DONE);
        assert!(!h.in_run());
        // Without acknowledgement the host command stays until `stop`.
        let id = h.start(false);
        h.guest_command(id);
        assert!(!h.guest_command(CMD_ID_STOP));
        assert_eq!(h.host_cmd, id);
    }
}
