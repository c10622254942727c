//! The host side: the listener, `CONNECT` handshakes, stream events, and the packets owed to
//! the guest (built straight into rx chains, data read from the stream into guest memory).

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use event_manager::EventSet;
use vm_memory::GuestAddress;

use super::deadlines::ACCEPT_RETRY;
use super::{ConnKey, Handshake, Muxer, Target};
use crate::virtio::iovec::readv_guest;
use crate::virtio::vsock::connect::read_connect_line;
use crate::virtio::vsock::connection::{pending, ConnPhase};
use crate::virtio::vsock::packet::{
    copy_to_guest, op, sub_segments, VsockHeader, HDR_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::virtio::vsock::{
    ConnState, CONN_BUF_ALLOC, FIRST_LOCAL_PORT, HOST_CID, MAX_CONNECTIONS, MAX_PKT_DATA,
};
use crate::virtio::GuestMemoryMmap;

/// Connections one listener event accepts (the listener is level-triggered: more wait).
const ACCEPT_BUDGET: usize = 32;

/// One packet written into an rx chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxPacket {
    /// Bytes written (header and data): the used length.
    pub used_len: u32,
    /// Data bytes.
    pub data_len: u32,
}

impl Muxer {
    /// The listener is readable: accept host clients (at most `ACCEPT_BUDGET`, 32).
    pub fn process_listener(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: stop watching the listener for a
                    // while rather than spin on it (clients wait in its backlog).
                    self.metrics.muxer_event_fails.inc();
                    squib_logger::warn_rate_limited!(
                        "vsock: accept on {}: {e}; retrying in {} ms",
                        self.uds_path.display(),
                        ACCEPT_RETRY.as_millis()
                    );
                    self.pause_listener();
                    return;
                }
            };
            if self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS {
                squib_logger::warn_rate_limited!(
                    "vsock: {MAX_CONNECTIONS} connections open, closing a host client"
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                self.metrics.muxer_event_fails.inc();
                log::error!("vsock: cannot make a host client non-blocking: {e}");
                continue;
            }
            let fd = stream.as_raw_fd();
            let id = self.fresh_id();
            self.handshakes.insert(
                fd,
                Handshake {
                    stream,
                    id,
                    registered: false,
                },
            );
            self.dirty.push(fd);
            self.push_deadline(Instant::now() + self.timeout, Target::Handshake(fd), id);
        }
    }

    /// A host stream (handshake or connection) has events.
    pub fn process_stream(&mut self, fd: RawFd, set: EventSet) {
        if self.handshakes.contains_key(&fd) {
            self.handshake(fd);
        } else if let Some(&key) = self.by_fd.get(&fd) {
            self.conn_event(key, set);
        } else {
            self.metrics.conn_event_fails.inc();
            log::debug!("vsock: event {set:?} on unknown fd {fd}");
        }
    }

    /// Read the client's `CONNECT <port>\n` and ask the guest.
    fn handshake(&mut self, fd: RawFd) {
        let Some(mut hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let port = match read_connect_line(&mut hs.stream) {
            Ok(port) => port,
            Err(e) => {
                log::debug!("vsock: host client refused: {e}");
                self.retired.push((hs.stream, hs.registered));
                return;
            }
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            self.retired.push((hs.stream, hs.registered));
            return;
        }
        let local_port = self.allocate_local_port(port);
        let mut state = ConnState::new(local_port, port, true, ConnPhase::LocalInit);
        state.pending = pending::REQUEST;
        self.insert(state, hs.stream, hs.registered);
    }

    /// A handshake took too long: close it.
    pub(super) fn retire_handshake(&mut self, fd: RawFd) {
        if let Some(hs) = self.handshakes.remove(&fd) {
            log::debug!("vsock: host client sent no CONNECT line in time");
            self.retired.push((hs.stream, hs.registered));
        }
    }

    /// The next local port, round-robin in [2³⁰, 2³¹), skipping those of host-initiated
    /// connections and any that would make `(port, peer_port)` clash with a guest-initiated
    /// connection to that port. At most [`MAX_CONNECTIONS`] ports are taken, so this ends.
    pub(super) fn allocate_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = if port >= (1 << 31) - 1 {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.local_ports.contains(&port) && !self.conns.contains_key(&key) {
                return port;
            }
        }
    }

    /// Readable: the guest gets data (if it has credit). Writable: flush buffered guest data.
    fn conn_event(&mut self, key: ConnKey, set: EventSet) {
        if set.contains(EventSet::OUT) {
            self.flush(key);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if set.contains(EventSet::IN) && conn.state.can_send_data() {
            conn.state.pending |= pending::RW;
            Self::schedule_rx(&mut self.rxq, key, conn);
        }
        Self::mark_dirty(&mut self.dirty, conn);
        if !set.intersects(EventSet::IN | EventSet::OUT) {
            // A parked stream's hang-up (reported once): what is left to read is read, and
            // EOF seen, once the guest can take data again; a write would fail then too.
            log::debug!("vsock: host stream of {key:?} reported {set:?}");
        }
    }

    /// Write buffered guest data to the host.
    fn flush(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        match conn.tx_buf.flush(&mut conn.stream) {
            Ok(n) => conn.account_flushed(n),
            Err(e) => {
                self.metrics.tx_flush_fails.inc();
                log::debug!("vsock: flush to the host for {key:?}: {e}");
                self.kill(key);
                return;
            }
        }
        Self::mark_dirty(&mut self.dirty, conn);
        let drained = conn.tx_buf.is_empty();
        if conn.state.needs_credit_update() {
            self.owe(key, pending::CREDIT_UPDATE);
        }
        if drained {
            self.after_drain(key);
        }
    }

    /// Write the next packet owed to the guest into the rx chain `segs` (`capacity` bytes, at
    /// least a header). `None` when nothing is owed (or nothing could be read yet).
    pub fn fill_rx(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        capacity: u64,
    ) -> Option<RxPacket> {
        if let Some(key) = self.stray_rst.pop_front() {
            let hdr = self.header(key, op::RST);
            return self.write_header(mem, segs, &hdr, 0);
        }
        for _ in 0..self.rxq.len() {
            let key = self.rxq.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rxq = false;
            let packet = self.conn_packet(key, mem, segs, capacity);
            if let Some(conn) = self.conns.get_mut(&key) {
                Self::schedule_rx(&mut self.rxq, key, conn);
            }
            if packet.is_some() {
                return packet;
            }
        }
        None
    }

    /// The header of a packet from `key`'s host side, with our current credit.
    fn header(&self, key: ConnKey, op: u16) -> VsockHeader {
        let fwd_cnt = self.conns.get(&key).map_or(0, |c| c.state.fwd_cnt);
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn write_header(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        hdr: &VsockHeader,
        data_len: u32,
    ) -> Option<RxPacket> {
        if let Some(conn) = self.conns.get_mut(&ConnKey {
            local_port: hdr.src_port,
            peer_port: hdr.dst_port,
        }) {
            // Every packet tells the guest our credit: no separate update is owed any more.
            conn.state.last_fwd_cnt_sent = hdr.fwd_cnt;
            conn.state.pending &= !pending::CREDIT_UPDATE;
        }
        if !copy_to_guest(mem, segs, &hdr.to_bytes()) {
            squib_logger::warn_rate_limited!("vsock: cannot write a header into guest memory");
        }
        Some(RxPacket {
            used_len: HDR_LEN as u32 + data_len,
            data_len,
        })
    }

    /// The next packet `key` owes, by priority: RST, REQUEST, RESPONSE, RW, SHUTDOWN,
    /// CREDIT_UPDATE. An RST removes the connection once written.
    fn conn_packet(
        &mut self,
        key: ConnKey,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        capacity: u64,
    ) -> Option<RxPacket> {
        // Each round clears at least one bit, so this ends.
        loop {
            let owed = self.conns.get(&key)?.state.pending;
            let (bit, op) = [
                (pending::RST, op::RST),
                (pending::REQUEST, op::REQUEST),
                (pending::RESPONSE, op::RESPONSE),
                (pending::RW, op::RW),
                (pending::SHUTDOWN, op::SHUTDOWN),
                (pending::CREDIT_UPDATE, op::CREDIT_UPDATE),
            ]
            .into_iter()
            .find(|&(bit, _)| owed & bit != 0)?;
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.state.pending &= !bit;
            }
            if bit == pending::RW {
                match self.read_host_data(key, mem, segs, capacity) {
                    Some(packet) => return Some(packet),
                    None => continue,
                }
            }
            let mut hdr = self.header(key, op);
            if bit == pending::SHUTDOWN {
                hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
            }
            let packet = self.write_header(mem, segs, &hdr, 0);
            if bit == pending::RST {
                self.remove(key);
            }
            return packet;
        }
    }

    /// Read host data straight into the chain after the header and send it as `OP_RW`; on
    /// EOF owe a `SHUTDOWN` instead. `None` when there was nothing to read.
    fn read_host_data(
        &mut self,
        key: ConnKey,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        capacity: u64,
    ) -> Option<RxPacket> {
        let conn = self.conns.get_mut(&key)?;
        Self::mark_dirty(&mut self.dirty, conn);
        if !conn.state.can_send_data() {
            return None;
        }
        let max = capacity
            .saturating_sub(HDR_LEN as u64)
            .min(u64::from(conn.state.peer_credit()))
            .min(u64::from(MAX_PKT_DATA));
        if max == 0 {
            return None;
        }
        sub_segments(segs, HDR_LEN as u64, max, &mut self.scratch);
        let read = loop {
            match readv_guest(conn.stream.as_raw_fd(), mem, &self.scratch) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match read {
            Ok(0) => {
                log::debug!("vsock: host closed {key:?}");
                conn.state.phase = ConnPhase::LocalClosed;
                conn.state.pending |= pending::SHUTDOWN;
                self.set_expiry(key);
                None
            }
            Ok(n) => {
                let n = n as u32;
                conn.state.tx_cnt = conn.state.tx_cnt.wrapping_add(n);
                if u64::from(n) == max && conn.state.can_send_data() {
                    // Likely more: stay in the rx queue rather than wait for epoll.
                    conn.state.pending |= pending::RW;
                }
                let mut hdr = self.header(key, op::RW);
                hdr.len = n;
                self.write_header(mem, segs, &hdr, n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => {
                self.metrics.rx_read_fails.inc();
                log::debug!("vsock: read from the host for {key:?}: {e}");
                self.kill(key);
                None
            }
        }
    }
}
