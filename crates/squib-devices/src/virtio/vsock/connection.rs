//! One connection: its protocol state and its host stream.
//!
//! [`ConnState`] is plain data (ports, phase, credit counters, what is owed to the guest) so
//! it can be inspected, tested and serialised; [`Connection`] adds the host `UnixStream` and
//! the bounded buffer of guest bytes the host has not read yet.
//!
//! Credit (virtio 1.2 §5.10.6.3), all counters wrapping `u32`:
//! - to the guest: at most `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)` bytes in flight;
//! - from the guest: `rx_cnt - fwd_cnt` bytes received but not yet written to the host, at
//!   most [`CONN_BUF_ALLOC`]; they wait in [`TxBuf`]. The guest learns `fwd_cnt` from every
//!   packet we send; a `CREDIT_UPDATE` is owed once its view of our free space
//!   (`buf_alloc - (rx_cnt - last_fwd_cnt_sent)`) drops below [`CREDIT_UPDATE_THRESHOLD`].

use std::io::{self, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use event_manager::EventSet;
use serde::{Deserialize, Serialize};

use super::{CONN_BUF_ALLOC, CREDIT_UPDATE_THRESHOLD};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnPhase {
    /// Host-initiated: `OP_REQUEST` owed or sent, waiting for the guest's answer.
    LocalInit,
    /// Data flows (both directions, unless the guest shut one down).
    Established,
    /// The host stream hit EOF: `OP_SHUTDOWN` owed or sent, waiting for the guest's `RST`.
    LocalClosed,
    /// An `RST` is owed to the guest; the connection goes once it is sent.
    Killing,
}

/// Packets owed to the guest (bits of [`ConnState::pending`]).
pub mod pending {
    /// `OP_REQUEST` (host-initiated connection).
    pub const REQUEST: u8 = 1;
    /// `OP_RESPONSE` (guest-initiated connection accepted).
    pub const RESPONSE: u8 = 2;
    /// `OP_RST`.
    pub const RST: u8 = 4;
    /// `OP_SHUTDOWN` with both flags (host EOF).
    pub const SHUTDOWN: u8 = 8;
    /// `OP_CREDIT_UPDATE`.
    pub const CREDIT_UPDATE: u8 = 16;
    /// `OP_RW`: the host stream is readable.
    pub const RW: u8 = 32;
}

/// The protocol state of one connection: plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    /// The host-side port (`src_port` of packets to the guest).
    pub local_port: u32,
    /// The guest-side port.
    pub peer_port: u32,
    /// Whether the host opened it (its local port was allocated by the muxer).
    pub host_initiated: bool,
    /// Phase.
    pub phase: ConnPhase,
    /// Shutdown flags the guest sent so far.
    pub peer_shutdown: u32,
    /// The guest's receive buffer size.
    pub peer_buf_alloc: u32,
    /// Bytes the guest consumed, ever.
    pub peer_fwd_cnt: u32,
    /// Data bytes sent to the guest, ever.
    pub tx_cnt: u32,
    /// Data bytes received from the guest, ever.
    pub rx_cnt: u32,
    /// Data bytes written to the host stream, ever.
    pub fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    pub last_fwd_cnt_sent: u32,
    /// Packets owed to the guest ([`pending`] bits).
    pub pending: u8,
}

impl ConnState {
    /// A connection in `phase` with nothing exchanged yet.
    #[must_use]
    pub fn new(local_port: u32, peer_port: u32, host_initiated: bool, phase: ConnPhase) -> Self {
        Self {
            local_port,
            peer_port,
            host_initiated,
            phase,
            peer_shutdown: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            pending: 0,
        }
    }

