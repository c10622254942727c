//! In-process vsock throughput, both directions, through the device in a real event manager
//! with a real Unix stream on the host side and a hand-built driver on the guest side. Also
//! counts heap allocations per packet on the steady-state data path (expected: 0).
//!
//! Run: `cargo bench -p squib-devices --features test-utils --bench vsock`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use squib_devices::alloc_counter::{thread_allocations, CountingAlloc};
use squib_devices::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
use squib_devices::virtio::vsock::packet::{op, VsockHeader, HDR_LEN, TYPE_STREAM};
use squib_devices::virtio::vsock::{Vsock, CONN_BUF_ALLOC, HOST_CID, RX_INDEX, TX_INDEX};
use squib_devices::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
use vm_memory::{Bytes, GuestAddress};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 4000;
const HOST_PORT: u32 = 80;
const RUN: Duration = Duration::from_millis(1500);
const SLOTS: u64 = 64;
const SLOT: u64 = 0x1_1000;
const RX_BUF: u64 = 0x10_0000;
const TX_BUF: u64 = 0x60_0000;
const GUEST_BUF_ALLOC: u32 = 1 << 20;

/// The driver side: queues in guest memory and the device in an event manager.
struct Guest {
    mem: &'static GuestMemoryMmap,
    rxq: VirtQueue<'static>,
    txq: VirtQueue<'static>,
    dev: Arc<Mutex<Vsock>>,
    em: EventManager<Arc<Mutex<Vsock>>>,
    rx_posted: u64,
    rx_seen: u16,
    tx_slot: u64,
    dev_fwd: u32,
    sent: u32,
}

fn hdr(op: u16, len: u32, fwd_cnt: u32) -> VsockHeader {
    VsockHeader {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port: HOST_PORT,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: GUEST_BUF_ALLOC,
        fwd_cnt,
    }
}

impl Guest {
    /// An activated device with one guest-initiated connection; the host's end of it.
    fn connected(dir: &std::path::Path) -> (Self, UnixStream) {
        let uds = dir.join("v.sock");
        let listener = UnixListener::bind(dir.join(format!("v.sock_{HOST_PORT}"))).expect("bind");
        let mut vsock = Vsock::new(GUEST_CID, uds).expect("vsock");
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x100_0000)));
        let rxq = VirtQueue::new(mem, GuestAddress(0), 256);
        let txq = VirtQueue::new(mem, GuestAddress(0x4000), 256);
        let evq = VirtQueue::new(mem, GuestAddress(0x8000), 256);
        rxq.configure(&mut vsock.queues_mut()[RX_INDEX]);
        txq.configure(&mut vsock.queues_mut()[TX_INDEX]);
        evq.configure(&mut vsock.queues_mut()[2]);
        vsock.set_acked_features(1 << features::VERSION_1);
        let irq = Arc::new(VirtioInterrupt::new().expect("irq"));
        vsock.activate(mem.clone(), irq).expect("activate");
        let dev = Arc::new(Mutex::new(vsock));
        let mut em = EventManager::new().expect("event manager");
        em.add_subscriber(dev.clone());
        let mut guest = Self {
            mem,
            rxq,
            txq,
            dev,
            em,
            rx_posted: 0,
            rx_seen: 0,
            tx_slot: 0,
            dev_fwd: 0,
            sent: 0,
        };
        guest.send(hdr(op::REQUEST, 0, 0), &[]);
        guest.kick(TX_INDEX);
        guest.post_rx(SLOTS, 64 * 1024);
        guest.pump();
        let (stream, _) = listener.accept().expect("accept");
        let _ = guest.take_rx(|_, _| {});
        (guest, stream)
    }

    fn pump(&mut self) {
        while self.em.run_with_timeout(0).expect("epoll") > 0 {}
    }

    fn kick(&self, index: usize) {
        let dev = self.dev.lock().expect("device");
        dev.queue_events()[index].write(1).expect("kick");
    }

    fn post_rx(&mut self, count: u64, len: u32) {
        for _ in 0..count {
            let addr = RX_BUF + (self.rx_posted % SLOTS) * SLOT;
            self.rx_posted += 1;
            self.rxq.add_chain(&[(addr, len + HDR_LEN as u32, F_WRITE)]);
        }
        self.kick(RX_INDEX);
    }

    /// Publish one packet on the tx queue (no kick).
    fn send(&mut self, hdr: VsockHeader, data: &[u8]) {
        let addr = TX_BUF + (self.tx_slot % SLOTS) * SLOT;
        self.tx_slot += 1;
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .expect("tx header");
        self.mem
            .write_slice(data, GuestAddress(addr + HDR_LEN as u64))
            .expect("tx data");
        self.txq
            .add_chain(&[(addr, (HDR_LEN + data.len()) as u32, 0)]);
    }

    /// Consume completed rx packets (learning the device's credit); the count.
    fn take_rx(&mut self, mut each: impl FnMut(&VsockHeader, u64)) -> u64 {
        let mut n = 0;
        while self.rx_seen != self.rxq.used_idx() {
            let (id, _) = self.rxq.used(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let addr = RX_BUF + (u64::from(id) % SLOTS) * SLOT;
            let mut raw = [0u8; HDR_LEN];
            self.mem
                .read_slice(&mut raw, GuestAddress(addr))
                .expect("rx header");
            let hdr = VsockHeader::from_bytes(&raw);
            self.dev_fwd = hdr.fwd_cnt;
            each(&hdr, addr);
            n += 1;
        }
        n
    }
}

