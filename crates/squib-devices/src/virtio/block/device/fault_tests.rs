//! Host failures (through [`FaultyFile`]): EIO on read or write, ENOSPC after a short write,
//! a write that makes no progress and a failing `fdatasync` each complete the request with
//! IOERR, never OK, and the device serves the next request.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{pattern, BlockHarness, DATA};
use crate::virtio::block::test_utils::{faulty_block, Faults};
use crate::virtio::block::{request_type, status, CacheMode};

fn harness(cache: CacheMode) -> (BlockHarness, std::sync::Arc<Faults>) {
    let (disk, faults) = faulty_block(64 * 1024, cache, |_| {});
    (BlockHarness::new(disk), faults)
}

/// Publish a write of `len` bytes of `byte` at `sector`; returns the status address.
fn write_request(h: &mut BlockHarness, sector: u64, len: u32, byte: u8) -> u64 {
    let n = h.vq.used_idx();
    let data = DATA + u64::from(n) * 0x1_0000;
    h.mem
        .write_slice(&vec![byte; len as usize], GuestAddress(data))
        .unwrap();
    h.request(request_type::OUT, sector, len, 0)
}

fn file_range(h: &BlockHarness, offset: usize, len: usize) -> Vec<u8> {
    std::fs::read(h.file.path()).unwrap()[offset..offset + len].to_vec()
}

/// Run one request under a fault: IOERR, counted, and the next request (fault cleared) is OK.
fn assert_fault_is_ioerr(
    h: &mut BlockHarness,
    faults: &Faults,
    publish: impl FnOnce(&mut BlockHarness) -> u64,
) {
    let fails = h.block.lock().unwrap().metrics().execute_fails.count();
    let status_addr = publish(h);
    h.simulate_queue_event();
    assert_eq!(h.status(status_addr), status::IOERR);
    assert_eq!(
        h.block.lock().unwrap().metrics().execute_fails.count(),
        fails + 1
    );
    faults.clear();
    let next = h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(next), status::OK, "the device keeps serving");
}

#[test]
fn read_eio_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Unsafe);
    faults.read_errno.store(libc::EIO, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| h.read_request(4, 4096));
}

#[test]
fn write_eio_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Writeback);
    faults.write_errno.store(libc::EIO, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| write_request(h, 4, 4096, 0x11));
    assert_eq!(file_range(&h, 2048, 4096), pattern(2048, 4096));
}

#[test]
fn enospc_after_a_short_write_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Writeback);
    // Room for 700 bytes: the first pwrite is cut short, the retry gets ENOSPC.
    faults.space_left.store(700, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| write_request(h, 0, 4096, 0x22));
}

#[test]
fn a_write_that_makes_no_progress_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Unsafe);
    faults.write_zero.store(true, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| write_request(h, 0, 4096, 0x33));
}

#[test]
fn failing_fdatasync_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Writeback);
    faults.sync_errno.store(libc::EIO, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| h.request(request_type::FLUSH, 0, 0, 0));
    let flush = h.request(request_type::FLUSH, 0, 0, 0);
    h.simulate_queue_event();
    assert_eq!(h.status(flush), status::OK);
    assert_eq!(faults.syncs.load(Ordering::SeqCst), 1);
}

#[test]
fn discard_failure_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Unsafe);
    faults.punch_errno.store(libc::EIO, Ordering::SeqCst);
    assert_fault_is_ioerr(&mut h, &faults, |h| {
        let (hdr, status_addr, data) = h.slots();
        h.header(hdr, request_type::DISCARD, 0);
        h.mem.write_obj(0u64, GuestAddress(data)).unwrap();
        h.mem.write_obj(8u32, GuestAddress(data + 8)).unwrap();
        h.mem.write_obj(0u32, GuestAddress(data + 12)).unwrap();
        h.vq.add_chain(&[
            (hdr, 16, 0),
            (data, 16, 0),
            (status_addr, 1, crate::virtio::test_utils::F_WRITE),
        ]);
        status_addr
    });
}

#[test]
fn short_writes_are_retried_to_completion() {
    let (mut h, faults) = harness(CacheMode::Unsafe);
    faults.write_chunk.store(100, Ordering::SeqCst);
    let s = write_request(&mut h, 2, 4096, 0x44);
    h.simulate_queue_event();
    assert_eq!(h.status(s), status::OK);
    assert_eq!(file_range(&h, 1024, 4096), vec![0x44; 4096]);
    assert_eq!(file_range(&h, 0, 1024), pattern(0, 1024));
}

#[test]
fn a_read_cut_short_by_a_truncated_file_answers_ioerr() {
    let (mut h, faults) = harness(CacheMode::Unsafe);
    // Truncated behind the device's back: the read passes the bounds check, then hits EOF.
    h.file.as_file().set_len(4096).unwrap();
    assert_fault_is_ioerr(&mut h, &faults, |h| h.read_request(6, 4096));
}
