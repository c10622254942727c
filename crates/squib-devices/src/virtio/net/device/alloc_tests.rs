//! Zero heap allocations on the net hot paths: after one warm-up drain, a tx drain (guest →
//! TAP) and an rx drain (TAP → guest, with and without MRG_RXBUF) allocate nothing
//!. The TAP is the harness's datagram-socket double; counted per thread by
//! the crate's test allocator ([`crate::alloc_counter`]).

use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{frame, NetHarness, RX_BUF, TX_BUF};
use crate::alloc_counter::count_allocations;
use crate::virtio::net::{features as net, VNET_HDR_LEN};
use crate::virtio::test_utils::F_WRITE;

const FRAMES: u64 = 4;
const PAYLOAD: usize = 1000;

/// Post `FRAMES` tx chains (header and payload split in two pieces) at fixed addresses.
fn post_tx_batch(h: &mut NetHarness, bytes: &[u8]) {
    for i in 0..FRAMES {
        let addr = TX_BUF + i * 0x1_0000;
        h.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        let hdr = VNET_HDR_LEN as u32;
        let rest = bytes.len() as u32 - hdr;
        h.txq
            .add_chain(&[(addr, hdr, 0), (addr + u64::from(hdr), rest, 0)]);
    }
}

/// Post `count` rx chains of one `len`-byte writable buffer each; buffer `n` (counting
/// from the first post) sits at a fixed slot so rounds reuse the same guest memory.
fn post_rx_batch(h: &mut NetHarness, posted: &mut u64, count: u64, len: u32) {
    for _ in 0..count {
        let slot = *posted % 16;
        *posted += 1;
        h.rxq
            .add_chain(&[(RX_BUF + slot * u64::from(len), len, F_WRITE)]);
    }
}

fn drain_host(h: &NetHarness, buf: &mut [u8]) -> u64 {
    let mut n = 0;
    while h.host.recv(buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn warmed_tx_drain_does_not_allocate() {
    let mut h = NetHarness::new(0);
    let bytes = frame(PAYLOAD, 1);
    let mut host_buf = vec![0u8; 70_000];
    post_tx_batch(&mut h, &bytes);
    h.net.process_tx_queue_event();
    assert_eq!(drain_host(&h, &mut host_buf), FRAMES);

    for round in 1..4u16 {
        post_tx_batch(&mut h, &bytes);
        let ((), allocations) = count_allocations(|| h.net.process_tx_queue_event());
        assert_eq!(h.txq.used_idx(), (round + 1) * FRAMES as u16);
        assert_eq!(drain_host(&h, &mut host_buf), FRAMES);
        assert_eq!(allocations, 0, "tx drain {round} allocated");
    }
}

/// Deliver `FRAMES` frames per round; the first round posts `first_post` buffers (the
/// mergeable path holds a largest frame's worth before reading), later ones replace the
/// `FRAMES` used.
fn assert_warmed_rx_drain_does_not_allocate(acked: u64, buf_len: u32, first_post: u64) {
    let mut h = NetHarness::new(acked);
    let bytes = frame(PAYLOAD, 2);
    let mut posted = 0;
    for round in 0..4u16 {
        let count = if round == 0 { first_post } else { FRAMES };
        post_rx_batch(&mut h, &mut posted, count, buf_len);
        for _ in 0..FRAMES {
            h.host.send(&bytes).unwrap();
        }
        let ((), allocations) = count_allocations(|| h.net.process_tap_rx_event());
        let delivered = (round + 1) * FRAMES as u16;
        assert_eq!(h.rxq.used_idx(), delivered, "round {round}");
        assert_eq!(h.rxq.used(delivered - 1).1 as usize, bytes.len());
        if round > 0 {
            assert_eq!(allocations, 0, "rx drain {round} allocated");
        }
    }
}

#[test]
fn warmed_rx_drain_does_not_allocate() {
    assert_warmed_rx_drain_does_not_allocate(0, 2048, FRAMES);
}

#[test]
fn warmed_mergeable_rx_drain_reading_straight_into_the_guest_does_not_allocate() {
    // Enough buffers held for a largest frame: the TAP is read with one readv into them.
    assert_warmed_rx_drain_does_not_allocate(1 << net::MRG_RXBUF, 8192, 12);
}

#[test]
fn the_counted_region_sees_an_allocation() {
    let mut h = NetHarness::new(0);
    let bytes = frame(PAYLOAD, 3);
    post_tx_batch(&mut h, &bytes);
    h.net.process_tx_queue_event();
    post_tx_batch(&mut h, &bytes);
    let ((), allocations) = count_allocations(|| {
        h.net.process_tx_queue_event();
        std::hint::black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(allocations, 1);
}
