//! Block device tests: a hand-driven virtqueue against a real temp file, including the
//! hostile-guest chains (out-of-memory addresses, loops, short or wrong-direction buffers).

use std::io::{Read, Seek, SeekFrom};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::rate_limiter::TokenBucket;
use crate::virtio::block::{request_type, ID_BYTES};
use crate::virtio::test_utils::{F_NEXT, F_WRITE};
use harness::{default_block, BlockHarness, DATA};

pub(crate) mod harness {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tempfile::NamedTempFile;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    use crate::virtio::block::{Block, BlockConfig, CacheMode};
    use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
    use crate::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

    /// Guest RAM size of the harness.
    pub const MEM_SIZE: usize = 0x40_0000;
    /// Request headers, 16 bytes apart.
    pub const HDR: u64 = 0x1_0000;
    /// Status bytes, 1 apart.
    pub const STATUS: u64 = 0x2_0000;
    /// Data buffers, 64 KiB apart.
    pub const DATA: u64 = 0x10_0000;
    /// Queue size the harness configures.
    pub const QUEUE_SIZE: u16 = 16;

    /// A block device and its backing file (filled with byte `i % 251` at offset `i`).
    pub struct TestDisk {
        pub block: Block,
        pub file: NamedTempFile,
    }

    pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((offset + i) % 251) as u8)
            .collect()
    }

    pub fn block_with(size: usize, tweak: impl FnOnce(&mut BlockConfig)) -> TestDisk {
        let mut file = NamedTempFile::new().unwrap();
        file.write_all(&pattern(0, size)).unwrap();
        let mut cfg = BlockConfig {
            drive_id: "rootfs".to_owned(),
            path: file.path().to_owned(),
            read_only: false,
            cache: CacheMode::Unsafe,
            rate_limiter: None,
            engine: Default::default(),
        };
        tweak(&mut cfg);
        TestDisk {
            block: Block::new(cfg).unwrap(),
            file,
        }
    }

    pub fn default_block(size: usize, read_only: bool) -> TestDisk {
        block_with(size, |c| c.read_only = read_only)
    }

    /// An activated block device with a driver-side queue.
    pub struct BlockHarness {
        pub mem: &'static GuestMemoryMmap,
        pub vq: VirtQueue<'static>,
        pub block: Arc<Mutex<Block>>,
        pub irq: Arc<VirtioInterrupt>,
        pub file: NamedTempFile,
        requests: u64,
    }

    impl BlockHarness {
        pub fn new(disk: TestDisk) -> Self {
            Self::with_features(disk, 1 << features::VERSION_1)
        }

        pub fn with_features(disk: TestDisk, acked: u64) -> Self {
            // Leaked so the queue builder can borrow it for the harness's whole life.
            let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
            Self::with_memory(disk, acked, mem, GuestAddress(0))
        }

        /// The harness over `mem`, with the queue's descriptor table at `queue_at`.
        pub fn with_memory(
            disk: TestDisk,
            acked: u64,
            mem: &'static GuestMemoryMmap,
            queue_at: GuestAddress,
        ) -> Self {
            let vq = VirtQueue::new(mem, queue_at, QUEUE_SIZE);
            let mut block = disk.block;
            vq.configure(&mut block.queues_mut()[0]);
            block.set_acked_features(acked);
            let event_idx = acked & (1 << features::RING_EVENT_IDX) != 0;
            block.queues_mut()[0].set_event_idx(event_idx);
            let irq = Arc::new(VirtioInterrupt::new().unwrap());
            block.activate(mem.clone(), irq.clone()).unwrap();
            Self {
                mem,
                vq,
                block: Arc::new(Mutex::new(block)),
                irq,
                file: disk.file,
                requests: 0,
            }
        }

        /// Header, status and data addresses for the next request.
        pub fn slots(&mut self) -> (u64, u64, u64) {
            let n = self.requests;
            self.requests += 1;
            (HDR + n * 16, STATUS + n, DATA + n * 0x1_0000)
        }

        pub fn header(&self, addr: u64, kind: u32, sector: u64) {
            self.mem
                .write_obj(kind.to_le(), GuestAddress(addr))
                .unwrap();
            self.mem.write_obj(0u32, GuestAddress(addr + 4)).unwrap();
            self.mem
                .write_obj(sector.to_le(), GuestAddress(addr + 8))
                .unwrap();
        }

        /// Publish a request `kind` on `sector` with one data buffer of `len` (0 = none).
        pub fn request(&mut self, kind: u32, sector: u64, len: u32, data_flags: u16) -> u64 {
            let (hdr, status, data) = self.slots();
            self.header(hdr, kind, sector);
            self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
            if len == 0 {
                self.vq.add_chain(&[(hdr, 16, 0), (status, 1, F_WRITE)]);
            } else {
                self.vq
                    .add_chain(&[(hdr, 16, 0), (data, len, data_flags), (status, 1, F_WRITE)]);
            }
            status
        }

        pub fn read_request(&mut self, sector: u64, len: u32) -> u64 {
            self.request(crate::virtio::block::request_type::IN, sector, len, F_WRITE)
        }

        /// Kick the queue and let the device drain it.
        pub fn simulate_queue_event(&self) {
            let mut block = self.block.lock().unwrap();
            block.queue_events()[0].write(1).unwrap();
            block.process_queue_event();
        }

        pub fn status(&self, addr: u64) -> u8 {
            self.mem.read_obj(GuestAddress(addr)).unwrap()
        }

        pub fn data(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut buf = vec![0u8; len];
            self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
            buf
        }
    }
}

