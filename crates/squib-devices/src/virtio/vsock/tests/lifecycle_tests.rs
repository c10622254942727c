//! Limits, per-event budgets, transport reset, binding and unlinking the socket.

use std::io::Write;
use std::os::unix::net::UnixStream;

use vm_memory::{Bytes, GuestAddress};

use super::harness::{guest_hdr, Harness};
use super::{guest_connect, listen, ops, reads_eof};
use crate::virtio::test_utils::F_WRITE;
use crate::virtio::vsock::packet::op;
use crate::virtio::vsock::{Vsock, MAX_CONNECTIONS, PACKET_BUDGET, RX_INDEX, TX_INDEX};
use crate::virtio::VirtioDevice;

const EVQ_BUF: u64 = 0xF0_0000;

#[test]
fn bind_failure_text_is_firecracker_s() {
    let dir = tempfile::tempdir().unwrap();
    let err = Vsock::new(3, dir.path().join("missing/v.sock")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot create backend for vsock device: Error binding to the host-side Unix socket: \
         No such file or directory (os error 2)"
    );
    let path = dir.path().join("v.sock");
    let _first = Vsock::new(3, path.clone()).unwrap();
    let err = Vsock::new(3, path).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("Address already in use (os error 98)"),
        "{err}"
    );
}

#[test]
fn socket_is_bound_at_construction_and_unlinked_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let vsock = Vsock::new(3, path.clone()).unwrap();
    assert!(path.exists());
    // A client can connect before the device is activated or registered.
    let _client = UnixStream::connect(&path).unwrap();
    assert_eq!(vsock.save().uds_path, path);
    drop(vsock);
    assert!(!path.exists());
    let again = Vsock::new(3, path.clone()).unwrap();
    assert_eq!(again.uds_path(), path.as_path());
}

#[test]
fn guest_requests_beyond_1023_connections_get_rst() {
    let mut h = Harness::new();
    let listener = listen(&h, 9);
    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    let mut responses = 0;
    for batch in 0..(MAX_CONNECTIONS as u32).div_ceil(60) {
        for i in 0..60 {
            let src = 1 + batch * 60 + i;
            if src as usize > MAX_CONNECTIONS {
                break;
            }
            h.queue_tx(guest_hdr(op::REQUEST, src, 9), &[]);
        }
        h.kick_tx();
        h.pump();
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s);
        }
        for _ in 0..4 {
            h.ensure_rx(64, 64);
            h.pump();
            responses += ops(&h.recv())
                .iter()
                .filter(|&&o| o == op::RESPONSE)
                .count();
        }
    }
    assert_eq!(responses, MAX_CONNECTIONS);
    assert_eq!(h.dev().muxer().conn_count(), MAX_CONNECTIONS);
    h.send(guest_hdr(op::REQUEST, 5000, 9), &[]);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    // Excess host clients are accepted, then closed.
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 1\n").unwrap();
    h.pump();
    assert!(reads_eof(&mut client));
    assert_eq!(h.dev().muxer().conn_count(), MAX_CONNECTIONS);
    // Closing one makes room again.
    h.send(guest_hdr(op::RST, 1, 9), &[]);
    h.send(guest_hdr(op::REQUEST, 5000, 9), &[]);
    assert_eq!(ops(&h.exchange()), [op::RESPONSE]);
}

#[test]
fn one_tx_event_serves_at_most_the_budget_and_rekicks() {
    let mut h = Harness::new();
    let mut dropped = guest_hdr(op::RW, 1, 2);
    dropped.dst_cid = 99;
    let mut published = 0u16;
    for _ in 0..200 {
        h.queue_tx(dropped, &[]);
        published += 1;
    }
    h.kick_tx();
    let mut used = 0u16;
    for round in 0..6 {
        h.dev().process_tx_queue_event();
        let now = h.txq.used_idx();
        assert!(
            now - used <= PACKET_BUDGET as u16,
            "round {round}: {}",
            now - used
        );
        assert_eq!(now - used, PACKET_BUDGET as u16, "round {round}");
        used = now;
        // The drain re-armed itself...
        assert_eq!(h.dev().queue_events()[TX_INDEX].read().unwrap(), 1);
        h.dev().queue_events()[TX_INDEX].write(1).unwrap();
        // ...while the driver keeps refilling the ring.
        for _ in 0..PACKET_BUDGET {
            h.queue_tx(dropped, &[]);
            published += 1;
        }
    }
    h.pump();
    assert_eq!(h.txq.used_idx(), published);
}

#[test]
fn one_rx_event_delivers_at_most_the_budget_and_rekicks() {
    let mut h = Harness::new();
    // 100 stray packets, each owed an RST, and no rx buffers yet.
    for port in 0..100u32 {
        h.queue_tx(guest_hdr(op::RW, port, 7777), &[]);
        if port % 50 == 49 {
            h.kick_tx();
            h.pump();
        }
    }
    h.post_rx(200, 64);
    h.dev().process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), PACKET_BUDGET as u16);
    assert_eq!(
        h.dev().queue_events()[RX_INDEX].read().unwrap(),
        1,
        "re-kicked"
    );
    h.dev().queue_events()[RX_INDEX].write(1).unwrap();
    h.pump();
    assert_eq!(ops(&h.recv()), vec![op::RST; 100]);
}