/// One direction's figures: throughput, allocations per packet, and the CPU of the thread
/// running the device (and the fake driver) per GiB moved.
struct Figures {
    mib_per_s: f64,
    allocs_per_packet: f64,
    cpu_ms_per_gib: f64,
}

/// CPU time of the calling thread, in µs.
fn thread_cpu_us() -> u64 {
    squib_logger::time::clock_us(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn figures(bytes: u64, packets: u64, secs: f64, cpu_us: u64, allocs: u64) -> Figures {
    let gib = bytes as f64 / f64::from(1 << 30);
    Figures {
        mib_per_s: bytes as f64 / secs / f64::from(1 << 20),
        allocs_per_packet: allocs as f64 / packets.max(1) as f64,
        cpu_ms_per_gib: cpu_us as f64 / 1000.0 / gib.max(f64::MIN_POSITIVE),
    }
}

fn main() {
    println!("| direction | packet / buffer | MiB/s | CPU-ms/GiB (device + driver thread) | allocations/packet |");
    println!("|---|---:|---:|---:|---:|");
    for size in [4096usize, 16 * 1024, 64 * 1024] {
        let f = guest_to_host(size);
        println!(
            "| guest -> host | {} KiB | {:.1} | {:.0} | {:.3} |",
            size / 1024,
            f.mib_per_s,
            f.cpu_ms_per_gib,
            f.allocs_per_packet
        );
    }
    for size in [4096u32, 64 * 1024] {
        let f = host_to_guest(size);
        println!(
            "| host -> guest | {} KiB | {:.1} | {:.0} | {:.3} |",
            size / 1024,
            f.mib_per_s,
            f.cpu_ms_per_gib,
            f.allocs_per_packet
        );
    }
}

/// Guest RW packets of `size` bytes drained by a host reader, after warm-up.
fn guest_to_host(size: usize) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut g, mut stream) = Guest::connected(dir.path());
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let data = vec![0x5au8; size];
    let round = |g: &mut Guest| -> (u64, u64) {
        let (mut packets, mut bytes) = (0, 0);
        for _ in 0..32 {
            // As Linux does: send what the credit allows, up to the packet size.
            let credit = CONN_BUF_ALLOC - g.sent.wrapping_sub(g.dev_fwd);
            let n = size.min(credit as usize);
            if n == 0 {
                break;
            }
            g.send(hdr(op::RW, n as u32, 0), &data[..n]);
            g.sent = g.sent.wrapping_add(n as u32);
            bytes += n as u64;
            packets += 1;
        }
        g.kick(TX_INDEX);
        g.pump();
        let used = g.take_rx(|_, _| {});
        if used > 0 {
            g.post_rx(used, 64);
        }
        (packets, bytes)
    };
    for _ in 0..200 {
        round(&mut g);
    }
    let (before, cpu_before) = (thread_allocations(), thread_cpu_us());
    let (start, mut packets, mut bytes) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < RUN {
        let (p, b) = round(&mut g);
        packets += p;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_us() - cpu_before;
    let allocs = thread_allocations() - before;
    drop(g);
    let _ = reader.join();
    figures(bytes, packets, secs, cpu, allocs)
}

/// Host data read into guest rx buffers of `size` bytes, after warm-up.
fn host_to_guest(size: u32) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut g, mut stream) = Guest::connected(dir.path());
    let writer = std::thread::spawn(move || {
        let buf = vec![0xa5u8; 256 * 1024];
        while stream.write_all(&buf).is_ok() {}
    });
    let mut consumed = 0u32;
    let mut round = |g: &mut Guest| -> (u64, u64) {
        g.pump();
        let mut bytes = 0u64;
        let packets = g.take_rx(|h, _| {
            if h.op == op::RW {
                bytes += u64::from(h.len);
            }
        });
        if packets > 0 {
            consumed = consumed.wrapping_add(bytes as u32);
            g.send(hdr(op::CREDIT_UPDATE, 0, consumed), &[]);
            g.kick(TX_INDEX);
            g.post_rx(packets, size);
        } else {
            std::thread::yield_now();
        }
        (packets, bytes)
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        round(&mut g);
    }
    let (before, cpu_before) = (thread_allocations(), thread_cpu_us());
    let (start, mut packets, mut bytes) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < RUN {
        let (p, b) = round(&mut g);
        packets += p;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_us() - cpu_before;
    let allocs = thread_allocations() - before;
    drop(g);
    let _ = writer.join();
    figures(bytes, packets, secs, cpu, allocs)
}
