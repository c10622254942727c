//! Limits that keep any API client from stalling, crashing or flooding the server: timeouts
//! that cancel, the connection cap, and the head, body and write timeouts.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Conn, TestServer};
use squib_api::action::ApiResponse;
use squib_api::channel::api_channel;
use squib_api::mirror::StateMirror;
use squib_api::server::{ApiServer, ApiServerConfig};
use vmm_sys_util::eventfd::EventFd;

/// A server whose fake VMM serves like squib's: it claims each request before running it,
/// skipping those whose requester gave up, and takes 6 s over `PUT /entropy`.
struct ClaimingServer {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    /// Labels of the actions that ran.
    ran: Arc<Mutex<Vec<String>>>,
    /// Requests skipped because their requester had gone.
    skipped: Arc<Mutex<u64>>,
}

impl ClaimingServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let config = ApiServerConfig {
            socket_path: path.clone(),
            ..ApiServerConfig::default()
        };
        let server = ApiServer::bind(config).unwrap();
        let wake = EventFd::new(0).unwrap();
        let vmm_wake = wake.try_clone().unwrap();
        let (sender, mut receiver) = api_channel(16, wake);
        let ran = Arc::new(Mutex::new(Vec::new()));
        let skipped = Arc::new(Mutex::new(0));
        let (vmm_ran, vmm_skipped) = (ran.clone(), skipped.clone());
        std::thread::spawn(move || loop {
            if vmm_wake.read().is_err() {
                return;
            }
            while let Some((action, reply)) = receiver.next_claimed() {
                if action.label() == "PUT /entropy" {
                    std::thread::sleep(Duration::from_secs(6));
                }
                vmm_ran.lock().unwrap().push(action.label().to_owned());
                *vmm_skipped.lock().unwrap() = receiver.skipped();
                reply.respond(ApiResponse::NoContent);
            }
            *vmm_skipped.lock().unwrap() = receiver.skipped();
        });
        let mirror = Arc::new(StateMirror::new("test_vm".into()));
        server.spawn(sender, mirror).unwrap();
        Self {
            _dir: dir,
            path,
            ran,
            skipped,
        }
    }
}

#[test]
fn a_timed_out_action_never_runs_late_and_a_started_one_is_reported_unknown() {
    let server = ClaimingServer::start();
    let path = server.path.clone();
    // Started at once; the VMM takes 6 s over it, past the 5 s timeout.
    let started = std::thread::spawn(move || Conn::open(&path).request("PUT", "/entropy", "{}"));
    std::thread::sleep(Duration::from_millis(300));
    // Queued behind it: its timeout fires before the VMM gets to it.
    let queued =
        Conn::open(&server.path).request("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"/v"}"#);
    assert_eq!(queued.status, 400);
    assert_eq!(
        queued.fault(),
        "Timed out after 5 s waiting for the VMM to complete PUT /vsock."
    );
    let started = started.join().unwrap();
    assert_eq!(started.status, 400);
    assert_eq!(
        started.fault(),
        "Timed out after 5 s waiting for the VMM to complete PUT /entropy. The action was \
         already running and may still take effect: its outcome is unknown."
    );
    // Let the VMM finish the slow action and reach the abandoned one.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(*server.ran.lock().unwrap(), ["PUT /entropy"]);
    assert_eq!(*server.skipped.lock().unwrap(), 1);
    // The API still works, and a live request runs.
    let r = Conn::open(&server.path).request("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"/v"}"#);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(*server.ran.lock().unwrap(), ["PUT /entropy", "PUT /vsock"]);
}

/// Reads until the server closes the connection; the bytes, or `None` on the read timeout.
fn read_to_close(stream: &mut UnixStream, timeout: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(all),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(all),
            Err(_) => return None,
        }
    }
}

