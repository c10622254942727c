//! The Async (io_uring) engine through the device: reads and writes against real files,
//! FLUSH ordering, host errors, back-pressure when the ring is full, many requests per
//! notification, and a snapshot taken while requests are in flight. Requests that must stay
//! in flight are reads from a pipe: they complete only when the test writes to it (a pipe
//! ignores the file offset).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{block_with, pattern, BlockHarness, TestDisk, DATA};
use super::*;
use crate::virtio::block::disk::DiskFile;
use crate::virtio::block::uring::RING_ENTRIES;
use crate::virtio::block::{request_type, IoEngine};
use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};

fn async_block(size: usize, tweak: impl FnOnce(&mut BlockConfig)) -> TestDisk {
    block_with(size, |c| {
        c.engine = IoEngine::Async;
        tweak(c);
    })
}

/// Serve queue and completion events until `used` entries are in the used ring.
fn run_until_used(h: &BlockHarness, used: u16) {
    for _ in 0..1000 {
        if h.vq.used_idx() == used {
            return;
        }
        let mut block = h.block.lock().unwrap();
        block.complete_in_flight();
        block.process_queue();
    }
    panic!("used.idx stuck at {} (want {used})", h.vq.used_idx());
}

fn file_bytes(h: &BlockHarness) -> Vec<u8> {
    let mut f = h.file.reopen().unwrap();
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut buf).unwrap();
    buf
}

/// Interrupts signalled since the last call.
fn interrupts(h: &BlockHarness) -> u64 {
    h.irq.eventfd().read().unwrap_or(0)
}

#[test]
fn reads_land_in_guest_memory_and_many_complete_with_few_interrupts() {
    let mut h = BlockHarness::new(async_block(64 * 1024, |_| {}));
    assert_eq!(h.block.lock().unwrap().io_engine(), IoEngine::Async);
    // Five chains of three descriptors fill the harness's 16-entry queue.
    let statuses: Vec<u64> = (0..5).map(|i| h.read_request(i * 8, 4096)).collect();
    h.simulate_queue_event();
    run_until_used(&h, 5);
    for (i, status) in statuses.iter().enumerate() {
        assert_eq!(h.status(*status), status::OK, "request {i}");
        let data = DATA + i as u64 * 0x1_0000;
        assert_eq!(
            h.data(data, 4096),
            pattern(i as u64 * 4096, 4096),
            "request {i}"
        );
    }
    for i in 0..5 {
        assert_eq!(h.vq.used(i).1, 4097);
    }
    // Five completions, gathered into at most one interrupt per event served.
    let irqs = interrupts(&h);
    assert!((1..=2).contains(&irqs), "{irqs} interrupts for 5 reads");
    let m = h.block.lock().unwrap().metrics();
    assert_eq!((m.read_count.count(), m.read_bytes.count()), (5, 5 * 4096));
    assert_eq!(h.block.lock().unwrap().in_flight(), 0);
}

#[test]
fn writes_reach_the_file_before_they_complete() {
    let mut h = BlockHarness::new(async_block(64 * 1024, |_| {}));
    let mut statuses = Vec::new();
    for i in 0..4u64 {
        let (hdr, status, data) = h.slots();
        h.header(hdr, request_type::OUT, i * 16);
        h.mem
            .write_slice(&[0xa0 + i as u8; 8192], GuestAddress(data))
            .unwrap();
        h.vq.add_chain(&[(hdr, 16, 0), (data, 8192, 0), (status, 1, F_WRITE)]);
        statuses.push(status);
    }
    h.simulate_queue_event();
    run_until_used(&h, 4);
    let file = file_bytes(&h);
    for (i, status) in statuses.iter().enumerate() {
        assert_eq!(h.status(*status), status::OK);
        assert_eq!(
            h.vq.used(i as u16).1,
            1,
            "a write's used length is the status byte"
        );
        let at = i * 8192;
        assert!(file[at..at + 8192].iter().all(|&b| b == 0xa0 + i as u8));
    }
    let m = h.block.lock().unwrap().metrics();
    assert_eq!(
        (m.write_count.count(), m.write_bytes.count()),
        (4, 4 * 8192)
    );
}

