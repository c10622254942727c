//! Data safety: FLUSH reaches `fdatasync` in every cache mode, Writeback syncs when the disk
//! is let go, and DISCARD/WRITE_ZEROES are offered only where holes can be punched.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{self, pattern, BlockHarness};
use super::*;
use crate::rate_limiter::TokenBucket;
use crate::virtio::block::request_type;
use crate::virtio::block::test_utils::faulty_block;
use crate::virtio::test_utils::F_WRITE;

const DISCARD_BITS: u64 = (1 << blk::DISCARD) | (1 << blk::WRITE_ZEROES);

#[test]
fn flush_syncs_in_every_cache_mode() {
    for cache in [CacheMode::Unsafe, CacheMode::Writeback] {
        let (disk, faults) = faulty_block(4096, cache, |_| {});
        let mut h = BlockHarness::new(disk);
        let flush = h.request(request_type::FLUSH, 0, 0, 0);
        h.simulate_queue_event();
        assert_eq!(h.status(flush), status::OK, "{cache:?}");
        assert_eq!(faults.syncs.load(Ordering::SeqCst), 1, "{cache:?}");
    }
}

#[test]
fn failing_sync_fails_the_flush_in_unsafe_mode_too() {
    let (disk, faults) = faulty_block(4096, CacheMode::Unsafe, |_| {});
    let mut h = BlockHarness::new(disk);
    faults.sync_errno.store(libc::EIO, Ordering::SeqCst);
    let flush = h.request(request_type::FLUSH, 0, 0, 0);
    h.simulate_queue_event();
    assert_eq!(h.status(flush), status::IOERR);
}

#[test]
fn writeback_syncs_when_the_device_is_dropped() {
    let (disk, faults) = faulty_block(4096, CacheMode::Writeback, |_| {});
    drop(disk.block);
    assert_eq!(faults.syncs.load(Ordering::SeqCst), 1);
    let (disk, faults) = faulty_block(4096, CacheMode::Unsafe, |_| {});
    drop(disk.block);
    assert_eq!(
        faults.syncs.load(Ordering::SeqCst),
        0,
        "Unsafe never syncs by itself"
    );
}

#[test]
fn writeback_syncs_the_old_file_before_a_path_swap() {
    let (disk, faults) = faulty_block(4096, CacheMode::Writeback, |_| {});
    let mut block = disk.block;
    let other = harness::default_block(8192, false);
    block.update_path(other.file.path()).unwrap();
    assert_eq!(faults.syncs.load(Ordering::SeqCst), 1);
    assert_eq!(block.nsectors(), 16);
}

#[test]
fn discard_is_not_offered_where_holes_cannot_be_punched() {
    let (disk, faults) = faulty_block(4096, CacheMode::Unsafe, |f| {
        f.punch_errno.store(libc::EOPNOTSUPP, Ordering::SeqCst);
    });
    assert_eq!(disk.block.avail_features() & DISCARD_BITS, 0);
    assert_eq!(faults.punches.load(Ordering::SeqCst), 0);
}

#[test]
fn the_punch_hole_probe_leaves_the_file_alone() {
    let (disk, faults) = faulty_block(4096 + 512, CacheMode::Unsafe, |_| {});
    assert_eq!(disk.block.avail_features() & DISCARD_BITS, DISCARD_BITS);
    assert_eq!(faults.punches.load(Ordering::SeqCst), 1, "probed once");
    let bytes = std::fs::read(disk.file.path()).unwrap();
    assert_eq!(bytes, pattern(0, 4096 + 512));
}

#[test]
fn a_device_file_gets_no_discard() {
    // A character device here; a block device is refused the same way (not a regular file),
    // since its fallocate would discard for real.
    let block = Block::new(BlockConfig {
        drive_id: "dev".into(),
        path: "/dev/zero".into(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: Default::default(),
    })
    .unwrap();
    assert_eq!(block.avail_features() & DISCARD_BITS, 0);
}

#[test]
fn discard_and_write_zeroes_are_charged_to_the_rate_limiter() {
    for kind in [request_type::DISCARD, request_type::WRITE_ZEROES] {
        let ops = TokenBucket::new(1, 0, 60_000);
        let limiter = RateLimiter::new(None, ops).unwrap();
        let mut h = BlockHarness::new(harness::block_with(8192, |c| {
            c.rate_limiter = Some(limiter);
        }));
        let (hdr, range_status, data) = h.slots();
        h.header(hdr, kind, 0);
        h.mem.write_obj(0u64, GuestAddress(data)).unwrap();
        h.mem.write_obj(1u32, GuestAddress(data + 8)).unwrap();
        h.mem.write_obj(0u32, GuestAddress(data + 12)).unwrap();
        h.vq.add_chain(&[(hdr, 16, 0), (data, 16, 0), (range_status, 1, F_WRITE)]);
        let read = h.read_request(0, 512);
        h.simulate_queue_event();
        assert_eq!(h.status(range_status), status::OK, "{kind}");
        assert_eq!(h.status(read), 0xff, "{kind}: the op bucket is empty");
        let block = h.block.lock().unwrap();
        assert!(block.rate_limiter().is_blocked(), "{kind}");
    }
}
