//! Entropy device tests: a hand-driven virtqueue in real guest memory, the rate limiter's
//! buckets and timer, the drain budget, and hostile-guest chains.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::device::DRAIN_MAX_BYTES;
use super::*;
use crate::rate_limiter::{RateLimiter, TokenBucket};
use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_NEXT, F_WRITE};
use crate::virtio::{device_type, features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

/// Guest RAM size of the harness.
const MEM_SIZE: usize = 0x40_0000;
/// Data buffers, 64 KiB apart.
const DATA: u64 = 0x10_0000;
/// Queue size of the harness (room for more chains than one drain's byte budget).
const HARNESS_QUEUE_SIZE: u16 = 32;
/// Indirect descriptor tables (room for 4096 descriptors before `DATA`).
const TABLE: u64 = 0x1_0000;
/// What the harness writes in buffers before the device sees them.
const SENTINEL: u8 = 0xa5;

/// An activated entropy device with a driver-side queue.
struct Harness {
    mem: &'static GuestMemoryMmap,
    vq: VirtQueue<'static>,
    dev: Entropy,
    irq: Arc<VirtioInterrupt>,
    requests: u64,
}

impl Harness {
    fn new(rate_limiter: RateLimiter) -> Self {
        // Leaked so the queue builder can borrow it for the harness's whole life.
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
        let vq = VirtQueue::new(mem, GuestAddress(0), HARNESS_QUEUE_SIZE);
        let mut dev = Entropy::new(rate_limiter).unwrap();
        vq.configure(&mut dev.queues_mut()[RNG_QUEUE]);
        dev.set_acked_features(1 << features::VERSION_1);
        let irq = Arc::new(VirtioInterrupt::new().unwrap());
        dev.activate(mem.clone(), irq.clone()).unwrap();
        Self {
            mem,
            vq,
            dev,
            irq,
            requests: 0,
        }
    }

    fn unlimited() -> Self {
        Self::new(RateLimiter::unlimited().unwrap())
    }

    /// The next free 64 KiB data slot, filled with [`SENTINEL`].
    fn slot(&mut self) -> u64 {
        let addr = DATA + self.requests * 0x1_0000;
        self.requests += 1;
        self.mem
            .write_slice(&[SENTINEL; 0x1_0000], GuestAddress(addr))
            .unwrap();
        addr
    }

    /// Publish a request of one writable buffer of `len` bytes; returns its address.
    fn request(&mut self, len: u32) -> u64 {
        let addr = self.slot();
        self.vq.add_chain(&[(addr, len, F_WRITE)]);
        addr
    }

    /// Kick the queue and let the device drain it.
    fn simulate_queue_event(&mut self) {
        self.dev.queue_events()[RNG_QUEUE].write(1).unwrap();
        self.dev.process_queue_event();
    }

    fn data(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn metrics(&self) -> Arc<EntropyMetrics> {
        self.dev.metrics()
    }
}

/// Whether `bytes` look random: not all the sentinel (2^-8n odds for a working generator).
fn filled(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b != SENTINEL)
}

#[test]
fn offers_version_1_one_queue_of_256_and_no_config() {
    let dev = Entropy::new(RateLimiter::unlimited().unwrap()).unwrap();
    assert_eq!(dev.device_type(), device_type::RNG);
    assert_eq!(dev.device_type(), 4);
    assert_eq!(dev.avail_features(), 1 << features::VERSION_1);
    assert_eq!(dev.queues().len(), 1);
    assert_eq!(dev.queues()[0].max_size(), 256);
    assert!(!dev.is_activated());
    let mut cfg = [0xffu8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg, [0; 8]);
}

#[test]
fn fills_buffers_with_bytes_that_differ_between_requests() {
    let mut h = Harness::unlimited();
    let a = h.request(64);
    let b = h.request(64);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 2);
    assert_eq!(h.vq.used(0), (0, 64));
    assert_eq!(h.vq.used(1), (1, 64));
    let (first, second) = (h.data(a, 64), h.data(b, 64));
    assert!(filled(&first) && filled(&second));
    assert_ne!(first, second);
    assert_eq!(
        h.data(a + 64, 16),
        [SENTINEL; 16],
        "nothing past the buffer"
    );
    assert_eq!(h.irq.status(), crate::virtio::INTERRUPT_VRING);
    let m = h.metrics();
    assert_eq!(m.entropy_bytes.count(), 128);
    assert_eq!(m.entropy_event_count.count(), 2);
    assert_eq!(m.entropy_event_fails.count(), 0);
}

