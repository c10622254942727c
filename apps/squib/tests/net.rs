//! Real-guest tests of virtio-net (issue 6) and MMDS (issue 7), the wire-level
//! `/network-interfaces` errors, and the network benchmark behind `BENCHMARKS.md`.
//!
//! Each test runs in a network namespace of its own ([`netns`]) with its own TAPs, so
//! addresses never clash. The guest kernel configures one NIC (`ip=`); the guest init's
//! `net` action (scripts/guest/init) configures a second one, reads MMDS with busybox
//! `wget` (and `nc` for the V2 token `PUT`), downloads a file from the host over HTTP and
//! serves it back with `httpd`, printing `SQUIB ...` lines the tests check. Meanwhile the
//! host captures every frame on the TAP ([`capture`]) to prove that nothing addressed to
//! MMDS leaves through it, pings the guest ([`icmp`]), and reads the metrics.
//!
//! Guest TCP is slow on `kvm_pvm` hosts (about 90 KB/s: the guest kernel is emulated), so
//! the 8 MiB transfers get minutes.

#[path = "net/capture.rs"]
mod capture;
mod common;
#[path = "net/cpu.rs"]
mod cpu;
#[path = "net/http_peer.rs"]
mod http_peer;
#[path = "net/icmp.rs"]
mod icmp;
#[path = "net/netns.rs"]
mod netns;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capture::Capture;
use common::{boot_args, boot_slot, json, retry_on_pvm_crash, GuestKit, Squib};
use netns::{enter_private_netns, HostTap};
use serde_json::{json, Value};

/// Backstop for a guest to reach user space (`kvm_pvm` boots take 1 to 3 minutes; a boot that
/// stops printing fails sooner, `common::SILENCE_LIMIT`).
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);
/// Backstop for each guest-side step (a few busybox processes); a step that stops printing
/// fails sooner (`common::SILENCE_LIMIT`).
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
/// Time one 8 MiB transfer gets (about 100 s on an idle `kvm_pvm` host).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(900);
/// Time a freshly configured guest NIC gets to answer its first ping.
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes moved each way over TCP.
const TRANSFER_BYTES: usize = 8 << 20;
/// TCP port of the host's HTTP server and of the guest's `httpd`.
const TRANSFER_PORT: u16 = 8000;
/// The address guests reach MMDS at.
const MMDS_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Guest ticks before the init reboots by itself (the tests end sooner).
const TICKS: &str = "squib.ticks=1800";

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

/// Three pings of `dst` that must all be answered.
fn assert_pings(squib: &Squib, dst: Ipv4Addr) {
    wait_for_ping(squib, dst);
    let result = icmp::ping(
        dst,
        3,
        56,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("ping {dst}: {e}"));
    assert_eq!(result.received, 3, "{dst}: {result:?}\n{}", squib.report());
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

/// Boots the initramfs guest (1 vCPU, 128 MiB) with `extra` kernel arguments and waits for
/// its user space.
fn boot(squib: &Squib, kit: &GuestKit, extra: &str) {
    put_ok(
        squib,
        "/boot-source",
        &json!({
            "kernel_image_path": kit.vmlinux().display().to_string(),
            "initrd_path": kit.initramfs().display().to_string(),
            "boot_args": boot_args(extra),
        }),
    );
    put_ok(
        squib,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put_ok(squib, "/actions", &json!({"action_type": "InstanceStart"}));
    squib.wait_for(common::READY_MARKER, GUEST_TIMEOUT);
}

/// Waits for the guest line starting with `SQUIB <prefix>` and returns the rest of it.
fn guest_line(squib: &Squib, prefix: &str, timeout: Duration) -> String {
    let marker = format!("SQUIB {prefix}");
    let line = squib.wait_for(&marker, timeout);
    let rest = line.split_once(&marker).map_or("", |(_, rest)| rest);
    rest.trim().to_owned()
}

/// Fails with the guest's output when it reported a failed step.
fn assert_no_guest_failure(squib: &Squib) {
    let failed = squib
        .lines()
        .into_iter()
        .find(|line| line.contains("SQUIB ") && line.contains(" failed"));
    assert!(failed.is_none(), "{failed:?}\n{}", squib.report());
}

/// The sum of `net_<iface>.<counter>` over every metrics line written so far.
fn metric_sum(path: &Path, iface: &str, counter: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|m| m[format!("net_{iface}")][counter].as_u64())
        .sum()
}

/// The MMDS document the tests start with: a hostname and a 4 KiB value.
fn mmds_document(hostname: &str) -> Value {
    let blob: String = (0..4096u32)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)))
        .collect();
    json!({"latest": {"meta-data": {"hostname": hostname, "blob": blob}}})
}

