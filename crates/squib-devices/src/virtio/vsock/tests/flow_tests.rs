//! Data, credit and shutdown on established connections.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use super::harness::{guest_hdr, Harness};
use super::{guest_connect, listen, ops, reads_eof};
use crate::virtio::vsock::muxer::ConnKey;
use crate::virtio::vsock::packet::{op, VsockHeader, HDR_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND};
use crate::virtio::vsock::{CONN_BUF_ALLOC, CREDIT_UPDATE_THRESHOLD};

const GUEST_PORT: u32 = 4000;
const HOST_PORT: u32 = 80;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn established() -> (Harness, UnixListener, UnixStream) {
    let mut h = Harness::new();
    let listener = listen(&h, HOST_PORT);
    let stream = guest_connect(&mut h, &listener, GUEST_PORT, HOST_PORT);
    (h, listener, stream)
}

fn rw(data_len: usize) -> VsockHeader {
    let mut hdr = guest_hdr(op::RW, GUEST_PORT, HOST_PORT);
    hdr.len = data_len as u32;
    hdr
}

fn key() -> ConnKey {
    ConnKey {
        local_port: HOST_PORT,
        peer_port: GUEST_PORT,
    }
}

/// A guest that sends `data` within the device's credit, learning it from what it receives.
fn guest_send_all(h: &mut Harness, data: &[u8], chunk: usize, deadline: Duration) {
    let end = Instant::now() + deadline;
    let (mut sent, mut dev_fwd) = (0u32, 0u32);
    let mut off = 0;
    while off < data.len() {
        assert!(Instant::now() < end, "guest stalled at {off} bytes");
        let credit = CONN_BUF_ALLOC - sent.wrapping_sub(dev_fwd);
        let n = chunk.min(data.len() - off).min(credit as usize);
        if n > 0 {
            h.send(rw(n), &data[off..off + n]);
            sent = sent.wrapping_add(n as u32);
            off += n;
        } else {
            h.pump_for(1);
        }
        for (hdr, _) in h.exchange() {
            assert_eq!(hdr.buf_alloc, CONN_BUF_ALLOC);
            dev_fwd = hdr.fwd_cnt;
        }
    }
}

#[test]
fn guest_to_host_mebibytes_arrive_intact() {
    let (mut h, _l, mut stream) = established();
    let total = 4 << 20;
    let data = pattern(total, 7);
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        stream.read_exact(&mut got).unwrap();
        got
    });
    guest_send_all(&mut h, &data, 16 * 1024, Duration::from_secs(60));
    let end = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < end {
        h.pump_for(2);
    }
    assert!(reader.join().unwrap() == data, "bytes differ");
    assert_eq!(h.dev().metrics().tx_bytes_count.count(), total as u64);
}

/// A guest that receives until it has `total` bytes, granting credit as it consumes.
fn guest_receive(h: &mut Harness, total: usize, buf_len: u32, guest_buf: u32) -> Vec<u8> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::with_capacity(total);
    let mut told = 0u32;
    while got.len() < total {
        assert!(Instant::now() < end, "stalled at {} bytes", got.len());
        h.ensure_rx(16, buf_len + HDR_LEN as u32);
        h.pump_for(1);
        for (hdr, data) in h.recv() {
            if hdr.op == op::CREDIT_UPDATE {
                continue;
            }
            assert_eq!(hdr.op, op::RW, "{hdr:?}");
            assert!(hdr.len <= guest_buf, "{hdr:?}");
            got.extend_from_slice(&data);
        }
        let consumed = got.len() as u32;
        if consumed.wrapping_sub(told) >= guest_buf / 4 || got.len() == total {
            let mut upd = guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, HOST_PORT);
            upd.buf_alloc = guest_buf;
            upd.fwd_cnt = consumed;
            h.send(upd, &[]);
            told = consumed;
        }
    }
    got
}

