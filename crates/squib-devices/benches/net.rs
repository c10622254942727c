//! In-process virtio-net throughput over a real TAP, no guest: what moving bulk data through
//! [`Net`] costs the VMM. The bench moves its own thread into a fresh network namespace
//! (`unshare(CLONE_NEWNET)`), opens a TAP there, activates a device on hand-built virtqueues
//! with every feature squib offers (what a Linux guest negotiates: MRG_RXBUF, EVENT_IDX,
//! VERSION_1, MAC, MTU, checksum and TSO/UFO offloads) and plays the guest driver itself,
//! in the same thread as the device:
//!
//! - host->guest (rx path): a host UDP socket (helper thread) sends datagrams to the guest IP
//!   over the TAP; the device reads them from the TAP into the rx buffers posted on the rx
//!   queue; the fake driver checks every used buffer and posts it again, kicking the queue
//!   only when EVENT_IDX says the device waits for a kick.
//! - guest->host (tx path): the fake driver posts frames on the tx queue and kicks per
//!   EVENT_IDX; the device writes them to the TAP; a host UDP socket (helper thread) receives
//!   and checks them.
//!
//! Two frame sizes: MTU 1500 (1472-byte UDP payloads, 1536-byte rx buffers, one per frame)
//! and TAP MTU 65000 (64972-byte payloads, merged over 16 rx buffers of 4 KiB; tx frames in
//! 16 descriptors of 4 KiB like a paged skb). Rx buffer sizes follow Linux's mergeable
//! buffers (cache-line aligned, at most a page). Each case runs 2 s or 512 MiB, whichever
//! is shorter; senders keep a bounded window in flight so nothing overflows. Every
//! datagram's sequence number and length are checked, every 64th payload byte for byte, and
//! losses and drop counters are reported.
//!
//! Per case: Gbit/s of UDP payload, packets/s, the CPU of the thread doing the device work
//! (`getrusage(RUSAGE_THREAD)`) as % of one core and as CPU-ms per GiB moved, with the fake
//! driver's share (wall time in its code) separated out, next to Firecracker's published
//! 14.5 Gbit/s at <= 80% of a core.
//!
//! Needs root (a network namespace, a TAP), `/dev/net/tun` and `ip`; otherwise it prints
//! `net bench: not run: <reason>` and exits 0.
//!
//! Run: `cargo bench -p squib-devices --features test-utils --bench net`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use squib_devices::virtio::net::{
    features as net_features, Net, NetConfig, QUEUE_SIZE, RX_INDEX, TX_INDEX, VNET_HDR_LEN,
};
use squib_devices::virtio::test_utils::{self, single_region_mem, UdpEnds, VirtQueue, F_WRITE};
use squib_devices::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const TAP: &str = "sqbbench0";
const GUEST_MAC: [u8; 6] = [6, 0, 10, 99, 0, 2];
const GUEST_MAC_TEXT: &str = "06:00:0a:63:00:02";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Host -> guest datagrams go to this guest port.
const GUEST_PORT: u16 = 6000;
/// Guest -> host datagrams go to this host port, from `GUEST_SRC_PORT`.
const HOST_PORT: u16 = 5000;
const GUEST_SRC_PORT: u16 = 4000;

const RUN: Duration = Duration::from_secs(2);
const MAX_BYTES: u64 = 512 << 20;
/// Check every n-th payload byte for byte (all datagrams: sequence number and length).
const CHECK_EVERY: u64 = 64;
/// Distinct payload patterns the host sender cycles through.
const KEYS: u64 = 61;
/// Ethernet + IPv4 + UDP headers.
const HDRS: usize = 14 + 20 + 8;
/// Offset of the payload (its first 8 bytes: the sequence number) in a frame.
const PAYLOAD_AT: usize = VNET_HDR_LEN + HDRS;
/// Most bytes, and most datagrams, a sender keeps in flight (sent, not yet received).
const WINDOW_BYTES: u64 = 4 << 20;
const WINDOW_FRAMES: u64 = 1024;
/// How long a sender waits when its window is full.
const IDLE: Duration = Duration::from_micros(20);
/// End a case this long after the last datagram arrived (lost ones never will).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Give up on a case this long after its run should have ended.
const STUCK: Duration = Duration::from_secs(10);

const RING: u16 = QUEUE_SIZE;
const PAGE: usize = 4096;
const RXQ: u64 = 0;
const TXQ: u64 = 0x2000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
const MEM_SIZE: usize = 8 << 20;

