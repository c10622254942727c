//! Receive path: TAP (or interceptor) → guest.
//!
//! With MRG_RXBUF and enough rx buffers held for a largest frame, a TAP frame is read with
//! one `readv` straight into guest memory (no copy in squib). Otherwise — too few buffers,
//! no MRG_RXBUF, or a frame the interceptor injects — it goes through `rx.buf` and is copied
//! once into the held chains. Either way the frame is published only after the rate limiter
//! let it through, and never cut short.
//!
//! When the guest has no buffers the frame waits (in `rx.buf`) and the TAP is not read:
//! back-pressure; the rx queue notification resumes. The TAP is watched edge-triggered, so a
//! drain reads it until `EAGAIN` unless it stops for a reason with its own wake-up: no buffers
//! (queue event), rate limiter (timer), or a per-drain cap (self-kick): [`QUEUE_SIZE`] frames,
//! or the rx queue's size of chains popped (malformed chains count: a guest refilling the
//! ring with them while the device runs gets one ring's worth of work per event).

use std::io::ErrorKind;

use virtio_queue::QueueT;

use super::rx_buffers::Collect;
use super::Net;
use crate::rate_limiter::TokenType;
use crate::virtio::has_feature;
use crate::virtio::net::{features as net, QUEUE_SIZE, RX_INDEX, VNET_HDR_LEN};

/// Whether a drain goes on or waits for a wake-up.
enum Step {
    /// The frame went to the guest (or was dropped); fetch the next one.
    Next,
    /// Wait for a wake-up (rx queue event, rate-limiter timer).
    Wait,
}

impl Net {
    /// The rx queue eventfd fired: the guest posted buffers.
    pub fn process_rx_queue_event(&mut self) {
        self.metrics.rx_queue_event_count.inc();
        if self.consume_queue_event(RX_INDEX) {
            self.process_rx();
        }
    }

    /// The TAP turned readable.
    pub fn process_tap_rx_event(&mut self) {
        self.metrics.rx_tap_event_count.inc();
        self.process_rx();
    }

    /// The rx rate limiter's timer fired.
    pub fn process_rx_rate_limiter_event(&mut self) {
        self.metrics.rx_event_rate_limiter_count.inc();
        match self.rx_rate_limiter.event_handler() {
            Ok(()) => self.process_rx(),
            Err(e) => {
                self.metrics.event_fails.inc();
                log::error!("net {}: cannot read rx rate limiter: {e}", self.iface_id);
            }
        }
    }

    /// Move frames to the guest until the TAP is empty or the guest or limiter says wait.
    pub fn process_rx(&mut self) {
        if self.mem.is_none() {
            return;
        }
        let mut delivered = false;
        let mut budget = QUEUE_SIZE;
        self.rx.pop_budget = self.state.queues[RX_INDEX].size().max(1);
        loop {
            if self.rx.pending == 0 && self.rx.in_guest == 0 {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                if !self.fetch_frame() {
                    break;
                }
            }
            match self.deliver(&mut delivered) {
                Step::Next => {}
                Step::Wait => break,
            }
        }
        if budget == 0 || self.rx.pop_budget == 0 {
            // More may be waiting: come back after other event sources had a turn.
            self.kick_self(RX_INDEX);
        }
        if delivered {
            self.metrics.rx_count.inc();
            self.signal_used(RX_INDEX);
        }
    }

    /// Get the next frame: injected frames first (into `rx.buf`), then the TAP (straight
    /// into held chains when possible, else into `rx.buf`). `false` when there is none.
    fn fetch_frame(&mut self) -> bool {
        if self.rx.pop_budget == 0 {
            // This drain popped its share of chains; the self-kick resumes it.
            return false;
        }
        if self.fetch_injected_frame() {
            return true;
        }
        let direct = if has_feature(self.state.acked_features, net::MRG_RXBUF) {
            self.reserve_for_direct_read()
        } else {
            None
        };
        loop {
            let read = match (direct, self.mem.as_ref()) {
                (Some(pieces), Some(mem)) => self.tap.read_frame_into(mem, &self.rx.segs[..pieces]),
                _ => self.tap.read_frame(&mut self.rx.buf),
            };
            match read {
                Ok(len) if len >= VNET_HDR_LEN => {
                    if direct.is_some() {
                        self.rx.in_guest = len;
                    } else {
                        self.rx.pending = len;
                    }
                    return true;
                }
                Ok(len) => {
                    // Shorter than its own header: nothing a guest could use.
                    self.metrics.tap_read_fails.inc();
                    log::debug!("net {}: {len}-byte TAP read dropped", self.iface_id);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.metrics.tap_read_fails.inc();
                    log::error!("net {}: cannot read TAP: {e}", self.iface_id);
                    return false;
                }
            }
        }
    }