/// squib with `extra` arguments, `eth0` on `tap`, and MMDS V2 on it serving
/// [`mmds_document`] with the hostname `id`.
fn squib_on_one_tap(tap: &HostTap, id: &str, extra: &[&str]) -> Squib {
    let squib = Squib::with_api(id, extra);
    put_ok(
        &squib,
        "/network-interfaces/eth0",
        &net_body("eth0", &tap.name, "06:00:ac:10:00:02"),
    );
    put_mmds(&squib, "V2", id);
    squib
}

/// MMDS `version` on `eth0`, serving [`mmds_document`] with `hostname`.
fn put_mmds(squib: &Squib, version: &str, hostname: &str) {
    put_ok(
        squib,
        "/mmds/config",
        &json!({"network_interfaces": ["eth0"], "version": version}),
    );
    put_ok(squib, "/mmds", &mmds_document(hostname));
}

/// Asserts that the capture saw traffic on the TAP, none of it to or from MMDS.
fn assert_mmds_stayed_off_the_tap(capture: Capture) {
    let seen = capture.stop();
    assert!(seen.frames > 0, "the capture saw nothing: {seen:?}");
    assert_eq!(
        seen.watched, 0,
        "frames to or about {MMDS_IP} reached the TAP: {seen:?}"
    );
}

/// The host end of the guest's `net_transfer`: serves `data` for the guest's download,
/// then, once the guest serves it back, fetches and compares it.
struct Transfer {
    data: Arc<Vec<u8>>,
    server: std::thread::JoinHandle<std::io::Result<String>>,
}

impl Transfer {
    /// Starts the host's HTTP server on the TAP's host address.
    fn serve(tap: &HostTap, len: usize) -> Transfer {
        let data = Arc::new(http_peer::test_data(len));
        let listener = TcpListener::bind((tap.host_ip(), TRANSFER_PORT))
            .unwrap_or_else(|e| panic!("bind {}:{TRANSFER_PORT}: {e}", tap.host_ip()));
        let server = http_peer::serve_once(listener, Arc::clone(&data), TRANSFER_TIMEOUT);
        Transfer { data, server }
    }

    /// The guest's boot arguments for this transfer.
    fn guest_args(tap: &HostTap) -> String {
        format!(
            "squib.net_host={} squib.net_port={TRANSFER_PORT}",
            tap.host_ip()
        )
    }

    /// Checks both directions; returns (guest download centis, host fetch time).
    fn check(self, squib: &Squib, tap: &HostTap) -> (u64, Duration) {
        let centis = guest_line(squib, "net-time op=download centis=", TRANSFER_TIMEOUT);
        let request = self
            .server
            .join()
            .expect("the HTTP server thread")
            .unwrap_or_else(|e| panic!("serving the guest's download: {e}\n{}", squib.report()));
        assert_eq!(request, "GET /net HTTP/1.1");
        let guest_sum = guest_line(squib, "net sha256=", STEP_TIMEOUT);
        assert_eq!(
            guest_sum,
            http_peer::sha256_hex(&self.data),
            "the guest received other bytes than the host sent\n{}",
            squib.report()
        );
        guest_line(squib, "net serving", STEP_TIMEOUT);
        let guest = SocketAddr::from((tap.guest_ip(), TRANSFER_PORT));
        let (back, elapsed) = http_peer::fetch(guest, "/net", TRANSFER_TIMEOUT)
            .unwrap_or_else(|e| panic!("fetching /net from the guest: {e}\n{}", squib.report()));
        assert!(
            back.len() == self.data.len() && back == *self.data,
            "the host received {} bytes that differ from the {} it sent",
            back.len(),
            self.data.len()
        );
        (centis.parse().unwrap_or(0), elapsed)
    }
}

#[test]
fn network_interface_errors_on_the_wire() {
    if !enter_private_netns() {
        return;
    }
    let tap = HostTap::create(3);
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

/// One NIC: MMDS V2 from the guest (token, 401 without it, a PATCH seen), 8 MiB each way
/// over TCP with the bytes compared, pings, a tx rate limit that slows large pings, the
/// metrics, and a capture proving MMDS traffic never reached the TAP.
#[test]
fn one_nic_mmds_v2_tcp_both_ways_ping_and_rate_limit() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    retry_on_pvm_crash(|| {
        if enter_private_netns() {
            one_nic(&kit);
        }
    });
}