/// One frame size: the TAP (and config-space) MTU and the rx buffer a Linux guest would post.
#[derive(Clone, Copy)]
struct Shape {
    mtu: u16,
    rx_buf: u32,
}

const SHAPES: [Shape; 2] = [
    Shape {
        mtu: 1500,
        rx_buf: 1536,
    },
    Shape {
        mtu: 65000,
        rx_buf: PAGE as u32,
    },
];

impl Shape {
    /// UDP payload filling one IP packet of the MTU.
    fn payload(self) -> usize {
        usize::from(self.mtu) - 28
    }

    /// The frame in the rings: vnet header, Ethernet, the IP packet.
    fn frame_len(self) -> usize {
        VNET_HDR_LEN + 14 + usize::from(self.mtu)
    }

    fn window(self) -> u64 {
        (WINDOW_BYTES / self.payload() as u64).min(WINDOW_FRAMES)
    }
}

#[derive(Clone, Copy)]
enum Dir {
    HostToGuest,
    GuestToHost,
}

fn main() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        not_run("/dev/net/tun is missing");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        not_run("the `ip` command (iproute2) is missing");
    }
    match std::thread::spawn(run).join() {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            eprintln!("net bench: data check FAILED (see above)");
            std::process::exit(1);
        }
        Ok(Err(reason)) => not_run(&reason),
        Err(_) => std::process::exit(1),
    }
}

fn not_run(reason: &str) -> ! {
    println!("net bench: not run: {reason}");
    std::process::exit(0);
}

/// All cases, in this thread's own network namespace; `false` when a data check failed.
fn run() -> Result<bool, String> {
    // SAFETY: unshare takes a flag word; CLONE_NEWNET moves only this thread (and threads it
    // starts later) into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("unshare(CLONE_NEWNET): {err}"));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "net bench: virtio-net over a real TAP in a fresh netns, UDP/IPv4, each case {} s or {} MiB; \
         {} CPUs, load average {}",
        RUN.as_secs(),
        MAX_BYTES >> 20,
        std::thread::available_parallelism().map_or(0, usize::from),
        load.join(" ")
    );
    println!(
        "  guest acks all offered features (MRG_RXBUF, EVENT_IDX, CSUM/TSO/UFO, MTU); rx buffers \
         1536 B (MTU 1500) / 4 KiB (MTU 65000, 16 merged per frame)"
    );
    println!(
        "  core% = CPU of the ONE thread running the device and the fake guest driver (getrusage \
         RUSAGE_THREAD), % of one core; sys% = kernel share of it"
    );
    println!(
        "  CPU-ms/GiB = that thread's CPU per GiB of UDP payload; driver% = part spent in fake-driver \
         code (wall-clock timed); dev-ms/GiB = the rest:"
    );
    println!(
        "  event-loop poll, Net handlers, TAP readv/writev including the host-kernel work done in \
         them (guest->host: the host stack's receive up to the socket)"
    );
    println!(
        "  runq% = time that thread was runnable but waited for a CPU (other load); @80% = Gbit/s the \
         dev-ms/GiB cost allows at 80% of a core"
    );
    println!(
        "  peer% = host socket thread's CPU; frm/ev = frames per device handler call; lost = \
         datagrams sent but not received. Gbit/s is bounded by the slower thread and by other"
    );
    println!(
        "  load on the machine (see runq%); CPU-ms/GiB is the figure to compare with Firecracker"
    );
    println!(
        "{:<22} {:>7} {:>8} {:>6} {:>5} {:>5} {:>10} {:>7} {:>10} {:>7} {:>6} {:>5} {:>6} {:>8} {:>5}",
        "case",
        "Gbit/s",
        "kpkt/s",
        "core%",
        "sys%",
        "runq%",
        "CPU-ms/GiB",
        "driver%",
        "dev-ms/GiB",
        "@80%",
        "peer%",
        "MiB",
        "frm/ev",
        "checked",
        "lost"
    );
    let mut ok = true;
    let mut notes = Vec::new();
    for shape in SHAPES {
        for dir in [Dir::HostToGuest, Dir::GuestToHost] {
            let name = match dir {
                Dir::HostToGuest => format!("host->guest MTU {}", shape.mtu),
                Dir::GuestToHost => format!("guest->host MTU {}", shape.mtu),
            };
            let report = match dir {
                Dir::HostToGuest => host_to_guest(shape)?,
                Dir::GuestToHost => guest_to_host(shape)?,
            };
            report.print(&name);
            if report.stats.bad > 0 {
                ok = false;
                notes.push(format!(
                    "{name}: {} datagrams with wrong length or content",
                    report.stats.bad
                ));
            }
            if !report.drops.is_empty() {
                notes.push(format!("{name}: {}", report.drops));
            }
        }
    }
    let fc_gib_per_s = 14.5e9 / 8.0 / GIB;
    println!(
        "Firecracker (published): 14.5 Gbit/s at <= 80% of a core = {fc_gib_per_s:.3} GiB/s, i.e. \
         <= {:.0} CPU-ms/GiB ({:.3} CPU-s per 10^9 bytes)",
        0.8 / fc_gib_per_s * 1e3,
        0.8 / (14.5 / 8.0)
    );
    if notes.is_empty() {
        println!("drops: none (tun, UDP InErrors and device drop counters all zero)");
    }
    for note in notes {
        println!("note: {note}");
    }
    Ok(ok)
}