fn file_bytes(h: &BlockHarness) -> Vec<u8> {
    let mut f = h.file.reopen().unwrap();
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut buf).unwrap();
    buf
}

#[test]
fn size_comes_from_file_and_shows_in_config_space() {
    let disk = default_block(64 * 1024 + 300, false);
    assert_eq!(disk.block.nsectors(), 128);
    let mut cap = [0u8; 8];
    disk.block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 128);
    let mut seg = [0u8; 4];
    disk.block.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
    let mut past = [0xaa; 4];
    disk.block.read_config(0x1000, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn features_follow_cache_mode_and_read_only() {
    let has = |b: &Block, bit: u32| b.avail_features() & (1 << bit) != 0;
    let unsafe_rw = default_block(4096, false).block;
    assert!(has(&unsafe_rw, features::VERSION_1) && has(&unsafe_rw, features::RING_EVENT_IDX));
    assert!(!has(&unsafe_rw, blk::FLUSH) && !has(&unsafe_rw, blk::RO));
    let wb = harness::block_with(4096, |c| c.cache = CacheMode::Writeback).block;
    assert!(has(&wb, blk::FLUSH));
    assert!(has(&default_block(4096, true).block, blk::RO));
}

#[test]
fn missing_backing_file_is_an_open_error() {
    let err = Block::new(BlockConfig {
        drive_id: "d".into(),
        path: "/nonexistent/disk.ext4".into(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: Default::default(),
    })
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/disk.ext4"), "{err}");
    assert!(err.to_string().contains("os error 2"), "{err}");
}

#[test]
fn read_copies_file_sectors_into_guest_memory() {
    let mut h = BlockHarness::new(default_block(8192, false));
    let status = h.read_request(2, 1024);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.data(DATA, 1024), harness::pattern(1024, 1024));
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(h.vq.used(0), (0, 1025));
    assert_eq!(h.irq.status(), crate::virtio::INTERRUPT_VRING);
    let m = h.block.lock().unwrap().metrics();
    assert_eq!((m.read_count.count(), m.read_bytes.count()), (1, 1024));
}

#[test]
fn a_read_dirties_its_data_status_and_used_ring_pages_for_diff_snapshots() {
    let mut h = BlockHarness::new(default_block(0x4000, false));
    let status = h.read_request(0, 0x2000);
    // What the driver wrote is the guest's own writes (KVM's log), not the device's.
    crate::virtio::test_utils::clear_dirty(h.mem);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    let (_, _, used) = h.vq.addresses();
    let page = |addr: u64| addr & !0xfff;
    let mut expected = vec![page(DATA), page(DATA) + 0x1000, page(status), page(used)];
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(crate::virtio::test_utils::dirty_pages(h.mem), expected);
}

#[test]
fn write_reaches_the_host_file() {
    let mut h = BlockHarness::new(default_block(8192, false));
    let (hdr, status, data) = h.slots();
    h.header(hdr, request_type::OUT, 3);
    h.mem.write_slice(&[0x5a; 512], GuestAddress(data)).unwrap();
    h.mem
        .write_slice(&[0xa5; 512], GuestAddress(data + 0x8000))
        .unwrap();
    h.vq.add_chain(&[
        (hdr, 16, 0),
        (data, 512, 0),
        (data + 0x8000, 512, 0),
        (status, 1, F_WRITE),
    ]);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.vq.used(0).1, 1);
    let file = file_bytes(&h);
    assert_eq!(&file[1536..2048], &[0x5a; 512]);
    assert_eq!(&file[2048..2560], &[0xa5; 512]);
    assert_eq!(&file[..1536], &harness::pattern(0, 1536)[..]);
}

