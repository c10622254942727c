//! Plumbing shared by both directions: poll(2), the driver's EVENT_IDX bookkeeping and the
//! host's drop counters.

use std::os::fd::RawFd;

use squib_devices::virtio::test_utils::VirtQueue;
use squib_devices::virtio::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::RING;

/// poll(2) `fds` (fd, events) for up to `timeout_ms`; which ones are ready.
pub(super) fn poll_fds<const N: usize>(fds: [(RawFd, i16); N], timeout_ms: i32) -> [bool; N] {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    // SAFETY: `pfds` is an array of `N` initialised pollfds, valid for writes for the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return [false; N];
    }
    pfds.map(|p| p.revents != 0)
}

/// virtio's `vring_need_event`: does moving the index from `old` to `new` pass `event`?
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The driver's side after publishing chains `old..new`: ask for an interrupt on the next
/// used entry (`used_event`, as Linux re-enabling callbacks after a poll) and kick (write the
/// queue eventfd, a real VM's ioeventfd) only when EVENT_IDX's `avail_event` asks for it.
pub(super) fn publish_done(
    mem: &GuestMemoryMmap,
    q: &VirtQueue<'_>,
    seen: u16,
    old: u16,
    new: u16,
    kick: &EventFd,
) {
    q.set_used_event(seen);
    if old == new {
        return;
    }
    let (_, _, used) = q.addresses();
    let at = GuestAddress(used + 4 + 8 * u64::from(RING));
    let avail_event: u16 = mem.read_obj(at).expect("avail_event");
    if need_event(avail_event, new, old) {
        kick.write(1).expect("kick");
    }
}

/// UDP socket counters of this namespace: (InErrors, RcvbufErrors).
pub(super) fn udp_errors() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return (0, 0);
    };
    let field = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (field("InErrors"), field("RcvbufErrors"))
}

/// The TAP's (rx_dropped, tx_dropped) as the host sees them (/proc/thread-self/net/dev).
pub(super) fn tap_drops() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    let Some(line) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sqbbench0:"))
    else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    (
        v.get(3).copied().unwrap_or(0),
        v.get(11).copied().unwrap_or(0),
    )
}

pub(super) fn describe_drops(counters: &[(&str, u64)]) -> String {
    counters
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