const GIB: f64 = (1u64 << 30) as f64;

/// The calling thread's CPU time (user, kernel) and time spent runnable but waiting for a CPU
/// (schedstat `run_delay`): a reading, or the difference since one.
struct CpuClock {
    user: Duration,
    sys: Duration,
    runq: Duration,
}

impl CpuClock {
    fn now() -> Self {
        // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_THREAD writes the calling thread's usage into `ru`, which is valid for
        // writes for the whole call.
        let ret = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        assert_eq!(ret, 0, "getrusage(RUSAGE_THREAD)");
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        let run_delay = schedstat
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok());
        Self {
            user: tv(ru.ru_utime),
            sys: tv(ru.ru_stime),
            runq: Duration::from_nanos(run_delay.unwrap_or(0)),
        }
    }

    fn since(&self) -> CpuClock {
        let now = Self::now();
        CpuClock {
            user: now.user - self.user,
            sys: now.sys - self.sys,
            runq: now.runq - self.runq,
        }
    }

    fn total(&self) -> Duration {
        self.user + self.sys
    }
}

/// What the host-side helper thread reports.
struct Peer {
    cpu: Duration,
    wall: Duration,
    /// Last datagram received (guest -> host).
    last: Option<Instant>,
    stats: Stats,
}

/// Datagram accounting on the receiving side.
#[derive(Default)]
struct Stats {
    frames: u64,
    bytes: u64,
    /// One past the highest sequence number seen.
    next_seq: u64,
    gaps: u64,
    reordered: u64,
    /// Frames that are not ours (or empty completions).
    other: u64,
    checked: u64,
    bad: u64,
}

impl Stats {
    fn account(&mut self, seq: u64, payload: usize) {
        if seq > self.next_seq {
            self.gaps += seq - self.next_seq;
        } else if seq < self.next_seq {
            self.reordered += 1;
        }
        self.next_seq = self.next_seq.max(seq + 1);
        self.frames += 1;
        self.bytes += payload as u64;
    }
}

/// Shared between the device thread and the host helper thread.
#[derive(Default)]
struct Flow {
    /// Datagrams sent so far (final once `stop`/`done` is set).
    sent: AtomicU64,
    /// One past the highest sequence number received.
    delivered: AtomicU64,
    stop: AtomicBool,
    done: AtomicBool,
}

struct Report {
    /// The receiving side's accounting.
    stats: Stats,
    /// Datagrams the sending side sent.
    sent: u64,
    wall: Duration,
    cpu: CpuClock,
    driver: Duration,
    /// CPU and wall time of the host helper thread.
    peer: (Duration, Duration),
    /// Device handler calls (TAP events, queue events).
    wakeups: u64,
    /// Non-zero drop counters, described.
    drops: String,
}