fn one_nic(kit: &GuestKit) {
    let tap = HostTap::create(0);
    let capture = Capture::start(&tap.name, MMDS_IP).expect("capture on the TAP");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let metrics = dir.path().join("metrics.ndjson");
    let metrics_arg = metrics.display().to_string();
    let squib = squib_on_one_tap(&tap, "net-one", &["--metrics-path", &metrics_arg]);
    let transfer = Transfer::serve(&tap, TRANSFER_BYTES);
    boot(
        &squib,
        kit,
        &format!(
            "{} squib.action=net {TICKS} squib.mmds=v2 squib.mmds_fetches=1 {}",
            tap.guest_ip_arg("eth0"),
            Transfer::guest_args(&tap)
        ),
    );

    let token_length = guest_line(&squib, "mmds token-length=", STEP_TIMEOUT);
    assert_ne!(token_length, "0", "no V2 token\n{}", squib.report());
    let refused = guest_line(&squib, "mmds no-token", STEP_TIMEOUT);
    assert!(refused.contains("401"), "{refused}\n{}", squib.report());
    let hostname = guest_line(&squib, "mmds hostname=", STEP_TIMEOUT);
    assert_eq!(hostname, "net-one", "{}", squib.report());
    guest_line(&squib, "mmds waiting-for-patch", STEP_TIMEOUT);
    let patch = json!({"latest": {"meta-data": {"hostname": "squib-patched"}}});
    let (status, reply) = squib.api().patch("/mmds", &patch);
    assert_eq!(status, 204, "PATCH /mmds: {reply}");
    let patched = guest_line(&squib, "mmds patched hostname=", STEP_TIMEOUT);
    assert_eq!(patched, "squib-patched", "{}", squib.report());
    let fetch = guest_line(&squib, "mmds-time op=fetch bytes=", STEP_TIMEOUT);
    assert!(fetch.starts_with("4096 "), "{fetch}\n{}", squib.report());

    let (centis, fetch_time) = transfer.check(&squib, &tap);
    eprintln!("8 MiB host->guest in {centis} centis (guest clock), guest->host in {fetch_time:?}");
    assert_no_guest_failure(&squib);

    assert_pings(&squib, tap.guest_ip());
    let (status, body) = squib.api().get("/vm/config");
    assert_eq!(status, 200, "{body}");
    let ifaces = json(&body)["network-interfaces"].clone();
    assert_eq!(ifaces[0]["iface_id"], json!("eth0"), "{body}");
    assert_eq!(ifaces[0]["host_dev_name"], json!(tap.name), "{body}");

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
    // 5 x 60 KB at 8 KiB/s takes over 30 s, so replies come late or not at all.
    assert!(
        limited.received < unlimited.received
            || limited.elapsed > unlimited.elapsed + Duration::from_secs(2),
        "the rate limit did not slow the guest: unlimited {unlimited:?}, limited {limited:?}"
    );
    let unknown = json!({"iface_id": "eth9"});
    let message = fault(squib.api().patch("/network-interfaces/eth9", &unknown));
    assert!(message.contains("eth9"), "{message}");

    put_ok(&squib, "/actions", &json!({"action_type": "FlushMetrics"}));
    let bytes = u64::try_from(TRANSFER_BYTES).unwrap_or(u64::MAX);
    assert!(metric_sum(&metrics, "eth0", "rx_bytes_count") > bytes);
    assert!(metric_sum(&metrics, "eth0", "tx_bytes_count") > bytes);
    assert!(metric_sum(&metrics, "eth0", "rx_packets_count") >= 3);
    assert!(metric_sum(&metrics, "eth0", "tx_rate_limiter_throttled") > 0);
    assert_mmds_stayed_off_the_tap(capture);
}

/// Two NICs on two TAPs, attached in order: the kernel configures the second, the init the
/// first; both answer pings, and MMDS V1 (no token) answers on the first.
#[test]
fn two_nics_on_two_taps_with_mmds_v1_on_the_first() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    retry_on_pvm_crash(|| {
        if enter_private_netns() {
            two_nics(&kit);
        }
    });
}