#[test]
fn host_to_guest_mebibytes_arrive_intact_within_credit() {
    let mut h = Harness::new();
    let listener = listen(&h, HOST_PORT);
    let mut req = guest_hdr(op::REQUEST, GUEST_PORT, HOST_PORT);
    let guest_buf = 128 * 1024;
    req.buf_alloc = guest_buf;
    h.send(req, &[]);
    assert_eq!(ops(&h.exchange()), [op::RESPONSE]);
    let (mut stream, _) = listener.accept().unwrap();
    let total = 4 << 20;
    let data = pattern(total, 3);
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        stream.write_all(&to_send).unwrap();
        stream
    });
    let got = guest_receive(&mut h, total, 16 * 1024, guest_buf);
    assert!(got == data, "bytes differ");
    let _stream = writer.join().unwrap();
    assert_eq!(h.dev().metrics().rx_bytes_count.count(), total as u64);
}

#[test]
fn no_data_beyond_guest_credit_until_credit_update() {
    let mut h = Harness::new();
    let listener = listen(&h, HOST_PORT);
    let mut req = guest_hdr(op::REQUEST, GUEST_PORT, HOST_PORT);
    req.buf_alloc = 1000;
    h.send(req, &[]);
    assert_eq!(ops(&h.exchange()), [op::RESPONSE]);
    let (mut stream, _) = listener.accept().unwrap();
    stream.write_all(&pattern(5000, 1)).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        h.pump_for(5);
        for (hdr, data) in h.exchange() {
            assert_eq!(hdr.op, op::RW);
            got.extend(data);
        }
    }
    assert_eq!(got.len(), 1000, "exactly the credit");
    let mut upd = guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, HOST_PORT);
    upd.buf_alloc = 1000;
    upd.fwd_cnt = 1000;
    h.send(upd, &[]);
    for _ in 0..5 {
        h.pump_for(5);
        for (_, data) in h.exchange() {
            got.extend(data);
        }
    }
    assert_eq!(got, pattern(2000, 1));
}

#[test]
fn credit_request_is_answered_with_credit_update() {
    let (mut h, _l, _s) = established();
    h.send(guest_hdr(op::CREDIT_REQUEST, GUEST_PORT, HOST_PORT), &[]);
    let got = h.exchange();
    assert_eq!(ops(&got), [op::CREDIT_UPDATE]);
    assert_eq!((got[0].0.buf_alloc, got[0].0.fwd_cnt), (CONN_BUF_ALLOC, 0));
}

#[test]
fn credit_update_sent_once_guest_view_drops_below_4k() {
    let (mut h, _l, _s) = established();
    let first = (CONN_BUF_ALLOC - CREDIT_UPDATE_THRESHOLD) as usize;
    let data = pattern(first + 1, 9);
    h.send(rw(first), &data[..first]);
    assert!(
        h.exchange().is_empty(),
        "view is exactly 4 KiB: no update yet"
    );
    h.send(rw(1), &data[first..]);
    let got = h.exchange();
    assert_eq!(ops(&got), [op::CREDIT_UPDATE]);
    assert_eq!(got[0].0.fwd_cnt, first as u32 + 1);
}

#[test]
fn slow_host_reader_buffers_at_most_buf_alloc_and_loses_nothing() {
    let (mut h, _l, mut stream) = established();
    let chunk = 16 * 1024;
    let (mut sent, mut dev_fwd) = (0u32, 0u32);
    let mut idle_rounds = 0;
    // The host does not read: send while the device grants credit.
    while idle_rounds < 3 {
        let credit = CONN_BUF_ALLOC - sent.wrapping_sub(dev_fwd);
        let n = chunk.min(credit as usize);
        if n > 0 {
            h.send(rw(n), &pattern(chunk, (sent / chunk as u32) as u8)[..n]);
            sent += n as u32;
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
        }
        h.pump_for(1);
        for (hdr, _) in h.exchange() {
            dev_fwd = hdr.fwd_cnt;
        }
    }
    let state = h.dev().muxer().conn_state(key()).unwrap();
    assert!(state.unforwarded() <= CONN_BUF_ALLOC, "{state:?}");
    assert!(state.unforwarded() > 0, "the socket filled up: {state:?}");
    assert_eq!(state.rx_cnt, sent);
    // The host catches up: everything arrives, in order.
    let total = sent as usize;
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        stream.read_exact(&mut got).unwrap();
        got
    });
    let end = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < end {
        h.pump_for(2);
    }
    let got = reader.join().unwrap();
    for (i, piece) in got.chunks(chunk).enumerate() {
        assert!(
            piece == &pattern(chunk, i as u8)[..piece.len()],
            "chunk {i}"
        );
    }
}

