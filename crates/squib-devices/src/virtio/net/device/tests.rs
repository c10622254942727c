//! Net device tests: hand-built virtqueues and a datagram socket standing in for the TAP,
//! including hostile-guest chains (out-of-memory addresses, loops, short or wrong-direction
//! buffers).

use std::time::Duration;

use super::*;
use crate::rate_limiter::{BucketUpdate, TokenBucket};
use crate::virtio::net::features as net;
use crate::virtio::net::TX_INDEX;
use crate::virtio::test_utils::{F_NEXT, F_WRITE};
use harness::{frame, NetHarness, RX_BUF, TX_BUF};

pub(crate) mod harness {
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    use crate::virtio::iovec::{readv_guest, writev_guest};
    use crate::virtio::net::tap::{read_frame_fd, TapIo};
    use crate::virtio::net::{Net, NetConfig, RX_INDEX, TX_INDEX, VNET_HDR_LEN};
    use crate::virtio::test_utils::{single_region_mem, VirtQueue};
    use crate::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    /// Guest RAM size of the harness.
    pub const MEM_SIZE: usize = 0x40_0000;
    /// Rx buffers, 64 KiB apart.
    pub const RX_BUF: u64 = 0x10_0000;
    /// Tx buffers, 64 KiB apart.
    pub const TX_BUF: u64 = 0x20_0000;
    const QUEUE_SIZE: u16 = 16;

    /// A datagram socket playing the TAP; `full` makes writes fail with `EAGAIN`.
    #[derive(Debug)]
    pub struct SocketTap {
        pub sock: UnixDatagram,
        pub full: Arc<AtomicBool>,
        pub offload: Arc<AtomicU32>,
    }

    impl AsRawFd for SocketTap {
        fn as_raw_fd(&self) -> RawFd {
            self.sock.as_raw_fd()
        }
    }

    impl TapIo for SocketTap {
        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            read_frame_fd(self.sock.as_raw_fd(), buf)
        }

        fn read_frame_into(
            &mut self,
            mem: &GuestMemoryMmap,
            segs: &[(GuestAddress, u32)],
        ) -> io::Result<usize> {
            readv_guest(self.sock.as_raw_fd(), mem, segs)
        }

        fn write_frame(
            &mut self,
            mem: &GuestMemoryMmap,
            segs: &[(GuestAddress, u32)],
        ) -> io::Result<usize> {
            if self.full.load(Ordering::SeqCst) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            writev_guest(self.sock.as_raw_fd(), mem, segs)
        }