    /// Data bytes the guest can take now.
    #[must_use]
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        // A guest claiming to have consumed more than it got only starves itself.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest bytes received but not yet written to the host.
    #[must_use]
    pub fn unforwarded(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Our free space as the guest last heard of it.
    #[must_use]
    pub fn free_in_peer_view(&self) -> u32 {
        CONN_BUF_ALLOC.saturating_sub(self.rx_cnt.wrapping_sub(self.last_fwd_cnt_sent))
    }

    /// Whether the guest should hear of freed space now (Firecracker's 4 KiB rule).
    #[must_use]
    pub fn needs_credit_update(&self) -> bool {
        self.fwd_cnt != self.last_fwd_cnt_sent && self.free_in_peer_view() < CREDIT_UPDATE_THRESHOLD
    }

    /// Whether data may flow to the guest (the stream should be read).
    #[must_use]
    pub fn can_send_data(&self) -> bool {
        self.phase == ConnPhase::Established
            && self.peer_shutdown & super::packet::SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }
}

/// Guest bytes waiting for the host to read: a ring of at most [`TX_BUF_CAPACITY`] bytes,
/// allocated on first use and kept for the connection's life (nothing per packet).
#[derive(Debug, Default)]
pub struct TxBuf {
    ring: Box<[u8]>,
    start: usize,
    len: usize,
}

/// Room in a [`TxBuf`]: a full window of credit plus the `OK <port>\n` reply.
pub const TX_BUF_CAPACITY: usize = CONN_BUF_ALLOC as usize + 16;

impl TxBuf {
    /// Bytes held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free room.
    #[must_use]
    pub fn room(&self) -> usize {
        TX_BUF_CAPACITY - self.len
    }

    /// The two contiguous free areas to fill next, after making sure the ring exists.
    fn free_areas(&mut self) -> (usize, usize, usize) {
        if self.ring.is_empty() {
            self.ring = vec![0u8; TX_BUF_CAPACITY].into_boxed_slice();
        }
        let end = (self.start + self.len) % TX_BUF_CAPACITY;
        let first = if end >= self.start {
            TX_BUF_CAPACITY - end
        } else {
            self.start - end
        };
        (
            end,
            first.min(self.room()),
            self.room() - first.min(self.room()),
        )
    }

    /// Append `n` bytes produced by `fill` (called with up to two free areas in order).
    /// `fill` returns `false` to abandon the append. Caller checked `n <= room()`.
    pub fn append_with(
        &mut self,
        n: usize,
        mut fill: impl FnMut(&mut [u8], usize) -> bool,
    ) -> bool {
        if n > self.room() {
            return false;
        }
        let (end, first, _) = self.free_areas();
        let a = n.min(first);
        if !fill(&mut self.ring[end..end + a], 0) {
            return false;
        }
        if n > a && !fill(&mut self.ring[..n - a], a) {
            return false;
        }
        self.len += n;
        true
    }