impl Report {
    fn print(&self, name: &str) {
        let secs = self.wall.as_secs_f64();
        let gib = self.stats.bytes as f64 / GIB;
        let cpu_ms = self.cpu.total().as_secs_f64() * 1e3;
        let ms_per_gib = cpu_ms / gib;
        let driver_ms = self.driver.as_secs_f64() * 1e3;
        let dev_ms_per_gib = (cpu_ms - driver_ms) / gib;
        println!(
            "{name:<22} {:>7.2} {:>8.1} {:>6.1} {:>5.0} {:>5.0} {:>10.0} {:>7.1} {:>10.0} {:>7.1} {:>6.1} {:>5} {:>6.1} {:>8} {:>5}",
            self.stats.bytes as f64 * 8.0 / secs / 1e9,
            self.stats.frames as f64 / secs / 1e3,
            cpu_ms / 1e3 / secs * 100.0,
            self.cpu.sys.as_secs_f64() * 1e3 / cpu_ms * 100.0,
            self.cpu.runq.as_secs_f64() / secs * 100.0,
            ms_per_gib,
            driver_ms / cpu_ms * 100.0,
            dev_ms_per_gib,
            0.8 / (dev_ms_per_gib / 1e3) * GIB * 8.0 / 1e9,
            self.peer.0.as_secs_f64() / self.peer.1.as_secs_f64() * 100.0,
            self.stats.bytes >> 20,
            self.stats.frames as f64 / self.wakeups.max(1) as f64,
            self.stats.checked,
            self.sent.saturating_sub(self.stats.frames)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Setup

struct Device {
    net: Net,
    tap_mac: [u8; 6],
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("ip {}: {}", args.join(" "), err.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)?;
    let mut mac = [0u8; 6];
    let mut parts = word.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// Open the TAP (created in this namespace), address it and point the guest's IP at its MAC.
fn open_device(mtu: u16) -> Result<Device, String> {
    let net = Net::new(NetConfig {
        iface_id: "bench".to_owned(),
        tap_name: TAP.to_owned(),
        guest_mac: Some(GUEST_MAC),
        mtu: Some(mtu),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    })
    .map_err(|e| e.to_string())?;
    // No IPv6 chatter (router solicitations, MLD) on the TAP; the driver skips it anyway.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    let mtu = mtu.to_string();
    ip(&["link", "set", TAP, "mtu", &mtu, "txqueuelen", "2048", "up"])?;
    ip(&["addr", "add", "10.99.0.1/24", "dev", TAP])?;
    ip(&[
        "neigh",
        "replace",
        "10.99.0.2",
        "lladdr",
        GUEST_MAC_TEXT,
        "dev",
        TAP,
        "nud",
        "permanent",
    ])?;
    let link = ip(&["-o", "link", "show", TAP])?;
    let tap_mac = parse_mac(&link).ok_or_else(|| format!("no MAC in {link:?}"))?;
    Ok(Device { net, tap_mac })
}

/// Lay out both queues, ack what a Linux guest acks and activate the device.
fn activate<'a>(
    net: &mut Net,
    mem: &'a GuestMemoryMmap,
) -> Result<(VirtQueue<'a>, VirtQueue<'a>), String> {
    let rxq = VirtQueue::new(mem, GuestAddress(RXQ), RING);
    let txq = VirtQueue::new(mem, GuestAddress(TXQ), RING);
    rxq.configure(&mut net.queues_mut()[RX_INDEX]);
    txq.configure(&mut net.queues_mut()[TX_INDEX]);
    let offered = net.avail_features();
    for bit in [
        net_features::MRG_RXBUF,
        features::RING_EVENT_IDX,
        features::VERSION_1,
    ] {
        if offered & (1 << bit) == 0 {
            return Err(format!("device does not offer feature bit {bit}"));
        }
    }
    net.set_acked_features(offered);
    for q in net.queues_mut() {
        q.set_event_idx(true);
    }
    let irq = Arc::new(VirtioInterrupt::new().map_err(|e| e.to_string())?);
    net.activate(mem.clone(), irq)
        .map_err(|e| format!("activate: {e:?}"))?;
    Ok((rxq, txq))
}

// ---------------------------------------------------------------------------------------
// Frames and payloads

fn pattern(key: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((j as u64 * 7 + key * 37) % 251) as u8)
        .collect()
}

/// The payload carries `seq` and then the pattern of its key.
fn payload_ok(payload: &[u8], seq: u64, pattern: &[u8]) -> bool {
    payload.len() == pattern.len()
        && payload[..8] == seq.to_be_bytes()
        && payload[8..] == pattern[8..]
}

/// A guest frame to the host's UDP socket carrying `payload`.
fn udp_frame(dst_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let ends = UdpEnds {
        src_mac: GUEST_MAC,
        dst_mac,
        src: SocketAddrV4::new(GUEST_IP, GUEST_SRC_PORT),
        dst: SocketAddrV4::new(HOST_IP, HOST_PORT),
    };
    test_utils::udp_frame(ends, payload)
}

// ---------------------------------------------------------------------------------------
// Plumbing

/// poll(2) `fds` (fd, events) for up to `timeout_ms`; which ones are ready.
fn poll_fds<const N: usize>(fds: [(RawFd, i16); N], timeout_ms: i32) -> [bool; N] {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    // SAFETY: `pfds` is an array of `N` initialised pollfds, valid for writes for the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return [false; N];
    }
    pfds.map(|p| p.revents != 0)
}

/// virtio's `vring_need_event`: does moving the index from `old` to `new` pass `event`?
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The driver's side after publishing chains `old..new`: ask for an interrupt on the next
/// used entry (`used_event`, as Linux re-enabling callbacks after a poll) and kick (write the
/// queue eventfd, a real VM's ioeventfd) only when EVENT_IDX's `avail_event` asks for it.
fn publish_done(
    mem: &GuestMemoryMmap,
    q: &VirtQueue<'_>,
    seen: u16,
    old: u16,
    new: u16,
    kick: &EventFd,
) {
    q.set_used_event(seen);
    if old == new {
        return;
    }
    let (_, _, used) = q.addresses();
    let at = GuestAddress(used + 4 + 8 * u64::from(RING));
    let avail_event: u16 = mem.read_obj(at).expect("avail_event");
    if need_event(avail_event, new, old) {
        kick.write(1).expect("kick");
    }
}

/// UDP socket counters of this namespace: (InErrors, RcvbufErrors).
fn udp_errors() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return (0, 0);
    };
    let field = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (field("InErrors"), field("RcvbufErrors"))
}

