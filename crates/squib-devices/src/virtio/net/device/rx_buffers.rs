//! The rx chains a [`Net`] holds for incoming frames.
//!
//! Chains are popped from the rx ring and held (their writable pieces in `rx.segs`) until a
//! frame fills them, so nothing is ever rewound. [`Net::publish_frame`] completes the shortest
//! prefix of held chains that covers a frame — several with MRG_RXBUF, `num_buffers` telling
//! the driver how many — and keeps the rest for the next frame. Malformed chains (a
//! device-readable piece, a piece outside guest memory, no capacity) complete empty at once;
//! a head outside the queue names no descriptor and is skipped (never given to `add_used`).

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::{Net, RxChain};
use crate::virtio::net::{MAX_BUFFER_LEN, QUEUE_SIZE, RX_INDEX};
use crate::virtio::queue::add_used;
use crate::virtio::GuestMemoryMmap;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Result of popping one rx chain.
pub(super) enum Collect {
    /// Its buffers are held.
    Held,
    /// The rx ring is empty (notifications re-armed).
    Empty,
    /// This drain popped its share of chains (`rx.pop_budget`); the drain re-kicks itself.
    OutOfBudget,
}

impl Net {
    /// Pop one rx chain and hold its writable buffers; malformed chains complete empty.
    /// Every pop (and every re-check after re-arming notifications) spends `rx.pop_budget`.
    pub(super) fn collect_chain(&mut self) -> Collect {
        let Some(mem) = self.mem.as_ref() else {
            return Collect::Empty;
        };
        let queue = &mut self.state.queues[RX_INDEX];
        loop {
            if self.rx.pop_budget == 0 {
                return Collect::OutOfBudget;
            }
            self.rx.pop_budget -= 1;
            let chain = match queue.iter(mem) {
                Ok(mut avail) => avail.next(),
                Err(e) => {
                    self.metrics.rx_fails.inc();
                    squib_logger::log_rate_limited!(
                        log::Level::Debug,
                        "net {}: rx available ring: {e}",
                        self.iface_id
                    );
                    return Collect::Empty;
                }
            };
            let Some(chain) = chain else {
                match queue.enable_notification(mem) {
                    Ok(true) => continue,
                    _ => return Collect::Empty,
                }
            };
            let head = chain.head_index();
            if head >= queue.size() {
                // Names no descriptor: nothing to hold or complete.
                self.metrics.rx_fails.inc();
                squib_logger::warn_rate_limited!(
                    "net {}: rx head {head} is outside the queue of {}",
                    self.iface_id,
                    queue.size()
                );
                continue;
            }
            let start = self.rx.segs.len();
            let mut capacity = 0u64;
            let mut valid = true;
            for desc in chain {
                let len = desc.len();
                if !desc.is_write_only()
                    || !mem.check_range(desc.addr(), len as usize, Permissions::Write)
                {
                    valid = false;
                    break;
                }
                if len > 0 {
                    self.rx.segs.push((desc.addr(), len));
                    capacity += u64::from(len);
                }
            }
            if valid && capacity > 0 && capacity <= u64::from(u32::MAX) {
                let end_seg = self.rx.segs.len();
                self.rx.chains.push(RxChain {
                    head,
                    end_seg,
                    capacity,
                });
                self.rx.capacity += capacity;
                return Collect::Held;
            }
            self.rx.segs.truncate(start);
            self.metrics.rx_fails.inc();
            if let Err(e) = add_used(queue, mem, head, 0) {
                squib_logger::warn_rate_limited!(
                    "net {}: cannot complete malformed rx head {head}: {e}",
                    self.iface_id
                );
            }
            squib_logger::warn_rate_limited!(
                "net {}: rx head {head}: malformed chain",
                self.iface_id
            );
        }
    }

    /// Hold chains until a largest frame fits; the number of pieces covering it, if it does
    /// within one `readv` (at most the queue size of pieces).
    pub(super) fn reserve_for_direct_read(&mut self) -> Option<usize> {
        while self.rx.capacity < MAX_BUFFER_LEN as u64 {
            if self.holds_whole_ring() {
                return None;
            }
            if !matches!(self.collect_chain(), Collect::Held) {
                return None;
            }
        }
        let mut covered = 0u64;
        let pieces = self.rx.segs.iter().position(|&(_, len)| {
            covered += u64::from(len);
            covered >= MAX_BUFFER_LEN as u64
        })? + 1;
        (pieces <= usize::from(QUEUE_SIZE)).then_some(pieces)
    }