#[test]
fn chain_of_buffers_is_filled_in_order() {
    let mut h = Harness::unlimited();
    let a = h.slot();
    let b = h.slot();
    h.vq.add_chain(&[(a, 10, F_WRITE), (b, 0, F_WRITE), (b + 100, 20, F_WRITE)]);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0).1, 30);
    assert!(filled(&h.data(a, 10)) && filled(&h.data(b + 100, 20)));
    assert_eq!(h.data(b, 100), vec![SENTINEL; 100]);
}

#[test]
fn request_is_capped_at_64_kib() {
    let mut h = Harness::unlimited();
    let big = h.slot();
    h.slot(); // the next 64 KiB, where the cap must stop
    h.vq.add_chain(&[(big, MAX_ENTROPY_BYTES + 4096, F_WRITE)]);
    let (a, b) = (h.slot(), h.slot());
    h.vq.add_chain(&[(a, 40_000, F_WRITE), (b, 40_000, F_WRITE)]);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0).1, MAX_ENTROPY_BYTES);
    assert!(filled(&h.data(big + 0xff00, 0x100)));
    assert_eq!(h.data(big + 0x1_0000, 4096), vec![SENTINEL; 4096]);
    assert_eq!(h.vq.used(1).1, MAX_ENTROPY_BYTES);
    let rest = MAX_ENTROPY_BYTES as usize - 40_000;
    assert!(filled(&h.data(b + rest as u64 - 64, 64)));
    assert_eq!(h.data(b + rest as u64, 1000), vec![SENTINEL; 1000]);
    assert_eq!(
        h.metrics().entropy_bytes.count(),
        2 * u64::from(MAX_ENTROPY_BYTES)
    );
}

#[test]
fn empty_request_completes_with_zero() {
    let mut h = Harness::unlimited();
    let a = h.request(0);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0), (0, 0));
    assert_eq!(h.data(a, 4), [SENTINEL; 4]);
    assert_eq!(h.metrics().entropy_event_fails.count(), 0);
}

#[test]
fn host_rng_failure_completes_with_zero_and_is_counted() {
    let mut h = Harness::unlimited();
    h.dev
        .set_host_rng(|_| Err(std::io::Error::from_raw_os_error(libc::EIO)));
    let a = h.request(32);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0), (0, 0));
    assert_eq!(h.data(a, 32), [SENTINEL; 32]);
    let m = h.metrics();
    assert_eq!(m.host_rng_fails.count(), 1);
    assert_eq!(m.entropy_bytes.count(), 0);
}

/// Publish a good 16-byte request after whatever the test queued, drain, and check it was
/// served in used slot `slot`.
fn assert_next_request_served(h: &mut Harness, slot: u16) {
    let a = h.request(16);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(slot).1, 16);
    assert!(filled(&h.data(a, 16)));
}

#[test]
fn read_only_buffer_completes_with_zero_and_next_is_served() {
    let mut h = Harness::unlimited();
    let a = h.slot();
    h.vq.add_chain(&[(a, 64, 0)]);
    h.vq.add_chain(&[(a, 8, F_WRITE), (a + 8, 8, 0)]);
    assert_next_request_served(&mut h, 2);
    assert_eq!((h.vq.used(0).1, h.vq.used(1).1), (0, 0));
    assert_eq!(
        h.data(a, 16),
        [SENTINEL; 16],
        "nothing written for a bad chain"
    );
    assert_eq!(h.metrics().entropy_event_fails.count(), 2);
}

#[test]
fn buffer_outside_guest_memory_completes_with_zero() {
    let mut h = Harness::unlimited();
    h.vq.add_chain(&[(MEM_SIZE as u64 - 8, 16, F_WRITE)]);
    h.vq.add_chain(&[(u64::MAX - 4, 16, F_WRITE)]);
    assert_next_request_served(&mut h, 2);
    assert_eq!((h.vq.used(0).1, h.vq.used(1).1), (0, 0));
}