/// The TAP's (rx_dropped, tx_dropped) as the host sees them (/proc/thread-self/net/dev).
fn tap_drops() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    let Some(line) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sqbbench0:"))
    else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    (
        v.get(3).copied().unwrap_or(0),
        v.get(11).copied().unwrap_or(0),
    )
}

fn describe_drops(counters: &[(&str, u64)]) -> String {
    counters
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Host -> guest

/// The guest driver's rx side: one 1-descriptor chain per buffer, head `i` always buffer `i`.
struct RxGuest<'a> {
    mem: &'a GuestMemoryMmap,
    q: VirtQueue<'a>,
    buf_len: u32,
    payload: usize,
    patterns: Vec<Vec<u8>>,
    seen: u16,
    avail: u16,
    /// Buffers of the current frame still to come (`num_buffers` counts down).
    left: u16,
    /// Sequence number of the current frame, if it is one of ours.
    cur: Option<u64>,
    check: bool,
    frame_len: u64,
    scratch: Vec<u8>,
    stats: Stats,
}

impl<'a> RxGuest<'a> {
    fn new(mem: &'a GuestMemoryMmap, q: VirtQueue<'a>, shape: Shape) -> Self {
        Self {
            mem,
            q,
            buf_len: shape.rx_buf,
            payload: shape.payload(),
            patterns: (0..KEYS).map(|k| pattern(k, shape.payload())).collect(),
            seen: 0,
            avail: 0,
            left: 0,
            cur: None,
            check: false,
            frame_len: 0,
            scratch: Vec::with_capacity(shape.frame_len()),
            stats: Stats::default(),
        }
    }

    fn buffer(&self, id: u32) -> u64 {
        RX_BUFS + u64::from(id) * u64::from(self.buf_len)
    }

    /// Fill the whole ring with buffers.
    fn post_all(&mut self) {
        for i in 0..RING {
            self.q
                .add_chain(&[(self.buffer(u32::from(i)), self.buf_len, F_WRITE)]);
        }
        self.avail = RING;
    }

    /// Take every used buffer, account its frame and post it again; `true` if any.
    fn harvest(&mut self, kick: &EventFd) -> bool {
        let used = self.q.used_idx();
        if used == self.seen {
            return false;
        }
        let old = self.avail;
        while self.seen != used {
            let (id, len) = self.q.used(self.seen);
            self.seen = self.seen.wrapping_add(1);
            let addr = self.buffer(id);
            self.take_buffer(addr, len);
            let head = self.q.add_chain(&[(addr, self.buf_len, F_WRITE)]);
            assert_eq!(u32::from(head), id, "rx buffers come back in order");
            self.avail = self.avail.wrapping_add(1);
        }
        publish_done(self.mem, &self.q, self.seen, old, self.avail, kick);
        true
    }

    fn take_buffer(&mut self, addr: u64, len: u32) {
        if self.left == 0 {
            let mut hdr = [0u8; PAYLOAD_AT + 8];
            let n = (len as usize).min(hdr.len());
            self.mem
                .read_slice(&mut hdr[..n], GuestAddress(addr))
                .expect("rx buffer");
            self.left = if n >= VNET_HDR_LEN {
                u16::from_le_bytes([hdr[10], hdr[11]]).max(1)
            } else {
                1
            };
            let eth = VNET_HDR_LEN;
            let ours = n == hdr.len()
                && hdr[eth + 12..eth + 14] == [8, 0]
                && hdr[eth + 14 + 9] == 17
                && hdr[eth + 34 + 2..eth + 34 + 4] == GUEST_PORT.to_be_bytes();
            self.cur = ours.then(|| u64::from_be_bytes(hdr[PAYLOAD_AT..].try_into().unwrap()));
            self.check = self.cur.is_some_and(|seq| seq % CHECK_EVERY == 0);
            self.frame_len = 0;
            self.scratch.clear();
        }
        if self.check {
            let start = self.scratch.len();
            self.scratch.resize(start + len as usize, 0);
            self.mem
                .read_slice(&mut self.scratch[start..], GuestAddress(addr))
                .expect("rx buffer");
        }
        self.frame_len += u64::from(len);
        self.left -= 1;
        if self.left == 0 {
            self.finish_frame();
        }
    }