#[test]
fn read_only_drive_fails_writes_and_keeps_file() {
    let mut h = BlockHarness::new(default_block(4096, true));
    let before = file_bytes(&h);
    let status = h.request(request_type::OUT, 0, 512, 0);
    let ok = h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::IOERR);
    assert_eq!(h.status(ok), status::OK);
    assert_eq!(file_bytes(&h), before);
}

#[test]
fn writeback_flush_syncs_and_is_counted() {
    let mut h = BlockHarness::new(harness::block_with(4096, |c| {
        c.cache = CacheMode::Writeback
    }));
    let status = h.request(request_type::FLUSH, 0, 0, 0);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.block.lock().unwrap().metrics().flush_count.count(), 1);
}

#[test]
fn get_id_returns_zero_padded_drive_id() {
    let mut h = BlockHarness::new(default_block(4096, false));
    h.mem
        .write_slice(&[0xee; ID_BYTES], GuestAddress(DATA))
        .unwrap();
    let status = h.request(request_type::GET_ID, 0, ID_BYTES as u32, F_WRITE);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    let mut want = [0u8; ID_BYTES];
    want[..6].copy_from_slice(b"rootfs");
    assert_eq!(h.data(DATA, ID_BYTES), want);
    assert_eq!(h.vq.used(0).1, ID_BYTES as u32 + 1);
}

#[test]
fn unknown_request_type_is_unsupported() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let status = h.request(0x77, 0, 0, 0);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::UNSUPP);
}

/// Publish a good read after whatever the test queued, drain, and check it was served.
fn assert_next_request_served(h: &mut BlockHarness, used_slot: u16) {
    let status = h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.vq.used(used_slot).1, 513);
}

#[test]
fn sector_past_end_fails_and_next_request_is_served() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let status = h.read_request(7, 1024); // sectors 7..9 of 8
    let huge = h.read_request(u64::MAX, 512); // sector + count overflows
    assert_next_request_served(&mut h, 2);
    assert_eq!(
        (h.status(status), h.status(huge)),
        (status::IOERR, status::IOERR)
    );
    assert_eq!(h.vq.used(0).1, 1);
    assert_eq!(
        h.block.lock().unwrap().metrics().invalid_reqs_count.count(),
        2
    );
}

