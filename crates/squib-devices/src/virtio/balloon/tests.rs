//! Balloon tests: hand-driven virtqueues in real (anonymous, private) guest memory; page
//! residency checked with `mincore(2)`.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::*;
use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
use crate::virtio::{
    device_type, features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt, INTERRUPT_CONFIG,
};

const MEM_SIZE: usize = 0x80_0000;
/// Queue rings: one 64 KiB area per queue from 0.
const RINGS: u64 = 0x1_0000;
/// PFN arrays and stats buffers.
const BUFS: u64 = 0x10_0000;
/// Pages the tests inflate: from 4 MiB up.
const TARGET: u64 = 0x40_0000;

struct Harness {
    mem: &'static GuestMemoryMmap,
    vqs: Vec<VirtQueue<'static>>,
    dev: Balloon,
    irq: Arc<VirtioInterrupt>,
}

fn config(stats: u16, reporting: bool) -> BalloonConfig {
    BalloonConfig {
        amount_mib: 0,
        deflate_on_oom: true,
        stats_polling_interval_s: stats,
        free_page_hinting: false,
        free_page_reporting: reporting,
    }
}

impl Harness {
    fn new(cfg: BalloonConfig) -> Self {
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
        let mut dev = Balloon::new(cfg).unwrap();
        let mut vqs = Vec::new();
        for (i, q) in dev.queues_mut().iter_mut().enumerate() {
            let vq = VirtQueue::new(mem, GuestAddress(RINGS * i as u64), 16);
            vq.configure(q);
            vqs.push(vq);
        }
        dev.set_acked_features(dev.avail_features());
        let irq = Arc::new(VirtioInterrupt::new().unwrap());
        dev.activate(mem.clone(), irq.clone()).unwrap();
        // Activation kicks every queue once (buffers queued before DRIVER_OK); start clean.
        for evt in dev.queue_events() {
            evt.read().unwrap();
        }
        Self { mem, vqs, dev, irq }
    }

    /// Publish one readable descriptor holding `pfns` on queue `q`.
    fn send_pfns(&mut self, q: usize, pfns: &[u32]) {
        let addr = BUFS + 0x1000 * q as u64;
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        self.vqs[q].add_chain(&[(addr, bytes.len() as u32, 0)]);
    }

    fn touch(&self, addr: u64, len: usize) {
        self.mem
            .write_slice(&vec![0x5a; len], GuestAddress(addr))
            .unwrap();
    }

    fn resident(&self, addr: u64) -> bool {
        let host = self.mem.get_host_address(GuestAddress(addr)).unwrap();
        let mut vec = [0u8; 1];
        // SAFETY: `host` is page-aligned (guest pages are) and inside a live mapping of the
        // harness's guest memory; mincore writes one byte per page into `vec`.
        let ret = unsafe { libc::mincore(host.cast(), 4096, vec.as_mut_ptr()) };
        assert_eq!(ret, 0);
        vec[0] & 1 == 1
    }
}

fn pfn(addr: u64) -> u32 {
    (addr >> PFN_SHIFT) as u32
}

#[test]
fn offers_features_and_queues_in_firecracker_order() {
    let dev = Balloon::new(config(0, false)).unwrap();
    assert_eq!(dev.device_type(), device_type::BALLOON);
    assert_eq!(dev.queues().len(), 2);
    assert_eq!(
        dev.avail_features(),
        1 << features::VERSION_1 | 1 << feature::DEFLATE_ON_OOM
    );
    let dev = Balloon::new(BalloonConfig {
        deflate_on_oom: false,
        ..config(5, true)
    })
    .unwrap();
    assert_eq!(dev.queues().len(), 4);
    assert_eq!(dev.stats_queue(), Some(2));
    assert_eq!(dev.reporting_queue(), Some(3));
    assert_eq!(
        dev.avail_features(),
        1 << features::VERSION_1 | 1 << feature::STATS_VQ | 1 << feature::FREE_PAGE_REPORTING
    );
    let dev = Balloon::new(config(0, true)).unwrap();
    assert_eq!(dev.reporting_queue(), Some(2));
    let dev = Balloon::new(BalloonConfig {
        free_page_hinting: true,
        ..config(1, true)
    })
    .unwrap();
    assert_eq!(
        (
            dev.stats_queue(),
            dev.hinting_queue(),
            dev.reporting_queue()
        ),
        (Some(2), Some(3), Some(4))
    );
    assert_ne!(dev.avail_features() & 1 << feature::FREE_PAGE_HINT, 0);
}