    /// Whether every chain of the rx ring (its negotiated size) is held.
    pub(super) fn holds_whole_ring(&self) -> bool {
        self.rx.chains.len() >= usize::from(self.state.queues[RX_INDEX].size())
    }

    /// Copy `rx.buf[..len]` into the held pieces (capacity already covers it).
    pub(super) fn copy_buffered_frame(&mut self, len: usize) {
        if let Some(mem) = self.mem.as_ref() {
            if !write_at(mem, &self.rx.segs, 0, &self.rx.buf[..len]) {
                squib_logger::error_rate_limited!(
                    "net {}: rx copy into guest memory failed",
                    self.iface_id
                );
            }
        }
    }

    /// Complete the held chains that carry a `len`-byte frame already in their buffers.
    pub(super) fn publish_frame(&mut self, len: usize) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        let mut left = len as u64;
        let mut count = 0;
        for chain in &self.rx.chains {
            if left == 0 {
                break;
            }
            left -= chain.capacity.min(left);
            count += 1;
        }
        let num_buffers = (count as u16).to_le_bytes();
        if !write_at(mem, &self.rx.segs, NUM_BUFFERS_OFFSET, &num_buffers) {
            squib_logger::error_rate_limited!("net {}: cannot write num_buffers", self.iface_id);
        }
        let mut left = len as u64;
        for chain in &self.rx.chains[..count] {
            let used = chain.capacity.min(left);
            left -= used;
            let queue = &mut self.state.queues[RX_INDEX];
            if let Err(e) = add_used(queue, mem, chain.head, used as u32) {
                let head = chain.head;
                squib_logger::error_rate_limited!(
                    "net {}: cannot complete rx head {head}: {e}",
                    self.iface_id
                );
            }
        }
        self.drop_held_prefix(count);
    }

    /// Give every held chain back to the guest empty (a frame could not be placed).
    pub(super) fn release_held_chains(&mut self) {
        if let Some(mem) = self.mem.as_ref() {
            for chain in &self.rx.chains {
                let queue = &mut self.state.queues[RX_INDEX];
                if let Err(e) = add_used(queue, mem, chain.head, 0) {
                    let head = chain.head;
                    squib_logger::error_rate_limited!(
                        "net {}: cannot release rx head {head}: {e}",
                        self.iface_id
                    );
                }
            }
        }
        self.drop_held_prefix(self.rx.chains.len());
    }

    /// Forget the first `count` held chains (completed) and their pieces.
    fn drop_held_prefix(&mut self, count: usize) {
        let Some(last) = count.checked_sub(1).map(|i| self.rx.chains[i]) else {
            return;
        };
        let freed: u64 = self.rx.chains[..count].iter().map(|c| c.capacity).sum();
        self.rx.segs.drain(..last.end_seg);
        self.rx.chains.drain(..count);
        for chain in &mut self.rx.chains {
            chain.end_seg -= last.end_seg;
        }
        self.rx.capacity -= freed;
    }
}

/// Write `data` at byte `offset` of the frame laid across `segs`; `false` if it did not fit
/// or guest memory refused a write.
fn write_at(
    mem: &GuestMemoryMmap,
    segs: &[(GuestAddress, u32)],
    offset: usize,
    data: &[u8],
) -> bool {
    let mut skip = offset;
    let mut data = data;
    for &(addr, len) in segs {
        if data.is_empty() {
            break;
        }
        let len = len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(data.len());
        let Some(at) = addr.0.checked_add(skip as u64) else {
            return false;
        };
        if mem.write_slice(&data[..n], GuestAddress(at)).is_err() {
            return false;
        }
        data = &data[n..];
        skip = 0;
    }
    data.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::single_region_mem;

    #[test]
    fn write_at_spans_pieces_and_skips_offset() {
        let mem = single_region_mem(0x10000);
        let segs = [(GuestAddress(0x100), 11), (GuestAddress(0x800), 4)];
        assert!(write_at(&mem, &segs, 10, &[0xaa, 0xbb]));
        let mut a = [0u8; 1];
        let mut b = [0u8; 1];
        mem.read_slice(&mut a, GuestAddress(0x10a)).unwrap();
        mem.read_slice(&mut b, GuestAddress(0x800)).unwrap();
        assert_eq!((a[0], b[0]), (0xaa, 0xbb));
        assert!(!write_at(&mem, &segs, 14, &[1, 2]));
    }
}
