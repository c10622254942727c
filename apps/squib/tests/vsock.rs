//! Real-guest test of virtio-vsock with Firecracker's Unix-socket muxer, and of the virtio-rng
//! entropy device: one boot checks both.
//!
//! The guest side is `scripts/guest/init`'s `vsock` action and the kit's `squib-vsock` tool:
//! the guest reads `/dev/hwrng`, serves an echo on vsock port [`GUEST_ECHO_PORT`], sends a
//! pattern to the host's `<uds>_<port>` listener (which echoes it back, and the guest
//! compares), and connects to a port nobody listens on (the device resets it). Meanwhile the
//! host connects to the guest's echo server through `CONNECT <port>\n` on the uds: one large
//! transfer and several connections at once, every byte compared.
//!
//! The same guest has a virtio-balloon (attached first, as in Firecracker): the host reads the
//! guest's statistics, inflates the balloon by [`BALLOON_MIB`] and deflates it again, each
//! seen in what the guest reports back, and checks the balloon's refusals and metrics.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::{boot_args, boot_slot, json, retry_on_pvm_crash, GuestKit, Squib, BOOT_TIMEOUT};
use serde_json::json;

const GUEST_CID: u64 = 3;
/// Where the guest's echo server listens.
const GUEST_ECHO_PORT: u32 = 5000;
/// The host listener the guest sends its pattern to (at `<uds>_6000`).
const HOST_ECHO_PORT: u32 = 6000;
/// A port with no host listener: the guest's connection must be reset.
const UNLISTENED_PORT: u32 = 6001;
/// What the guest sends to the host and checks back.
const GUEST_SEND_BYTES: usize = 1 << 20;
/// The host -> guest -> host transfer the issue asks for.
const BIG_TRANSFER_BYTES: usize = 16 << 20;
/// Connections to the guest's echo server at once, and the bytes each moves.
const PARALLEL_CONNECTIONS: usize = 8;
const PARALLEL_BYTES: usize = 256 << 10;
/// Backstop for the guest-side steps after boot; a step that stops printing fails sooner
/// (`common::SILENCE_LIMIT`).
const STEP_TIMEOUT: Duration = Duration::from_secs(1200);
/// Balloon target of the inflate step (of the guest's 256 MiB).
const BALLOON_MIB: u64 = 64;

/// Echoes every connection to `<uds>_<port>` back to its sender until EOF.
fn host_echo_listener(uds: &Path, port: u32) -> PathBuf {
    let path = PathBuf::from(format!("{}_{port}", uds.display()));
    let listener = UnixListener::bind(&path).expect("bind the host-side vsock listener");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream.try_clone().expect("clone a stream");
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    path
}

/// Opens a host-initiated connection to the guest's `port`: `CONNECT`, then `OK <port>`.
fn connect_to_guest(uds: &Path, port: u32) -> UnixStream {
    let mut stream = UnixStream::connect(uds).expect("connect to the vsock uds");
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("set a read timeout");
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .expect("send CONNECT");
    let mut reply = String::new();
    let mut reader = BufReader::new(stream.try_clone().expect("clone a stream"));
    reader
        .read_line(&mut reply)
        .expect("read the CONNECT reply");
    assert!(
        reply.starts_with("OK ") && reply.ends_with('\n'),
        "CONNECT {port} answered {reply:?}"
    );
    assert!(
        reader.buffer().is_empty(),
        "bytes after the OK line before any were sent"
    );
    stream
}

/// Deterministic bytes for connection `seed`.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `data` through the guest's echo server (written from a second thread, so
/// credit-based flow control never deadlocks the two directions) and checks that exactly the
/// same bytes came back; `Err` says what went wrong. The host reads the whole echo before it
/// closes: as in Firecracker, EOF on the host stream closes the connection both ways.
fn echo_through_guest(uds: &Path, data: Vec<u8>) -> Result<(), String> {
    let stream = connect_to_guest(uds, GUEST_ECHO_PORT);
    let mut writer = stream.try_clone().expect("clone a stream");
    let len = data.len();
    let expected = data.clone();
    let sender = thread::spawn(move || writer.write_all(&data));
    let mut echoed = vec![0; len];
    let mut reader = stream;
    let mut got = 0;
    while got < len {
        match reader.read(&mut echoed[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("reading the echo after {got} bytes: {e}")),
        }
    }
    let written = sender.join().expect("the writer thread");
    let _ = reader.shutdown(std::net::Shutdown::Both);
    if let Err(e) = written {
        return Err(format!("writing {len} bytes to the guest: {e}"));
    }
    if got < len {
        return Err(format!("the echo ended after {got} of {len} bytes"));
    }
    match echoed.iter().zip(&expected).position(|(a, b)| a != b) {
        Some(at) => Err(format!("the echo differs at byte {at} of {len}")),
        None => Ok(()),
    }
}