#[test]
fn huge_lengths_are_capped_not_allocated() {
    let mut h = Harness::unlimited();
    // Overlapping descriptors: 32 x 1 MiB claimed over the same memory.
    let chain: Vec<_> = (0..HARNESS_QUEUE_SIZE)
        .map(|_| (DATA, 1 << 20, F_WRITE))
        .collect();
    let head = h.vq.add_chain(&chain);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0), (u32::from(head), MAX_ENTROPY_BYTES));
}

#[test]
fn descriptor_loop_completes_with_zero_and_next_is_served() {
    let mut h = Harness::unlimited();
    let a = h.slot();
    h.vq.set_desc(30, a, 8, F_NEXT | F_WRITE, 31);
    h.vq.set_desc(31, a + 8, 8, F_NEXT | F_WRITE, 30);
    h.vq.publish(30);
    assert_next_request_served(&mut h, 1);
    assert_eq!(h.vq.used(0), (30, 0));
    assert_eq!(h.data(a, 16), [SENTINEL; 16]);
}

#[test]
fn indirect_chains_are_served_up_to_the_descriptor_cap() {
    let mut h = Harness::unlimited();
    let a = h.slot();
    h.vq.add_indirect_chain(TABLE, &[(a, 8, F_WRITE), (a + 8, 8, F_WRITE)]);
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0).1, 16);
    assert!(filled(&h.data(a, 16)));
    let b = h.slot();
    let too_many: Vec<_> = (0..=request::MAX_DESCRIPTORS as u64)
        .map(|i| (b + i, 1, F_WRITE))
        .collect();
    h.vq.add_indirect_chain(TABLE, &too_many);
    assert_next_request_served(&mut h, 2);
    assert_eq!(h.vq.used(1).1, 0);
    assert_eq!(h.data(b, 8), [SENTINEL; 8]);
}

#[test]
fn head_out_of_range_is_skipped_and_next_is_served() {
    let mut h = Harness::unlimited();
    h.vq.publish(HARNESS_QUEUE_SIZE + 5);
    assert_next_request_served(&mut h, 0);
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(h.metrics().entropy_event_fails.count(), 1);
}

#[test]
fn used_ring_outside_guest_memory_is_counted_not_fatal() {
    let mut h = Harness::unlimited();
    h.dev.queues_mut()[RNG_QUEUE].set_used_ring_address(Some(MEM_SIZE as u32), Some(0));
    h.request(16);
    h.simulate_queue_event();
    assert_eq!(h.metrics().entropy_event_fails.count(), 1);
    assert_eq!(h.irq.status(), 0);
}

#[test]
fn avail_index_far_ahead_stops_the_drain_without_spinning() {
    let mut h = Harness::unlimited();
    let a = h.request(16);
    h.vq.set_avail_idx(100);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 0);
    assert_eq!(h.metrics().entropy_event_fails.count(), 1);
    h.vq.set_avail_idx(1); // the driver recovers
    h.simulate_queue_event();
    assert_eq!(h.vq.used(0).1, 16);
    assert!(filled(&h.data(a, 16)));
}

#[test]
fn ops_bucket_throttles_then_resumes_on_timer() {
    let limiter = RateLimiter::new(None, TokenBucket::new(1, 0, 30)).unwrap();
    let mut h = Harness::new(limiter);
    h.request(16);
    let second = h.request(16);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 1);
    assert!(h.dev.rate_limiter().is_blocked());
    let m = h.metrics();
    assert_eq!(m.entropy_rate_limiter_throttled.count(), 1);
    // A kick while throttled waits for the timer.
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(m.rate_limiter_event_count.count(), 1);
    assert_eq!(h.data(second, 16), [SENTINEL; 16]);
    h.dev.process_rate_limiter_event(); // blocks until the timer fires
    assert_eq!(h.vq.used_idx(), 2);
    assert!(filled(&h.data(second, 16)));
    assert_eq!(m.rate_limiter_event_count.count(), 2);
    assert_eq!(m.entropy_event_count.count(), 2);
}

#[test]
fn bytes_bucket_throttles_then_resumes_on_timer() {
    let limiter = RateLimiter::new(TokenBucket::new(100, 0, 30), None).unwrap();
    let mut h = Harness::new(limiter);
    h.request(64);
    h.request(64); // 36 bytes left: held back
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(h.metrics().entropy_rate_limiter_throttled.count(), 1);
    h.dev.process_rate_limiter_event();
    assert_eq!(h.vq.used_idx(), 2);
    assert_eq!(h.vq.used(1).1, 64);
}

