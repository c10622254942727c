//! In-process virtio-block throughput: sequential 4 KiB and 128 KiB reads and writes through
//! a hand-built virtqueue against a file in /dev/shm (or the temp dir), compared with plain
//! `pread`/`pwrite` on the same file, for the Sync and the Async (io_uring) engines. Also
//! counts heap allocations per request on the hot path.
//!
//! Run: `cargo bench -p squib-devices --features test-utils --bench block`.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squib_devices::alloc_counter::{thread_allocations, CountingAlloc};
use squib_devices::virtio::block::{request_type, Block, BlockConfig, CacheMode, IoEngine};
use squib_devices::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
use squib_devices::virtio::{features, VirtioDevice, VirtioInterrupt};
use vm_memory::{Bytes, GuestAddress};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const DISK: u64 = 256 << 20;
const BATCH: u64 = 32;
const RUN: Duration = Duration::from_millis(1500);
const HDR: u64 = 0x1_0000;
const STATUS: u64 = 0x2_0000;
const DATA: u64 = 0x10_0000;

fn main() {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let file = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    file.as_file().set_len(DISK).expect("size temp file");
    println!(
        "backing file in {dir}, {} MiB, batches of {BATCH}",
        DISK >> 20
    );
    for (name, kind) in [("read", request_type::IN), ("write", request_type::OUT)] {
        for size in [4096u32, 128 * 1024] {
            let host = host_rate(file.as_file(), kind, size);
            for engine in [IoEngine::Sync, IoEngine::Async] {
                let (dev, allocs) = device_rate(file.path(), kind, size, engine);
                println!(
                    "seq {name:5} {:>3} KiB {engine:5?}: device {:8.1} MiB/s, host {:8.1} MiB/s, \
                     ratio {:.2}, allocations/request {allocs:.3}",
                    size / 1024,
                    dev,
                    host,
                    dev / host
                );
            }
        }
    }
}

/// MiB/s through the device, and heap allocations per request after warm-up.
fn device_rate(path: &std::path::Path, kind: u32, size: u32, engine: IoEngine) -> (f64, f64) {
    let mem = single_region_mem(DATA as usize + (BATCH * u64::from(size)) as usize);
    let mut block = Block::new(BlockConfig {
        drive_id: "bench".into(),
        path: path.to_owned(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine,
    })
    .expect("block device");
    let mut vq = VirtQueue::new(&mem, GuestAddress(0), 256);
    vq.configure(&mut block.queues_mut()[0]);
    block.set_acked_features(1 << features::VERSION_1);
    let irq = Arc::new(VirtioInterrupt::new().expect("irq"));
    block.activate(mem.clone(), irq.clone()).expect("activate");
    let data_flags = if kind == request_type::IN { F_WRITE } else { 0 };
    let (mut bytes, mut requests, mut sector) = (0u64, 0u64, 0u64);
    let mut batch = |block: &mut Block| {
        for i in 0..BATCH {
            let hdr = HDR + 16 * i;
            mem.write_obj(kind, GuestAddress(hdr)).expect("header");
            mem.write_obj(sector, GuestAddress(hdr + 8))
                .expect("header");
            sector = (sector + u64::from(size) / 512) % (DISK / 512);
            let data = DATA + i * u64::from(size);
            vq.add_chain(&[
                (hdr, 16, 0),
                (data, size, data_flags),
                (STATUS + i, 1, F_WRITE),
            ]);
        }
        block.queue_events()[0].write(1).expect("kick");
        block.process_queue_event();
        // Async: wait for what the kernel has not finished yet (a no-op for Sync).
        block.complete_in_flight();
        let _ = irq.eventfd().read();
    };
    batch(&mut block);
    let allocs_before = thread_allocations();
    let start = Instant::now();
    while start.elapsed() < RUN {
        batch(&mut block);
        bytes += BATCH * u64::from(size);
        requests += BATCH;
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = (thread_allocations() - allocs_before) as f64 / requests as f64;
    (bytes as f64 / secs / f64::from(1 << 20), allocs)
}

/// MiB/s of plain positional I/O on the same file with the same sizes.
fn host_rate(file: &std::fs::File, kind: u32, size: u32) -> f64 {
    let mut buf = vec![0u8; size as usize];
    let (mut bytes, mut offset) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < RUN {
        for _ in 0..BATCH {
            if kind == request_type::IN {
                file.read_exact_at(&mut buf, offset).expect("pread");
            } else {
                file.write_all_at(&buf, offset).expect("pwrite");
            }
            offset = (offset + u64::from(size)) % DISK;
        }
        bytes += BATCH * u64::from(size);
    }
    bytes as f64 / start.elapsed().as_secs_f64() / f64::from(1 << 20)
}