    fn finish_frame(&mut self) {
        let Some(seq) = self.cur.take() else {
            self.stats.other += 1;
            return;
        };
        if self.frame_len != (PAYLOAD_AT + self.payload) as u64 {
            self.stats.bad += 1;
            return;
        }
        if self.check {
            self.stats.checked += 1;
            let pattern = &self.patterns[(seq % KEYS) as usize];
            if !payload_ok(&self.scratch[PAYLOAD_AT..], seq, pattern) {
                self.stats.bad += 1;
            }
        }
        self.stats.account(seq, self.payload);
    }
}

/// The host sending datagrams to the guest, at most a window ahead of what arrived.
fn host_sender(sock: &UdpSocket, shape: Shape, flow: &Flow) -> Peer {
    let cpu = CpuClock::now();
    let start = Instant::now();
    let mut bufs: Vec<Vec<u8>> = (0..KEYS).map(|k| pattern(k, shape.payload())).collect();
    let window = shape.window();
    let mut seq = 0u64;
    let mut stats = Stats::default();
    while !flow.stop.load(Ordering::Relaxed) {
        if seq - flow.delivered.load(Ordering::Relaxed) >= window {
            std::thread::sleep(IDLE);
            continue;
        }
        let buf = &mut bufs[(seq % KEYS) as usize];
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        match sock.send(buf) {
            Ok(_) => {
                seq += 1;
                flow.sent.store(seq, Ordering::Release);
            }
            // ENOBUFS and the like: count it and back off.
            Err(_) => {
                stats.bad += 1;
                std::thread::sleep(IDLE);
            }
        }
    }
    flow.done.store(true, Ordering::Release);
    stats.frames = seq;
    Peer {
        cpu: cpu.since().total(),
        wall: start.elapsed(),
        last: None,
        stats,
    }
}

fn host_to_guest(shape: Shape) -> Result<Report, String> {
    let mut dev = open_device(shape.mtu)?;
    let mem = single_region_mem(MEM_SIZE);
    let (rxq, _txq) = activate(&mut dev.net, &mem)?;
    let tap_fd = dev.net.tap().as_raw_fd();
    let kick = dev.net.queue_events()[RX_INDEX]
        .try_clone()
        .map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind(SocketAddrV4::new(HOST_IP, 0)).map_err(|e| e.to_string())?;
    sock.connect(SocketAddrV4::new(GUEST_IP, GUEST_PORT))
        .map_err(|e| e.to_string())?;
    let (tun_before, _) = tap_drops();
    let mut guest = RxGuest::new(&mem, rxq, shape);
    guest.post_all();

    let flow = Arc::new(Flow::default());
    let sender = {
        let flow = flow.clone();
        std::thread::spawn(move || host_sender(&sock, shape, &flow))
    };
    let cpu = CpuClock::now();
    let start = Instant::now();
    let (mut last, mut driver, mut wakeups, mut stopping) = (start, Duration::ZERO, 0u64, false);
    loop {
        // The VMM's event loop: wait for the TAP or a queue notification, run the handlers.
        let [kicked, tap] = poll_fds(
            [(kick.as_raw_fd(), libc::POLLIN), (tap_fd, libc::POLLIN)],
            5,
        );
        if kicked {
            dev.net.process_rx_queue_event();
            wakeups += 1;
        }
        if tap {
            dev.net.process_tap_rx_event();
            wakeups += 1;
        }
        // The guest driver: take the used buffers, check their frames, post them again.
        let t = Instant::now();
        let progress = guest.harvest(&kick);
        flow.delivered
            .store(guest.stats.next_seq, Ordering::Relaxed);
        let now = Instant::now();
        driver += now - t;
        if progress {
            last = now;
        }
        if !stopping && (now - start >= RUN || guest.stats.bytes >= MAX_BYTES) {
            flow.stop.store(true, Ordering::Relaxed);
            stopping = true;
        }
        let all_in = flow.done.load(Ordering::Acquire)
            && guest.stats.next_seq >= flow.sent.load(Ordering::Acquire);
        if stopping && (all_in || now - last >= DRAIN_TIMEOUT) {
            break;
        }
        if now - start > RUN + STUCK {
            return Err(format!(
                "host->guest stuck after {} frames",
                guest.stats.frames
            ));
        }
    }
    let cpu = cpu.since();
    let peer = sender.join().map_err(|_| "sender thread panicked")?;
    let (_, tun_after) = tap_drops();
    let m = dev.net.metrics();
    let drops = describe_drops(&[
        ("lost", peer.stats.frames.saturating_sub(guest.stats.frames)),
        ("seq gaps", guest.stats.gaps),
        ("reordered", guest.stats.reordered),
        ("host send errors", peer.stats.bad),
        ("tun tx_dropped", tun_after - tun_before),
        ("device rx_fails", m.rx_fails.count()),
        ("device tap_read_fails", m.tap_read_fails.count()),
    ]);
    Ok(Report {
        stats: guest.stats,
        sent: peer.stats.frames,
        wall: last - start,
        cpu,
        driver,
        peer: (peer.cpu, peer.wall),
        wakeups,
        drops,
    })
}