        fn set_offload(&mut self, flags: u32) -> io::Result<()> {
            self.offload.store(flags, Ordering::SeqCst);
            Ok(())
        }
    }

    pub fn config() -> NetConfig {
        NetConfig {
            iface_id: "eth0".to_owned(),
            tap_name: "unused".to_owned(),
            guest_mac: Some([6, 0, 0xac, 0x10, 0, 2]),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    /// A frame of `len` payload bytes (`i % 251`, shifted by `seed`) behind a zero header.
    pub fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend((0..len).map(|i| (i % 251) as u8 ^ seed));
        f
    }

    /// An activated net device, its driver-side queues and the host end of its "TAP".
    pub struct NetHarness {
        pub mem: &'static GuestMemoryMmap,
        pub rxq: VirtQueue<'static>,
        pub txq: VirtQueue<'static>,
        pub net: Net,
        pub irq: Arc<VirtioInterrupt>,
        pub host: UnixDatagram,
        pub full: Arc<AtomicBool>,
        pub offload: Arc<AtomicU32>,
        rx_bufs: u64,
        tx_bufs: u64,
    }

    impl NetHarness {
        pub fn new(acked: u64) -> Self {
            Self::with_config(config(), acked)
        }

        pub fn with_config(cfg: NetConfig, acked: u64) -> Self {
            let (dev_end, host) = UnixDatagram::pair().unwrap();
            dev_end.set_nonblocking(true).unwrap();
            host.set_nonblocking(true).unwrap();
            let full = Arc::new(AtomicBool::new(false));
            let offload = Arc::new(AtomicU32::new(u32::MAX));
            let tap = SocketTap {
                sock: dev_end,
                full: full.clone(),
                offload: offload.clone(),
            };
            let net = Net::with_tap(cfg, Box::new(tap)).unwrap();
            let mut h = Self::activated(net, acked);
            h.host = host;
            h.full = full;
            h.offload = offload;
            h
        }

        /// Activate `net` (any backend) on fresh guest memory and queues.
        pub fn activated(mut net: Net, acked: u64) -> Self {
            // Leaked so the queue builders can borrow it for the harness's whole life.
            let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
            let rxq = VirtQueue::new(mem, GuestAddress(0), QUEUE_SIZE);
            let txq = VirtQueue::new(mem, GuestAddress(0x1000), QUEUE_SIZE);
            rxq.configure(&mut net.queues_mut()[RX_INDEX]);
            txq.configure(&mut net.queues_mut()[TX_INDEX]);
            let acked = acked | (1 << features::VERSION_1);
            net.set_acked_features(acked);
            let event_idx = acked & (1 << features::RING_EVENT_IDX) != 0;
            for q in net.queues_mut() {
                q.set_event_idx(event_idx);
            }
            let irq = Arc::new(VirtioInterrupt::new().unwrap());
            net.activate(mem.clone(), irq.clone()).unwrap();
            Self {
                mem,
                rxq,
                txq,
                net,
                irq,
                host: UnixDatagram::pair().unwrap().0,
                full: Arc::default(),
                offload: Arc::default(),
                rx_bufs: 0,
                tx_bufs: 0,
            }
        }

        /// Post one rx chain of writable buffers with these lengths; returns the head.
        pub fn post_rx(&mut self, lens: &[u32]) -> u16 {
            let descs: Vec<_> = lens
                .iter()
                .map(|&len| {
                    let addr = RX_BUF + self.rx_bufs * 0x1_0000;
                    self.rx_bufs += 1;
                    (addr, len, crate::virtio::test_utils::F_WRITE)
                })
                .collect();
            self.rxq.add_chain(&descs)
        }

        /// Post `data` as one tx chain split at the given cut points; returns the head.
        pub fn post_tx(&mut self, data: &[u8], cuts: &[usize]) -> u16 {
            let mut descs = Vec::new();
            let mut start = 0;
            for &end in cuts.iter().chain(std::iter::once(&data.len())) {
                let addr = TX_BUF + self.tx_bufs * 0x1_0000;
                self.tx_bufs += 1;
                self.mem
                    .write_slice(&data[start..end], GuestAddress(addr))
                    .unwrap();
                descs.push((addr, (end - start) as u32, 0));
                start = end;
            }
            self.txq.add_chain(&descs)
        }

        /// Bytes the device wrote into rx used entry `i`, read back from its buffers.
        pub fn read_rx_used(&self, i: u16, lens: &[u32], first_buf: u64) -> Vec<u8> {
            let (_, used_len) = self.rxq.used(i);
            let mut out = Vec::new();
            let mut left = used_len as usize;
            for (k, &len) in lens.iter().enumerate() {
                let n = (len as usize).min(left);
                let mut buf = vec![0u8; n];
                let addr = RX_BUF + (first_buf + k as u64) * 0x1_0000;
                self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                out.extend(buf);
                left -= n;
            }
            out
        }

        /// Everything the device sent to the host end.
        pub fn host_frames(&self) -> Vec<Vec<u8>> {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 70_000];
            while let Ok(n) = self.host.recv(&mut buf) {
                frames.push(buf[..n].to_vec());
            }
            frames
        }
    }
}