#[test]
fn vsock_both_ways_many_connections_resets_and_hwrng() {
    retry_on_pvm_crash(vsock_and_entropy);
}

fn vsock_and_entropy() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let uds = dir.path().join("v.sock");
    let metrics = dir.path().join("metrics.json");
    host_echo_listener(&uds, HOST_ECHO_PORT);

    let squib = Squib::with_api("vsock", &["--metrics-path", &metrics.display().to_string()]);
    let api = squib.api();
    let args = format!(
        "squib.action=vsock squib.vsock_echo={GUEST_ECHO_PORT} \
         squib.vsock_send={HOST_ECHO_PORT}:{GUEST_SEND_BYTES} squib.vsock_reset={UNLISTENED_PORT}"
    );
    let boot = json!({
        "kernel_image_path": kit.vmlinux().display().to_string(),
        "initrd_path": kit.initramfs().display().to_string(),
        "boot_args": boot_args(&args),
    });
    for (path, body) in [
        ("/boot-source", boot),
        (
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 256}),
        ),
        (
            "/vsock",
            json!({"guest_cid": GUEST_CID, "uds_path": uds.display().to_string()}),
        ),
        ("/entropy", json!({})),
        (
            "/balloon",
            json!({"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1,
                "free_page_reporting": true}),
        ),
    ] {
        let (status, reply) = api.put(path, &body);
        assert_eq!(status, 204, "PUT {path}: {reply}");
    }
    assert!(uds.exists(), "PUT /vsock binds the uds at once");
    let (_, config) = api.get("/vm/config");
    let config = json(&config);
    assert_eq!(config["vsock"]["guest_cid"], GUEST_CID, "{config}");
    assert!(config["entropy"].is_object(), "{config}");
    let (status, reply) = api.put("/actions", &json!({"action_type": "InstanceStart"}));
    assert_eq!(status, 204, "InstanceStart: {reply}\n{}", squib.report());

    let rng = squib.wait_for("SQUIB hwrng current=", BOOT_TIMEOUT);
    assert!(rng.contains("virtio_rng"), "the guest's hwrng: {rng}");
    let bytes = squib.wait_for("SQUIB hwrng bytes=", STEP_TIMEOUT);
    assert!(bytes.trim_end().ends_with("bytes=32"), "{bytes}");

    let sent = squib.wait_for(
        &format!("SQUIB vsock send port={HOST_ECHO_PORT} "),
        STEP_TIMEOUT,
    );
    assert!(
        sent.contains(&format!(
            "sent={GUEST_SEND_BYTES} received={GUEST_SEND_BYTES} match=1"
        )),
        "guest -> host -> guest: {sent}"
    );
    let reset = squib.wait_for(
        &format!("SQUIB vsock send port={UNLISTENED_PORT} "),
        STEP_TIMEOUT,
    );
    assert!(reset.contains("error=ECONNRESET"), "no listener: {reset}");
    squib.wait_for("SQUIB vsock done", STEP_TIMEOUT);

    let started = std::time::Instant::now();
    if let Err(e) = echo_through_guest(&uds, pattern(0, BIG_TRANSFER_BYTES)) {
        panic!(
            "16 MiB through the guest's echo server: {e}\n{}",
            squib.report()
        );
    }
    eprintln!(
        "16 MiB host -> guest echo -> host in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let workers: Vec<_> = (1..=PARALLEL_CONNECTIONS)
        .map(|seed| {
            let uds = uds.clone();
            thread::spawn(move || {
                echo_through_guest(
                    &uds,
                    pattern(u32::try_from(seed).unwrap_or(1), PARALLEL_BYTES),
                )
            })
        })
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        if let Err(e) = worker.join().expect("a connection thread") {
            panic!(
                "connection {i} of {PARALLEL_CONNECTIONS}: {e}\n{}",
                squib.report()
            );
        }
    }

    balloon_inflates_and_deflates(&squib);

    let (status, reply) = api.put("/actions", &json!({"action_type": "FlushMetrics"}));
    assert_eq!(status, 204, "FlushMetrics: {reply}");
    // Counters are written as the change since the previous line: add the lines up.
    let text = std::fs::read_to_string(&metrics).expect("read the metrics file");
    let total = |group: &str, key: &str| -> u64 {
        text.lines()
            .map(|line| json(line)[group][key].as_u64().unwrap_or_default())
            .sum()
    };
    let moved = (BIG_TRANSFER_BYTES + PARALLEL_CONNECTIONS * PARALLEL_BYTES) as u64;
    for key in ["rx_bytes_count", "tx_bytes_count"] {
        let count = total("vsock", key);
        assert!(count >= moved, "vsock.{key} = {count} < {moved}");
    }
    // Added: the guest's connection to the host echo, the big echo and the parallel ones.
    // The guest's connection to the unlistened port is refused with a reset before it is
    // ever added, as in Firecracker's muxer.
    let conns = total("vsock", "conns_added");
    assert!(
        conns >= 2 + PARALLEL_CONNECTIONS as u64,
        "vsock.conns_added = {conns}"
    );
    for key in ["inflate_count", "deflate_count", "stats_updates_count"] {
        let count = total("balloon", key);
        assert!(count > 0, "balloon.{key} = {count}");
    }
    assert_eq!(total("balloon", "event_fails"), 0, "balloon.event_fails");
    let entropy = total("entropy", "entropy_bytes");
    assert!(entropy >= 32, "entropy.entropy_bytes = {entropy}");

    let (status, reply) = api.put("/actions", &json!({"action_type": "SendCtrlAltDel"}));
    assert_eq!(status, 204, "SendCtrlAltDel: {reply}");
    let mut squib = squib;
    let status = squib.wait_exit(STEP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "squib exit\n{}", squib.report());
}