#[test]
fn inflate_gives_pages_back_to_the_host() {
    let mut h = Harness::new(config(0, false));
    h.touch(TARGET, 16 * 4096);
    assert!((0..16).all(|i| h.resident(TARGET + i * 4096)));
    let pfns: Vec<u32> = (0..8).map(|i| pfn(TARGET + i * 4096)).collect();
    h.send_pfns(INFLATE_QUEUE, &pfns);
    h.dev.process_inflate();
    assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 1);
    assert!((0..8).all(|i| !h.resident(TARGET + i * 4096)));
    assert!((8..16).all(|i| h.resident(TARGET + i * 4096)));
    assert_eq!(h.dev.inflated_pages(), 8);
    assert_eq!(h.dev.metrics().inflate_count.count(), 1);
    // The guest reads zeros from a page it deflated and touches again.
    h.send_pfns(DEFLATE_QUEUE, &pfns[..1]);
    h.dev.process_deflate();
    assert_eq!(h.vqs[DEFLATE_QUEUE].used_idx(), 1);
    assert_eq!(h.dev.inflated_pages(), 7);
    assert_eq!(h.mem.read_obj::<u8>(GuestAddress(TARGET)).unwrap(), 0);
    assert_eq!(h.dev.metrics().deflate_count.count(), 1);
}

#[test]
fn hostile_pfns_are_counted_and_skipped() {
    let mut h = Harness::new(config(0, false));
    h.touch(TARGET, 4096);
    let outside = pfn(MEM_SIZE as u64);
    h.send_pfns(
        INFLATE_QUEUE,
        &[outside, u32::MAX, pfn(TARGET), pfn(TARGET)],
    );
    h.dev.process_inflate();
    assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 1);
    assert_eq!(h.dev.inflated_pages(), 1);
    // Two outside memory, one inflated twice.
    assert_eq!(h.dev.metrics().event_fails.count(), 3);
    // A descriptor the device would have to write, and one of a length that is not PFNs:
    // both refused, the chains still complete.
    h.vqs[INFLATE_QUEUE].add_chain(&[(BUFS, 8, F_WRITE)]);
    h.vqs[INFLATE_QUEUE].add_chain(&[(BUFS, 7, 0)]);
    h.vqs[INFLATE_QUEUE].add_chain(&[(MEM_SIZE as u64 - 4, 64, 0)]);
    h.dev.process_inflate();
    assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 4);
    assert_eq!(h.dev.metrics().event_fails.count(), 6);
}

#[test]
fn stats_buffer_is_held_until_the_polling_tick() {
    let mut h = Harness::new(config(1, false));
    let q = h.dev.stats_queue().unwrap();
    let mut rec = Vec::new();
    for (tag, v) in [(4u16, 100u64 << 20), (5, 256 << 20), (6, 200 << 20)] {
        rec.extend(tag.to_le_bytes());
        rec.extend(v.to_le_bytes());
    }
    h.mem.write_slice(&rec, GuestAddress(BUFS)).unwrap();
    h.vqs[q].add_chain(&[(BUFS, rec.len() as u32, 0)]);
    h.dev.process_stats();
    // Held, not returned.
    assert_eq!(h.vqs[q].used_idx(), 0);
    let s = h.dev.latest_stats().unwrap();
    assert_eq!(s.free_memory, Some(100 << 20));
    assert_eq!(s.total_memory, Some(256 << 20));
    assert_eq!(s.available_memory, Some(200 << 20));
    assert_eq!(s.swap_in, None);
    // Before the timer expires its event does nothing (and does not block).
    h.dev.process_stats_timer();
    assert_eq!(h.vqs[q].used_idx(), 0);
    // The 1 s timer fires and the buffer goes back to the guest.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h.dev.process_stats_timer();
    assert_eq!(h.vqs[q].used_idx(), 1);
    assert_eq!(h.dev.metrics().stats_updates_count.count(), 1);
}