#[test]
fn flush_completes_after_every_earlier_write() {
    let disk = async_block(256 * 1024, |c| c.cache = CacheMode::Writeback);
    let mut h = BlockHarness::with_features(
        disk,
        (1 << crate::virtio::features::VERSION_1) | (1 << blk::FLUSH),
    );
    // Four writes and a flush: 14 descriptors of the harness's 16.
    for i in 0..4u64 {
        let (hdr, status, data) = h.slots();
        h.header(hdr, request_type::OUT, i * 64);
        h.mem
            .write_slice(&[i as u8 + 1; 0x8000], GuestAddress(data))
            .unwrap();
        h.vq.add_chain(&[(hdr, 16, 0), (data, 0x8000, 0), (status, 1, F_WRITE)]);
    }
    let flush_status = h.request(request_type::FLUSH, 0, 0, 0);
    let flush_head = 4 * 3;
    h.simulate_queue_event();
    run_until_used(&h, 5);
    assert_eq!(h.status(flush_status), status::OK);
    // The flush's used entry comes after all four writes'.
    let position = (0..5).position(|i| h.vq.used(i).0 == flush_head);
    assert_eq!(position, Some(4), "flush completed before a write");
    let m = h.block.lock().unwrap().metrics();
    assert_eq!((m.flush_count.count(), m.write_count.count()), (1, 4));
}

#[test]
fn host_errors_complete_with_ioerr() {
    // Reads past the end of a file truncated behind the device's back.
    let mut h = BlockHarness::new(async_block(64 * 1024, |_| {}));
    h.file.as_file().set_len(4096).unwrap();
    let past_eof = h.read_request(64, 4096);
    let ok = h.read_request(0, 4096);
    h.simulate_queue_event();
    run_until_used(&h, 2);
    assert_eq!(h.status(past_eof), status::IOERR);
    assert_eq!(h.status(ok), status::OK);
    // A data buffer outside guest memory fails before any I/O.
    let (hdr, status, _) = h.slots();
    h.header(hdr, request_type::IN, 0);
    h.vq.add_chain(&[
        (hdr, 16, 0),
        (0x4000_0000, 512, F_WRITE),
        (status, 1, F_WRITE),
    ]);
    h.simulate_queue_event();
    run_until_used(&h, 3);
    assert_eq!(h.status(status), status::IOERR);
    assert_eq!(h.block.lock().unwrap().metrics().execute_fails.count(), 2);

    // A write to a file the host opened read-only (the guest was told it may write).
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&pattern(0, 8192)).unwrap();
    let ro = std::fs::File::open(file.path()).unwrap();
    let disk = DiskFile::from_file(ro, file.path(), true).unwrap();
    let cfg = BlockConfig {
        drive_id: "ro".into(),
        path: file.path().to_owned(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: IoEngine::Async,
    };
    let block = Block::with_disk(cfg, disk).unwrap();
    let mut h = BlockHarness::new(TestDisk { block, file });
    let write = h.request(request_type::OUT, 0, 512, 0);
    h.simulate_queue_event();
    run_until_used(&h, 1);
    assert_eq!(h.status(write), status::IOERR);
    assert_eq!(file_bytes(&h), pattern(0, 8192), "the file is unchanged");
}

#[test]
fn read_only_drive_refuses_writes_without_io() {
    let mut h = BlockHarness::new(async_block(8192, |c| c.read_only = true));
    let write = h.request(request_type::OUT, 0, 512, 0);
    h.simulate_queue_event();
    run_until_used(&h, 1);
    assert_eq!(h.status(write), status::IOERR);
    assert_eq!(file_bytes(&h), pattern(0, 8192));
}

/// A pipe: (read end, write end).
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which has room.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and nothing else owns them.
    unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// A device whose "disk" is the read end of a pipe: its reads stay in flight until
/// the test writes to the other end. Queue of 256 entries, indirect chains (one descriptor
/// per request), so more requests than the ring holds can be published.
struct PipeDisk {
    mem: &'static crate::virtio::GuestMemoryMmap,
    vq: VirtQueue<'static>,
    block: Block,
    peer: File,
}

const PIPE_TABLES: u64 = 0x1_0000;
const PIPE_HDR: u64 = 0x2_0000;
const PIPE_STATUS: u64 = 0x3_0000;
const PIPE_DATA: u64 = 0x10_0000;

impl PipeDisk {
    fn new() -> Self {
        let (file, peer) = pipe();
        let disk = DiskFile::with_io(Box::new(file), std::path::Path::new("pipe"), 1 << 30, false);
        let cfg = BlockConfig {
            drive_id: "pipe".into(),
            path: "pipe".into(),
            read_only: false,
            cache: CacheMode::Unsafe,
            rate_limiter: None,
            engine: IoEngine::Async,
        };
        let mut block = Block::with_disk(cfg, disk).unwrap();
        let mem: &'static _ = Box::leak(Box::new(single_region_mem(0x200_0000)));
        let vq = VirtQueue::new(mem, GuestAddress(0), 256);
        vq.configure(&mut block.queues_mut()[0]);
        block.set_acked_features(
            (1 << crate::virtio::features::VERSION_1)
                | (1 << crate::virtio::features::RING_INDIRECT_DESC),
        );
        let irq = Arc::new(VirtioInterrupt::new().unwrap());
        block.activate(mem.clone(), irq).unwrap();
        Self {
            mem,
            vq,
            block,
            peer,
        }
    }