#[test]
fn offers_features_and_config_space() {
    let mut cfg = harness::config();
    cfg.mtu = Some(1400);
    let h = NetHarness::with_config(cfg, 0);
    let f = h.net.avail_features();
    for bit in [
        net::CSUM,
        net::GUEST_CSUM,
        net::GUEST_TSO4,
        net::HOST_TSO6,
        net::MRG_RXBUF,
        net::MAC,
        net::MTU,
        features::RING_EVENT_IDX,
        features::VERSION_1,
    ] {
        assert!(has_feature(f, bit), "bit {bit}");
    }
    let mut cfg_bytes = [0xffu8; 16];
    h.net.read_config(0, &mut cfg_bytes);
    assert_eq!(&cfg_bytes[..6], &[6, 0, 0xac, 0x10, 0, 2]);
    assert_eq!(u16::from_le_bytes([cfg_bytes[10], cfg_bytes[11]]), 1400);
    assert_eq!(&cfg_bytes[12..], &[0; 4]);
    assert_eq!(h.net.device_type(), device_type::NET);
}

#[test]
fn mac_and_mtu_features_only_when_configured() {
    let mut cfg = harness::config();
    cfg.guest_mac = None;
    let h = NetHarness::with_config(cfg, 0);
    assert!(!has_feature(h.net.avail_features(), net::MAC));
    assert!(!has_feature(h.net.avail_features(), net::MTU));
}

#[test]
fn rejects_mtu_below_minimum() {
    let mut cfg = harness::config();
    cfg.mtu = Some(67);
    let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let tap = harness::SocketTap {
        sock: a,
        full: Arc::default(),
        offload: Arc::default(),
    };
    let err = Net::with_tap(cfg, Box::new(tap)).unwrap_err();
    assert!(matches!(err, NetError::InvalidMtu { mtu: 67 }));
}

#[test]
fn config_write_updates_mac_only() {
    let mut h = NetHarness::new(0);
    h.net.write_config(0, &[0x02, 1, 2, 3, 4, 5]);
    assert_eq!(h.net.guest_mac(), Some([2, 1, 2, 3, 4, 5]));
    h.net.write_config(10, &[0, 1]);
    assert_eq!(h.net.metrics().mac_address_updates.count(), 1);
    assert_eq!(h.net.metrics().cfg_fails.count(), 1);
}

#[test]
fn activation_sets_negotiated_offloads_on_tap() {
    let acked = (1 << net::GUEST_CSUM) | (1 << net::GUEST_TSO4) | (1 << net::GUEST_TSO6);
    let h = NetHarness::new(acked);
    let flags = h.offload.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        flags,
        offload::TUN_F_CSUM | offload::TUN_F_TSO4 | offload::TUN_F_TSO6
    );
}

#[test]
fn activate_twice_or_with_unready_queue_fails() {
    let mut h = NetHarness::new(0);
    let mem = h.mem.clone();
    let err = h.net.activate(mem.clone(), h.irq.clone()).unwrap_err();
    assert!(matches!(err, ActivateError::AlreadyActive));
    h.net.reset();
    assert!(!h.net.is_activated());
    let err = h.net.activate(mem, h.irq.clone()).unwrap_err();
    assert!(matches!(err, ActivateError::InvalidQueue { index: 0 }));
    assert_eq!(h.net.metrics().activate_fails.count(), 2);
}

#[test]
fn tx_gathers_chain_into_one_tap_frame() {
    let mut h = NetHarness::new(0);
    let data = frame(1000, 7);
    h.post_tx(&data, &[12, 500]);
    h.net.process_tx();
    assert_eq!(h.host_frames(), vec![data]);
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.txq.used(0), (0, 0));
    let m = h.net.metrics();
    assert_eq!(m.tx_packets_count.count(), 1);
    assert_eq!(m.tx_bytes_count.count(), 1000);
    assert_eq!(h.irq.eventfd().read().unwrap(), 1);
}

