//! Real-guest tests of virtio-net (issue 6) and the host side of MMDS (issue 7), plus the
//! wire-level `/network-interfaces` errors.
//!
//! The guest kernel configures its NIC itself (`ip=` with CONFIG_IP_PNP) and answers ICMP
//! without user space, so the host drives everything: it creates its own TAPs (`ip tuntap`,
//! deleted on drop), pings the guest with a raw ICMP socket (no `ping` binary needed),
//! reads `GET /vm/config` and the `net_<id>` metrics, and measures a large ping before and
//! after a `PATCH /network-interfaces` tx rate limit. Two guest boots: one interface with
//! all of that and MMDS configured, then two interfaces attached in order.
//!
//! MMDS is guest-only: the host cannot reach 169.254.169.254 through the TAP. The guest side
//! (`wget -O- http://169.254.169.254/latest/meta-data/hostname` in the guest, with a route
//! `ip route add 169.254.169.254 dev eth0`) needs a guest init action; it is covered
//! in-process by `squib-vmm`'s `mmds_interceptor` tests (ARP, SYN, HTTP GET frames).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{boot_args, boot_slot, json, GuestKit, Squib};
use serde_json::{json, Value};

/// Time a guest gets to reach user space (`kvm_pvm` boots take about 2 minutes).
const GUEST_TIMEOUT: Duration = Duration::from_secs(400);
/// Time a freshly booted guest gets to answer its first ping.
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(60);

/// Subnet `172.16.<n>.0/24` number `offset` (0..4) of this process: each test uses its own,
/// and other test processes on this host most likely others.
fn subnet(offset: u32) -> u8 {
    u8::try_from(100 + (std::process::id() % 38) * 4 + offset % 4).unwrap_or(250)
}

/// A TAP on the host with `172.16.<subnet>.1/24`, deleted on drop.
struct HostTap {
    name: String,
    subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl HostTap {
    /// Creates the TAP, or `None` (with a message) when this host has no `/dev/net/tun`.
    fn create(tag: &str, subnet: u8) -> Option<HostTap> {
        if !Path::new("/dev/net/tun").exists() {
            eprintln!("skipping: /dev/net/tun is missing, TAP devices cannot be created");
            return None;
        }
        let name = format!("sqn{tag}{}", std::process::id() % 100_000);
        let _ = ip(&["link", "del", &name]);
        let tap = HostTap { name, subnet };
        let cidr = format!("{}/24", tap.host_ip());
        for args in [
            vec!["tuntap", "add", "dev", &tap.name, "mode", "tap"],
            vec!["addr", "add", &cidr, "dev", &tap.name],
            vec!["link", "set", &tap.name, "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("creating the host TAP: {e}"));
        }
        Some(tap)
    }

    fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, self.subnet, 1)
    }

    fn guest_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, self.subnet, 2)
    }

    /// The kernel `ip=` argument configuring `dev` in the guest on this TAP's subnet.
    fn guest_ip_arg(&self, dev: &str) -> String {
        format!(
            "ip={}::{}:255.255.255.0::{dev}:off",
            self.guest_ip(),
            self.host_ip()
        )
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.name]) {
            eprintln!("deleting the host TAP: {e}");
        }
    }
}

/// ICMP echo over a raw socket (the test runs as root, as TAP creation needs).
mod icmp {
    use std::collections::HashSet;
    use std::io;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::time::{Duration, Instant};

    static NEXT_ID: AtomicU16 = AtomicU16::new(0);

    /// Replies received and the time from the first request to the last reply.
    #[derive(Debug, Clone, Copy)]
    pub struct PingResult {
        pub received: usize,
        pub elapsed: Duration,
    }

    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap_or(0)
    }

    fn socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: SO_RCVTIMEO reads a `timeval` of the given size, valid for the call.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(16),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    fn send(fd: &OwnedFd, dst: Ipv4Addr, id: u16, seq: u16, size: usize) -> io::Result<()> {
        let mut packet = vec![0u8; 8 + size];
        packet[0] = 8;
        packet[4..6].copy_from_slice(&id.to_be_bytes());
        packet[6..8].copy_from_slice(&seq.to_be_bytes());
        for (i, byte) in packet[8..].iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `addr` are valid for the lengths given during the call.
        let ret = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The sequence number of an echo reply from `src` for `id` in an IPv4 packet.
    fn reply_seq(packet: &[u8], src: Ipv4Addr, id: u16) -> Option<u16> {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        let from = Ipv4Addr::new(
            *packet.get(12)?,
            *packet.get(13)?,
            *packet.get(14)?,
            *packet.get(15)?,
        );
        let icmp = packet.get(ihl..ihl + 8)?;
        let is_reply = icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id;
        (is_reply && from == src).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
    }

    /// Sends `count` echo requests of `size` payload bytes every `interval`, and waits up to
    /// `wait` after the last one for the replies.
    pub fn ping(
        dst: Ipv4Addr,
        count: u16,
        size: usize,
        interval: Duration,
        wait: Duration,
    ) -> io::Result<PingResult> {
        let fd = socket()?;
        let id = u16::try_from(std::process::id() & 0xff).unwrap_or(0) << 8
            | NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xff;
        let start = Instant::now();
        let (mut sent, mut next_send, mut last_reply) = (0u16, start, start);
        let mut replies = HashSet::new();
        let mut buf = vec![0u8; 70_000];
        loop {
            let now = Instant::now();
            if sent < count && now >= next_send {
                send(&fd, dst, id, sent, size)?;
                sent += 1;
                next_send += interval;
            }
            if replies.len() == usize::from(count) || (sent == count && now > next_send + wait) {
                break;
            }
            // SAFETY: `buf` is writable for its whole length during the call.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            if let Some(seq) = reply_seq(&buf[..n], dst, id) {
                if replies.insert(seq) {
                    last_reply = Instant::now();
                }
            }
        }
        Ok(PingResult {
            received: replies.len(),
            elapsed: last_reply - start,
        })
    }
}