#[test]
fn data_outside_guest_memory_fails_and_next_is_served() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let (hdr, status, _) = h.slots();
    h.header(hdr, request_type::IN, 0);
    let outside = harness::MEM_SIZE as u64 - 256;
    h.vq.add_chain(&[(hdr, 16, 0), (outside, 512, F_WRITE), (status, 1, F_WRITE)]);
    assert_next_request_served(&mut h, 1);
    assert_eq!(h.status(status), status::IOERR);
    assert_eq!(h.block.lock().unwrap().metrics().execute_fails.count(), 1);
}

#[test]
fn header_outside_guest_memory_fails_and_next_is_served() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let (_, status, _) = h.slots();
    h.vq.add_chain(&[(u64::MAX - 8, 16, 0), (status, 1, F_WRITE)]);
    assert_next_request_served(&mut h, 1);
    assert_eq!(h.status(status), status::IOERR);
}

#[test]
fn descriptor_loop_is_dropped_and_next_is_served() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let (hdr, _, data) = h.slots();
    h.header(hdr, request_type::IN, 0);
    // Descriptors 14 -> 15 -> 14 ...: a cycle with no status byte.
    h.vq.set_desc(14, hdr, 16, F_NEXT, 15);
    h.vq.set_desc(15, data, 512, F_NEXT | F_WRITE, 14);
    h.vq.publish(14);
    assert_next_request_served(&mut h, 1);
    assert_eq!(h.vq.used(0), (14, 0));
    assert_eq!(
        h.block.lock().unwrap().metrics().invalid_reqs_count.count(),
        1
    );
}

#[test]
fn too_many_descriptors_are_dropped_and_next_is_served() {
    let mut h = BlockHarness::with_features(
        default_block(1 << 20, false),
        (1 << features::VERSION_1) | (1 << features::RING_INDIRECT_DESC),
    );
    let (hdr, status, data) = h.slots();
    h.header(hdr, request_type::IN, 0);
    h.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
    let mut chain = vec![(hdr, 16, 0)];
    chain.extend((0..u64::from(SEG_MAX) + 1).map(|i| (data + i * 512, 512, F_WRITE)));
    chain.push((status, 1, F_WRITE));
    h.vq.add_indirect_chain(0x3_0000, &chain);
    assert_next_request_served(&mut h, 1);
    assert_eq!(
        h.status(status),
        0xff,
        "an oversize chain is dropped untouched"
    );
    assert_eq!(h.vq.used(0).1, 0);
}

#[test]
fn seg_max_segments_are_served() {
    let mut h = BlockHarness::with_features(
        default_block(1 << 20, false),
        (1 << features::VERSION_1) | (1 << features::RING_INDIRECT_DESC),
    );
    let (hdr, status, data) = h.slots();
    h.header(hdr, request_type::IN, 0);
    let mut chain = vec![(hdr, 16, 0)];
    chain.extend((0..u64::from(SEG_MAX)).map(|i| (data + i * 512, 512, F_WRITE)));
    chain.push((status, 1, F_WRITE));
    h.vq.add_indirect_chain(0x3_0000, &chain);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.vq.used(0).1, SEG_MAX * 512 + 1);
    assert_eq!(
        h.data(data, SEG_MAX as usize * 512),
        harness::pattern(0, SEG_MAX as usize * 512)
    );
}

#[test]
fn single_descriptor_chain_is_dropped_and_next_is_served() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let (hdr, _, _) = h.slots();
    h.header(hdr, request_type::IN, 0);
    h.vq.add_chain(&[(hdr, 16, 0)]);
    assert_next_request_served(&mut h, 1);
    assert_eq!(h.vq.used(0).1, 0);
}