#[test]
fn tx_malformed_chains_are_dropped_and_counted() {
    let mut h = NetHarness::new(0);
    // Device-writable descriptor.
    h.txq.add_chain(&[(TX_BUF, 100, F_WRITE)]);
    // Outside guest memory.
    h.txq.add_chain(&[(harness::MEM_SIZE as u64 - 8, 100, 0)]);
    // Shorter than the vnet header.
    h.txq.add_chain(&[(TX_BUF, 4, 0)]);
    // Longer than any frame.
    h.txq
        .add_chain(&[(TX_BUF, 0x1_0000, 0), (TX_BUF + 0x1_0000, 0x1_0000, 0)]);
    // Zero-length descriptors only.
    h.txq.add_chain(&[(TX_BUF, 0, 0)]);
    let good = frame(60, 1);
    h.post_tx(&good, &[]);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 6);
    assert_eq!(h.net.metrics().tx_malformed_frames.count(), 5);
    assert_eq!(h.host_frames(), vec![good]);
}

#[test]
fn tx_descriptor_loop_terminates() {
    let mut h = NetHarness::new(0);
    h.txq.set_desc(0, TX_BUF, 64, F_NEXT, 1);
    h.txq.set_desc(1, TX_BUF, 64, F_NEXT, 0);
    h.txq.publish(0);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 1);
    // The device keeps serving later chains.
    h.txq.set_desc(2, TX_BUF, 64, 0, 0);
    h.txq.publish(2);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 2);
}

#[test]
fn tx_bad_avail_idx_serves_nothing_and_does_not_panic() {
    let mut h = NetHarness::new(0);
    h.post_tx(&frame(10, 0), &[]);
    h.txq.set_avail_idx(200);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 0);
    assert!(h.host_frames().is_empty());
    assert!(h.net.metrics().tx_malformed_frames.count() >= 1);
}

#[test]
fn tx_full_tap_keeps_frame_until_writable() {
    let mut h = NetHarness::new(0);
    let data = frame(100, 3);
    h.post_tx(&data, &[]);
    h.full.store(true, std::sync::atomic::Ordering::SeqCst);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 0);
    // Another kick while the TAP is full does not spin or drop.
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 0);
    h.full.store(false, std::sync::atomic::Ordering::SeqCst);
    h.net.process_tap_tx_event();
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.host_frames(), vec![data]);
}

#[test]
fn rx_mergeable_frame_spans_chains_with_num_buffers() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.post_rx(&[1000]);
    h.post_rx(&[600, 400]);
    let data = frame(1500, 9);
    h.host.send(&data).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 2);
    assert_eq!(h.rxq.used(0), (0, 1000));
    assert_eq!(h.rxq.used(1), (1, 512));
    let mut got = h.read_rx_used(0, &[1000], 0);
    got.extend(h.read_rx_used(1, &[600, 400], 1));
    let mut want = data.clone();
    want[10..12].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(got, want);
    let m = h.net.metrics();
    assert_eq!(m.rx_packets_count.count(), 1);
    assert_eq!(m.rx_bytes_count.count(), 1500);
    assert_eq!(h.irq.eventfd().read().unwrap(), 1);
}

#[test]
fn rx_waits_for_buffers_without_dropping_frames() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    let frames: Vec<_> = (0..3).map(|i| frame(200, i)).collect();
    for f in &frames {
        h.host.send(f).unwrap();
    }
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 0);
    assert_eq!(h.net.metrics().no_rx_avail_buffer.count(), 1);
    // Only one frame was taken off the TAP: the rest wait there.
    h.post_rx(&[2048]);
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 1);
    for _ in 0..2 {
        h.post_rx(&[2048]);
    }
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 3);
    for (i, f) in frames.iter().enumerate() {
        let mut want = f.clone();
        want[10] = 1;
        assert_eq!(
            h.read_rx_used(i as u16, &[2048], i as u64),
            want,
            "frame {i}"
        );
    }
    assert_eq!(h.net.metrics().rx_packets_count.count(), 3);
}

