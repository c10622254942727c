//! Transmit path: guest → TAP (or interceptor).
//!
//! Each chain is one frame with its 12-byte vnet header, in device-readable descriptors; the
//! pieces go to the TAP in one `writev` straight from guest memory. A chain that is malformed
//! (a device-writable descriptor, a piece outside guest memory, shorter than the header or
//! longer than [`MAX_BUFFER_LEN`]) completes unsent and bumps `tx_malformed_frames`. A chain
//! the limiter or a full TAP (`EAGAIN`) holds back goes back to the ring and is retried on the
//! limiter's timer or when the TAP turns writable: a frame the guest handed over is not lost.

use std::io::ErrorKind;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemory, Permissions};

use super::Net;
use crate::rate_limiter::TokenType;
use crate::virtio::net::{MAX_BUFFER_LEN, TX_INDEX, VNET_HDR_LEN};
use crate::virtio::queue::{add_used, QueueError};

/// What happened to one tx chain.
enum TxOutcome {
    /// Sent, consumed by the interceptor, or dropped: complete it.
    Done,
    /// Not sent yet: put it back and stop the drain.
    Retry,
}

impl Net {
    /// The tx queue eventfd fired: the guest posted frames.
    pub fn process_tx_queue_event(&mut self) {
        self.metrics.tx_queue_event_count.inc();
        if self.consume_queue_event(TX_INDEX) {
            self.process_tx();
        }
    }

    /// The TAP turned writable: resume a drain it had refused.
    pub fn process_tap_tx_event(&mut self) {
        if self.tx.blocked_on_tap {
            self.tx.blocked_on_tap = false;
            self.process_tx();
        }
    }

    /// The tx rate limiter's timer fired.
    pub fn process_tx_rate_limiter_event(&mut self) {
        self.metrics.tx_rate_limiter_event_count.inc();
        match self.tx_rate_limiter.event_handler() {
            Ok(()) => self.process_tx(),
            Err(e) => {
                self.metrics.event_fails.inc();
                log::error!(
                    "net {}: cannot read tx rate limiter timer: {e}",
                    self.iface_id
                );
            }
        }
    }

    /// Send available tx chains (at most the negotiated queue size, malformed ones included,
    /// then re-kick), then interrupt once if needed.
    pub fn process_tx(&mut self) {
        if self.mem.is_none() || self.tx.blocked_on_tap {
            return;
        }
        let mut completed = false;
        let mut popped = false;
        let mut injected = false;
        let mut budget = self.state.queues[TX_INDEX].size().max(1);
        loop {
            if budget == 0 {
                self.metrics.tx_remaining_reqs_count.inc();
                self.kick_self(TX_INDEX);
                break;
            }
            budget -= 1;
            let Some(head) = self.pop_tx_chain() else {
                break;
            };
            popped = true;
            match self.send_tx_chain(head, &mut injected) {
                TxOutcome::Done => {
                    self.complete_tx(head);
                    completed = true;
                }
                TxOutcome::Retry => {
                    self.state.queues[TX_INDEX].go_to_previous_position();
                    break;
                }
            }
        }
        if completed {
            self.metrics.tx_count.inc();
            self.signal_used(TX_INDEX);
        } else if !popped {
            self.metrics.no_tx_avail_buffer.inc();
        }
        if injected {
            self.process_rx();
        }
    }