#[test]
fn a_body_that_does_not_arrive_is_cut_off_with_408() {
    let server = TestServer::start();
    let mut stream = UnixStream::connect(&server.path).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"PUT /mmds HTTP/1.1\r\nContent-Length: 20\r\n\r\n{")
        .unwrap();
    // Others are served meanwhile.
    assert_eq!(server.get("/").status, 200);
    let reply = read_to_close(&mut stream, Duration::from_secs(20))
        .expect("the server must answer a stalled body and close");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains(r#"{"fault_message":"Timed out after 10 s reading the request body."}"#),
        "{text}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&elapsed),
        "cut off after {elapsed:?}"
    );
    assert!(
        server.actions().is_empty(),
        "a partial body must not reach the VMM"
    );
}

#[test]
fn a_head_sent_a_byte_a_second_is_cut_off() {
    let server = TestServer::start();
    let mut stream = UnixStream::connect(&server.path).unwrap();
    let started = Instant::now();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    assert_eq!(server.get("/").status, 200, "others are served meanwhile");
    read_to_close(&mut stream, Duration::from_secs(20))
        .expect("the server must close a head that takes too long");
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&elapsed),
        "cut off after {elapsed:?}"
    );
    writer.join().unwrap();
}

/// Opens a connection with a request in progress (half a head): the server must keep it.
fn busy_connection(server: &TestServer) -> UnixStream {
    let mut stream = UnixStream::connect(&server.path).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    stream
}

#[test]
fn past_the_cap_idle_connections_make_room_and_busy_ones_get_503() {
    let server = TestServer::start();
    // Thousands of idle connections: each newcomer takes the oldest idle one's slot.
    let idle: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&server.path).unwrap())
        .collect();
    let started = Instant::now();
    assert_eq!(server.get("/").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a fresh client waited {:?}",
        started.elapsed()
    );
    // The oldest idle connections were closed to make room.
    let mut first = idle.into_iter().next().unwrap();
    assert_eq!(
        read_to_close(&mut first, Duration::from_secs(5)),
        Some(Vec::new())
    );

    // Every slot with a request in progress: a newcomer gets Firecracker's 503 and is closed.
    let busy: Vec<UnixStream> = (0..squib_api::server::MAX_CONNECTIONS)
        .map(|_| busy_connection(&server))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = UnixStream::connect(&server.path).unwrap();
    refused.write_all(b"GET / HTTP/1.1\r\n\r\n").ok();
    let reply = read_to_close(&mut refused, Duration::from_secs(5)).expect("answered and closed");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 503 \r\n"), "{text}");
    assert!(
        text.ends_with(r#"{"error": "Too many open connections"}"#),
        "{text}"
    );
    // A busy connection that finishes its request is answered: it was never dropped.
    let mut last = busy.into_iter().last().unwrap();
    last.write_all(b"\r\n").unwrap();
    let mut conn_reply = [0u8; 12];
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    last.read_exact(&mut conn_reply).unwrap();
    assert_eq!(&conn_reply, b"HTTP/1.1 200");
}