/// Pings until the guest answers (it may still be configuring its NIC), or fails.
fn wait_for_ping(squib: &Squib, dst: Ipv4Addr) {
    let deadline = std::time::Instant::now() + FIRST_PING_TIMEOUT;
    loop {
        let result = icmp::ping(dst, 1, 56, Duration::ZERO, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("ping {dst}: {e}"));
        if result.received == 1 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest at {dst} did not answer ping within {FIRST_PING_TIMEOUT:?}\n{}",
            squib.report()
        );
    }
}

fn put_ok(squib: &Squib, path: &str, body: &Value) {
    let (status, reply) = squib.api().put(path, body);
    assert_eq!(status, 204, "PUT {path}: {reply}\n{}", squib.report());
}

fn fault(status_and_body: (u16, String)) -> String {
    let (status, body) = status_and_body;
    assert_eq!(status, 400, "expected a 400: {body}");
    json(&body)["fault_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn net_body(iface: &str, tap: &str, mac: &str) -> Value {
    json!({"iface_id": iface, "host_dev_name": tap, "guest_mac": mac})
}

/// Boots the initramfs guest with `extra` kernel arguments and waits for its user space.
fn boot(squib: &Squib, kit: &GuestKit, extra: &str) {
    let args = boot_args(&format!("squib.action=tick squib.ticks=200 {extra}"));
    put_ok(
        squib,
        "/boot-source",
        &json!({
            "kernel_image_path": kit.vmlinux().display().to_string(),
            "initrd_path": kit.initramfs().display().to_string(),
            "boot_args": args,
        }),
    );
    put_ok(
        squib,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put_ok(squib, "/actions", &json!({"action_type": "InstanceStart"}));
    squib.wait_for("SQUIB tick 1", GUEST_TIMEOUT);
}

/// The sum of `net_<iface>.<counter>` over every metrics line written so far.
fn metric_sum(path: &Path, iface: &str, counter: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|m| m[format!("net_{iface}")][counter].as_u64())
        .sum()
}

#[test]
fn network_interface_errors_on_the_wire() {
    let Some(tap) = HostTap::create("w", subnet(3)) else {
        return;
    };
    let squib = Squib::with_api("net-wire", &[]);
    let message = fault(squib.api().put(
        "/network-interfaces/eth0",
        &net_body("eth0", "lo", "06:00:ac:10:00:02"),
    ));
    assert!(
        message.starts_with("Could not create the network device: Open tap device failed: lo: "),
        "{message}"
    );
    put_ok(
        &squib,
        "/network-interfaces/eth0",
        &net_body("eth0", &tap.name, "06:00:AC:10:00:02"),
    );
    let message = fault(squib.api().put(
        "/network-interfaces/eth1",
        &net_body("eth1", "sqnunused0", "06:00:ac:10:00:02"),
    ));
    assert_eq!(
        message,
        "Network interface error: The MAC address is already in use: 06:00:ac:10:00:02"
    );
    let patch = json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}});
    let message = fault(squib.api().patch("/network-interfaces/eth0", &patch));
    assert_eq!(
        message,
        "The requested operation is not supported before starting the microVM."
    );
}

