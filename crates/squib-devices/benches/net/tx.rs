//! Guest -> host (the tx path): the fake guest driver posting frames on the tx queue and a
//! host UDP receiver checking what comes out of the TAP.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squib_devices::virtio::net::TX_INDEX;
use squib_devices::virtio::test_utils::{single_region_mem, VirtQueue};
use squib_devices::virtio::{GuestMemoryMmap, VirtioDevice};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::plumbing::{describe_drops, poll_fds, publish_done, tap_drops, udp_errors};
use crate::setup::{activate, open_device, pattern, payload_ok, udp_frame};
use crate::{
    CpuClock, Flow, Peer, Report, Shape, Stats, CHECK_EVERY, DRAIN_TIMEOUT, HOST_IP, HOST_PORT,
    IDLE, MAX_BYTES, MEM_SIZE, PAGE, PAYLOAD_AT, RING, RUN, STUCK, TX_BUFS,
};

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

pub(super) fn guest_to_host(shape: Shape) -> Result<Report, String> {
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