#[test]
fn limiter_charges_the_requested_bytes_not_the_capped_ones() {
    // 128 KiB bucket: a 100 KiB request is served 64 KiB but costs 100 KiB, so a following
    // 40 KiB request (which would fit after a 64 KiB charge) is throttled.
    let limiter = RateLimiter::new(TokenBucket::new(128 << 10, 0, 10_000), None).unwrap();
    let mut h = Harness::new(limiter);
    let a = h.slot();
    h.slot();
    h.vq.add_chain(&[(a, 100 << 10, F_WRITE)]);
    h.request(40 << 10);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(h.vq.used(0).1, MAX_ENTROPY_BYTES);
    assert!(h.dev.rate_limiter().is_blocked());
}

#[test]
fn drain_stops_at_its_byte_budget_and_rekicks_itself() {
    let mut h = Harness::unlimited();
    let per_drain = (DRAIN_MAX_BYTES / u64::from(MAX_ENTROPY_BYTES)) as u16;
    for _ in 0..=per_drain {
        h.request(MAX_ENTROPY_BYTES);
    }
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), per_drain);
    // The device kicked its own queue eventfd: the event loop comes back for the rest.
    assert_eq!(h.dev.queue_events()[RNG_QUEUE].read().unwrap(), 1);
    h.dev.process_queue_event();
    assert_eq!(h.vq.used_idx(), per_drain + 1);
    assert!(
        h.dev.queue_events()[RNG_QUEUE].read().is_err(),
        "no re-kick when drained"
    );
}

#[test]
fn reset_deactivates_and_ignores_kicks() {
    let mut h = Harness::unlimited();
    h.dev.reset();
    assert!(!h.dev.is_activated());
    h.request(16);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 0);
}

#[test]
fn activate_twice_or_without_a_ready_queue_fails() {
    let mut h = Harness::unlimited();
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    assert!(h.dev.activate(h.mem.clone(), irq.clone()).is_err());
    let mut fresh = Entropy::new(RateLimiter::unlimited().unwrap()).unwrap();
    assert!(fresh.activate(h.mem.clone(), irq).is_err());
    assert_eq!(h.metrics().activate_fails.count(), 1);
    assert_eq!(fresh.metrics().activate_fails.count(), 1);
}

#[test]
fn event_manager_drives_queue_and_timer() {
    use event_manager::{EventManager, SubscriberOps};

    let limiter = RateLimiter::new(None, TokenBucket::new(1, 0, 20)).unwrap();
    let Harness { mut vq, dev, .. } = Harness::new(limiter);
    let dev = Arc::new(Mutex::new(dev));
    let mut manager: EventManager<Arc<Mutex<Entropy>>> = EventManager::new().unwrap();
    manager.add_subscriber(dev.clone());
    vq.add_chain(&[(DATA, 16, F_WRITE)]);
    vq.add_chain(&[(DATA + 16, 16, F_WRITE)]);
    dev.lock().unwrap().queue_events()[RNG_QUEUE]
        .write(1)
        .unwrap();
    manager.run_with_timeout(1000).unwrap();
    assert_eq!(vq.used_idx(), 1, "the second request waits for the timer");
    for _ in 0..10 {
        if vq.used_idx() == 2 {
            break;
        }
        manager.run_with_timeout(1000).unwrap();
    }
    assert_eq!(vq.used_idx(), 2);
    let m = dev.lock().unwrap().metrics();
    assert_eq!(m.rate_limiter_event_count.count(), 1);
}

