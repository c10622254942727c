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

mod plumbing;
mod rx;
mod setup;
mod tx;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use squib_devices::virtio::net::{QUEUE_SIZE, VNET_HDR_LEN};

use rx::host_to_guest;
use tx::guest_to_host;

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