#[test]
fn guest_overrunning_credit_gets_rst() {
    let (mut h, _l, mut stream) = established();
    // Fill the host socket without the host reading, then overrun the 64 KiB window.
    let chunk = pattern(32 * 1024, 5);
    let mut rst = false;
    for _ in 0..64 {
        h.send(rw(chunk.len()), &chunk);
        let got = h.exchange();
        if ops(&got).contains(&op::RST) {
            rst = true;
            break;
        }
    }
    assert!(rst, "credit overflow must reset");
    assert_eq!(h.dev().muxer().conn_count(), 0);
    stream.set_nonblocking(true).unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

#[test]
fn guest_shutdown_both_gets_rst_and_host_eof() {
    let (mut h, _l, mut stream) = established();
    let mut shut = guest_hdr(op::SHUTDOWN, GUEST_PORT, HOST_PORT);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.send(shut, &[]);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    assert!(reads_eof(&mut stream));
    assert_eq!(h.dev().muxer().conn_count(), 0);
}

#[test]
fn guest_shutdown_send_is_host_eof_but_host_can_still_write() {
    let (mut h, _l, mut stream) = established();
    h.send(rw(5), b"hello");
    let mut shut = guest_hdr(op::SHUTDOWN, GUEST_PORT, HOST_PORT);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, &[]);
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello");
    stream.write_all(b"pong").unwrap();
    h.pump();
    let got = h.exchange();
    assert_eq!(ops(&got), [op::RW]);
    assert_eq!(got[0].1, b"pong");
}

#[test]
fn guest_shutdown_rcv_stops_data_to_the_guest() {
    let (mut h, _l, mut stream) = established();
    let mut shut = guest_hdr(op::SHUTDOWN, GUEST_PORT, HOST_PORT);
    shut.flags = SHUTDOWN_RCV;
    h.send(shut, &[]);
    stream.write_all(b"unwanted").unwrap();
    h.pump_for(10);
    assert!(h.exchange().is_empty());
}