#[test]
fn read_into_readable_buffer_is_wrong_direction() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let status = h.request(request_type::IN, 0, 512, 0);
    let short_hdr = {
        let (hdr, status, _) = h.slots();
        h.header(hdr, request_type::IN, 0);
        h.vq.add_chain(&[(hdr, 8, 0), (status, 1, F_WRITE)]);
        status
    };
    let unaligned = h.read_request(0, 100);
    let readonly_status = {
        let (hdr, status, data) = h.slots();
        h.header(hdr, request_type::IN, 0);
        h.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        h.vq.add_chain(&[(hdr, 16, 0), (data, 512, F_WRITE), (status, 1, 0)]);
        status
    };
    assert_next_request_served(&mut h, 4);
    assert_eq!(h.status(status), status::IOERR);
    assert_eq!(h.status(short_hdr), status::IOERR);
    assert_eq!(h.status(unaligned), status::IOERR);
    assert_eq!(
        h.status(readonly_status),
        0xff,
        "a readable status byte is never written"
    );
    assert_eq!(h.vq.used(3).1, 0);
}

#[test]
fn indirect_chain_is_served() {
    let mut h = BlockHarness::with_features(
        default_block(4096, false),
        (1 << features::VERSION_1) | (1 << features::RING_INDIRECT_DESC),
    );
    let (hdr, status, data) = h.slots();
    h.header(hdr, request_type::IN, 1);
    h.vq.add_indirect_chain(
        0x3_0000,
        &[(hdr, 16, 0), (data, 512, F_WRITE), (status, 1, F_WRITE)],
    );
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
    assert_eq!(h.data(data, 512), harness::pattern(512, 512));
}

#[test]
fn rate_limiter_throttles_then_resumes_on_timer() {
    let ops = TokenBucket::new(1, 0, 30);
    let limiter = RateLimiter::new(None, ops).unwrap();
    let mut h = BlockHarness::new(harness::block_with(4096, |c| {
        c.rate_limiter = Some(limiter)
    }));
    let first = h.read_request(0, 512);
    let second = h.read_request(1, 512);
    h.simulate_queue_event();
    assert_eq!((h.status(first), h.status(second)), (status::OK, 0xff));
    assert_eq!(h.vq.used_idx(), 1);
    {
        let mut block = h.block.lock().unwrap();
        assert!(block.rate_limiter().is_blocked());
        assert_eq!(block.metrics().rate_limiter_throttled_events.count(), 1);
        block.process_rate_limiter_event(); // waits for the timer
    }
    assert_eq!(h.status(second), status::OK);
    assert_eq!(h.vq.used_idx(), 2);
}

#[test]
fn event_idx_suppresses_interrupt_until_used_event() {
    let mut h = BlockHarness::with_features(
        default_block(4096, false),
        (1 << features::VERSION_1) | (1 << features::RING_EVENT_IDX),
    );
    h.vq.set_used_event(3);
    h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 1);
    assert_eq!(h.irq.status(), 0, "used_event 3 not reached");
    for _ in 0..3 {
        h.read_request(0, 512);
    }
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 4);
    assert_eq!(h.irq.status(), crate::virtio::INTERRUPT_VRING);
}

#[test]
fn update_path_changes_size_and_signals_config_change() {
    let h = BlockHarness::new(default_block(4096, false));
    let bigger = harness::default_block(16384, false);
    let mut block = h.block.lock().unwrap();
    block.update_path(bigger.file.path()).unwrap();
    assert_eq!(block.nsectors(), 32);
    assert_eq!(h.irq.status(), crate::virtio::INTERRUPT_CONFIG);
    assert_eq!(h.irq.config_generation(), 1);
    assert!(block
        .update_path(std::path::Path::new("/nonexistent"))
        .is_err());
    assert_eq!(block.nsectors(), 32, "a failed update keeps the old file");
    assert_eq!(block.metrics().update_fails.count(), 1);
}

#[test]
fn reset_deactivates_and_ignores_kicks() {
    let mut h = BlockHarness::new(default_block(4096, false));
    h.block.lock().unwrap().reset();
    assert!(!h.block.lock().unwrap().is_activated());
    h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 0);
}