#[test]
fn rx_without_mergeable_drops_frame_larger_than_chain_and_keeps_chain() {
    let mut h = NetHarness::new(0);
    h.post_rx(&[100]);
    h.host.send(&frame(200, 0)).unwrap();
    let small = frame(50, 4);
    h.host.send(&small).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.net.metrics().rx_fails.count(), 1);
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.rxq.used(0), (0, 62));
    let mut want = small;
    want[10] = 1;
    assert_eq!(h.read_rx_used(0, &[100], 0), want);
}

#[test]
fn rx_malformed_chains_complete_empty_and_device_keeps_working() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    // Device-readable buffer in an rx chain.
    h.rxq.add_chain(&[(RX_BUF, 2048, 0)]);
    // Outside guest memory.
    h.rxq
        .add_chain(&[(harness::MEM_SIZE as u64 - 16, 2048, F_WRITE)]);
    // Zero capacity.
    h.rxq.add_chain(&[(RX_BUF, 0, F_WRITE)]);
    h.post_rx(&[2048]);
    h.host.send(&frame(100, 2)).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 4);
    for i in 0..3 {
        assert_eq!(h.rxq.used(i).1, 0, "entry {i}");
    }
    assert_eq!(h.rxq.used(3), (3, 112));
    assert_eq!(h.net.metrics().rx_fails.count(), 3);
}

#[test]
fn events_before_activation_are_ignored() {
    let mut h = NetHarness::new(0);
    h.net.reset();
    h.host.send(&frame(10, 0)).unwrap();
    h.net.process_tap_rx_event();
    h.net.queue_events()[TX_INDEX].write(1).unwrap();
    h.net.process_tx_queue_event();
    assert_eq!(h.rxq.used_idx(), 0);
    assert_eq!(h.txq.used_idx(), 0);
}

fn ops_limiter(size: u64, refill_ms: u64) -> Option<RateLimiter> {
    Some(RateLimiter::new(None, TokenBucket::new(size, 0, refill_ms)).unwrap())
}

/// Wait for a limiter's timerfd and run the device's handler for it.
fn wait_timer(fd: std::os::fd::RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(n, 1, "rate limiter timer did not fire");
}

#[test]
fn tx_rate_limiter_defers_frames_without_losing_them() {
    use std::os::fd::AsRawFd;
    let mut cfg = harness::config();
    cfg.tx_rate_limiter = ops_limiter(2, 50);
    let mut h = NetHarness::with_config(cfg, 0);
    for i in 0..5 {
        h.post_tx(&frame(64, i), &[]);
    }
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 2);
    assert!(h.net.metrics().tx_rate_limiter_throttled.count() >= 1);
    while h.txq.used_idx() < 5 {
        wait_timer(h.net.tx_rate_limiter().as_raw_fd());
        h.net.process_tx_rate_limiter_event();
    }
    let sent = h.host_frames();
    assert_eq!(sent.len(), 5);
    for (i, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(64, i as u8));
    }
}

#[test]
fn rx_rate_limiter_defers_frames_without_losing_them() {
    use std::os::fd::AsRawFd;
    let mut cfg = harness::config();
    cfg.rx_rate_limiter = Some(RateLimiter::new(TokenBucket::new(200, 0, 50), None).unwrap());
    let mut h = NetHarness::with_config(cfg, 1 << net::MRG_RXBUF);
    for i in 0..4 {
        h.post_rx(&[2048]);
        h.host.send(&frame(100, i)).unwrap();
    }
    let start = std::time::Instant::now();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 2);
    while h.rxq.used_idx() < 4 {
        wait_timer(h.net.rx_rate_limiter().as_raw_fd());
        h.net.process_rx_rate_limiter_event();
    }
    // 400 bytes at 200 bytes per 50 ms: the last two needed at least one refill.
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(h.net.metrics().rx_rate_limiter_throttled.count() >= 1);
    assert_eq!(h.net.metrics().rx_packets_count.count(), 4);
}