#[test]
fn a_restored_device_serves_the_next_request_where_the_saved_one_stopped() {
    let mut h = Harness::unlimited();
    h.request(16);
    h.simulate_queue_event();
    // Published but not served before the snapshot: the restore's kick serves it.
    let pending = h.request(8);
    let state = h.dev.save();
    assert!(state.virtio.activated);
    assert_eq!(state.virtio.acked_features, 1 << features::VERSION_1);
    let q = state.virtio.queues[RNG_QUEUE];
    assert_eq!(
        (q.next_avail, q.next_used, q.size),
        (1, 1, HARNESS_QUEUE_SIZE)
    );
    let bytes = bincode::serialize(&state).unwrap();
    let state: EntropyState = bincode::deserialize(&bytes).unwrap();

    let mut restored = Entropy::new(RateLimiter::unlimited().unwrap()).unwrap();
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    restored.restore(&state, h.mem, &irq).unwrap();
    assert!(restored.is_activated());
    assert_eq!(restored.save(), state);
    assert_eq!(
        restored.queue_events()[RNG_QUEUE].read().unwrap(),
        1,
        "the restore kicks"
    );
    h.dev = restored;
    h.dev.process_queue_event();
    assert_eq!(
        h.vq.used_idx(),
        2,
        "the used ring continues from the snapshot"
    );
    assert_eq!(h.vq.used(1).1, 8);
    assert!(filled(&h.data(pending, 8)));
    assert_eq!(
        irq.eventfd().read().unwrap(),
        1,
        "the restored line is used"
    );
    let next = h.request(16);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 3);
    assert!(filled(&h.data(next, 16)));
}

#[test]
fn restore_refuses_a_bad_state_and_leaves_the_device_as_built() {
    let mut h = Harness::unlimited();
    h.request(16);
    h.simulate_queue_event();
    let good = h.dev.save();
    let mut bad = good.clone();
    bad.virtio.queues[RNG_QUEUE].max_size = 1024;
    let mut fresh = Entropy::new(RateLimiter::unlimited().unwrap()).unwrap();
    let err = fresh.restore(&bad, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue 0: the device's maximum size is 256, the snapshot's 1024"
    );
    let mut unoffered = good.clone();
    unoffered.virtio.acked_features |= 1 << features::RING_EVENT_IDX;
    assert!(fresh.restore(&unoffered, h.mem, &h.irq).is_err());
    assert!(!fresh.is_activated());
    assert_eq!(
        fresh.save(),
        Entropy::new(RateLimiter::unlimited().unwrap())
            .unwrap()
            .save()
    );
    // An activated device is not a restore target.
    assert!(matches!(
        h.dev.restore(&good, h.mem, &h.irq),
        Err(crate::virtio::persist::RestoreError::NotFresh)
    ));
    // The refused attempts left it fresh: the good state still applies (through the trait,
    // as the transport calls it).
    let state = crate::virtio::persist::DeviceState::Entropy(good);
    fresh.restore_state(&state, h.mem, &h.irq).unwrap();
    assert!(fresh.is_activated());
}

mod hostile {
    use proptest::prelude::*;

    use super::*;
    use crate::virtio::test_utils::F_INDIRECT;

    fn descriptor() -> impl Strategy<Value = (u64, u32, u16, u16)> {
        let addr = prop_oneof![
            DATA..MEM_SIZE as u64,
            Just(MEM_SIZE as u64 - 1),
            any::<u64>()
        ];
        let len = prop_oneof![0u32..4096, Just(u32::MAX), 0u32..0x2_0000];
        let flags = prop::sample::select(vec![0, F_NEXT, F_WRITE, F_NEXT | F_WRITE, F_INDIRECT]);
        (addr, len, flags, 0u16..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random descriptor tables and available rings never panic the device, never
        /// complete more chains than were offered nor more than 64 KiB per chain, and the
        /// device keeps serving afterwards.
        #[test]
        fn random_descriptor_tables_never_panic(
            descs in prop::collection::vec(descriptor(), 1..31),
            heads in prop::collection::vec(0u16..40, 1..16),
        ) {
            let mut h = Harness::unlimited();
            for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
                h.vq.set_desc(i as u16, addr, len, flags, next);
            }
            for &head in &heads {
                h.vq.publish(head);
            }
            h.simulate_queue_event();
            let used = h.vq.used_idx();
            prop_assert!(usize::from(used) <= heads.len());
            for i in 0..used {
                prop_assert!(h.vq.used(i).1 <= MAX_ENTROPY_BYTES);
            }
            // Descriptor 31 is the harness's spare: a good request there is still served.
            h.vq.set_desc(31, DATA, 16, F_WRITE, 0);
            h.vq.publish(31);
            h.simulate_queue_event();
            prop_assert_eq!(h.vq.used_idx(), used + 1);
            prop_assert_eq!(h.vq.used(used), (31, 16));
        }
    }
}