#[test]
fn host_close_sends_shutdown_and_guest_rst_removes() {
    let (mut h, _l, stream) = established();
    drop(stream);
    h.pump();
    let got = h.exchange();
    assert_eq!(ops(&got), [op::SHUTDOWN]);
    assert_eq!(got[0].0.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    h.send(guest_hdr(op::RST, GUEST_PORT, HOST_PORT), &[]);
    assert_eq!(h.dev().muxer().conn_count(), 0);
    assert_eq!(h.dev().metrics().conns_killed.count(), 0);
}

#[test]
fn host_close_without_guest_rst_is_killed_after_the_deadline() {
    let (mut h, _l, mut stream) = established();
    h.dev().muxer_mut().set_timeout(Duration::from_millis(50));
    stream.write_all(b"last words").unwrap();
    drop(stream);
    h.pump();
    let got = h.exchange();
    assert_eq!(ops(&got), [op::RW, op::SHUTDOWN]);
    assert_eq!(got[0].1, b"last words");
    h.pump_for(150);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    assert_eq!(h.dev().metrics().conns_killed.count(), 1);
    assert_eq!(h.dev().muxer().conn_count(), 0);
}

#[test]
fn guest_rst_on_established_closes_host_stream() {
    let (mut h, _l, mut stream) = established();
    h.send(guest_hdr(op::RST, GUEST_PORT, HOST_PORT), &[]);
    assert!(reads_eof(&mut stream));
    assert!(h.exchange().is_empty(), "no answer to an RST");
}

#[test]
fn host_initiated_data_flows_both_ways_after_ok() {
    let mut h = Harness::new();
    let (mut client, local) = super::host_connect(&mut h, 52);
    client.write_all(b"ping").unwrap();
    h.pump();
    let got = h.exchange();
    assert_eq!(ops(&got), [op::RW]);
    assert_eq!(
        (got[0].0.src_port, got[0].0.dst_port, &got[0].1[..]),
        (local, 52, &b"ping"[..])
    );
    let mut reply = guest_hdr(op::RW, 52, local);
    reply.len = 4;
    h.send(reply, b"pong");
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn host_close_while_guest_has_no_credit_loses_nothing_and_does_not_spin() {
    let mut h = Harness::new();
    let listener = listen(&h, HOST_PORT);
    let mut req = guest_hdr(op::REQUEST, GUEST_PORT, HOST_PORT);
    req.buf_alloc = 100;
    h.send(req, &[]);
    assert_eq!(ops(&h.exchange()), [op::RESPONSE]);
    let (mut stream, _) = listener.accept().unwrap();
    stream.write_all(&pattern(300, 4)).unwrap();
    drop(stream);
    h.pump();
    let mut got: Vec<u8> = h.exchange().into_iter().flat_map(|(_, d)| d).collect();
    assert_eq!(got.len(), 100);
    // The hung-up stream is parked: the loop goes idle instead of spinning on EPOLLHUP.
    let mut events = 0;
    for _ in 0..10 {
        events += h.em.run_with_timeout(0).unwrap();
    }
    assert!(events <= 1, "{events} events while parked");
    let mut ops_seen = Vec::new();
    for granted in [100u32, 200, 300] {
        let mut upd = guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, HOST_PORT);
        upd.buf_alloc = 100;
        upd.fwd_cnt = granted;
        h.send(upd, &[]);
        for (hdr, data) in h.exchange() {
            ops_seen.push(hdr.op);
            got.extend(data);
        }
    }
    assert_eq!(got, pattern(300, 4));
    assert_eq!(ops_seen.last(), Some(&op::SHUTDOWN), "{ops_seen:?}");
}

#[test]
fn data_flows_with_event_idx_and_in_order_accepted() {
    use crate::virtio::features;
    let acked = (1 << features::RING_EVENT_IDX) | (1 << crate::virtio::vsock::VIRTIO_F_IN_ORDER);
    let mut h = Harness::with_features(acked);
    h.rxq.set_used_event(0);
    let listener = listen(&h, HOST_PORT);
    let mut stream = guest_connect(&mut h, &listener, GUEST_PORT, HOST_PORT);
    let data = pattern(512 * 1024, 11);
    let (go, wait) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 512 * 1024];
        stream.read_exact(&mut got).unwrap();
        // Echo only once the guest listens (the sending guest ignores data).
        wait.recv().unwrap();
        stream.write_all(&got).unwrap();
        stream
    });
    guest_send_all(&mut h, &data, 32 * 1024, Duration::from_secs(30));
    go.send(()).unwrap();
    let echoed = guest_receive(&mut h, data.len(), 4096, 256 * 1024);
    assert!(echoed == data, "echo differs");
    let _stream = reader.join().unwrap();
}

#[test]
fn a_stalled_connection_does_not_hold_up_another() {
    let (mut h, listener, _stalled) = established();
    // Fill the stalled connection's window: its host never reads.
    let chunk = pattern(16 * 1024, 2);
    let (mut sent, mut dev_fwd) = (0u32, 0u32);
    for _ in 0..64 {
        if CONN_BUF_ALLOC - sent.wrapping_sub(dev_fwd) < chunk.len() as u32 {
            h.pump_for(1);
        } else {
            h.send(rw(chunk.len()), &chunk);
            sent += chunk.len() as u32;
        }
        for (hdr, _) in h.exchange() {
            dev_fwd = hdr.fwd_cnt;
        }
    }
    // A second connection to the same host port still moves data both ways.
    let mut other = guest_connect(&mut h, &listener, GUEST_PORT + 1, HOST_PORT);
    let data = pattern(256 * 1024, 8);
    let mut off = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while off < data.len() {
        let mut hdr = guest_hdr(op::RW, GUEST_PORT + 1, HOST_PORT);
        hdr.len = 16 * 1024;
        h.send(hdr, &data[off..off + 16 * 1024]);
        off += 16 * 1024;
        let n = other.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        let _ = h.exchange();
    }
    while got.len() < data.len() {
        h.pump();
        let n = other.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "second connection's bytes differ");
    other.write_all(b"still here").unwrap();
    h.pump();
    let replies: Vec<_> = h
        .exchange()
        .into_iter()
        .filter(|(hdr, _)| hdr.op == op::RW)
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0.dst_port, GUEST_PORT + 1);
    assert_eq!(replies[0].1, b"still here");
    assert_eq!(h.dev().muxer().conn_count(), 2);
}