#[test]
fn host_flood_is_served_in_bounded_slices() {
    let mut h = Harness::new();
    let listener = listen(&h, 80);
    let mut req = guest_hdr(op::REQUEST, 4000, 80);
    req.buf_alloc = u32::MAX;
    h.send(req, &[]);
    assert_eq!(ops(&h.exchange()), [op::RESPONSE]);
    let (mut stream, _) = listener.accept().unwrap();
    // The host writes far more than one event may move (it blocks until the device closes).
    let _flood = std::thread::spawn(move || {
        let _ = stream.write_all(&vec![7u8; 4 << 20]);
    });
    h.post_rx(240, 1024);
    // Only the stream's readiness is left to wake the device.
    let _ = h.dev().queue_events()[RX_INDEX].read();
    let before = h.rxq.used_idx();
    h.em.run_with_timeout(1000).unwrap();
    assert_eq!(h.rxq.used_idx() - before, PACKET_BUDGET as u16);
    assert_eq!(
        h.dev().queue_events()[RX_INDEX].read().unwrap(),
        1,
        "re-kicked"
    );
    h.dev().queue_events()[RX_INDEX].write(1).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.rxq.used_idx() - before < 240 + 7 && std::time::Instant::now() < end {
        h.pump_for(5);
    }
    // 7 buffers were left over from the handshake's exchange.
    assert_eq!(
        h.rxq.used_idx() - before,
        240 + 7,
        "the rest follows on later events"
    );
}

#[test]
fn stray_rsts_are_bounded() {
    let mut h = Harness::new();
    for port in 0..600u32 {
        h.queue_tx(guest_hdr(op::RW, port, 7777), &[]);
        if port % 60 == 59 {
            h.kick_tx();
            h.pump();
        }
    }
    let mut rsts = 0;
    for _ in 0..10 {
        h.ensure_rx(64, 64);
        h.pump();
        rsts += h.recv().len();
    }
    assert!(
        rsts <= crate::virtio::vsock::muxer::MAX_STRAY_RST + 64,
        "{rsts}"
    );
}

#[test]
fn transport_reset_event_drops_connections() {
    let mut h = Harness::new();
    let listener = listen(&h, 80);
    let mut stream = guest_connect(&mut h, &listener, 4000, 80);
    let (mut client, _) = super::host_connect(&mut h, 52);
    h.mem
        .write_obj(0xffff_ffffu32, GuestAddress(EVQ_BUF))
        .unwrap();
    h.evq.add_chain(&[(EVQ_BUF, 8, F_WRITE)]);
    h.dev().send_transport_reset();
    assert_eq!(h.evq.used_idx(), 1);
    assert_eq!(h.evq.used(0).1, 4);
    assert_eq!(h.mem.read_obj::<u32>(GuestAddress(EVQ_BUF)).unwrap(), 0);
    assert_eq!(h.dev().muxer().conn_count(), 0);
    // Streams close once the event loop runs (the device wakes itself within a millisecond).
    h.pump_for(20);
    assert!(reads_eof(&mut stream));
    assert!(reads_eof(&mut client));
    // Nothing reaches the guest until it handled the reset (refilled the event queue)...
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 52\n").unwrap();
    h.pump();
    assert!(h.exchange().is_empty());
    h.evq.add_chain(&[(EVQ_BUF, 8, F_WRITE)]);
    h.dev().queue_events()[crate::virtio::vsock::EVQ_INDEX]
        .write(1)
        .unwrap();
    h.pump();
    // ...then the device serves again.
    assert_eq!(ops(&h.recv()), [op::REQUEST]);
    let _again = super::host_connect(&mut h, 53);
}

#[test]
fn transport_reset_waits_for_an_event_buffer() {
    let mut h = Harness::new();
    h.dev().send_transport_reset();
    assert_eq!(h.evq.used_idx(), 0);
    h.evq.add_chain(&[(EVQ_BUF, 4, F_WRITE)]);
    h.dev().queue_events()[crate::virtio::vsock::EVQ_INDEX]
        .write(1)
        .unwrap();
    h.pump();
    assert_eq!(h.evq.used_idx(), 1);
    assert_eq!(h.evq.used(0).1, 4);
}

#[test]
fn device_reset_drops_connections_and_stops_serving() {
    let mut h = Harness::new();
    let listener = listen(&h, 80);
    let mut stream = guest_connect(&mut h, &listener, 4000, 80);
    h.dev().reset();
    assert!(!h.dev().is_activated());
    h.pump_for(20);
    assert!(reads_eof(&mut stream));
    assert_eq!(h.dev().muxer().conn_count(), 0);
}

#[test]
fn metrics_register_under_vsock() {
    let h = Harness::new();
    h.dev().register_metrics();
    assert!(squib_logger::metrics::unregister_group("vsock"));
}

#[test]
fn before_activation_host_requests_expire_and_queue_kicks_are_ignored() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use event_manager::{EventManager, SubscriberOps};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let mut vsock = Vsock::new(3, path.clone()).unwrap();
    vsock.muxer_mut().set_timeout(Duration::from_millis(30));
    let dev = Arc::new(Mutex::new(vsock));
    let mut em: EventManager<Arc<Mutex<Vsock>>> = EventManager::new().unwrap();
    em.add_subscriber(dev.clone());
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"CONNECT 5\n").unwrap();
    for index in [RX_INDEX, TX_INDEX, crate::virtio::vsock::EVQ_INDEX] {
        dev.lock().unwrap().queue_events()[index].write(1).unwrap();
    }
    let end = Instant::now() + Duration::from_millis(150);
    while Instant::now() < end {
        em.run_with_timeout(5).unwrap();
    }
    assert_eq!(dev.lock().unwrap().muxer().conn_count(), 0);
    assert!(reads_eof(&mut client));
    assert_eq!(dev.lock().unwrap().metrics().conns_killed.count(), 1);
}
