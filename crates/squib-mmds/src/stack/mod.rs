//! The guest-facing MMDS endpoint: a minimal Ethernet/ARP/IPv4/TCP stack (Firecracker's
//! "dumbo") for one MMDS IPv4 address on one network interface.
//!
//! The net device offers every frame the guest transmits to [`MmdsStack::handle_frame`]; a
//! frame addressed to MMDS (an ARP for its address, or any IPv4 packet to it) is consumed
//! and must not reach the TAP, even when it is malformed. Frames for the guest (ARP replies,
//! SYN-ACKs, data, ACK/FIN/RST) come out of [`MmdsStack::next_frame`], which the device
//! calls while it has room in the guest's receive queue.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (idle or finished ones are evicted for a
//! new SYN, otherwise it is reset), each with bounded buffers (see [`connection`]), and at
//! most [`MAX_PENDING_RESETS`] queued resets. Incoming checksums are not verified by default
//! (a guest with checksum offload sends partial ones, and frames cannot be corrupted between
//! guest memory and us); [`MmdsStack::set_verify_checksums`] turns verification on.

pub mod connection;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::connection::{Connection, Context, Local};
use self::wire::{flags, Mac, TcpHeader, TcpSegment};
use crate::data_store::MmdsStore;
use crate::responder::GuestAccess;
use crate::token::TokenAuthority;
use squib_logger::metrics::METRICS;

/// Firecracker's default MMDS address.
pub const DEFAULT_IPV4_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Firecracker's MMDS MAC address, used in ARP replies and as the source of our frames.
pub const DEFAULT_MAC_ADDR: Mac = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
/// The HTTP port.
pub const MMDS_TCP_PORT: u16 = 80;
/// Connections held at most.
pub const MAX_CONNECTIONS: usize = 30;
/// Resets queued at most (further ones are dropped; the guest retransmits).
pub const MAX_PENDING_RESETS: usize = 100;
/// A connection silent this long can be evicted for a new one.
pub const EVICTION_THRESHOLD: Duration = Duration::from_secs(10);

/// Token authority shared by every interface that forwards to MMDS.
pub type SharedTokenAuthority = Arc<Mutex<TokenAuthority>>;

#[derive(Debug, Clone, Copy)]
struct Reset {
    mac: Mac,
    ip: Ipv4Addr,
    port: u16,
    local_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
}

/// The MMDS endpoint for one network interface.
#[derive(Debug)]
pub struct MmdsStack {
    local: Local,
    access: GuestAccess,
    tokens: SharedTokenAuthority,
    verify_checksums: bool,
    arp_reply: Option<(Mac, Ipv4Addr)>,
    resets: VecDeque<Reset>,
    connections: Vec<Connection>,
    next_conn: usize,
    now: Instant,
    ip_id: u16,
    isn_counter: u32,
}

impl MmdsStack {
    /// An endpoint answering at `ipv4` with `mac` as its own MAC (see [`DEFAULT_MAC_ADDR`]),
    /// MMDS V1, and a token authority of its own.
    #[must_use]
    pub fn new(ipv4: Ipv4Addr, mac: Mac) -> Self {
        Self {
            local: Local {
                mac,
                ip: ipv4,
                port: MMDS_TCP_PORT,
            },
            access: GuestAccess::default(),
            tokens: Arc::new(Mutex::new(TokenAuthority::new())),
            verify_checksums: false,
            arp_reply: None,
            resets: VecDeque::new(),
            connections: Vec::new(),
            next_conn: 0,
            now: Instant::now(),
            ip_id: 0,
            isn_counter: getrandom::u32().unwrap_or(0x5eed_1234),
        }
    }

    /// Use `access` (version, `imds_compat`) from `PUT /mmds/config`.
    #[must_use]
    pub fn with_access(mut self, access: GuestAccess) -> Self {
        self.access = access;
        self
    }

    /// Share `tokens` with the other interfaces (a token minted on one works on all).
    #[must_use]
    pub fn with_token_authority(mut self, tokens: SharedTokenAuthority) -> Self {
        self.tokens = tokens;
        self
    }

