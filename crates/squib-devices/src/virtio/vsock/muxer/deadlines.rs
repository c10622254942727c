//! Deadlines: a host request the guest does not answer, a host-closed connection the guest
//! does not reset, a host client that sends no `CONNECT` line — each is killed
//! [`CONN_TIMEOUT_MS`](crate::virtio::vsock::CONN_TIMEOUT_MS) after it started waiting.
//!
//! All deadlines are the same length from "now", so `killq` is in expiry order and one
//! timerfd armed for its front serves them all. Entries are not removed when what they
//! guard moves on: each names its target's unique id (and a connection's current expiry),
//! and stale ones are skipped when they come up. If stale entries pile up past
//! [`MAX_KILLQ`], the queue is rebuilt from the live ones (`killq_resync`).
//!
//! The timerfd is blocking and never read: re-arming or disarming it clears its expiry count,
//! which is what makes it stop being readable.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{ConnKey, Muxer, MAX_KILLQ};

/// How long the listener is left alone after `accept` failed for a reason other than "no
/// client waiting" (typically `EMFILE`).
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a deadline kills.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Conn(ConnKey),
    Handshake(RawFd),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) target: Target,
    pub(super) id: u64,
}

impl Muxer {
    /// Give `key` a deadline `timeout` from now.
    pub(super) fn set_expiry(&mut self, key: ConnKey) {
        let at = Instant::now() + self.timeout;
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.expiry = Some(at);
            let id = conn.id;
            self.push_deadline(at, Target::Conn(key), id);
        }
    }

    pub(super) fn push_deadline(&mut self, at: Instant, target: Target, id: u64) {
        if self.killq.len() >= MAX_KILLQ {
            self.resync_killq();
        }
        self.killq.push_back(Deadline { at, target, id });
        if !self.timer_armed {
            self.arm_timer();
        }
    }

    /// Rebuild the deadline queue from the live connections and handshakes.
    fn resync_killq(&mut self) {
        self.metrics.killq_resync.inc();
        let live = |d: &Deadline| match d.target {
            Target::Conn(key) => self
                .conns
                .get(&key)
                .is_some_and(|c| c.id == d.id && c.expiry == Some(d.at)),
            Target::Handshake(fd) => self.handshakes.get(&fd).is_some_and(|h| h.id == d.id),
        };
        let mut kept: Vec<Deadline> = self.killq.iter().copied().filter(live).collect();
        kept.sort_by_key(|d| d.at);
        self.killq = kept.into();
    }

    /// Arm the timer for the earliest deadline (or disarm it). Setting a timerfd also clears
    /// its expiration count, so the fd is never read (it is blocking).
    fn arm_timer(&mut self) {
        let first = self.killq.front().map(|d| d.at);
        let next = match (first, self.listener_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match next {
            Some(at) => {
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.timer_armed = true;
                self.timer.reset(wait, None)
            }
            None => {
                self.timer_armed = false;
                self.timer.clear()
            }
        };
        if let Err(e) = result {
            self.metrics.muxer_event_fails.inc();
            log::error!("vsock: cannot arm the deadline timer: {e}");
        }
    }

    /// Stop watching the listener for [`ACCEPT_RETRY`]; the timer resumes it.
    pub(super) fn pause_listener(&mut self) {
        self.listener_paused_until = Some(Instant::now() + ACCEPT_RETRY);
        self.listener_dirty = true;
        self.arm_timer();
    }

    /// The timer fired: kill what expired, resume a paused listener, re-arm for the rest.
    pub fn process_timer(&mut self) {
        let now = Instant::now();
        if self.listener_paused_until.is_some_and(|at| at <= now) {
            self.listener_paused_until = None;
            self.listener_dirty = true;
        }
        while let Some(&d) = self.killq.front() {
            if d.at > now {
                break;
            }
            self.killq.pop_front();
            match d.target {
                Target::Conn(key) => {
                    let expired = self
                        .conns
                        .get(&key)
                        .is_some_and(|c| c.id == d.id && c.expiry == Some(d.at));
                    if expired {
                        self.metrics.conns_killed.inc();
                        log::debug!("vsock: connection {key:?} timed out");
                        self.kill(key);
                    }
                }
                Target::Handshake(fd) => {
                    if self.handshakes.get(&fd).is_some_and(|h| h.id == d.id) {
                        self.retire_handshake(fd);
                    }
                }
            }
        }
        self.arm_timer();
    }

    /// Make the timer fire at once, so the next `process` call closes retired streams even
    /// when they were retired outside the event loop (transport or device reset).
    pub(super) fn wake_soon(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        self.timer_armed = true;
        if let Err(e) = self.timer.reset(Duration::from_millis(1), None) {
            self.metrics.muxer_event_fails.inc();
            log::error!("vsock: cannot arm the timer to close dropped streams: {e}");
        }
    }
}