// ---------------------------------------------------------------------------------------
// Guest -> host

/// The guest driver's tx side: a fixed frame per slot, only its sequence number rewritten;
/// chains take `pieces` consecutive descriptors, so slot `s` is always head `s * pieces`.
struct TxGuest<'a> {
    mem: &'a GuestMemoryMmap,
    q: VirtQueue<'a>,
    frame_len: usize,
    payload: usize,
    pieces: u16,
    slots: u64,
    stride: u64,
    window: u64,
    seen: u16,
    posted: u64,
    /// Descriptors posted and not used yet.
    in_flight: u16,
    descs: Vec<(u64, u32, u16)>,
}

impl<'a> TxGuest<'a> {
    fn new(mem: &'a GuestMemoryMmap, q: VirtQueue<'a>, shape: Shape, dst_mac: [u8; 6]) -> Self {
        let frame_len = shape.frame_len();
        let pieces = frame_len.div_ceil(PAGE) as u16;
        let slots = u64::from(RING / pieces);
        let stride = frame_len.next_multiple_of(2048) as u64;
        for slot in 0..slots {
            let frame = udp_frame(dst_mac, &pattern(slot, shape.payload()));
            mem.write_slice(&frame, GuestAddress(TX_BUFS + slot * stride))
                .expect("tx frame");
        }
        Self {
            mem,
            q,
            frame_len,
            payload: shape.payload(),
            pieces,
            slots,
            stride,
            window: shape.window(),
            seen: 0,
            posted: 0,
            in_flight: 0,
            descs: Vec::with_capacity(usize::from(pieces)),
        }
    }

    /// Reclaim used chains, post frames while ring and window allow, kick if needed.
    fn step(&mut self, post: bool, delivered: u64, kick: &EventFd) {
        let used = self.q.used_idx();
        while self.seen != used {
            self.seen = self.seen.wrapping_add(1);
            self.in_flight -= self.pieces;
        }
        let old = self.posted as u16;
        while post && self.in_flight + self.pieces <= RING && self.posted - delivered < self.window
        {
            let slot = self.posted % self.slots;
            let addr = TX_BUFS + slot * self.stride;
            self.mem
                .write_slice(
                    &self.posted.to_be_bytes(),
                    GuestAddress(addr + PAYLOAD_AT as u64),
                )
                .expect("tx sequence number");
            self.descs.clear();
            for off in (0..self.frame_len).step_by(PAGE) {
                let len = PAGE.min(self.frame_len - off) as u32;
                self.descs.push((addr + off as u64, len, 0));
            }
            let head = self.q.add_chain(&self.descs);
            debug_assert_eq!(u64::from(head), slot * u64::from(self.pieces));
            self.posted += 1;
            self.in_flight += self.pieces;
        }
        publish_done(self.mem, &self.q, self.seen, old, self.posted as u16, kick)
    }

    fn bytes_posted(&self) -> u64 {
        self.posted * self.payload as u64
    }
}