#[test]
fn guest_nic_pings_counts_is_rate_limited_and_mmds_stays_guest_only() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let Some(tap) = HostTap::create("a", subnet(0)) else {
        return;
    };
    let _slot = boot_slot();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let metrics = dir.path().join("metrics.ndjson");
    let metrics_arg = metrics.display().to_string();
    let squib = Squib::with_api("net-one", &["--metrics-path", &metrics_arg]);
    put_ok(
        &squib,
        "/network-interfaces/eth0",
        &net_body("eth0", &tap.name, "06:00:ac:10:00:02"),
    );
    put_ok(
        &squib,
        "/mmds/config",
        &json!({"network_interfaces": ["eth0"], "version": "V2"}),
    );
    put_ok(
        &squib,
        "/mmds",
        &json!({"latest": {"meta-data": {"hostname": "squib-net"}}}),
    );
    boot(&squib, &kit, &tap.guest_ip_arg("eth0"));

    wait_for_ping(&squib, tap.guest_ip());
    let small = icmp::ping(
        tap.guest_ip(),
        3,
        56,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .expect("ping the guest");
    assert_eq!(small.received, 3, "{small:?}\n{}", squib.report());

    let (status, body) = squib.api().get("/vm/config");
    assert_eq!(status, 200, "{body}");
    let ifaces = json(&body)["network-interfaces"].clone();
    assert_eq!(ifaces[0]["iface_id"], json!("eth0"), "{body}");
    assert_eq!(ifaces[0]["host_dev_name"], json!(tap.name), "{body}");

    // MMDS answers only the guest's frames: through the TAP, the host gets nothing.
    let curl = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", &tap.name])
        .arg("http://169.254.169.254/latest/meta-data/hostname")
        .output();
    if let Ok(out) = curl {
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("squib-net"),
            "the host reached MMDS through the TAP"
        );
    }

    let big = |what: &str| {
        let result = icmp::ping(
            tap.guest_ip(),
            5,
            60_000,
            Duration::from_millis(200),
            Duration::from_secs(20),
        )
        .expect("ping the guest");
        eprintln!("{what} 5 x 60000-byte ping: {result:?}");
        result
    };
    let unlimited = big("unlimited");
    let limit = json!({"iface_id": "eth0",
        "tx_rate_limiter": {"bandwidth": {"size": 8192, "refill_time": 1000}}});
    let (status, reply) = squib.api().patch("/network-interfaces/eth0", &limit);
    assert_eq!(status, 204, "PATCH /network-interfaces/eth0: {reply}");
    let limited = big("tx limited to 8 KiB/s");
    // The guest alone sends about 30 KB/s here (kvm_pvm emulates its kernel): a limit well
    // under that, 5 x 60 KB at 8 KiB/s, takes over 30 s, so replies come late or not at all.
    assert!(
        limited.received < unlimited.received
            || limited.elapsed > unlimited.elapsed + Duration::from_secs(2),
        "the rate limit did not slow the guest: unlimited {unlimited:?}, limited {limited:?}"
    );
    let unknown = json!({"iface_id": "eth9"});
    let message = fault(squib.api().patch("/network-interfaces/eth9", &unknown));
    assert!(message.contains("eth9"), "{message}");

    put_ok(&squib, "/actions", &json!({"action_type": "FlushMetrics"}));
    assert!(metric_sum(&metrics, "eth0", "rx_packets_count") >= 3);
    assert!(metric_sum(&metrics, "eth0", "tx_packets_count") >= 3);
    assert!(metric_sum(&metrics, "eth0", "tx_bytes_count") > 5 * 60_000);
    assert!(metric_sum(&metrics, "eth0", "tx_rate_limiter_throttled") > 0);
}

#[test]
fn two_interfaces_attach_in_order_on_their_own_taps() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let (Some(tap_a), Some(tap_b)) = (
        HostTap::create("b", subnet(1)),
        HostTap::create("c", subnet(2)),
    ) else {
        return;
    };
    let _slot = boot_slot();
    let squib = Squib::with_api("net-two", &[]);
    put_ok(
        &squib,
        "/network-interfaces/eth0",
        &net_body("eth0", &tap_a.name, "06:00:ac:10:01:02"),
    );
    put_ok(
        &squib,
        "/network-interfaces/eth1",
        &net_body("eth1", &tap_b.name, "06:00:ac:10:02:02"),
    );
    // The kernel's `ip=` configures one device: the second, so that answering proves the
    // second slot works; the first is checked by its MAC in the guest's probe order.
    boot(&squib, &kit, &tap_b.guest_ip_arg("eth1"));
    wait_for_ping(&squib, tap_b.guest_ip());
    let result = icmp::ping(
        tap_b.guest_ip(),
        3,
        56,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .expect("ping the guest");
    assert_eq!(result.received, 3, "{result:?}");
    let line = squib.wait_for("device=eth1", Duration::from_secs(1));
    assert!(line.contains("hwaddr=06:00:ac:10:02:02"), "{line}");
    let none = icmp::ping(
        tap_a.guest_ip(),
        1,
        56,
        Duration::ZERO,
        Duration::from_secs(2),
    )
    .expect("ping the guest");
    assert_eq!(none.received, 0, "eth0 has no address in the guest");
}
