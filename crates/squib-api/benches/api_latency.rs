//! Latency of `GET /` (answered by the API thread) and `PUT /machine-config` (a round trip
//! through the VMM channel to a fake VMM thread) over a real Unix socket, keep-alive.
//! Prints p50 / p99; results are kept in `BENCHMARKS.md`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squib_api::action::ApiResponse;
use squib_api::channel::api_channel;
use squib_api::mirror::StateMirror;
use squib_api::server::{ApiServer, ApiServerConfig};
use vmm_sys_util::eventfd::EventFd;

const WARMUP: usize = 500;
const ITERATIONS: usize = 10_000;

fn read_reply(stream: &mut UnixStream, buf: &mut Vec<u8>) -> u16 {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            let status = resp.code.unwrap_or(0);
            if buf.len() >= head + len {
                buf.drain(..head + len);
                return status;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read reply");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn measure(stream: &mut UnixStream, request: &[u8], expect: u16) -> Vec<Duration> {
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let started = Instant::now();
        stream.write_all(request).expect("write request");
        assert_eq!(read_reply(stream, &mut buf), expect);
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    samples
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("squib-api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket_path = dir.join("api.sock");
    let server = ApiServer::bind(ApiServerConfig {
        socket_path: socket_path.clone(),
        ..ApiServerConfig::default()
    })
    .expect("bind");
    let wake = EventFd::new(0).expect("eventfd");
    let vmm_wake = wake.try_clone().expect("eventfd clone");
    let (sender, mut receiver) = api_channel(16, wake);
    std::thread::spawn(move || {
        while vmm_wake.read().is_ok() {
            while let Some(request) = receiver.try_recv() {
                request.respond(ApiResponse::NoContent);
            }
        }
    });
    server
        .spawn(sender, Arc::new(StateMirror::new("bench".into())))
        .expect("spawn");
    let mut stream = UnixStream::connect(&socket_path).expect("connect");

    let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let body = r#"{"vcpu_count":2,"mem_size_mib":1024}"#;
    let put = format!(
        "PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for (name, request, status) in [
        ("GET /", get.as_slice(), 200),
        ("PUT /machine-config", put.as_bytes(), 204),
    ] {
        let samples = measure(&mut stream, request, status);
        println!(
            "{name:<22} n={ITERATIONS} p50={:>7.1} us p99={:>7.1} us",
            percentile(&samples, 50).as_secs_f64() * 1e6,
            percentile(&samples, 99).as_secs_f64() * 1e6
        );
    }
    drop(stream);
    let _ = std::fs::remove_dir_all(&dir);
}