fn two_nics(kit: &GuestKit) {
    let (tap_a, tap_b) = (HostTap::create(1), HostTap::create(2));
    let capture = Capture::start(&tap_a.name, MMDS_IP).expect("capture on the TAP");
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
    put_mmds(&squib, "V1", "squib-two");
    boot(
        &squib,
        kit,
        &format!(
            "{} {} squib.action=net {TICKS} squib.mmds=v1 squib.mmds_polls=0",
            tap_b.guest_ip_arg("eth1"),
            tap_a.guest_setup_arg("eth0"),
        ),
    );
    let line = squib.wait_for("device=eth1", Duration::from_secs(1));
    assert!(line.contains("hwaddr=06:00:ac:10:02:02"), "{line}");
    guest_line(&squib, "net setup eth0 done", STEP_TIMEOUT);
    let hostname = guest_line(&squib, "mmds hostname=", STEP_TIMEOUT);
    assert_eq!(hostname, "squib-two", "{}", squib.report());
    guest_line(&squib, "net checks done", STEP_TIMEOUT);
    assert_no_guest_failure(&squib);
    assert_pings(&squib, tap_b.guest_ip());
    assert_pings(&squib, tap_a.guest_ip());
    assert_mmds_stayed_off_the_tap(capture);
}

/// Pings for the latency figures: count and payload bytes.
const BENCH_PINGS: u16 = 30;
/// MMDS fetches (token + GET of the 4 KiB value) the guest times.
const BENCH_MMDS_FETCHES: usize = 5;

/// The figures of one [`net_benchmark`] run.
struct NetBench {
    download_centis: u64,
    download_cpu: cpu::ThreadCpu,
    upload: Duration,
    upload_cpu: cpu::ThreadCpu,
    rtts: Vec<Duration>,
    mmds_noop_centis: u64,
    mmds_fetch_centis: Vec<u64>,
}

/// `bytes` over `seconds` in Mbit/s.
fn mbit_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 * 8.0 / seconds.max(1e-6) / 1e6
}