#[test]
fn update_rate_limiters_replaces_and_removes_buckets() {
    let mut cfg = harness::config();
    cfg.tx_rate_limiter = ops_limiter(2, 1000);
    let mut h = NetHarness::with_config(cfg, 0);
    h.net.update_rate_limiters(
        RateLimiterUpdate {
            bandwidth: BucketUpdate::from_config(1000, 0, 100),
            ops: BucketUpdate::None,
        },
        RateLimiterUpdate {
            bandwidth: BucketUpdate::None,
            ops: BucketUpdate::Disabled,
        },
    );
    assert_eq!(
        h.net.rx_rate_limiter().bandwidth().map(TokenBucket::size),
        Some(1000)
    );
    assert!(h.net.tx_rate_limiter().ops().is_none());
    for i in 0..5 {
        h.post_tx(&frame(10, i), &[]);
    }
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 5);
}

/// Answers frames whose payload starts with `PING` with `PONG`, in place of the TAP.
struct Echo {
    reply: Option<Vec<u8>>,
}

impl FrameInterceptor for Echo {
    fn intercept(&mut self, frame: &[u8]) -> bool {
        if frame.get(VNET_HDR_LEN_FOR_TEST..VNET_HDR_LEN_FOR_TEST + 4) != Some(b"PING") {
            return false;
        }
        let mut reply = frame.to_vec();
        reply[VNET_HDR_LEN_FOR_TEST..VNET_HDR_LEN_FOR_TEST + 4].copy_from_slice(b"PONG");
        self.reply = Some(reply);
        true
    }

    fn next_rx_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let reply = self.reply.take()?;
        buf[..reply.len()].copy_from_slice(&reply);
        Some(reply.len())
    }

    fn has_rx_frame(&self) -> bool {
        self.reply.is_some()
    }
}

const VNET_HDR_LEN_FOR_TEST: usize = crate::virtio::net::VNET_HDR_LEN;

#[test]
fn interceptor_consumes_frames_and_injects_replies() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.net.set_interceptor(Some(Box::new(Echo { reply: None })));
    h.post_rx(&[2048]);
    let mut ping = vec![0u8; VNET_HDR_LEN_FOR_TEST];
    ping.extend_from_slice(b"PING and more");
    let other = frame(40, 5);
    h.post_tx(&ping, &[12]);
    h.post_tx(&other, &[]);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 2);
    assert_eq!(h.host_frames(), vec![other]);
    assert_eq!(h.rxq.used_idx(), 1);
    let got = h.read_rx_used(0, &[2048], 0);
    assert_eq!(&got[VNET_HDR_LEN_FOR_TEST..], b"PONG and more");
}

#[test]
fn event_manager_drives_tap_and_queues() {
    use std::sync::Mutex;

    use event_manager::{EventManager, SubscriberOps};

    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.post_rx(&[2048]);
    h.post_tx(&frame(30, 1), &[]);
    let net = std::mem::replace(
        &mut h.net,
        Net::with_tap(
            harness::config(),
            Box::new(harness::SocketTap {
                sock: std::os::unix::net::UnixDatagram::pair().unwrap().0,
                full: Arc::default(),
                offload: Arc::default(),
            }),
        )
        .unwrap(),
    );
    let net = Arc::new(Mutex::new(net));
    let mut manager: EventManager<Arc<Mutex<Net>>> = EventManager::new().unwrap();
    manager.add_subscriber(net.clone());
    net.lock().unwrap().queue_events()[TX_INDEX]
        .write(1)
        .unwrap();
    h.host.send(&frame(80, 2)).unwrap();
    for _ in 0..4 {
        manager.run_with_timeout(100).unwrap();
        if h.rxq.used_idx() == 1 && h.txq.used_idx() == 1 {
            break;
        }
    }
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.host_frames(), vec![frame(30, 1)]);
    // Reading the host end may raise one writable edge; after that the loop goes idle.
    manager.run_with_timeout(50).unwrap();
    assert_eq!(manager.run_with_timeout(50).unwrap(), 0);
}