#[test]
fn buffers_queued_before_activation_are_seen_once_active() {
    // Linux's driver puts its first statistics in the stats queue and kicks during probe,
    // before DRIVER_OK; that kick reaches an inactive device, so activation kicks every queue.
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
    let mut dev = Balloon::new(config(1, false)).unwrap();
    let q = dev.stats_queue().unwrap();
    let mut vq = VirtQueue::new(mem, GuestAddress(RINGS * q as u64), 16);
    for (i, queue) in dev.queues_mut().iter_mut().enumerate() {
        let ring = VirtQueue::new(mem, GuestAddress(RINGS * i as u64), 16);
        ring.configure(queue);
    }
    let mut rec = Vec::new();
    rec.extend(5u16.to_le_bytes());
    rec.extend((256u64 << 20).to_le_bytes());
    mem.write_slice(&rec, GuestAddress(BUFS)).unwrap();
    vq.add_chain(&[(BUFS, rec.len() as u32, 0)]);
    // The early kick: drained while inactive, nothing processed.
    dev.queue_events()[q].write(1).unwrap();
    dev.queue_events()[q].read().unwrap();
    dev.process_stats();
    assert_eq!(dev.metrics().stats_updates_count.count(), 0);

    dev.set_acked_features(dev.avail_features());
    dev.activate(mem.clone(), Arc::new(VirtioInterrupt::new().unwrap()))
        .unwrap();
    for (i, evt) in dev.queue_events().iter().enumerate() {
        assert_eq!(evt.read().unwrap(), 1, "queue {i} kicked at activation");
    }
    dev.process_stats();
    assert_eq!(dev.metrics().stats_updates_count.count(), 1);
    assert_eq!(dev.latest_stats().unwrap().total_memory, Some(256 << 20));
}

#[test]
fn stats_rules_follow_firecracker() {
    let mut h = Harness::new(config(0, false));
    assert!(matches!(
        h.dev.latest_stats(),
        Err(BalloonError::StatisticsDisabled)
    ));
    assert!(matches!(
        h.dev.update_stats_interval(3),
        Err(BalloonError::StatisticsStateChange)
    ));
    let mut h2 = Harness::new(config(2, false));
    assert!(matches!(
        h2.dev.update_stats_interval(0),
        Err(BalloonError::StatisticsStateChange)
    ));
    h2.dev.update_stats_interval(7).unwrap();
    assert_eq!(h2.dev.config().stats_polling_interval_s, 7);
    assert_eq!(
        BalloonError::StatisticsStateChange.to_string(),
        "Balloon: Statistics cannot be enabled/disabled after activation."
    );
}

#[test]
fn patch_target_updates_config_space_and_interrupts() {
    let mut fresh = Balloon::new(config(0, false)).unwrap();
    assert!(matches!(
        fresh.update_size(4),
        Err(BalloonError::DeviceNotActive)
    ));
    let mut h = Harness::new(config(0, false));
    h.dev.update_size(64).unwrap();
    let mut cfg = [0u8; 8];
    h.dev.read_config(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg[..4].try_into().unwrap()), 64 * 256);
    assert_eq!(h.irq.status() & INTERRUPT_CONFIG, INTERRUPT_CONFIG);
    // The guest reports progress in `actual`; other writes are refused.
    h.dev.write_config(4, &100u32.to_le_bytes());
    h.dev.write_config(0, &1u32.to_le_bytes());
    h.dev.read_config(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg[..4].try_into().unwrap()), 64 * 256);
    assert_eq!(u32::from_le_bytes(cfg[4..].try_into().unwrap()), 100);
    assert_eq!(h.dev.metrics().cfg_fails.count(), 1);
}

#[test]
fn reported_free_ranges_are_discarded() {
    let mut h = Harness::new(config(0, true));
    let q = h.dev.reporting_queue().unwrap();
    h.touch(TARGET, 0x20_0000);
    h.vqs[q].add_chain(&[(TARGET, 0x10_0000, F_WRITE)]);
    h.vqs[q].add_chain(&[
        (MEM_SIZE as u64 - 0x1000, 0x2000, F_WRITE),
        (TARGET + 1, 4096, F_WRITE),
    ]);
    h.dev.process_reporting();
    assert_eq!(h.vqs[q].used_idx(), 2);
    assert!(!h.resident(TARGET));
    assert!(!h.resident(TARGET + 0xf_f000));
    assert!(h.resident(TARGET + 0x10_0000));
    let m = h.dev.metrics();
    assert_eq!(m.free_page_report_count.count(), 3);
    assert_eq!(m.free_page_report_freed.count(), 0x10_0000);
    assert_eq!(m.free_page_report_fails.count(), 2);
}