/// Publish a DISCARD/WRITE_ZEROES of `count` sectors at `sector`.
fn range_request(h: &mut BlockHarness, kind: u32, sector: u64, count: u32) -> u64 {
    let (hdr, status, data) = h.slots();
    h.header(hdr, kind, 0);
    h.mem.write_obj(sector, GuestAddress(data)).unwrap();
    h.mem.write_obj(count, GuestAddress(data + 8)).unwrap();
    h.mem.write_obj(0u32, GuestAddress(data + 12)).unwrap();
    h.vq.add_chain(&[(hdr, 16, 0), (data, 16, 0), (status, 1, F_WRITE)]);
    status
}

#[test]
fn discard_and_write_zeroes_zero_the_range() {
    let mut h = BlockHarness::new(default_block(16384, false));
    let discard = range_request(&mut h, request_type::DISCARD, 8, 8);
    let zeroes = range_request(&mut h, request_type::WRITE_ZEROES, 24, 1);
    let past_end = range_request(&mut h, request_type::DISCARD, 30, 8);
    h.simulate_queue_event();
    assert_eq!(h.status(discard), status::OK);
    assert_eq!(h.status(zeroes), status::OK);
    assert_eq!(h.status(past_end), status::IOERR);
    let file = file_bytes(&h);
    assert_eq!(file.len(), 16384, "size is kept");
    assert!(file[4096..8192].iter().all(|&b| b == 0));
    assert!(file[12288..12800].iter().all(|&b| b == 0));
    assert_eq!(&file[..4096], &harness::pattern(0, 4096)[..]);
    assert_eq!(&file[12800..], &harness::pattern(12800, 16384 - 12800)[..]);
}

#[test]
fn discard_is_not_offered_on_read_only_drives() {
    let ro = default_block(4096, true).block;
    assert_eq!(ro.avail_features() & (1 << blk::DISCARD), 0);
    assert_ne!(
        default_block(4096, false).block.avail_features() & (1 << blk::DISCARD),
        0
    );
    let mut h = BlockHarness::new(default_block(4096, true));
    let status = range_request(&mut h, request_type::DISCARD, 0, 1);
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::IOERR);
    assert_eq!(file_bytes(&h), harness::pattern(0, 4096));
}

#[test]
fn avail_index_far_ahead_stops_the_drain_without_spinning() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let status = h.read_request(0, 512);
    h.vq.set_avail_idx(100); // 100 > queue size 16 ahead of next_avail 0
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 0);
    assert_eq!(h.status(status), 0xff);
    assert_eq!(
        h.block.lock().unwrap().metrics().invalid_reqs_count.count(),
        1
    );
    h.vq.set_avail_idx(1); // the driver recovers
    h.simulate_queue_event();
    assert_eq!(h.status(status), status::OK);
}

mod hostile {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random descriptor tables and available rings never panic the device, and the
        /// device never completes more chains than were offered.
        #[test]
        fn random_descriptor_tables_never_panic(
            descs in prop::collection::vec(
                (prop_oneof![0u64..0x40_0000, any::<u64>()], 0u32..0x2_0000, 0u16..8, 0u16..20),
                16,
            ),
            heads in prop::collection::vec(0u16..20, 1..16),
            kinds in prop::collection::vec(prop_oneof![0u32..16, any::<u32>()], 4),
        ) {
            let h = BlockHarness::new(default_block(8192, false));
            for (i, kind) in kinds.iter().enumerate() {
                h.header(HDR_BASE + 16 * i as u64, *kind, i as u64);
            }
            for (i, (addr, len, flags, next)) in descs.into_iter().enumerate() {
                h.vq.set_desc(i as u16, addr, len, flags, next);
            }
            for head in &heads {
                h.vq.publish(*head);
            }
            h.simulate_queue_event();
            prop_assert!(usize::from(h.vq.used_idx()) <= heads.len());
        }
    }

    const HDR_BASE: u64 = harness::HDR;
}
