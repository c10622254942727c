//! Real-guest test of virtio-vsock with Firecracker's Unix-socket muxer, and of the virtio-rng
//! entropy device: one boot checks both.
//!
//! The guest side is `scripts/guest/init`'s `vsock` action and the kit's `squib-vsock` tool:
//! the guest reads `/dev/hwrng`, serves an echo on vsock port [`GUEST_ECHO_PORT`], sends a
//! pattern to the host's `<uds>_<port>` listener (which echoes it back, and the guest
//! compares), and connects to a port nobody listens on (the device resets it). Meanwhile the
//! host connects to the guest's echo server through `CONNECT <port>\n` on the uds: one large
//! transfer and several connections at once, every byte compared.

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
    let entropy = total("entropy", "entropy_bytes");
    assert!(entropy >= 32, "entropy.entropy_bytes = {entropy}");

    let (status, reply) = api.put("/actions", &json!({"action_type": "SendCtrlAltDel"}));
    assert_eq!(status, 204, "SendCtrlAltDel: {reply}");
    let mut squib = squib;
    let status = squib.wait_exit(STEP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "squib exit\n{}", squib.report());
}