#[test]
fn save_restore_round_trip() {
    let hinting = |stats| BalloonConfig {
        free_page_hinting: true,
        ..config(stats, true)
    };
    let mut h = Harness::new(hinting(1));
    let q = h.dev.stats_queue().unwrap();
    let mut rec = 4u16.to_le_bytes().to_vec();
    rec.extend(77u64.to_le_bytes());
    h.mem.write_slice(&rec, GuestAddress(BUFS)).unwrap();
    h.vqs[q].add_chain(&[(BUFS, 10, 0)]);
    h.dev.process_stats();
    h.dev.update_size(3).unwrap();
    h.dev.write_config(4, &12u32.to_le_bytes());
    h.dev.update_stats_interval(9).unwrap();
    h.dev.start_hinting(true).unwrap();
    // update_stats_interval handed the buffer back; the guest sends it again.
    h.vqs[q].add_chain(&[(BUFS, 10, 0)]);
    h.dev.process_stats();
    let saved = h.dev.save();
    assert_eq!(saved.stats_desc_index, Some(1));
    let bytes =
        bincode::serialize(&crate::virtio::persist::DeviceState::Balloon(saved.clone())).unwrap();
    let back: crate::virtio::persist::DeviceState = bincode::deserialize(&bytes).unwrap();

    let mut restored = Balloon::new(hinting(1)).unwrap();
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    restored.restore_state(&back, h.mem, &irq).unwrap();
    assert!(restored.is_activated());
    // A hinting run in progress ends at restore: DONE, announced to the guest.
    assert_eq!(saved.hinting.host_cmd, 2);
    let status = restored.hinting_status().unwrap();
    assert_eq!((status.host_cmd, status.last_run_id), (1, 2));
    assert_eq!(irq.status() & INTERRUPT_CONFIG, INTERRUPT_CONFIG);
    let mut expected = saved.clone();
    expected.hinting.host_cmd = 1;
    assert_eq!(restored.save(), expected);
    assert_eq!(restored.config().stats_polling_interval_s, 9);
    assert_eq!(restored.config().amount_mib, 3);
    let s = restored.latest_stats().unwrap();
    assert_eq!(
        (s.target_pages, s.actual_pages, s.free_memory),
        (768, 12, Some(77))
    );

    // A stats state on a device built without statistics is refused.
    let mut other = Balloon::new(hinting(0)).unwrap();
    assert!(other.restore(&saved, h.mem, &irq).is_err());
    assert!(!other.is_activated());
}

#[test]
fn hinting_run_discards_ranges_of_the_echoed_run_only() {
    use super::hinting::{CMD_ID_DONE, CMD_ID_STOP};
    let mut h = Harness::new(BalloonConfig {
        free_page_hinting: true,
        ..config(0, false)
    });
    let q = h.dev.hinting_queue().unwrap();
    let mut cfg = [0u8; 4];
    h.dev.read_config(8, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), CMD_ID_DONE);
    h.touch(TARGET, 0x4_0000);
    // A range before any run is completed but not discarded.
    h.vqs[q].add_chain(&[(TARGET, 0x1_0000, F_WRITE)]);
    h.dev.process_hinting();
    assert!(h.resident(TARGET));

    h.dev.start_hinting(true).unwrap();
    assert_eq!(h.irq.status() & INTERRUPT_CONFIG, INTERRUPT_CONFIG);
    h.irq.ack(INTERRUPT_CONFIG);
    h.dev.read_config(8, &mut cfg);
    let id = u32::from_le_bytes(cfg);
    assert_eq!(id, 2);
    // The guest echoes the id, then hands over ranges, then says STOP.
    h.mem
        .write_slice(&id.to_le_bytes(), GuestAddress(BUFS))
        .unwrap();
    h.mem
        .write_slice(&CMD_ID_STOP.to_le_bytes(), GuestAddress(BUFS + 4))
        .unwrap();
    h.vqs[q].add_chain(&[(BUFS, 4, 0)]);
    h.vqs[q].add_chain(&[(TARGET, 0x2_0000, F_WRITE)]);
    h.vqs[q].add_chain(&[(MEM_SIZE as u64, 0x1000, F_WRITE)]);
    h.vqs[q].add_chain(&[(BUFS + 4, 4, 0)]);
    h.dev.process_hinting();
    assert_eq!(h.vqs[q].used_idx(), 5);
    assert!(!h.resident(TARGET));
    assert!(!h.resident(TARGET + 0x1_f000));
    assert!(h.resident(TARGET + 0x2_0000));
    let m = h.dev.metrics();
    assert_eq!(m.free_page_hint_count.count(), 2);
    assert_eq!(m.free_page_hint_freed.count(), 0x2_0000);
    assert_eq!(m.free_page_hint_fails.count(), 1);
    // STOP acknowledged with DONE and a config interrupt.
    let status = h.dev.hinting_status().unwrap();
    assert_eq!(
        (status.host_cmd, status.guest_cmd),
        (CMD_ID_DONE, Some(CMD_ID_STOP))
    );
    assert_eq!(h.irq.status() & INTERRUPT_CONFIG, INTERRUPT_CONFIG);
    // An explicit stop also sets DONE.
    h.dev.start_hinting(false).unwrap();
    assert_eq!(h.dev.hinting_status().unwrap().host_cmd, 3);
    h.dev.stop_hinting().unwrap();
    assert_eq!(h.dev.hinting_status().unwrap().host_cmd, CMD_ID_DONE);

    let mut plain = Harness::new(config(0, false));
    assert!(matches!(
        plain.dev.start_hinting(true),
        Err(BalloonError::HintingNotEnabled)
    ));
    assert_eq!(
        BalloonError::HintingNotEnabled.to_string(),
        "Balloon: Attempting to use hinting when not enabled"
    );
}