    /// Write as much as the stream takes; the bytes written (0 on would-block).
    ///
    /// # Errors
    /// The stream's write error.
    pub fn flush(&mut self, stream: &mut UnixStream) -> io::Result<usize> {
        let mut written = 0;
        while self.len > 0 {
            let chunk = self.len.min(TX_BUF_CAPACITY - self.start);
            match stream.write(&self.ring[self.start..self.start + chunk]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.start = (self.start + n) % TX_BUF_CAPACITY;
                    self.len -= n;
                    if n < chunk {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.len == 0 {
            self.start = 0;
        }
        Ok(written)
    }
}

/// A connection: protocol state, host stream and what the event loop knows of it.
#[derive(Debug)]
pub struct Connection {
    /// Protocol state.
    pub state: ConnState,
    /// The host side (non-blocking).
    pub stream: UnixStream,
    /// Guest bytes the host has not read yet (plus a pending `OK` reply).
    pub tx_buf: TxBuf,
    /// Leading bytes of `tx_buf` that are not guest data (the `OK <port>\n` reply).
    pub tx_buf_reply: usize,
    /// When the connection is killed unless something happens first.
    pub expiry: Option<Instant>,
    /// Unique id, so stale deadlines never hit a newer connection with the same ports.
    pub id: u64,
    /// The host stream's write half is shut (the guest shut its send side).
    pub host_write_shut: bool,
    /// Whether the connection sits in the muxer's rx queue.
    pub in_rxq: bool,
    /// What the stream is registered for in epoll (empty = not registered yet).
    pub registered: EventSet,
    /// Whether its registration is queued for an epoll sync.
    pub dirty: bool,
}

impl Connection {
    /// The events the stream should be watched for now: readable while data may flow to
    /// the guest and no read is queued, writable while guest bytes wait for the host. With
    /// neither, the stream stays registered but "parked": edge-triggered with no interest, so
    /// a hang-up is reported once instead of on every `epoll_wait`, and nothing is added to
    /// or removed from epoll per packet.
    #[must_use]
    pub fn wanted_events(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.state.phase != ConnPhase::Killing {
            if !self.tx_buf.is_empty() {
                set |= EventSet::OUT;
            }
            if self.state.pending & pending::RW == 0 && self.state.can_send_data() {
                set |= EventSet::IN;
            }
        }
        if set.is_empty() {
            EventSet::EDGE_TRIGGERED
        } else {
            set
        }
    }

    /// Count `n` bytes taken by the host from the front of `tx_buf`.
    pub fn account_flushed(&mut self, n: usize) {
        let reply = n.min(self.tx_buf_reply);
        self.tx_buf_reply -= reply;
        self.state.fwd_cnt = self.state.fwd_cnt.wrapping_add((n - reply) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_credit_never_wraps_on_a_lying_guest() {
        let mut s = ConnState::new(1, 2, false, ConnPhase::Established);
        s.peer_buf_alloc = 1000;
        s.tx_cnt = 600;
        s.peer_fwd_cnt = 100;
        assert_eq!(s.peer_credit(), 500);
        s.peer_fwd_cnt = 700; // claims more than it received
        assert_eq!(s.peer_credit(), 0);
        s.tx_cnt = 5;
        s.peer_fwd_cnt = u32::MAX - 4; // counters wrapped: 10 in flight
        assert_eq!(s.peer_credit(), 990);
    }

    #[test]
    fn credit_update_owed_below_four_kib() {
        let mut s = ConnState::new(1, 2, false, ConnPhase::Established);
        s.rx_cnt = CONN_BUF_ALLOC - CREDIT_UPDATE_THRESHOLD;
        s.fwd_cnt = s.rx_cnt;
        assert!(!s.needs_credit_update(), "view exactly 4 KiB");
        s.rx_cnt += 1;
        assert!(s.needs_credit_update());
        s.last_fwd_cnt_sent = s.fwd_cnt;
        assert!(!s.needs_credit_update());
    }

    #[test]
    fn tx_buf_wraps_and_flushes_in_order() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut buf = TxBuf::default();
        let data: Vec<u8> = (0..TX_BUF_CAPACITY).map(|i| (i % 251) as u8).collect();
        assert!(buf.append_with(40_000, |dst, off| {
            dst.copy_from_slice(&data[off..off + dst.len()]);
            true
        }));
        assert_eq!(buf.flush(&mut a).unwrap(), 40_000);
        let mut got = vec![0u8; 40_000];
        std::io::Read::read_exact(&mut b, &mut got).unwrap();
        assert_eq!(got, data[..40_000]);
        // Now the ring wraps.
        let n = TX_BUF_CAPACITY - 10;
        assert!(buf.append_with(n, |dst, off| {
            dst.copy_from_slice(&data[off..off + dst.len()]);
            true
        }));
        assert!(!buf.append_with(11, |_, _| true), "over capacity");
        assert_eq!(buf.flush(&mut a).unwrap(), n);
        let mut got = vec![0u8; n];
        std::io::Read::read_exact(&mut b, &mut got).unwrap();
        assert_eq!(got, data[..n]);
    }
}