/// The host receiving the guest's datagrams and checking them.
fn host_receiver(sock: &UdpSocket, shape: Shape, slots: u64, flow: &Flow) -> Peer {
    let cpu = CpuClock::now();
    let start = Instant::now();
    let patterns: Vec<Vec<u8>> = (0..slots).map(|k| pattern(k, shape.payload())).collect();
    let mut buf = vec![0u8; 1 << 16];
    let mut stats = Stats::default();
    let mut last = None;
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                last = Some(now);
                if n != shape.payload() {
                    stats.bad += 1;
                    continue;
                }
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                if seq % CHECK_EVERY == 0 {
                    stats.checked += 1;
                    if !payload_ok(&buf[..n], seq, &patterns[(seq % slots) as usize]) {
                        stats.bad += 1;
                    }
                }
                stats.account(seq, n);
                flow.delivered.store(stats.next_seq, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("host receive: {e}"),
        }
        if flow.stop.load(Ordering::Acquire) {
            let all_in = stats.next_seq >= flow.sent.load(Ordering::Acquire);
            let idle = last.map_or(start, |t| t).elapsed() >= DRAIN_TIMEOUT;
            if all_in || idle {
                break;
            }
        }
    }
    Peer {
        cpu: cpu.since().total(),
        wall: last.map_or(start, |t| t) - start,
        last,
        stats,
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) -> Result<(), String> {
    // SAFETY: SO_RCVBUFFORCE reads one `int` through the pointer, valid for the call; `sock`
    // is an open socket.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("SO_RCVBUFFORCE: {err}"));
    }
    Ok(())
}

fn guest_to_host(shape: Shape) -> Result<Report, String> {
    let mut dev = open_device(shape.mtu)?;
    let mem = single_region_mem(MEM_SIZE);
    let (_rxq, txq) = activate(&mut dev.net, &mem)?;
    let kick = dev.net.queue_events()[TX_INDEX]
        .try_clone()
        .map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind(SocketAddrV4::new(HOST_IP, HOST_PORT)).map_err(|e| e.to_string())?;
    set_rcvbuf(&sock, 64 << 20)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let mut guest = TxGuest::new(&mem, txq, shape, dev.tap_mac);
    let (tun_before, _) = tap_drops();
    let (udp_before, rcvbuf_before) = udp_errors();

    let flow = Arc::new(Flow::default());
    let receiver = {
        let (flow, slots) = (flow.clone(), guest.slots);
        std::thread::spawn(move || host_receiver(&sock, shape, slots, &flow))
    };
    let cpu = CpuClock::now();
    let start = Instant::now();
    let (mut driver, mut wakeups) = (Duration::ZERO, 0u64);
    loop {
        // The guest driver: reclaim sent frames, post new ones, kick if the device asks.
        let t = Instant::now();
        let post = t - start < RUN && guest.bytes_posted() < MAX_BYTES;
        guest.step(post, flow.delivered.load(Ordering::Relaxed), &kick);
        flow.sent.store(guest.posted, Ordering::Release);
        driver += t.elapsed();
        // The VMM's event loop: a queue notification (the driver's kick, or the device's own
        // after a full budget of 256 frames) runs the handler.
        let [notified] = poll_fds([(kick.as_raw_fd(), libc::POLLIN)], 0);
        if notified {
            dev.net.process_tx_queue_event();
            wakeups += 1;
        } else if !post && guest.in_flight == 0 {
            break;
        } else if t - start > RUN + STUCK {
            return Err(format!("guest->host stuck after {} frames", guest.posted));
        } else {
            // Window full (the host has not caught up) or the TAP refused a write.
            dev.net.process_tap_tx_event();
            std::thread::sleep(IDLE);
        }
    }
    let cpu = cpu.since();
    flow.stop.store(true, Ordering::Release);
    let peer = receiver.join().map_err(|_| "receiver thread panicked")?;
    let (tun_after, _) = tap_drops();
    let (udp_after, rcvbuf_after) = udp_errors();
    let m = dev.net.metrics();
    let drops = describe_drops(&[
        ("lost", guest.posted.saturating_sub(peer.stats.frames)),
        ("seq gaps", peer.stats.gaps),
        ("reordered", peer.stats.reordered),
        ("UDP InErrors", udp_after - udp_before),
        ("UDP RcvbufErrors", rcvbuf_after - rcvbuf_before),
        ("tun rx_dropped", tun_after - tun_before),
        ("device tx_fails", m.tx_fails.count()),
        ("device tx_malformed_frames", m.tx_malformed_frames.count()),
    ]);
    Ok(Report {
        wall: peer.last.map_or(Duration::ZERO, |t| t - start),
        stats: peer.stats,
        sent: guest.posted,
        cpu,
        driver,
        peer: (peer.cpu, peer.wall),
        wakeups,
        drops,
    })
}