#[test]
fn one_event_reads_a_bounded_number_of_descriptors_then_rekicks() {
    use super::device::MAX_DESCS_PER_EVENT;
    let mut h = Harness::new(config(0, false));
    // Four chains of 100 indirect descriptors, each naming the same page frame: more
    // descriptors than one event reads.
    h.mem
        .write_slice(&pfn(TARGET).to_le_bytes(), GuestAddress(BUFS))
        .unwrap();
    let descs = vec![(BUFS, 4, 0); 100];
    for i in 0..4u64 {
        h.vqs[INFLATE_QUEUE].add_indirect_chain(0x20_0000 + i * 0x1000, &descs);
    }
    h.dev.process_inflate();
    // Three chains (300 descriptors) reach the budget; the queue is kicked again.
    const { assert!(MAX_DESCS_PER_EVENT > 200 && MAX_DESCS_PER_EVENT <= 300) };
    assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 3);
    assert_eq!(h.dev.queue_events()[INFLATE_QUEUE].read().unwrap(), 1);
    h.dev.process_inflate();
    assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 4);
    // The frame inflated once, then 399 times "twice".
    assert_eq!(h.dev.inflated_pages(), 1);
    assert_eq!(h.dev.metrics().event_fails.count(), 399);
}

mod hostile {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const FIRST: u32 = (TARGET >> PFN_SHIFT) as u32;
    const PAGES: u32 = (MEM_SIZE as u64 >> PFN_SHIFT) as u32;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any list of frames (inside guest memory, past its end, repeated): the chain
        /// completes, only in-memory frames are counted once, the rest are failures.
        #[test]
        fn any_pfns_are_checked_and_counted(
            pfns in proptest::collection::vec(
                prop_oneof![FIRST..PAGES, PAGES..PAGES * 4, Just(u32::MAX)],
                1..=MAX_PFNS_PER_DESC,
            )
        ) {
            let mut h = Harness::new(config(0, false));
            h.send_pfns(INFLATE_QUEUE, &pfns);
            h.dev.process_inflate();
            prop_assert_eq!(h.vqs[INFLATE_QUEUE].used_idx(), 1);
            let valid: HashSet<u32> = pfns.iter().copied().filter(|&p| p < PAGES).collect();
            prop_assert_eq!(h.dev.inflated_pages(), valid.len() as u64);
            prop_assert_eq!(
                h.dev.metrics().event_fails.count(),
                (pfns.len() - valid.len()) as u64
            );
            // Deflating the same list empties the balloon again.
            h.send_pfns(DEFLATE_QUEUE, &pfns);
            h.dev.process_deflate();
            prop_assert_eq!(h.dev.inflated_pages(), 0);
        }
    }
}
