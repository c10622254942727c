//! One guest TCP connection to the MMDS endpoint: a passive-open state machine that carries
//! HTTP requests in and responses out.
//!
//! Deliberately small: in-order delivery only (an out-of-order segment is dropped and
//! answered with a duplicate ACK so the guest retransmits), go-back-N retransmission on
//! timeout or three duplicate ACKs, no window scaling, no SACK. Memory is bounded: the
//! receive buffer is [`MAX_REQUEST_LEN`] bytes (the advertised window) and new requests are
//! only parsed while less than [`TX_SOFT_LIMIT`] response bytes are outstanding.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::wire::{self, flags, Mac, TcpHeader, TcpSegment};
use crate::data_store::MmdsStore;
use crate::http::{self, Parsed, MAX_REQUEST_LEN};
use crate::responder::{self, GuestAccess};
use crate::token::TokenAuthority;

/// Response bytes outstanding above which no further pipelined request is parsed.
pub const TX_SOFT_LIMIT: usize = 16 * 1024;
/// Our MSS (Ethernet MTU minus IPv4 and TCP headers).
pub const LOCAL_MSS: u16 = 1460;
const DEFAULT_REMOTE_MSS: u16 = 536;
const RTO_BASE: Duration = Duration::from_millis(300);
const RTO_MAX_RETRIES: u16 = 15;
const DUP_ACK_THRESHOLD: u8 = 3;

/// `a` comes before `b` in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) >= 1 << 31
}

fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// What the connection needs from the world to answer requests.
pub struct Context<'a> {
    /// The metadata.
    pub store: &'a MmdsStore,
    /// The session tokens.
    pub tokens: &'a mut TokenAuthority,
    /// V1/V2 and formatting.
    pub access: GuestAccess,
    /// The current time.
    pub now: Instant,
}

/// Our side of the connection: addresses used on every segment we send.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// MMDS MAC.
    pub mac: Mac,
    /// MMDS IPv4 address.
    pub ip: Ipv4Addr,
    /// MMDS TCP port.
    pub port: u16,
}

/// One connection, keyed by the guest's address and port.
#[derive(Debug)]
pub struct Connection {
    /// Guest MAC (from the latest frame).
    pub remote_mac: Mac,
    /// Guest IPv4 address.
    pub remote_ip: Ipv4Addr,
    /// Guest port.
    pub remote_port: u16,
    irs: u32,
    rcv_nxt: u32,
    iss: u32,
    syn_acked: bool,
    tx_seq: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_wnd: u32,
    remote_mss: u16,
    tx: Vec<u8>,
    rx: Vec<u8>,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    fin_received: bool,
    reading_done: bool,
    ack_pending: bool,
    rst_pending: bool,
    closed: bool,
    dup_acks: u8,
    last_tx: Option<Instant>,
    rto_count: u16,
    /// When the latest segment arrived (idle connections can be evicted).
    pub last_rx: Instant,
}

impl Connection {
    /// Passive open from a guest SYN; the SYN-ACK is then pending.
    #[must_use]
    pub fn accept(
        remote_mac: Mac,
        remote_ip: Ipv4Addr,
        syn: &TcpSegment<'_>,
        iss: u32,
        now: Instant,
    ) -> Self {
        Self {
            remote_mac,
            remote_ip,
            remote_port: syn.src_port,
            irs: syn.seq,
            rcv_nxt: syn.seq.wrapping_add(1),
            iss,
            syn_acked: false,
            tx_seq: iss.wrapping_add(1),
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: u32::from(syn.window),
            remote_mss: syn.mss.unwrap_or(DEFAULT_REMOTE_MSS).clamp(64, LOCAL_MSS),
            tx: Vec::new(),
            rx: Vec::new(),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            fin_received: false,
            reading_done: false,
            ack_pending: false,
            rst_pending: false,
            closed: false,
            dup_acks: 0,
            last_tx: None,
            rto_count: 0,
            last_rx: now,
        }
    }