/// Always has a frame, always too short to carry a vnet header.
struct Broken;

impl FrameInterceptor for Broken {
    fn intercept(&mut self, _frame: &[u8]) -> bool {
        false
    }

    fn next_rx_frame(&mut self, _buf: &mut [u8]) -> Option<usize> {
        Some(3)
    }

    fn has_rx_frame(&self) -> bool {
        true
    }
}

#[test]
fn short_injected_frames_are_dropped_and_tap_still_served() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.net.set_interceptor(Some(Box::new(Broken)));
    h.post_rx(&[2048]);
    let data = frame(20, 8);
    h.host.send(&data).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 1);
    assert!(h.net.metrics().rx_fails.count() >= 1);
    assert_eq!(h.rxq.used(0), (0, 32));
}

#[test]
fn rx_reads_straight_into_held_chains_and_keeps_the_rest() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    for _ in 0..3 {
        h.post_rx(&[30_000]);
    }
    // 90 000 bytes held >= a largest frame: the TAP is read into guest memory directly.
    let big = frame(40_000, 1);
    h.host.send(&big).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 2);
    assert_eq!(h.rxq.used(0), (0, 30_000));
    assert_eq!(h.rxq.used(1), (1, 10_012));
    let mut got = h.read_rx_used(0, &[30_000], 0);
    got.extend(h.read_rx_used(1, &[30_000], 1));
    let mut want = big;
    want[10] = 2;
    assert_eq!(got, want);
    // The third chain stayed held and takes the next frame.
    let small = frame(64, 2);
    h.host.send(&small).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 3);
    assert_eq!(h.rxq.used(2), (2, 76));
    let mut want = small;
    want[10] = 1;
    assert_eq!(h.read_rx_used(2, &[30_000], 2), want);
}

#[test]
fn rx_direct_frame_waits_for_rate_limiter_then_publishes() {
    use std::os::fd::AsRawFd;
    let mut cfg = harness::config();
    cfg.rx_rate_limiter = ops_limiter(1, 30);
    let mut h = NetHarness::with_config(cfg, 1 << net::MRG_RXBUF);
    h.post_rx(&[40_000, 40_000]);
    h.post_rx(&[40_000, 40_000]);
    let frames = [frame(100, 1), frame(200, 2)];
    for f in &frames {
        h.host.send(f).unwrap();
    }
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.net.metrics().rx_rate_limiter_throttled.count(), 1);
    wait_timer(h.net.rx_rate_limiter().as_raw_fd());
    h.net.process_rx_rate_limiter_event();
    assert_eq!(h.rxq.used_idx(), 2);
    for (i, f) in frames.iter().enumerate() {
        let mut want = f.clone();
        want[10] = 1;
        let got = h.read_rx_used(i as u16, &[40_000, 40_000], 2 * i as u64);
        assert_eq!(got, want, "frame {i}");
    }
}

#[test]
fn frame_larger_than_whole_ring_is_dropped_and_buffers_returned() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    // The harness ring has 16 entries: 16 x 100 bytes cannot hold a 2000-byte frame.
    for _ in 0..16 {
        h.post_rx(&[100]);
    }
    h.host.send(&frame(2000, 0)).unwrap();
    let small = frame(20, 1);
    h.host.send(&small).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 16);
    assert!((0..16).all(|i| h.rxq.used(i).1 == 0));
    assert_eq!(h.net.metrics().rx_fails.count(), 1);
    // The guest reposts; the next frame arrives intact.
    h.post_rx(&[100]);
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 17);
    assert_eq!(h.rxq.used(16).1, 32);
}
