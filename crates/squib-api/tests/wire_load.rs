//! Many idle connections and a byte-per-second client must not stop other clients.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::TestServer;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn idle_and_slow_clients_do_not_block_others() {
    let server = TestServer::start();
    let before = rss_kib();
    let idle: Vec<UnixStream> = (0..500)
        .map(|_| UnixStream::connect(&server.path).unwrap())
        .collect();
    // A client that dribbles a request one byte at a time.
    let path = server.path.clone();
    let slow = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(path).unwrap();
        for byte in b"GET / HTTP/1.1\r\n" {
            stream.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
        stream
    });
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..50 {
        let started = Instant::now();
        let r = if i % 2 == 0 {
            server.get("/")
        } else {
            server.put("/machine-config", r#"{"vcpu_count":2,"mem_size_mib":256}"#)
        };
        assert!(r.status == 200 || r.status == 204, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB with 500 idle connections"
    );
    drop(slow.join().unwrap());
    drop(idle);
    assert_eq!(server.get("/").status, 200);
}