/// The balloon, driven through the API while the guest runs: statistics arrive from the
/// guest, an inflate to [`BALLOON_MIB`] and a deflate to 0 are acknowledged by the guest
/// (`actual_mib`), and out-of-range requests are refused with Firecracker's texts.
fn balloon_inflates_and_deflates(squib: &Squib) {
    let api = squib.api();
    let stats = balloon_stats_when(squib, "the guest's first statistics", |s| {
        s["total_memory"].as_u64().is_some_and(|t| t > 0)
    });
    // What a Linux guest reports without VM event counters (so no fault counts in this kit).
    for key in ["free_memory", "available_memory", "disk_caches"] {
        assert!(
            stats[key].is_u64(),
            "balloon statistics lack {key}: {stats}"
        );
    }

    let (status, reply) = api.patch("/balloon", &json!({ "amount_mib": BALLOON_MIB }));
    assert_eq!(status, 204, "inflate: {reply}");
    balloon_stats_when(squib, "the guest to inflate", |s| {
        s["actual_mib"] == BALLOON_MIB && s["target_mib"] == BALLOON_MIB
    });
    let (status, reply) = api.patch("/balloon", &json!({ "amount_mib": 0 }));
    assert_eq!(status, 204, "deflate: {reply}");
    balloon_stats_when(squib, "the guest to deflate", |s| s["actual_mib"] == 0);

    let (status, reply) = api.patch("/balloon", &json!({ "amount_mib": 257 }));
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        json(&reply)["fault_message"],
        "Balloon update error: Balloon: Requested memory should be less than 257MiB"
    );
    let (status, reply) = api.patch(
        "/balloon/statistics",
        &json!({ "stats_polling_interval_s": 0 }),
    );
    assert_eq!(
        status, 400,
        "statistics cannot be turned off after boot: {reply}"
    );
    let (_, config) = api.get("/vm/config");
    assert_eq!(json(&config)["balloon"]["amount_mib"], 0, "{config}");
}

/// Polls `GET /balloon/statistics` (the guest reports every second) until `done` holds; fails
/// when squib stops answering or the backstop passes, naming `what`.
fn balloon_stats_when(
    squib: &Squib,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let (status, reply) = squib.api().get("/balloon/statistics");
        assert_eq!(status, 200, "GET /balloon/statistics: {reply}");
        let stats = json(&reply);
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {what}: last statistics {stats}\n{}",
            squib.report()
        );
        thread::sleep(Duration::from_millis(500));
    }
}
