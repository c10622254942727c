//! Muxer unit tests: port allocation, deadlines, handshakes, bounds.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use super::deadlines::ACCEPT_RETRY;
use super::*;

fn muxer() -> (tempfile::TempDir, Muxer) {
    let dir = tempfile::tempdir().unwrap();
    let m = Muxer::new(3, dir.path().join("v.sock"), Arc::default()).unwrap();
    (dir, m)
}

#[test]
fn local_ports_go_round_robin_and_skip_those_in_use() {
    let (_d, mut m) = muxer();
    assert_eq!(m.allocate_local_port(7), 1 << 30);
    assert_eq!(m.allocate_local_port(7), (1 << 30) + 1);
    m.next_local_port = (1 << 31) - 1;
    m.local_ports.insert(1 << 30);
    assert_eq!(m.allocate_local_port(7), (1 << 31) - 1);
    // Wraps to 2^30, which is in use, so 2^30 + 1.
    assert_eq!(m.allocate_local_port(7), (1 << 30) + 1);
}

#[test]
fn silent_host_client_is_closed_after_the_deadline() {
    let (_d, mut m) = muxer();
    m.set_timeout(Duration::from_millis(10));
    let mut client = UnixStream::connect(m.uds_path()).unwrap();
    m.process_listener();
    assert_eq!(m.handshakes.len(), 1);
    std::thread::sleep(Duration::from_millis(20));
    m.process_timer();
    assert!(m.handshakes.is_empty());
    assert_eq!(m.retired.len(), 1);
    m.retired.clear();
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut client, &mut buf).unwrap(), 0);
}

#[test]
fn handshake_becomes_a_connection_owing_a_request() {
    let (_d, mut m) = muxer();
    let mut client = UnixStream::connect(m.uds_path()).unwrap();
    client.write_all(b"CONNECT 99\n").unwrap();
    m.process_listener();
    let fd = *m.handshakes.keys().next().unwrap();
    m.process_stream(fd, EventSet::IN);
    let key = ConnKey {
        local_port: 1 << 30,
        peer_port: 99,
    };
    let state = m.conn_state(key).unwrap();
    assert_eq!(state.phase, ConnPhase::LocalInit);
    assert_eq!(state.pending, pending::REQUEST);
    assert!(m.has_rx());
}

#[test]
fn kill_without_a_guest_removes_at_once() {
    let (_d, mut m) = muxer();
    let mut client = UnixStream::connect(m.uds_path()).unwrap();
    client.write_all(b"CONNECT 5\n").unwrap();
    m.process_listener();
    let fd = *m.handshakes.keys().next().unwrap();
    m.process_stream(fd, EventSet::IN);
    assert_eq!(m.conn_count(), 1);
    let key = *m.conns.keys().next().unwrap();
    m.kill(key);
    assert_eq!(m.conn_count(), 0);
    assert!(!m.has_rx());
    assert!(m.local_ports.is_empty());
}

#[test]
fn killq_is_rebuilt_from_live_entries_when_full() {
    let (_d, mut m) = muxer();
    let at = Instant::now() + Duration::from_secs(60);
    for i in 0..MAX_KILLQ {
        m.push_deadline(at, Target::Handshake(i as RawFd), 1_000_000 + i as u64);
    }
    assert_eq!(m.killq.len(), MAX_KILLQ);
    m.push_deadline(at, Target::Handshake(-1), 7);
    // None of the stale entries survived the rebuild.
    assert_eq!(m.killq.len(), 1);
    assert_eq!(m.metrics.killq_resync.count(), 1);
}

#[test]
fn stray_rsts_need_a_guest_and_are_bounded() {
    let (_d, mut m) = muxer();
    let key = ConnKey {
        local_port: 1,
        peer_port: 2,
    };
    m.stray_rst(key);
    assert!(!m.has_rx(), "no guest yet");
    m.set_guest_ready(true);
    for _ in 0..MAX_STRAY_RST + 10 {
        m.stray_rst(key);
    }
    assert_eq!(m.stray_rst.len(), MAX_STRAY_RST);
}

#[test]
fn host_port_never_clashes_with_a_guest_connection_to_it() {
    let (dir, mut m) = muxer();
    m.set_guest_ready(true);
    // The guest connected from port 52 to host port 2^30 (a listener exists for it).
    let mut path = m.uds_path().as_os_str().to_owned();
    path.push(format!("_{}", 1u32 << 30));
    let _listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let mem = crate::virtio::test_utils::single_region_mem(0x1000);
    let mut req = crate::virtio::vsock::packet::VsockHeader {
        src_cid: 3,
        dst_cid: 2,
        src_port: 52,
        dst_port: 1 << 30,
        type_: crate::virtio::vsock::packet::TYPE_STREAM,
        op: crate::virtio::vsock::packet::op::REQUEST,
        ..Default::default()
    };
    req.buf_alloc = 4096;
    m.send_pkt(&mem, &req, &[]);
    assert_eq!(m.conn_count(), 1);
    // A host client asking for guest port 52 must not get local port 2^30.
    assert_eq!(m.allocate_local_port(52), (1 << 30) + 1);
    drop(dir);
}

#[test]
fn connecting_to_a_full_backlog_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never_accepts");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut held = Vec::new();
    let start = Instant::now();
    let err = loop {
        match guest::connect_nonblocking(&path) {
            Ok(stream) => held.push(stream),
            Err(e) => break e,
        }
        assert!(held.len() < 100_000, "the backlog never filled");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let long = dir.path().join("x".repeat(200));
    assert_eq!(
        guest::connect_nonblocking(&long).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn a_failing_accept_pauses_the_listener_and_the_timer_resumes_it() {
    let (_d, mut m) = muxer();
    m.pause_listener();
    assert!(m.listener_paused_until.is_some());
    assert!(
        m.listener_dirty,
        "the next epoll sync stops watching the listener"
    );
    assert!(m.timer_armed, "the deadline timer brings the listener back");
    m.listener_dirty = false;
    m.process_timer();
    assert!(
        m.listener_paused_until.is_some(),
        "resumed before the retry delay"
    );
    std::thread::sleep(ACCEPT_RETRY + Duration::from_millis(20));
    m.process_timer();
    assert!(m.listener_paused_until.is_none());
    assert!(
        m.listener_dirty,
        "the next epoll sync watches the listener again"
    );
}