#[test]
fn a_client_that_never_reads_its_responses_is_cut_off() {
    let server = TestServer::start();
    let mut stream = UnixStream::connect(&server.path).unwrap();
    let sent = 20_000;
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            for _ in 0..sent {
                if stream.write_all(b"GET / HTTP/1.1\r\n\r\n").is_err() {
                    return;
                }
            }
        })
    };
    // Responses pile up unread until the server's write stalls, then it must give up.
    std::thread::sleep(Duration::from_secs(13));
    let replies = read_to_close(&mut stream, Duration::from_secs(5))
        .expect("the server must close a connection whose client does not read");
    let answered = String::from_utf8_lossy(&replies)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answered < sent, "all {sent} responses were written");
    writer.join().unwrap();
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn rate_limiters_whose_refill_time_cannot_work_are_refused_naming_the_field() {
    let server = TestServer::start();
    let max = squib_api::schemas::rate_limiter::MAX_REFILL_TIME_MS;
    let too_long = max + 1;
    let bucket = |refill: u64| format!(r#"{{"size":1048576,"refill_time":{refill}}}"#);
    let limiter = |refill: u64| format!(r#"{{"bandwidth":{}}}"#, bucket(refill));
    let why = |field: &str| {
        format!(
            "The {field} of {too_long} ms is too large: the refill time in nanoseconds must fit \
             in 64 bits (at most {max} ms)."
        )
    };
    let routes = |refill: u64| {
        [
            (
                "PUT",
                "/drives/rootfs".to_owned(),
                format!(
                    r#"{{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"rate_limiter":{}}}"#,
                    limiter(refill)
                ),
                "Drive config error",
                "rate_limiter.bandwidth.refill_time",
            ),
            (
                "PATCH",
                "/drives/rootfs".to_owned(),
                format!(
                    r#"{{"drive_id":"rootfs","rate_limiter":{}}}"#,
                    limiter(refill)
                ),
                "Drive update error",
                "rate_limiter.bandwidth.refill_time",
            ),
            (
                "PUT",
                "/network-interfaces/eth0".to_owned(),
                format!(
                    r#"{{"iface_id":"eth0","host_dev_name":"tap0","tx_rate_limiter":{}}}"#,
                    limiter(refill)
                ),
                "Network interface error",
                "tx_rate_limiter.bandwidth.refill_time",
            ),
            (
                "PATCH",
                "/network-interfaces/eth0".to_owned(),
                format!(
                    r#"{{"iface_id":"eth0","rx_rate_limiter":{{"ops":{}}}}}"#,
                    bucket(refill)
                ),
                "Network interface update error",
                "rx_rate_limiter.ops.refill_time",
            ),
            (
                "PUT",
                "/pmem/pm0".to_owned(),
                format!(
                    r#"{{"id":"pm0","path_on_host":"/p","rate_limiter":{}}}"#,
                    limiter(refill)
                ),
                "Pmem config error",
                "rate_limiter.bandwidth.refill_time",
            ),
            (
                "PUT",
                "/entropy".to_owned(),
                format!(r#"{{"rate_limiter":{}}}"#, limiter(refill)),
                "Entropy device error",
                "rate_limiter.bandwidth.refill_time",
            ),
            (
                "PUT",
                "/serial".to_owned(),
                format!(
                    r#"{{"serial_out_path":"/s","rate_limiter":{}}}"#,
                    bucket(refill)
                ),
                "Serial config error",
                "rate_limiter.refill_time",
            ),
        ]
    };
    for (method, path, body, prefix, field) in routes(too_long) {
        let r = server.conn().request(method, &path, &body);
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
        assert_eq!(
            r.fault(),
            format!("{prefix}: {}", why(field)),
            "{method} {path}"
        );
    }
    assert!(
        server.actions().is_empty(),
        "refused limiters must not reach the VMM: {:?}",
        server.actions()
    );
    // The largest refill time that works passes the API on every route.
    for (method, path, body, _, _) in routes(max) {
        let r = server.conn().request(method, &path, &body);
        assert!(
            !r.body.contains("refill_time"),
            "{method} {path}: {}",
            r.body
        );
    }
    assert_eq!(server.actions().len(), 7, "{:?}", server.actions());
}

#[test]
fn an_action_whose_client_disconnected_while_queued_never_runs() {
    let server = ClaimingServer::start();
    let path = server.path.clone();
    let busy = std::thread::spawn(move || Conn::open(&path).request("PUT", "/entropy", "{}"));
    std::thread::sleep(Duration::from_millis(300));
    let mut gone = Conn::open(&server.path);
    let body = r#"{"guest_cid":3,"uds_path":"/v"}"#;
    gone.send_raw(
        format!(
            "PUT /vsock HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);
    busy.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(*server.ran.lock().unwrap(), ["PUT /entropy"]);
    assert_eq!(*server.skipped.lock().unwrap(), 1);
}
