//! Zero heap allocations on the block hot path: after one warm-up drain, a queue drain of
//! reads and writes allocates nothing. Counted per thread by the crate's test
//! allocator ([`crate::alloc_counter`]).

use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{default_block, BlockHarness, DATA, HDR, STATUS};
use crate::alloc_counter::count_allocations;
use crate::virtio::block::{request_type, status};
use crate::virtio::test_utils::F_WRITE;

/// Three descriptors each: five fill the harness's 16-entry descriptor table.
const BATCH: u64 = 5;
const LEN: u32 = 4096;

/// Publish `BATCH` requests, reads and writes alternating, at fixed guest addresses.
fn publish_batch(h: &mut BlockHarness) {
    for i in 0..BATCH {
        let (hdr, status_addr, data) = (HDR + 16 * i, STATUS + i, DATA + u64::from(LEN) * i);
        let (kind, flags) = if i % 2 == 0 {
            (request_type::IN, F_WRITE)
        } else {
            (request_type::OUT, 0)
        };
        h.header(hdr, kind, 8 * i);
        h.mem.write_obj(0xffu8, GuestAddress(status_addr)).unwrap();
        h.vq.add_chain(&[(hdr, 16, 0), (data, LEN, flags), (status_addr, 1, F_WRITE)]);
    }
}

fn assert_batch_ok(h: &BlockHarness, used_before: u16) {
    assert_eq!(h.vq.used_idx(), used_before.wrapping_add(BATCH as u16));
    for i in 0..BATCH {
        assert_eq!(h.status(STATUS + i), status::OK, "request {i}");
    }
}

#[test]
fn warmed_queue_drain_of_reads_and_writes_does_not_allocate() {
    let mut h = BlockHarness::new(default_block(1 << 20, false));
    publish_batch(&mut h);
    h.simulate_queue_event();
    assert_batch_ok(&h, 0);

    for round in 1..4u16 {
        publish_batch(&mut h);
        let ((), allocations) = count_allocations(|| h.simulate_queue_event());
        assert_batch_ok(&h, round * BATCH as u16);
        assert_eq!(allocations, 0, "drain {round} allocated");
    }
}

#[test]
fn the_counted_region_sees_an_allocation() {
    let mut h = BlockHarness::new(default_block(1 << 20, false));
    publish_batch(&mut h);
    h.simulate_queue_event();
    publish_batch(&mut h);
    let ((), allocations) = count_allocations(|| {
        h.simulate_queue_event();
        std::hint::black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(allocations, 1);
}
