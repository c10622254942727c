//! The rx and tx paths: chains in, packets out, a bounded amount of work per event.
//!
//! Tx: each chain is one packet in device-readable descriptors: the header is parsed into a
//! stack struct, checked (`len` within the chain and at most 64 KiB, `dst_cid` the host,
//! `src_cid` the guest) and handed to the muxer with the pieces holding its data. A broken
//! chain is completed unread.
//!
//! Rx: while the muxer owes the guest packets, each rx chain (device-writable, at least a
//! header) gets the next one, written in place (data read straight from the host stream into
//! guest memory). No chain → wait for the rx queue notification.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::Vsock;
use crate::virtio::vsock::packet::{collect_segments, read_header, sub_segments, HDR_LEN};
use crate::virtio::vsock::{HOST_CID, MAX_PKT_DATA, PACKET_BUDGET, RX_INDEX, TX_INDEX};
use crate::virtio::GuestMemoryMmap;

/// The next available chain of `queue`, re-enabling notifications when the ring is empty.
pub(super) fn pop_chain<'a>(
    queue: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Option<DescriptorChain<&'a GuestMemoryMmap>> {
    loop {
        let next = match queue.iter(mem) {
            Ok(mut avail) => avail.next(),
            Err(e) => {
                squib_logger::warn_rate_limited!("vsock: available ring: {e}");
                return None;
            }
        };
        match next {
            Some(chain) => return Some(chain),
            None => match queue.enable_notification(mem) {
                Ok(true) => {}
                _ => return None,
            },
        }
    }
}

impl Vsock {
    /// The rx queue eventfd fired: the guest posted buffers.
    pub fn process_rx_queue_event(&mut self) {
        self.metrics.rx_queue_event_count.inc();
        if self.consume_queue_event(RX_INDEX) {
            self.process_rx();
        }
    }

    /// The tx queue eventfd fired: the guest posted packets.
    pub fn process_tx_queue_event(&mut self) {
        self.metrics.tx_queue_event_count.inc();
        if self.consume_queue_event(TX_INDEX) {
            self.process_tx();
        }
    }

    /// Deliver owed packets into rx chains (at most [`PACKET_BUDGET`]), interrupt once. Held
    /// while a transport reset awaits the guest.
    pub fn process_rx(&mut self) {
        let Some(mem) = self.mem.as_ref().filter(|_| !self.rx_gated) else {
            return;
        };
        let mut budget = PACKET_BUDGET;
        let mut used = false;
        while self.muxer.has_rx() {
            if budget == 0 {
                self.kick_self(RX_INDEX);
                break;
            }
            budget -= 1;
            let queue = &mut self.state.queues[RX_INDEX];
            let Some(chain) = pop_chain(queue, mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match collect_segments(mem, chain, true, HDR_LEN as u64, &mut self.segs) {
                Ok(capacity) => match self.muxer.fill_rx(mem, &self.segs, capacity) {
                    Some(packet) => {
                        self.metrics.rx_packets_count.inc();
                        self.metrics.rx_bytes_count.add(u64::from(packet.data_len));
                        packet.used_len
                    }
                    None => {
                        queue.go_to_previous_position();
                        break;
                    }
                },
                Err(e) => {
                    squib_logger::warn_rate_limited!("vsock: rx head {head}: {e}");
                    0
                }
            };
            if let Err(e) = queue.add_used(mem, head, len) {
                squib_logger::warn_rate_limited!("vsock: cannot complete rx head {head}: {e}");
            }
            used = true;
        }
        if used {
            self.signal_used(RX_INDEX);
        }
    }

    /// Handle posted tx chains (at most [`PACKET_BUDGET`]), interrupt once, then deliver
    /// what they made owed (answers, credit updates).
    pub fn process_tx(&mut self) {
        // Held outside `self` for the drain, so the packet handlers can borrow `self`.
        let Some(mem) = self.mem.take() else {
            return;
        };
        let mut budget = PACKET_BUDGET;
        let mut used = false;
        loop {
            if budget == 0 {
                self.kick_self(TX_INDEX);
                break;
            }
            let Some(chain) = pop_chain(&mut self.state.queues[TX_INDEX], &mem) else {
                break;
            };
            budget -= 1;
            let head = chain.head_index();
            self.tx_packet(&mem, chain);
            if let Err(e) = self.state.queues[TX_INDEX].add_used(&mem, head, 0) {
                squib_logger::warn_rate_limited!("vsock: cannot complete tx head {head}: {e}");
            }
            used = true;
        }
        self.mem = Some(mem);
        if used {
            self.signal_used(TX_INDEX);
        }
        if self.muxer.has_rx() {
            self.process_rx();
        }
    }

    /// Check one tx chain and give its packet to the muxer.
    fn tx_packet(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) {
        let head = chain.head_index();
        let total = match collect_segments(mem, chain, false, HDR_LEN as u64, &mut self.segs) {
            Ok(total) => total,
            Err(e) => {
                squib_logger::warn_rate_limited!("vsock: tx head {head}: {e}");
                return;
            }
        };
        let Some(hdr) = read_header(mem, &self.segs) else {
            squib_logger::warn_rate_limited!("vsock: tx head {head}: unreadable header");
            return;
        };
        if hdr.len > MAX_PKT_DATA || u64::from(hdr.len) > total - HDR_LEN as u64 {
            squib_logger::warn_rate_limited!(
                "vsock: tx head {head}: len {} exceeds the chain's {} data bytes",
                hdr.len,
                total - HDR_LEN as u64
            );
            return;
        }
        if hdr.dst_cid != HOST_CID {
            squib_logger::warn_rate_limited!(
                "vsock: tx head {head}: dst_cid {} is not the host, dropped",
                hdr.dst_cid
            );
            return;
        }
        if hdr.src_cid != self.guest_cid {
            squib_logger::warn_rate_limited!(
                "vsock: tx head {head}: src_cid {} is not the guest's {}, dropped",
                hdr.src_cid,
                self.guest_cid
            );
            return;
        }
        sub_segments(
            &self.segs,
            HDR_LEN as u64,
            u64::from(hdr.len),
            &mut self.data_segs,
        );
        self.metrics.tx_packets_count.inc();
        self.metrics.tx_bytes_count.add(u64::from(hdr.len));
        self.muxer.send_pkt(mem, &hdr, &self.data_segs);
    }
}
