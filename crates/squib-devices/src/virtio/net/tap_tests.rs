//! Tests against a real TAP: each runs in a thread that moved itself into a fresh network
//! namespace (`unshare(CLONE_NEWNET)`), so it creates its own TAP and touches nothing on the
//! host. Without CAP_SYS_ADMIN / CAP_NET_ADMIN they skip with a message.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use super::device::tests::harness::NetHarness;
use super::{features as net, Net, NetConfig, NetError, Tap, VNET_HDR_LEN};
use crate::virtio::test_utils::{self, UdpEnds};

const GUEST_MAC: [u8; 6] = [6, 0, 10, 99, 0, 2];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// Move this thread into a new network namespace; `false` when not permitted.
fn enter_fresh_netns() -> bool {
    // SAFETY: unshare takes a flag word; it only changes this thread's namespaces.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if ret != 0 {
        eprintln!(
            "skipping real-TAP test: unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
    }
    ret == 0
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse_mac(text: &str) -> [u8; 6] {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip output");
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(word.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// A guest frame to `dst` from the guest's address and `src_port`.
fn udp_frame(dst_mac: [u8; 6], dst: SocketAddrV4, src_port: u16, payload: &[u8]) -> Vec<u8> {
    let ends = UdpEnds {
        src_mac: GUEST_MAC,
        dst_mac,
        src: SocketAddrV4::new(GUEST_IP, src_port),
        dst,
    };
    test_utils::udp_frame(ends, payload)
}

fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

fn run_in_fresh_netns(test: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        if enter_fresh_netns() {
            test();
        }
    })
    .join()
    .expect("test thread");
}

#[test]
fn open_rejects_invalid_name_with_os_error() {
    let err = Tap::open("bad/tap").unwrap_err();
    assert!(matches!(err, NetError::TapOpen { .. }), "{err}");
    assert!(err.to_string().contains("bad/tap"), "{err}");
}

/// Open `sqbtap0` in the current (fresh) namespace, address it, activate a device on it.
fn tap_harness() -> (NetHarness, [u8; 6]) {
    let net = Net::new(NetConfig {
        iface_id: "eth0".to_owned(),
        tap_name: "sqbtap0".to_owned(),
        guest_mac: Some(GUEST_MAC),
        mtu: None,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    })
    .expect("open TAP in fresh namespace");
    ip(&["link", "set", "sqbtap0", "up"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "sqbtap0"]);
    let guest_mac = "06:00:0a:63:00:02";
    let neigh = [
        "neigh",
        "add",
        "10.99.0.2",
        "lladdr",
        guest_mac,
        "dev",
        "sqbtap0",
    ];
    ip(&neigh);
    let tap_mac = parse_mac(&ip(&["-o", "link", "show", "sqbtap0"]));
    (NetHarness::activated(net, 1 << net::MRG_RXBUF), tap_mac)
}

#[test]
fn real_tap_moves_frames_both_ways() {
    run_in_fresh_netns(|| {
        let (mut h, tap_mac) = tap_harness();

        // Guest → host.
        let host = UdpSocket::bind(SocketAddrV4::new(HOST_IP, 5555)).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let payload = b"from the guest over a real TAP";
        let frame = udp_frame(tap_mac, SocketAddrV4::new(HOST_IP, 5555), 4444, payload);
        h.post_tx(&frame, &[VNET_HDR_LEN]);
        h.net.process_tx();
        assert_eq!(h.txq.used_idx(), 1);
        let mut buf = [0u8; 128];
        let (n, from) = host.recv_from(&mut buf).expect("datagram from the guest");
        assert_eq!(&buf[..n], payload);
        assert_eq!(from, SocketAddrV4::new(GUEST_IP, 4444).into());

        // Host → guest (other frames, e.g. IPv6 router solicitations, may come first).
        // Buffers for more than a largest frame: the TAP is read straight into them.
        for _ in 0..12 {
            h.post_rx(&[30_000]);
        }
        host.send_to(b"from the host", SocketAddrV4::new(GUEST_IP, 6666))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let found = loop {
            let seen = h.rxq.used_idx();
            let hit = (0..seen).find_map(|i| {
                let f = h.read_rx_used(i, &[30_000], u64::from(i));
                let udp = VNET_HDR_LEN + 14 + 20;
                let is_ours = f.len() > udp + 8
                    && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [8, 0]
                    && f[udp + 2..udp + 4] == 6666u16.to_be_bytes();
                is_ours.then(|| f[udp + 8..].to_vec())
            });
            if hit.is_some() || Instant::now() > deadline {
                break hit;
            }
            wait_readable(h.net.tap().as_raw_fd(), 200);
            h.net.process_tap_rx_event();
        };
        assert_eq!(found.as_deref(), Some(&b"from the host"[..]));
        assert!(h.net.metrics().rx_packets_count.count() >= 1);
        assert_eq!(h.net.metrics().tx_packets_count.count(), 1);
    });
}

/// Datagrams per round: the harness ring holds 16 chains.
const BATCH: usize = 16;
/// Payload per datagram.
const CHUNK: usize = 1400;
/// Bytes moved each way.
const TOTAL: usize = 8 << 20;

/// Payload of datagram `seq`: its number, then bytes derived from it.
fn chunk(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((4..CHUNK).map(|j| ((seq as usize + j) % 251) as u8));
    p
}

/// The UDP payload of an rx frame for `port`, if it is one.
fn udp_payload(frame: &[u8], port: u16) -> Option<&[u8]> {
    let udp = VNET_HDR_LEN + 14 + 20;
    let ours = frame.len() > udp + 8
        && frame[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [8, 0]
        && frame[udp + 2..udp + 4] == port.to_be_bytes();
    ours.then(|| &frame[udp + 8..])
}

/// Host → guest: every datagram arrives intact and in order; returns the seconds taken.
/// The driver keeps the 16-entry ring full of 8 KiB buffers (more than a largest frame in
/// all, so the TAP is read into them directly), reposting each one the device returns.
fn host_to_guest(h: &mut NetHarness, host: &UdpSocket) -> f64 {
    use crate::virtio::test_utils::F_WRITE;
    let buffer = |n: u64| super::device::tests::harness::RX_BUF + (n % BATCH as u64) * 8192;
    let total = TOTAL.div_ceil(CHUNK) as u32;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let (mut posted, mut seen, mut sent, mut next_seq) = (0u64, 0u16, 0u32, 0u32);
    while posted < BATCH as u64 {
        h.rxq.add_chain(&[(buffer(posted), 8192, F_WRITE)]);
        posted += 1;
    }
    while next_seq < total && Instant::now() < deadline {
        // Pace: at most one ring's worth in flight, so the TAP queue never overflows.
        while sent < total && sent - next_seq < BATCH as u32 {
            host.send_to(&chunk(sent), SocketAddrV4::new(GUEST_IP, 6666))
                .unwrap();
            sent += 1;
        }
        wait_readable(h.net.tap().as_raw_fd(), 100);
        h.net.process_tap_rx_event();
        while seen != h.rxq.used_idx() {
            let (id, len) = h.rxq.used(seen);
            let mut frame = vec![0u8; len as usize];
            let addr = buffer(u64::from(id));
            vm_memory::Bytes::read_slice(h.mem, &mut frame, vm_memory::GuestAddress(addr)).unwrap();
            if let Some(payload) = udp_payload(&frame, 6666) {
                assert_eq!(payload, &chunk(next_seq)[..], "datagram {next_seq}");
                next_seq += 1;
            }
            h.rxq.add_chain(&[(buffer(posted), 8192, F_WRITE)]);
            posted += 1;
            seen = seen.wrapping_add(1);
        }
    }
    assert_eq!(next_seq, total, "datagrams lost host -> guest");
    start.elapsed().as_secs_f64()
}

/// Guest → host: every datagram arrives intact and in order; returns the seconds taken.
fn guest_to_host(h: &mut NetHarness, host: &UdpSocket, tap_mac: [u8; 6]) -> f64 {
    let start = Instant::now();
    let rounds = TOTAL.div_ceil(BATCH * CHUNK) as u32;
    let dst = SocketAddrV4::new(HOST_IP, 5556);
    let mut buf = [0u8; 2048];
    for round in 0..rounds {
        for i in 0..BATCH as u32 {
            let frame = udp_frame(tap_mac, dst, 4444, &chunk(round * BATCH as u32 + i));
            let addr = super::device::tests::harness::TX_BUF + u64::from(i) * 2048;
            vm_memory::Bytes::write_slice(h.mem, &frame, vm_memory::GuestAddress(addr)).unwrap();
            h.txq.add_chain(&[(addr, frame.len() as u32, 0)]);
        }
        h.net.process_tx();
        for i in 0..BATCH as u32 {
            let n = host.recv(&mut buf).expect("datagram from the guest");
            assert_eq!(&buf[..n], &chunk(round * BATCH as u32 + i)[..]);
        }
    }
    start.elapsed().as_secs_f64()
}

#[test]
fn real_tap_moves_8_mib_each_way_with_data_checked() {
    run_in_fresh_netns(|| {
        let (mut h, tap_mac) = tap_harness();
        let rx_host = UdpSocket::bind(SocketAddrV4::new(HOST_IP, 5555)).unwrap();
        let tx_host = UdpSocket::bind(SocketAddrV4::new(HOST_IP, 5556)).unwrap();
        tx_host
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let rx_secs = host_to_guest(&mut h, &rx_host);
        let tx_secs = guest_to_host(&mut h, &tx_host, tap_mac);
        let mbit = |secs: f64| (TOTAL as f64 * 8.0) / secs / 1e6;
        eprintln!(
            "8 MiB in {CHUNK}-byte UDP datagrams: host->guest {:.0} Mbit/s, guest->host {:.0} Mbit/s",
            mbit(rx_secs),
            mbit(tx_secs)
        );
        let m = h.net.metrics();
        assert!(m.tx_packets_count.count() >= (TOTAL / CHUNK) as u64);
        assert_eq!(m.tx_malformed_frames.count(), 0);
    });
}