    /// Pop the next chain into `tx.segs`; `Some(head)` with `tx.segs` empty when malformed.
    fn pop_tx_chain(&mut self) -> Option<u16> {
        let mem = self.mem.as_ref()?;
        let queue = &mut self.state.queues[TX_INDEX];
        // Re-check once after re-arming notifications (a chain may have raced in); a guest
        // moving avail.idx back and forth gets no second look, so this cannot spin.
        let mut rearmed = false;
        let chain = loop {
            let next = match queue.iter(mem) {
                Ok(mut avail) => avail.next(),
                Err(e) => {
                    self.metrics.tx_malformed_frames.inc();
                    squib_logger::log_rate_limited!(
                        log::Level::Debug,
                        "net {}: tx available ring: {e}",
                        self.iface_id
                    );
                    return None;
                }
            };
            match next {
                Some(chain) => break chain,
                None if !rearmed && matches!(queue.enable_notification(mem), Ok(true)) => {
                    rearmed = true;
                }
                None => return None,
            }
        };
        let head = chain.head_index();
        self.tx.segs.clear();
        let mut total = 0usize;
        for desc in chain {
            let len = desc.len() as usize;
            if desc.is_write_only() || !mem.check_range(desc.addr(), len, Permissions::Read) {
                self.tx.segs.clear();
                return Some(head);
            }
            total += len;
            if len > 0 {
                self.tx.segs.push((desc.addr(), desc.len()));
            }
        }
        if !(VNET_HDR_LEN..=MAX_BUFFER_LEN).contains(&total) {
            self.tx.segs.clear();
        }
        Some(head)
    }

    /// Rate-limit and send the frame in `tx.segs` (or count it malformed when empty).
    fn send_tx_chain(&mut self, head: u16, injected: &mut bool) -> TxOutcome {
        if self.tx.segs.is_empty() {
            self.metrics.tx_malformed_frames.inc();
            self.warn(format_args!("tx head {head}: malformed chain dropped"));
            return TxOutcome::Done;
        }
        let total: u64 = self.tx.segs.iter().map(|&(_, len)| u64::from(len)).sum();
        let frame_bytes = total - VNET_HDR_LEN as u64;
        if !self.tx_rate_limiter.consume(1, TokenType::Ops) {
            self.metrics.tx_rate_limiter_throttled.inc();
            return TxOutcome::Retry;
        }
        if !self.tx_rate_limiter.consume(frame_bytes, TokenType::Bytes) {
            self.tx_rate_limiter.manual_replenish(1, TokenType::Ops);
            self.metrics.tx_rate_limiter_throttled.inc();
            return TxOutcome::Retry;
        }
        if self.intercept(total as usize) {
            *injected = true;
            self.count_tx(frame_bytes);
            return TxOutcome::Done;
        }
        let Some(mem) = self.mem.as_ref() else {
            return TxOutcome::Done;
        };
        let written = loop {
            match self.tap.write_frame(mem, &self.tx.segs) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match written {
            Ok(_) => self.count_tx(frame_bytes),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.tx_rate_limiter.manual_replenish(1, TokenType::Ops);
                self.tx_rate_limiter
                    .manual_replenish(frame_bytes, TokenType::Bytes);
                self.tx.blocked_on_tap = true;
                return TxOutcome::Retry;
            }
            Err(e) => {
                // EINVAL (a bad offload header) or EIO (TAP down): a real NIC drops too.
                self.metrics.tap_write_fails.inc();
                self.metrics.tx_fails.inc();
                self.warn(format_args!("tx head {head}: TAP write: {e}"));
            }
        }
        TxOutcome::Done
    }

    /// Offer the frame to the interceptor, if any; `true` when it consumed the frame.
    fn intercept(&mut self, total: usize) -> bool {
        let (Some(ic), Some(mem)) = (self.interceptor.as_mut(), self.mem.as_ref()) else {
            return false;
        };
        let mut off = 0;
        for &(addr, len) in &self.tx.segs {
            let end = off + len as usize;
            if mem
                .read_slice(&mut self.tx.scratch[off..end], addr)
                .is_err()
            {
                return false;
            }
            off = end;
        }
        ic.intercept(&self.tx.scratch[..total])
    }

    fn count_tx(&self, frame_bytes: u64) {
        self.metrics.tx_packets_count.inc();
        self.metrics.tx_bytes_count.add(frame_bytes);
    }

    fn complete_tx(&mut self, head: u16) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        match add_used(&mut self.state.queues[TX_INDEX], mem, head, 0) {
            // Names no descriptor: already counted and warned about as a malformed chain.
            Ok(()) | Err(QueueError::HeadOutOfRange { .. }) => {}
            Err(e) => squib_logger::error_rate_limited!(
                "net {}: cannot complete tx head {head}: {e}",
                self.iface_id
            ),
        }
    }
}