    /// Whether the connection is finished and can be dropped.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.closed
            || (self.fin_acked && self.fin_received && !self.ack_pending && !self.rst_pending)
    }

    /// Bytes this connection holds in buffers.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.tx.len() + self.rx.len()
    }

    /// Whether `syn` is a retransmission of the SYN that opened this connection.
    #[must_use]
    pub fn is_same_syn(&self, syn: &TcpSegment<'_>) -> bool {
        syn.seq == self.irs
    }

    /// Process one segment from the guest.
    pub fn receive(&mut self, seg: &TcpSegment<'_>, ctx: &mut Context<'_>) {
        if self.closed {
            return;
        }
        self.last_rx = ctx.now;
        if seg.has(flags::RST) {
            if seg.seq == self.rcv_nxt {
                self.closed = true;
            }
            return;
        }
        if seg.has(flags::SYN) {
            // A retransmitted SYN: the SYN-ACK was lost, send it again.
            if !self.syn_acked && seg.seq == self.irs {
                self.snd_nxt = self.iss;
            } else {
                self.ack_pending = true;
            }
            return;
        }
        if !seg.has(flags::ACK) || !self.process_ack(seg, ctx.now) {
            return;
        }
        self.process_data(seg);
        self.process_requests(ctx);
    }

    /// Handle the acknowledgment field; false if the segment must be dropped.
    fn process_ack(&mut self, seg: &TcpSegment<'_>, now: Instant) -> bool {
        if !self.syn_acked {
            if seg.ack != self.iss.wrapping_add(1) || self.snd_max == self.iss {
                self.rst_pending = true;
                return false;
            }
            self.syn_acked = true;
            self.last_tx = None;
            self.rto_count = 0;
        }
        if seq_lt(self.snd_max, seg.ack) {
            // Acknowledges something never sent: answer with our state and drop it.
            self.ack_pending = true;
            return false;
        }
        let window = u32::from(seg.window);
        if seq_lt(self.tx_seq, seg.ack) {
            let acked = seg.ack.wrapping_sub(self.tx_seq) as usize;
            let data = acked.min(self.tx.len());
            self.tx.drain(..data);
            self.tx_seq = self.tx_seq.wrapping_add(len_u32(data));
            if seq_lt(self.snd_nxt, self.tx_seq) {
                // A late ACK for data sent before a go-back: skip what it covers.
                self.snd_nxt = self.tx_seq;
            }
            if acked > data {
                self.fin_acked = true;
                self.fin_sent = true;
                self.snd_nxt = self.tx_seq.wrapping_add(1);
            }
            self.dup_acks = 0;
            self.rto_count = 0;
            self.last_tx = self.has_unacked().then_some(now);
        } else if seg.ack == self.tx_seq
            && seg.payload.is_empty()
            && !seg.has(flags::FIN)
            && window == self.snd_wnd
            && self.has_unacked()
        {
            self.dup_acks = self.dup_acks.saturating_add(1);
            if self.dup_acks >= DUP_ACK_THRESHOLD {
                self.go_back();
            }
        }
        self.snd_wnd = window;
        true
    }

    fn has_unacked(&self) -> bool {
        let fin = u32::from(self.fin_acked);
        seq_lt(self.tx_seq.wrapping_add(fin), self.snd_max)
    }

    /// Retransmit everything not yet acknowledged.
    fn go_back(&mut self) {
        self.dup_acks = 0;
        if !self.syn_acked {
            self.snd_nxt = self.iss;
            return;
        }
        self.snd_nxt = self.tx_seq;
        if !self.fin_acked {
            self.fin_sent = false;
        }
    }

    fn process_data(&mut self, seg: &TcpSegment<'_>) {
        if seg.seq != self.rcv_nxt {
            // Old or out-of-order: drop it, tell the guest where we are.
            if seg.seq_len() > 0 {
                self.ack_pending = true;
            }
            return;
        }
        let room = MAX_REQUEST_LEN.saturating_sub(self.rx.len());
        let take = seg.payload.len().min(room);
        if !self.reading_done && !self.fin_received {
            self.rx.extend_from_slice(&seg.payload[..take]);
        }
        if take > 0 {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(len_u32(take));
            self.ack_pending = true;
        }
        if seg.has(flags::FIN) && take == seg.payload.len() && !self.fin_received {
            self.fin_received = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.ack_pending = true;
        }
    }

    /// Turn complete requests in the receive buffer into responses.
    fn process_requests(&mut self, ctx: &mut Context<'_>) {
        while !self.reading_done && self.tx.len() < TX_SOFT_LIMIT {
            match http::parse_request(&self.rx) {
                Parsed::Incomplete => {
                    if self.rx.len() >= MAX_REQUEST_LEN {
                        // No request fits: Firecracker resets the connection too.
                        self.rst_pending = true;
                        self.reading_done = true;
                    }
                    break;
                }
                Parsed::Complete { request, consumed } => {
                    self.rx.drain(..consumed.min(self.rx.len()));
                    let (response, close) = match request {
                        Ok(request) => (
                            responder::respond(
                                &request, ctx.store, ctx.tokens, ctx.access, ctx.now,
                            ),
                            request.close,
                        ),
                        Err(err) => (err.to_response(), true),
                    };
                    response.write_to(&mut self.tx);
                    if close {
                        self.close_after_send();
                    }
                }
            }
        }
        // The guest has finished sending and no complete request is left: close our side
        // once the responses are out. (A full `tx` means requests may still wait in `rx`.)
        if self.fin_received && !self.reading_done && self.tx.len() < TX_SOFT_LIMIT {
            self.close_after_send();
        }
    }

    fn close_after_send(&mut self) {
        self.reading_done = true;
        self.fin_queued = true;
        self.rx.clear();
    }

    /// Whether a segment is ready now.
    #[must_use]
    pub fn has_output(&self, now: Instant) -> bool {
        if self.closed {
            return false;
        }
        self.rst_pending
            || self.ack_pending
            || (!self.syn_acked && self.snd_nxt == self.iss)
            || (self.syn_acked && self.data_ready() > 0)
            || self.fin_ready()
            || self.rto_expired(now)
    }

    fn unsent_offset(&self) -> usize {
        self.snd_nxt.wrapping_sub(self.tx_seq) as usize
    }

    fn data_ready(&self) -> usize {
        let offset = self.unsent_offset().min(self.tx.len());
        let window = (self.snd_wnd as usize).saturating_sub(offset);
        (self.tx.len() - offset).min(window)
    }

    fn fin_ready(&self) -> bool {
        self.syn_acked && self.fin_queued && !self.fin_sent && self.unsent_offset() == self.tx.len()
    }

    fn rto_expired(&self, now: Instant) -> bool {
        let Some(last) = self.last_tx else {
            return false;
        };
        let outstanding = !self.syn_acked || self.has_unacked();
        outstanding
            && now.saturating_duration_since(last) >= RTO_BASE * (1 << self.rto_count.min(4))
    }

    /// Write the next segment into `buf` (a whole Ethernet frame); `None` if nothing to send
    /// or `buf` is too small.
    pub fn write_next(
        &mut self,
        buf: &mut [u8],
        local: &Local,
        ip_id: u16,
        now: Instant,
    ) -> Option<usize> {
        if self.closed {
            return None;
        }
        if self.rto_expired(now) {
            // Restart the timer now, so a caller polling in a loop cannot burn the retries.
            self.rto_count += 1;
            self.last_tx = Some(now);
            if self.rto_count > RTO_MAX_RETRIES {
                self.rst_pending = true;
            } else {
                self.go_back();
            }
        }
        let mut header = self.header(local, ip_id);
        if self.rst_pending {
            header.flags = flags::RST | flags::ACK;
            let len = wire::write_tcp_frame(buf, &header, &[])?;
            self.closed = true;
            return Some(len);
        }
        if !self.syn_acked {
            return self.write_syn_ack(buf, header, now);
        }
        self.write_data_or_control(buf, header, now)
    }

    fn header(&self, local: &Local, ip_id: u16) -> TcpHeader {
        let room = MAX_REQUEST_LEN.saturating_sub(self.rx.len());
        TcpHeader {
            dst_mac: self.remote_mac,
            src_mac: local.mac,
            src_ip: local.ip,
            dst_ip: self.remote_ip,
            ip_id,
            src_port: local.port,
            dst_port: self.remote_port,
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: flags::ACK,
            window: u16::try_from(room).unwrap_or(u16::MAX),
            mss: None,
        }
    }

    fn write_syn_ack(
        &mut self,
        buf: &mut [u8],
        mut header: TcpHeader,
        now: Instant,
    ) -> Option<usize> {
        if self.snd_nxt != self.iss && !self.ack_pending {
            return None;
        }
        header.seq = self.iss;
        header.flags = flags::SYN | flags::ACK;
        header.mss = Some(LOCAL_MSS);
        let len = wire::write_tcp_frame(buf, &header, &[])?;
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        self.ack_pending = false;
        self.last_tx = Some(now);
        Some(len)
    }

    fn write_data_or_control(
        &mut self,
        buf: &mut [u8],
        mut header: TcpHeader,
        now: Instant,
    ) -> Option<usize> {
        let overhead = wire::tcp_frame_overhead(&header);
        let space = buf.len().checked_sub(overhead)?;
        let offset = self.unsent_offset().min(self.tx.len());
        let len = self
            .data_ready()
            .min(usize::from(self.remote_mss))
            .min(space);
        if len > 0 {
            header.flags = flags::ACK | flags::PSH;
            let payload = &self.tx[offset..offset + len];
            let fin = self.fin_queued && offset + len == self.tx.len();
            if fin {
                header.flags |= flags::FIN;
            }
            let written = wire::write_tcp_frame(buf, &header, payload)?;
            self.snd_nxt = self.snd_nxt.wrapping_add(len_u32(len));
            if fin {
                self.fin_sent = true;
                self.snd_nxt = self.snd_nxt.wrapping_add(1);
            }
            return Some(self.sent(written, now));
        }
        if self.fin_ready() {
            header.flags = flags::ACK | flags::FIN;
            let written = wire::write_tcp_frame(buf, &header, &[])?;
            self.fin_sent = true;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            return Some(self.sent(written, now));
        }
        if self.ack_pending {
            let written = wire::write_tcp_frame(buf, &header, &[])?;
            self.ack_pending = false;
            return Some(written);
        }
        None
    }

    fn sent(&mut self, written: usize, now: Instant) -> usize {
        self.ack_pending = false;
        if seq_lt(self.snd_max, self.snd_nxt) {
            self.snd_max = self.snd_nxt;
        }
        if self.last_tx.is_none() {
            self.last_tx = Some(now);
        }
        written
    }

    /// Whether every byte queued so far has been sent and acknowledged.
    #[must_use]
    pub fn all_acked(&self) -> bool {
        seq_le(self.snd_max, self.tx_seq) && self.tx.is_empty()
    }
}
