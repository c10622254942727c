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