    /// Move the interceptor's next frame into `rx.buf`; `true` when there was one.
    fn fetch_injected_frame(&mut self) -> bool {
        // Bounded: a misbehaving interceptor cannot hold the event loop.
        for _ in 0..QUEUE_SIZE {
            let Some(ic) = self.interceptor.as_mut().filter(|ic| ic.has_rx_frame()) else {
                break;
            };
            match ic.next_rx_frame(&mut self.rx.buf) {
                Some(len) if (VNET_HDR_LEN..=self.rx.buf.len()).contains(&len) => {
                    self.rx.pending = len;
                    return true;
                }
                Some(len) => {
                    self.metrics.rx_fails.inc();
                    squib_logger::error_rate_limited!(
                        "net {}: injected {len}-byte frame dropped",
                        self.iface_id
                    );
                }
                None => break,
            }
        }
        false
    }

    /// Make sure the frame has buffers, charge the limiter and publish it to the guest.
    fn deliver(&mut self, delivered: &mut bool) -> Step {
        let in_guest = self.rx.in_guest > 0;
        let len = if in_guest {
            self.rx.in_guest
        } else {
            self.rx.pending
        };
        if !in_guest {
            match self.hold_buffers_for(len, delivered) {
                Some(Step::Next) => {}
                Some(Step::Wait) => return Step::Wait,
                None => {
                    self.rx.pending = 0;
                    return Step::Next;
                }
            }
        }
        let frame_bytes = (len - VNET_HDR_LEN) as u64;
        if !self.rx_rate_limiter.consume(1, TokenType::Ops) {
            self.metrics.rx_rate_limiter_throttled.inc();
            return Step::Wait;
        }
        if !self.rx_rate_limiter.consume(frame_bytes, TokenType::Bytes) {
            self.rx_rate_limiter.manual_replenish(1, TokenType::Ops);
            self.metrics.rx_rate_limiter_throttled.inc();
            return Step::Wait;
        }
        if !in_guest {
            self.copy_buffered_frame(len);
        }
        self.publish_frame(len);
        *delivered = true;
        self.metrics.rx_packets_count.inc();
        self.metrics.rx_bytes_count.add(frame_bytes);
        self.rx.pending = 0;
        self.rx.in_guest = 0;
        Step::Next
    }

    /// Hold chains until they cover `len` bytes. `Some(Next)` when they do, `Some(Wait)` when
    /// the ring ran dry, `None` when the frame cannot be placed and was dropped.
    fn hold_buffers_for(&mut self, len: usize, delivered: &mut bool) -> Option<Step> {
        let mergeable = has_feature(self.state.acked_features, net::MRG_RXBUF);
        while self.rx.capacity < len as u64 {
            if !mergeable && !self.rx.chains.is_empty() {
                // One chain must hold the frame; it does not: drop the frame, keep the chain.
                self.metrics.rx_fails.inc();
                self.warn(format_args!(
                    "{len}-byte frame exceeds the rx buffer, dropped"
                ));
                return None;
            }
            if self.holds_whole_ring() {
                self.metrics.rx_fails.inc();
                self.warn(format_args!(
                    "{len}-byte frame exceeds a full ring of buffers"
                ));
                self.release_held_chains();
                *delivered = true;
                return None;
            }
            match self.collect_chain() {
                Collect::Held => {}
                Collect::Empty => {
                    self.metrics.no_rx_avail_buffer.inc();
                    return Some(Step::Wait);
                }
                // The frame waits in `rx.buf`; the drain's self-kick resumes it.
                Collect::OutOfBudget => return Some(Step::Wait),
            }
        }
        Some(Step::Next)
    }
}