    /// Publish read `i` of 512 bytes.
    fn read(&mut self, i: u64) {
        let hdr = PIPE_HDR + 16 * i;
        self.mem
            .write_obj(request_type::IN.to_le(), GuestAddress(hdr))
            .unwrap();
        self.mem
            .write_obj(i.to_le(), GuestAddress(hdr + 8))
            .unwrap();
        self.mem
            .write_obj(0xffu8, GuestAddress(PIPE_STATUS + i))
            .unwrap();
        self.vq.add_indirect_chain(
            PIPE_TABLES + 48 * i,
            &[
                (hdr, 16, 0),
                (PIPE_DATA + 512 * i, 512, F_WRITE),
                (PIPE_STATUS + i, 1, F_WRITE),
            ],
        );
    }

    fn status(&self, i: u64) -> u8 {
        self.mem.read_obj(GuestAddress(PIPE_STATUS + i)).unwrap()
    }

    fn kick(&mut self) {
        self.block.queue_events()[0].write(1).unwrap();
        self.block.process_queue_event();
    }
}

#[test]
fn a_full_ring_stops_the_drain_until_completions_free_room() {
    let mut d = PipeDisk::new();
    let total = u64::from(RING_ENTRIES) + 72;
    for i in 0..total {
        d.read(i);
    }
    d.kick();
    // The ring holds RING_ENTRIES; the rest wait in the available ring, untouched.
    assert_eq!(d.block.in_flight(), RING_ENTRIES as usize);
    assert_eq!(d.vq.used_idx(), 0);
    assert_eq!(d.block.queues()[0].next_avail(), RING_ENTRIES as u16);
    assert_eq!(d.block.metrics().io_engine_throttled_events.count(), 1);
    // Another kick takes nothing more.
    d.kick();
    assert_eq!(d.block.queues()[0].next_avail(), RING_ENTRIES as u16);
    // Data arrives: completions free slots and the completion event drains the rest.
    let mut peer = d.peer.try_clone().unwrap();
    let bytes = 512 * total as usize;
    let writer = std::thread::spawn(move || peer.write_all(&vec![0x5a; bytes]).unwrap());
    for _ in 0..5000 {
        if d.vq.used_idx() == total as u16 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        d.block.process_async_completion_event();
    }
    writer.join().unwrap();
    assert_eq!(d.vq.used_idx(), total as u16);
    assert!((0..total).all(|i| d.status(i) == status::OK));
    let mut all = vec![0u8; 512 * total as usize];
    d.mem.read_slice(&mut all, GuestAddress(PIPE_DATA)).unwrap();
    assert!(all.iter().all(|&b| b == 0x5a), "every byte arrived once");
}

#[test]
fn saving_waits_for_requests_in_flight_and_completes_them() {
    let mut d = PipeDisk::new();
    d.read(0);
    d.read(1);
    d.kick();
    assert_eq!(d.block.in_flight(), 2);
    assert_eq!(d.vq.used_idx(), 0);
    let mut peer = d.peer.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(&[0x77; 1024]).unwrap();
    });
    d.block.prepare_save();
    writer.join().unwrap();
    assert_eq!(d.block.in_flight(), 0);
    assert_eq!(
        d.vq.used_idx(),
        2,
        "both used entries are written before the save"
    );
    assert_eq!((d.status(0), d.status(1)), (status::OK, status::OK));
    let state = d.block.save();
    assert_eq!(state.io_engine, IoEngine::Async);
    assert_eq!(state.virtio.queues[0].next_used, 2);
    assert_eq!(state.virtio.queues[0].next_avail, 2);
}

#[test]
fn reset_waits_for_requests_in_flight_without_completing_them() {
    let mut d = PipeDisk::new();
    d.read(0);
    d.kick();
    assert_eq!(d.block.in_flight(), 1);
    let mut peer = d.peer.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        peer.write_all(&[1; 512]).unwrap();
    });
    d.block.reset();
    writer.join().unwrap();
    assert_eq!(d.block.in_flight(), 0);
    assert_eq!(d.vq.used_idx(), 0, "a reset device writes no used entry");
}