    /// Verify incoming IPv4 and TCP checksums (off by default, see the module docs).
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.verify_checksums = verify;
    }

    /// The MMDS IPv4 address.
    #[must_use]
    pub fn ipv4_addr(&self) -> Ipv4Addr {
        self.local.ip
    }

    /// Number of live connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Bytes held in connection buffers (for bounded-memory checks).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.connections.iter().map(Connection::buffered).sum()
    }

    /// Move the stack's clock forward (it never goes back). [`Self::handle_frame`] and
    /// [`Self::next_frame`] do this themselves; tests use it to jump ahead.
    pub fn advance_time(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Offer a frame the guest sent. Returns true if it was addressed to MMDS and consumed
    /// (it must then not be forwarded to the TAP).
    pub fn handle_frame(&mut self, frame: &[u8], store: &MmdsStore, now: Instant) -> bool {
        self.advance_time(now);
        let Some(eth) = wire::parse_ethernet(frame) else {
            return false;
        };
        match eth.ethertype {
            wire::ETHERTYPE_ARP => {
                if wire::arp_target(eth.payload) != Some(self.local.ip) {
                    return false;
                }
                if let Some(request) = wire::parse_arp_request(eth.payload) {
                    self.arp_reply = Some((request.sha, request.spa));
                }
                true
            }
            wire::ETHERTYPE_IPV4 => {
                if wire::ipv4_destination(eth.payload) != Some(self.local.ip) {
                    return false;
                }
                self.handle_ipv4(eth.src, eth.payload, store);
                true
            }
            _ => false,
        }
    }

    fn handle_ipv4(&mut self, src_mac: Mac, packet: &[u8], store: &MmdsStore) {
        let Some(ip) = wire::parse_ipv4(packet, self.verify_checksums) else {
            return;
        };
        if ip.protocol != wire::PROTOCOL_TCP {
            return;
        }
        let Some(seg) = wire::parse_tcp(ip.payload, ip.src, ip.dst, self.verify_checksums) else {
            return;
        };
        if seg.dst_port != self.local.port {
            self.queue_reset(src_mac, ip.src, &seg);
            return;
        }
        let index = self
            .connections
            .iter()
            .position(|c| c.remote_ip == ip.src && c.remote_port == seg.src_port);
        match index {
            Some(i) if seg.has(flags::SYN) && !self.connections[i].is_same_syn(&seg) => {
                // The guest reused the port: the old connection is gone on its side.
                self.close(i);
                self.open(src_mac, ip.src, &seg);
            }
            Some(i) => self.deliver(i, src_mac, &seg, store),
            None if seg.flags & (flags::SYN | flags::ACK | flags::RST | flags::FIN)
                == flags::SYN =>
            {
                self.open(src_mac, ip.src, &seg);
            }
            None => self.queue_reset(src_mac, ip.src, &seg),
        }
    }

    fn deliver(&mut self, index: usize, src_mac: Mac, seg: &TcpSegment<'_>, store: &MmdsStore) {
        let tokens = Arc::clone(&self.tokens);
        let mut tokens = tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ctx = Context {
            store,
            tokens: &mut tokens,
            access: self.access,
            now: self.now,
        };
        let conn = &mut self.connections[index];
        conn.remote_mac = src_mac;
        conn.receive(seg, &mut ctx);
        if conn.is_done() {
            self.close(index);
        }
    }

    /// Forget connection `index` (counted in `mmds.connections_destroyed`).
    fn close(&mut self, index: usize) {
        self.connections.swap_remove(index);
        METRICS.mmds.connections_destroyed.inc();
    }

    fn open(&mut self, src_mac: Mac, src_ip: Ipv4Addr, syn: &TcpSegment<'_>) {
        let before = self.connections.len();
        self.connections.retain(|c| !c.is_done());
        METRICS
            .mmds
            .connections_destroyed
            .add((before - self.connections.len()) as u64);
        if self.connections.len() >= MAX_CONNECTIONS {
            let now = self.now;
            let idle = self
                .connections
                .iter()
                .position(|c| now.saturating_duration_since(c.last_rx) > EVICTION_THRESHOLD);
            match idle {
                Some(i) => self.close(i),
                None => {
                    self.queue_reset(src_mac, src_ip, syn);
                    return;
                }
            }
        }
        // ISNs only need to differ between incarnations; a random start and a large odd
        // stride keep them apart.
        self.isn_counter = self.isn_counter.wrapping_add(0x0100_0193);
        let conn = Connection::accept(src_mac, src_ip, syn, self.isn_counter, self.now);
        self.connections.push(conn);
        METRICS.mmds.connections_created.inc();
    }

    /// RFC 793 reset for a segment that belongs to no connection.
    fn queue_reset(&mut self, mac: Mac, ip: Ipv4Addr, seg: &TcpSegment<'_>) {
        if seg.has(flags::RST) || self.resets.len() >= MAX_PENDING_RESETS {
            return;
        }
        let (seq, ack, flags) = if seg.has(flags::ACK) {
            (seg.ack, 0, flags::RST)
        } else {
            (
                0,
                seg.seq.wrapping_add(seg.seq_len()),
                flags::RST | flags::ACK,
            )
        };
        self.resets.push_back(Reset {
            mac,
            ip,
            port: seg.src_port,
            local_port: seg.dst_port,
            seq,
            ack,
            flags,
        });
    }

    /// Whether [`Self::next_frame`] would produce a frame now.
    #[must_use]
    pub fn has_pending_frames(&self) -> bool {
        let now = Instant::now().max(self.now);
        self.arp_reply.is_some()
            || !self.resets.is_empty()
            || self.connections.iter().any(|c| c.has_output(now))
    }

    /// Write the next frame for the guest into `buf`; `None` when there is nothing to send
    /// (or `buf` cannot hold it: it stays queued).
    pub fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.advance_time(Instant::now());
        if let Some((mac, ip)) = self.arp_reply {
            let len = wire::write_arp_reply(buf, self.local.mac, self.local.ip, mac, ip)?;
            self.arp_reply = None;
            return Some(len);
        }
        if let Some(reset) = self.resets.front().copied() {
            let len = self.write_reset(buf, &reset)?;
            self.resets.pop_front();
            return Some(len);
        }
        self.next_connection_frame(buf)
    }

    fn write_reset(&mut self, buf: &mut [u8], reset: &Reset) -> Option<usize> {
        let header = TcpHeader {
            dst_mac: reset.mac,
            src_mac: self.local.mac,
            src_ip: self.local.ip,
            dst_ip: reset.ip,
            ip_id: self.next_ip_id(),
            src_port: reset.local_port,
            dst_port: reset.port,
            seq: reset.seq,
            ack: reset.ack,
            flags: reset.flags,
            window: 0,
            mss: None,
        };
        wire::write_tcp_frame(buf, &header, &[])
    }

    /// Round-robin over connections so one busy connection cannot starve the others.
    fn next_connection_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let count = self.connections.len();
        for step in 0..count {
            let index = (self.next_conn + step) % count;
            if !self.connections[index].has_output(self.now) {
                continue;
            }
            let ip_id = self.next_ip_id();
            let written = self.connections[index].write_next(buf, &self.local, ip_id, self.now);
            if written.is_some() {
                self.next_conn = index + 1;
                self.connections.retain(|c| !c.is_done());
                return written;
            }
        }
        self.connections.retain(|c| !c.is_done());
        None
    }

    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }
}
