//! Bounded work per event against a driver thread that refills the ring while the device
//! runs (a guest vCPU racing the event loop): one queue event serves at most the queue size
//! of chains, and a drain that stops on its budget re-arms the queue eventfd for the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::GuestAddress;

use super::tests::harness::{default_block, BlockHarness, HDR};
use crate::virtio::test_utils::VirtQueue;
use crate::virtio::VirtioDevice;

/// The harness's queue size: one event's budget of chains.
const RING: u16 = 16;
/// Chains the driver publishes in all.
const TOTAL: u16 = 2_000;

#[test]
fn queue_event_serves_at_most_the_ring_while_a_driver_refills_it() {
    let h = BlockHarness::new(default_block(4096, false));
    // Every descriptor is a header-only chain: malformed, completed at once with no I/O.
    for i in 0..RING {
        h.vq.set_desc(i, HDR, 16, 0, 0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (desc, _, _) = h.vq.addresses();
    let mem = h.mem;
    let driver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let vq = VirtQueue::new(mem, GuestAddress(desc), RING);
            for n in 0..TOTAL {
                // Keep the ring full: publish as soon as the device used an entry.
                while n.wrapping_sub(vq.used_idx()) >= RING {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                vq.publish(n % RING);
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut events, mut capped) = (0u32, 0u32);
    while h.vq.used_idx() != TOTAL && Instant::now() < deadline {
        let before = h.vq.used_idx();
        let mut block = h.block.lock().unwrap();
        block.process_queue_event();
        let served = h.vq.used_idx().wrapping_sub(before);
        let rearmed = block.queue_events()[0].read().is_ok();
        drop(block);
        events += 1;
        assert!(served <= RING, "one event served {served} chains");
        if served == RING {
            capped += 1;
            assert!(rearmed, "a drain stopped by its budget must re-kick itself");
        }
    }
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    assert_eq!(h.vq.used_idx(), TOTAL, "{events} events, {capped} capped");
}

mod bytes {
    //! One request moves at most `MAX_REQUEST_BYTES` (a longer one is IOERR before any I/O),
    //! and one queue event at most `MAX_DRAIN_BYTES` plus one request.

    use vm_memory::{Bytes, GuestAddress};

    use super::super::tests::harness::{block_with, BlockHarness};
    use crate::virtio::block::{
        features as blk, request_type, status, MAX_DRAIN_BYTES, MAX_REQUEST_BYTES, SEG_MAX,
        SIZE_MAX,
    };
    use crate::virtio::test_utils::F_WRITE;
    use crate::virtio::VirtioDevice;

    const MIB: u32 = 1 << 20;

    /// A write of `segs` descriptors of `seg_len` bytes, all over the same guest buffer (the
    /// device only reads it), to sector 0; returns the status address.
    fn big_write(h: &mut BlockHarness, segs: u32, seg_len: u32, data: u64) -> u64 {
        let (hdr, status_addr, _) = h.slots();
        h.header(hdr, request_type::OUT, 0);
        h.mem.write_obj(0xffu8, GuestAddress(status_addr)).unwrap();
        let mut chain = vec![(hdr, 16, 0)];
        chain.extend((0..segs).map(|_| (data, seg_len, 0)));
        chain.push((status_addr, 1, F_WRITE));
        h.vq.add_chain(&chain);
        status_addr
    }

    #[test]
    fn size_max_is_offered_and_bounds_a_request() {
        let block = block_with(4096, |_| {}).block;
        assert_ne!(block.avail_features() & (1 << blk::SIZE_MAX), 0);
        let mut size_max = [0u8; 4];
        block.read_config(8, &mut size_max);
        assert_eq!(u32::from_le_bytes(size_max), SIZE_MAX);
        assert_eq!(u64::from(SEG_MAX) * u64::from(SIZE_MAX), MAX_REQUEST_BYTES);
    }

    #[test]
    fn a_request_over_the_limit_is_ioerr_without_io() {
        let mut h = BlockHarness::new(block_with(16 << 20, |_| {}));
        h.mem
            .write_slice(&vec![0x5a; 2 * MIB as usize + 512], GuestAddress(0x10_0000))
            .unwrap();
        let at_limit = big_write(&mut h, 4, 2 * MIB, 0x10_0000);
        let over = big_write(&mut h, 4, 2 * MIB + 512, 0x10_0000);
        h.simulate_queue_event();
        assert_eq!(h.status(at_limit), status::OK);
        assert_eq!(h.status(over), status::IOERR);
        let m = h.block.lock().unwrap().metrics();
        assert_eq!(
            m.write_bytes.count(),
            MAX_REQUEST_BYTES,
            "only the first was written"
        );
        assert_eq!(m.invalid_reqs_count.count(), 1);
        let file = std::fs::read(h.file.path()).unwrap();
        // The refused write would have reached 2 KiB past the first one's end.
        let end = MAX_REQUEST_BYTES as usize;
        let untouched = super::super::tests::harness::pattern(end as u64, 2048);
        assert!(
            file[end..end + 2048] == untouched[..],
            "refused write hit the file"
        );
    }

    #[test]
    fn one_queue_event_moves_a_bounded_number_of_bytes() {
        let mut h = BlockHarness::new(block_with(4 << 20, |_| {}));
        // Five 4 MiB writes (three descriptors each: the 16-entry table holds five).
        let statuses: Vec<u64> = (0..5).map(|_| big_write(&mut h, 1, 4 * MIB, 0)).collect();
        let mut moved = Vec::new();
        let mut events = 0;
        while h.vq.used_idx() < 5 && events < 10 {
            let before = h.block.lock().unwrap().metrics().write_bytes.count();
            h.simulate_queue_event();
            let block = h.block.lock().unwrap();
            moved.push(block.metrics().write_bytes.count() - before);
            let rearmed = block.queue_events()[0].read().is_ok();
            if h.vq.used_idx() < 5 {
                assert!(rearmed, "a drain stopped on bytes must re-kick itself");
            }
            drop(block);
            events += 1;
        }
        assert!(statuses.iter().all(|&s| h.status(s) == status::OK));
        assert!(
            moved
                .iter()
                .all(|&b| b < MAX_DRAIN_BYTES + MAX_REQUEST_BYTES),
            "{moved:?}"
        );
        assert_eq!(moved, [16 << 20, 4 << 20]);
    }
}
