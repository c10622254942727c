//! Host -> guest (the rx path): a host UDP sender over the TAP and the fake guest driver
//! taking, checking and reposting the rx buffers.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squib_devices::virtio::net::{RX_INDEX, VNET_HDR_LEN};
use squib_devices::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
use squib_devices::virtio::{GuestMemoryMmap, VirtioDevice};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::plumbing::{describe_drops, poll_fds, publish_done, tap_drops};
use crate::setup::{activate, open_device, pattern, payload_ok};
use crate::{
    CpuClock, Flow, Peer, Report, Shape, Stats, CHECK_EVERY, DRAIN_TIMEOUT, GUEST_IP, GUEST_PORT,
    HOST_IP, IDLE, KEYS, MAX_BYTES, MEM_SIZE, PAYLOAD_AT, RING, RUN, RX_BUFS, STUCK,
};

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

pub(super) fn host_to_guest(shape: Shape) -> Result<Report, String> {
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