/// One table row: direction, throughput, and the CPU the VMM's threads used meanwhile.
fn transfer_row(direction: &str, seconds: f64, used: &cpu::ThreadCpu) -> String {
    let mib = (TRANSFER_BYTES >> 20) as f64;
    let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / seconds.max(1e-6);
    format!(
        "| {direction} | {:.3} Mbit/s | {seconds:.1} s | {:.1}% | {:.2} ms | {:.0}% |\n",
        mbit_per_s(TRANSFER_BYTES, seconds),
        share(used.event_loop),
        used.event_loop.as_secs_f64() * 1000.0 / mib,
        share(used.vcpus),
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

/// The markdown section for `BENCHMARKS.md`.
fn net_markdown(run: &NetBench) -> String {
    let mut out = String::from(
        "<!-- net:begin -->\n## Network and MMDS (guest)\n\n\
         Command: `scripts/bench/net.sh` (runs `cargo test --release -p squib --test net -- \
         --ignored net_benchmark --nocapture`). One guest (1 vCPU, 128 MiB, initramfs) on a \
         TAP in a private network namespace. Host to guest: busybox `wget` downloads 8 MiB \
         from an HTTP server in the test (time from the guest's `/proc/uptime`, 10 ms \
         steps, including starting `wget`, about a second here). Guest to host: the test \
         fetches the file back from busybox `httpd` in the guest (host clock). CPU columns: \
         squib's event-loop thread (all device emulation, including virtio-net and MMDS) \
         and its vCPU thread, as a share of one core over the transfer, read from \
         `/proc/<pid>/task/*/stat`. **The host is `kvm_pvm`: the guest kernel is emulated \
         and its vCPU thread is saturated, so throughput is the emulator's, over four \
         orders of magnitude under Firecracker's published 14.5 Gbps at <= 80% of a core; \
         the VMM's own cost per MiB is the figure that carries over.** The in-process \
         device figures (`cargo bench -p squib-devices --features test-utils --bench net`) \
         measure that cost at full speed.\n\n",
    );
    out.push_str(&format!("- Date: {}\n\n", common::utc_date()));
    out.push_str(
        "| direction | throughput | time | event loop CPU | event loop CPU per MiB | vCPU CPU |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    out.push_str(&transfer_row(
        "host -> guest (TCP, 8 MiB)",
        run.download_centis as f64 / 100.0,
        &run.download_cpu,
    ));
    out.push_str(&transfer_row(
        "guest -> host (TCP, 8 MiB)",
        run.upload.as_secs_f64(),
        &run.upload_cpu,
    ));
    let mut rtts = run.rtts.clone();
    rtts.sort_unstable();
    out.push_str(&format!(
        "\nPing, host to guest, {} of {BENCH_PINGS} answered (56 bytes, 200 ms apart): \
         min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms.\n",
        rtts.len(),
        percentile(&rtts, 0).as_secs_f64() * 1000.0,
        percentile(&rtts, 50).as_secs_f64() * 1000.0,
        percentile(&rtts, 90).as_secs_f64() * 1000.0,
        percentile(&rtts, 100).as_secs_f64() * 1000.0,
    ));
    let mut fetches = run.mmds_fetch_centis.clone();
    fetches.sort_unstable();
    let median = fetches.get(fetches.len() / 2).copied().unwrap_or(0);
    out.push_str(&format!(
        "\nMMDS V2, guest fetch of a 4 KiB value (new token with `nc`, then `wget` with it), \
         {} runs: median {} ms, all {:?} ms. Starting `nc` and `wget` with no work costs the \
         guest {} ms, so the two HTTP exchanges add {} ms to process start-up (guest clock, \
         10 ms steps; a negative figure means they are lost in its noise). squib's side of \
         one exchange, in-process: the `mmds in-process` line of \
         `cargo test -p squib-mmds --release token_and_4k_get_timing -- --nocapture`.\n",
        fetches.len(),
        median * 10,
        fetches.iter().map(|c| c * 10).collect::<Vec<_>>(),
        run.mmds_noop_centis * 10,
        (i128::from(median) - i128::from(run.mmds_noop_centis)) * 10,
    ));
    out.push_str("<!-- net:end -->\n");
    out
}

/// Guest network throughput, ping latency, MMDS fetch time and the VMM's CPU;
/// `SQUIB_BENCH_WRITE=1` writes the `BENCHMARKS.md` section.
#[test]
#[ignore = "benchmark: boots a guest and moves 16 MiB over its TCP; run with --ignored"]
fn net_benchmark() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    if !enter_private_netns() {
        return;
    }
    let _slot = boot_slot();
    let tap = HostTap::create(0);
    let squib = squib_on_one_tap(&tap, "net-bench", &[]);
    let pid = squib.pid();
    let transfer = Transfer::serve(&tap, TRANSFER_BYTES);
    boot(
        &squib,
        &kit,
        &format!(
            "{} squib.action=net {TICKS} squib.mmds=v2 squib.mmds_polls=0 \
             squib.mmds_fetches={BENCH_MMDS_FETCHES} {}",
            tap.guest_ip_arg("eth0"),
            Transfer::guest_args(&tap)
        ),
    );
    let mmds_noop_centis = guest_line(&squib, "mmds-time op=noop bytes=0 centis=", STEP_TIMEOUT)
        .parse()
        .unwrap_or(0);
    let mut mmds_fetch_centis = Vec::new();
    let mut from = 0;
    for _ in 0..BENCH_MMDS_FETCHES {
        let (index, line) =
            squib.wait_for_from(from, "SQUIB mmds-time op=fetch bytes=4096", STEP_TIMEOUT);
        from = index + 1;
        let centis = line.rsplit('=').next().unwrap_or_default().trim();
        mmds_fetch_centis.push(centis.parse().unwrap_or(0));
    }
    // The download starts right after the last fetch (CPU sampled from here to its end).
    let before_download = cpu::thread_cpu(pid);
    let download_centis = guest_line(&squib, "net-time op=download centis=", TRANSFER_TIMEOUT)
        .parse()
        .unwrap_or(0);
    let download_cpu = cpu::thread_cpu(pid).since(&before_download);
    guest_line(&squib, "net serving", STEP_TIMEOUT);
    let before_upload = cpu::thread_cpu(pid);
    let (_, upload) = transfer.check(&squib, &tap);
    let upload_cpu = cpu::thread_cpu(pid).since(&before_upload);
    let pings = icmp::ping(
        tap.guest_ip(),
        BENCH_PINGS,
        56,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .expect("ping the guest");
    let run = NetBench {
        download_centis,
        download_cpu,
        upload,
        upload_cpu,
        rtts: pings.rtts,
        mmds_noop_centis,
        mmds_fetch_centis,
    };
    let section = net_markdown(&run);
    eprintln!("{section}");
    if std::env::var("SQUIB_BENCH_WRITE").as_deref() == Ok("1") {
        common::write_bench_section("net", &section);
    }
}
