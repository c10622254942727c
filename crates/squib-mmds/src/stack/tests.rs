//! Frame-level tests of the MMDS endpoint with a tiny guest-side TCP client.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use super::wire::{self, flags, Mac, TcpHeader};
use super::*;
use crate::responder::MmdsVersion;

const GUEST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);

fn store() -> MmdsStore {
    let mut store = MmdsStore::new(51_200);
    store
        .put(json!({"latest": {"meta-data": {"hostname": "vm1", "big": "x".repeat(4096)}}}))
        .unwrap();
    store
}

fn stack() -> MmdsStack {
    let mut stack = MmdsStack::new(DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR);
    stack.set_verify_checksums(true);
    stack
}

/// A segment the endpoint sent, decoded.
#[derive(Debug, Clone)]
struct Out {
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

/// The guest side of one connection.
struct Guest {
    port: u16,
    snd_nxt: u32,
    rcv_nxt: u32,
    data: Vec<u8>,
    fin: bool,
    rst: bool,
}

impl Guest {
    fn new(port: u16) -> Self {
        Self {
            port,
            snd_nxt: 1000,
            rcv_nxt: 0,
            data: Vec::new(),
            fin: false,
            rst: false,
        }
    }

    fn frame(&self, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let header = TcpHeader {
            dst_mac: DEFAULT_MAC_ADDR,
            src_mac: GUEST_MAC,
            src_ip: GUEST_IP,
            dst_ip: DEFAULT_IPV4_ADDR,
            ip_id: 1,
            src_port: self.port,
            dst_port: MMDS_TCP_PORT,
            seq,
            ack: self.rcv_nxt,
            flags,
            window: 65_535,
            mss: (flags & flags::SYN != 0).then_some(1460),
        };
        let mut buf = vec![0u8; 1600];
        let len = wire::write_tcp_frame(&mut buf, &header, payload).unwrap();
        buf.truncate(len);
        buf
    }

    fn send(&mut self, stack: &mut MmdsStack, store: &MmdsStore, flag: u8, payload: &[u8]) {
        let frame = self.frame(self.snd_nxt, flag, payload);
        assert!(stack.handle_frame(&frame, store, Instant::now()));
        let syn_fin = u32::from(flag & flags::SYN != 0) + u32::from(flag & flags::FIN != 0);
        self.snd_nxt = self
            .snd_nxt
            .wrapping_add(payload.len() as u32)
            .wrapping_add(syn_fin);
    }

    /// Take what the endpoint sent, in order; returns the segments.
    fn absorb(&mut self, stack: &mut MmdsStack) -> Vec<Out> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1600];
        while let Some(len) = stack.next_frame(&mut buf) {
            let Some(seg) = decode(&buf[..len]) else {
                continue;
            };
            if seg.flags & flags::SYN != 0 {
                self.rcv_nxt = seg.seq.wrapping_add(1);
            } else if seg.seq == self.rcv_nxt {
                self.data.extend_from_slice(&seg.payload);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(seg.payload.len() as u32);
                if seg.flags & flags::FIN != 0 {
                    self.fin = true;
                    self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                }
            }
            self.rst |= seg.flags & flags::RST != 0;
            out.push(seg);
        }
        out
    }

    fn connect(&mut self, stack: &mut MmdsStack, store: &MmdsStore) {
        self.send(stack, store, flags::SYN, &[]);
        let syn_ack = self.absorb(stack);
        assert_eq!(syn_ack.len(), 1);
        assert_eq!(syn_ack[0].flags, flags::SYN | flags::ACK);
        assert_eq!(syn_ack[0].ack, self.snd_nxt);
        self.send(stack, store, flags::ACK, &[]);
    }

    /// Send a request and collect the response bytes, ACKing as we go.
    fn request(&mut self, stack: &mut MmdsStack, store: &MmdsStore, raw: &str) -> String {
        self.data.clear();
        self.send(stack, store, flags::ACK | flags::PSH, raw.as_bytes());
        for _ in 0..100 {
            let segs = self.absorb(stack);
            if segs.is_empty() {
                break;
            }
            self.send(stack, store, flags::ACK, &[]);
        }
        String::from_utf8(self.data.clone()).unwrap()
    }
}

fn decode(frame: &[u8]) -> Option<Out> {
    let eth = wire::parse_ethernet(frame)?;
    assert_eq!(eth.src, DEFAULT_MAC_ADDR);
    let ip = wire::parse_ipv4(eth.payload, true).expect("valid IPv4 checksum");
    let tcp = wire::parse_tcp(ip.payload, ip.src, ip.dst, true).expect("valid TCP checksum");
    Some(Out {
        seq: tcp.seq,
        ack: tcp.ack,
        flags: tcp.flags,
        payload: tcp.payload.to_vec(),
    })
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

fn arp_request(target: Ipv4Addr, oper: u16) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&wire::ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(&oper.to_be_bytes());
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&GUEST_IP.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

#[test]
fn arp_request_for_mmds_gets_reply() {
    let (mut stack, store) = (stack(), store());
    assert!(!stack.handle_frame(
        &arp_request(Ipv4Addr::new(172, 16, 0, 1), 1),
        &store,
        Instant::now()
    ));
    assert!(stack.next_frame(&mut [0u8; 64]).is_none());
    assert!(stack.handle_frame(&arp_request(DEFAULT_IPV4_ADDR, 1), &store, Instant::now()));
    let mut buf = [0u8; 64];
    assert!(
        stack.next_frame(&mut buf[..41]).is_none(),
        "too small: reply stays queued"
    );
    let len = stack.next_frame(&mut buf).unwrap();
    assert_eq!(len, 42);
    assert_eq!(&buf[0..6], &GUEST_MAC);
    let arp = &buf[14..42];
    assert_eq!(&arp[6..8], &[0, 2]);
    assert_eq!(&arp[8..14], &DEFAULT_MAC_ADDR);
    assert_eq!(&arp[14..18], &DEFAULT_IPV4_ADDR.octets());
    assert_eq!(&arp[24..28], &GUEST_IP.octets());
    // An ARP reply aimed at the MMDS address is swallowed, never answered.
    assert!(stack.handle_frame(&arp_request(DEFAULT_IPV4_ADDR, 2), &store, Instant::now()));
    assert!(stack.next_frame(&mut buf).is_none());
}

#[test]
fn handshake_get_response_and_close() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_000);
    guest.connect(&mut stack, &store);
    let response = guest.request(
        &mut stack,
        &store,
        "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200 \r\n"), "{response}");
    assert!(response.contains("Content-Length: 3\r\n"));
    assert_eq!(body(&response), "vm1");
    assert!(guest.fin, "server closes after Connection: close");
    guest.send(&mut stack, &store, flags::ACK | flags::FIN, &[]);
    guest.absorb(&mut stack);
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn keep_alive_serves_several_requests_then_guest_closes() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_001);
    guest.connect(&mut stack, &store);
    let listing = guest.request(
        &mut stack,
        &store,
        "GET /latest/meta-data/ HTTP/1.1\r\n\r\n",
    );
    assert_eq!(body(&listing), "big\nhostname");
    let json = guest.request(
        &mut stack,
        &store,
        "GET /latest HTTP/1.1\r\nAccept: application/json\r\n\r\n",
    );
    assert!(body(&json).starts_with(r#"{"meta-data":{"big":"xxxx"#));
    assert_eq!(body(&json).len(), 4096 + 41);
    guest.send(&mut stack, &store, flags::ACK | flags::FIN, &[]);
    guest.absorb(&mut stack);
    assert!(guest.fin);
    guest.send(&mut stack, &store, flags::ACK, &[]);
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn v2_token_flow_over_tcp() {
    let store = store();
    let mut stack = stack().with_access(GuestAccess {
        version: MmdsVersion::V2,
        imds_compat: false,
    });
    let mut guest = Guest::new(40_002);
    guest.connect(&mut stack, &store);
    let refused = guest.request(
        &mut stack,
        &store,
        "GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401 \r\n"), "{refused}");
    let minted = guest.request(
        &mut stack,
        &store,
        "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert!(minted.contains("X-metadata-token-ttl-seconds: 60\r\n"));
    let token = body(&minted).to_string();
    let ok = guest.request(
        &mut stack,
        &store,
        &format!("GET /latest/meta-data/hostname HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n"),
    );
    assert_eq!(body(&ok), "vm1");
    let wrong = guest.request(
        &mut stack,
        &store,
        "GET /latest/meta-data/hostname HTTP/1.1\r\nX-metadata-token: 00\r\n\r\n",
    );
    assert_eq!(body(&wrong), "MMDS token not valid.");
}

#[test]
fn malformed_request_gets_error_and_close() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_003);
    guest.connect(&mut stack, &store);
    let response = guest.request(&mut stack, &store, "BREW /pot HTTP/1.1\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 501 \r\n"), "{response}");
    assert!(guest.fin);
}

#[test]
fn oversized_request_resets_connection() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_004);
    guest.connect(&mut stack, &store);
    let chunk = vec![b'a'; 1000];
    for _ in 0..3 {
        guest.send(&mut stack, &store, flags::ACK, &chunk);
        guest.absorb(&mut stack);
    }
    assert!(guest.rst);
    assert_eq!(stack.connection_count(), 0);
    assert_eq!(stack.buffered_bytes(), 0);
}

#[test]
fn out_of_order_data_is_dropped_and_dup_acked() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_005);
    guest.connect(&mut stack, &store);
    let ahead = guest.frame(
        guest.snd_nxt.wrapping_add(10),
        flags::ACK,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert!(stack.handle_frame(&ahead, &store, Instant::now()));
    let segs = guest.absorb(&mut stack);
    assert_eq!(segs.len(), 1);
    assert_eq!(
        segs[0].ack, guest.snd_nxt,
        "duplicate ACK points at the gap"
    );
    assert!(segs[0].payload.is_empty());
    let response = guest.request(
        &mut stack,
        &store,
        "GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n",
    );
    assert_eq!(body(&response), "vm1");
}

#[test]
fn segment_without_connection_and_other_ports_get_reset() {
    let (mut stack, store) = (stack(), store());
    let guest = Guest::new(40_006);
    let stray = guest.frame(5, flags::ACK, b"data");
    assert!(stack.handle_frame(&stray, &store, Instant::now()));
    let mut buf = [0u8; 128];
    let len = stack.next_frame(&mut buf).unwrap();
    let reset = decode(&buf[..len]).unwrap();
    assert_eq!(reset.flags, flags::RST);
    assert_eq!(reset.seq, guest.rcv_nxt);
    // A RST is never answered.
    let rst = guest.frame(5, flags::RST, &[]);
    assert!(stack.handle_frame(&rst, &store, Instant::now()));
    assert!(stack.next_frame(&mut buf).is_none());
}

#[test]
fn lost_data_is_retransmitted_after_timeout() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_007);
    guest.connect(&mut stack, &store);
    guest.send(
        &mut stack,
        &store,
        flags::ACK,
        b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n",
    );
    let mut buf = [0u8; 1600];
    assert!(
        stack.next_frame(&mut buf).is_some(),
        "response sent, then lost"
    );
    assert!(stack.next_frame(&mut buf).is_none());
    stack.advance_time(Instant::now() + Duration::from_secs(1));
    assert!(stack.has_pending_frames());
    guest.absorb(&mut stack);
    assert!(guest.data.ends_with(b"vm1"));
}

#[test]
fn retransmitted_syn_gets_syn_ack_again() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_009);
    guest.send(&mut stack, &store, flags::SYN, &[]);
    let first = guest.absorb(&mut stack);
    let again = guest.frame(guest.snd_nxt.wrapping_sub(1), flags::SYN, &[]);
    assert!(stack.handle_frame(&again, &store, Instant::now()));
    let second = guest.absorb(&mut stack);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].flags, flags::SYN | flags::ACK);
    assert_eq!(second[0].seq, first[0].seq);
    assert_eq!(stack.connection_count(), 1);
}

#[test]
fn unacknowledged_connection_gives_up_with_reset() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_010);
    guest.connect(&mut stack, &store);
    guest.send(
        &mut stack,
        &store,
        flags::ACK,
        b"GET /latest/meta-data/big HTTP/1.1\r\n\r\n",
    );
    let mut buf = [0u8; 1600];
    let mut now = Instant::now();
    let mut frames = 0;
    while stack.connection_count() > 0 && frames < 1000 {
        // Polling many times at one instant must not use up the retries.
        for _ in 0..5 {
            if stack.next_frame(&mut buf).is_some() {
                frames += 1;
            }
        }
        now += Duration::from_secs(10);
        stack.advance_time(now);
    }
    assert_eq!(stack.connection_count(), 0);
    let last = decode(&buf[..wire::ETH_HDR_LEN + 40]).unwrap();
    assert_eq!(last.flags, flags::RST | flags::ACK);
    assert!(frames > 15 && frames < 100, "{frames} frames");
}

#[test]
fn zero_window_holds_data_until_window_update() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_011);
    guest.connect(&mut stack, &store);
    let raw = b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n";
    let mut request = guest.frame(guest.snd_nxt, flags::ACK, raw);
    // Window field sits at Ethernet + IPv4 + 14; the TCP checksum no longer matches, so
    // verification is off for this test.
    stack.set_verify_checksums(false);
    request[14 + 20 + 14..14 + 20 + 16].fill(0);
    assert!(stack.handle_frame(&request, &store, Instant::now()));
    guest.snd_nxt = guest.snd_nxt.wrapping_add(raw.len() as u32);
    let segs = guest.absorb(&mut stack);
    assert!(
        segs.iter().all(|s| s.payload.is_empty()),
        "only an ACK while the window is shut"
    );
    guest.send(&mut stack, &store, flags::ACK, &[]);
    guest.absorb(&mut stack);
    assert!(guest.data.ends_with(b"vm1"));
}

#[test]
fn pipelined_requests_with_fin_are_all_answered_then_closed() {
    let (mut stack, store) = (stack(), store());
    let mut guest = Guest::new(40_012);
    guest.connect(&mut stack, &store);
    let two = "GET /latest/meta-data/hostname HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n";
    guest.send(&mut stack, &store, flags::ACK | flags::FIN, two.as_bytes());
    for _ in 0..10 {
        if guest.absorb(&mut stack).is_empty() {
            break;
        }
        guest.send(&mut stack, &store, flags::ACK, &[]);
    }
    let text = String::from_utf8(guest.data.clone()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("vm1HTTP/1.1 404 "), "{text}");
    assert!(text.ends_with("Resource not found: /nope."));
    assert!(guest.fin);
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn connections_are_bounded() {
    let (mut stack, store) = (stack(), store());
    for port in 0..MAX_CONNECTIONS as u16 + 5 {
        let mut guest = Guest::new(50_000 + port);
        guest.send(&mut stack, &store, flags::SYN, &[]);
    }
    assert_eq!(stack.connection_count(), MAX_CONNECTIONS);
    let mut buf = [0u8; 128];
    let mut resets = 0;
    while let Some(len) = stack.next_frame(&mut buf) {
        resets += usize::from(decode(&buf[..len]).unwrap().flags & flags::RST != 0);
    }
    assert_eq!(resets, 5);
}

#[test]
fn non_tcp_and_bad_checksums_to_mmds_are_swallowed() {
    let (mut stack, store) = (stack(), store());
    let guest = Guest::new(40_008);
    let mut bad = guest.frame(guest.snd_nxt, flags::SYN, &[]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(stack.handle_frame(&bad, &store, Instant::now()));
    let mut udp = guest.frame(guest.snd_nxt, flags::SYN, &[]);
    udp[14 + 9] = 17;
    assert!(stack.handle_frame(&udp, &store, Instant::now()));
    assert_eq!(stack.connection_count(), 0);
    assert!(stack.next_frame(&mut [0u8; 128]).is_none());
    let mut elsewhere = guest.frame(guest.snd_nxt, flags::SYN, &[]);
    elsewhere[14 + 19] = 1;
    assert!(!stack.handle_frame(&elsewhere, &store, Instant::now()));
}

/// Benchmark-ish: in-process time for a guest to mint a token and GET a 4 KiB value.
#[test]
fn token_and_4k_get_timing() {
    let store = store();
    let mut stack = stack().with_access(GuestAccess {
        version: MmdsVersion::V2,
        imds_compat: false,
    });
    let rounds = 200u16;
    let start = Instant::now();
    for port in 0..rounds {
        let mut guest = Guest::new(10_000 + port);
        guest.connect(&mut stack, &store);
        let minted = guest.request(
            &mut stack,
            &store,
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
        );
        let token = body(&minted).to_string();
        let value = guest.request(
            &mut stack,
            &store,
            &format!("GET /latest/meta-data/big HTTP/1.1\r\nX-metadata-token: {token}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(body(&value).len(), 4096);
        guest.send(&mut stack, &store, flags::ACK | flags::FIN, &[]);
        guest.absorb(&mut stack);
    }
    let per_round = start.elapsed() / u32::from(rounds);
    println!("mmds in-process: token + GET 4 KiB (handshake to close) = {per_round:?} per fetch");
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn syn_flood_keeps_queues_bounded() {
    let (mut stack, store) = (stack(), store());
    for port in 0..2000u16 {
        let mut guest = Guest::new(port);
        guest.send(&mut stack, &store, flags::SYN, &[]);
    }
    assert_eq!(stack.connection_count(), MAX_CONNECTIONS);
    assert_eq!(stack.resets.len(), MAX_PENDING_RESETS);
}

fn segment_strategy() -> impl Strategy<Value = (u16, u32, u32, u8, u16, Vec<u8>)> {
    (
        prop_oneof![Just(80u16), any::<u16>()],
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..1400),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_http_over_a_real_connection_is_answered_or_reset(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..900), 1..8),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"GET /latest HTTP/1.1\r\n"[..]), Just(&b"PUT /latest/api/token HTTP/1.1\r\n"[..])],
    ) {
        let (mut stack, store) = (stack(), store());
        let mut guest = Guest::new(41_000);
        guest.connect(&mut stack, &store);
        guest.send(&mut stack, &store, flags::ACK, prefix);
        for chunk in chunks {
            if stack.connection_count() == 0 {
                break;
            }
            guest.send(&mut stack, &store, flags::ACK | flags::PSH, &chunk);
            guest.absorb(&mut stack);
            prop_assert!(stack.buffered_bytes() <= crate::http::MAX_REQUEST_LEN + 2 * connection::TX_SOFT_LIMIT);
        }
        let text = String::from_utf8_lossy(&guest.data);
        prop_assert!(guest.data.is_empty() || text.starts_with("HTTP/1."), "{}", text);
    }

    #[test]
    fn random_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let (mut stack, store) = (MmdsStack::new(DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR), store());
        let mut buf = [0u8; 1600];
        for mut frame in frames {
            // Half the frames are steered at the MMDS address to reach the deeper parsers.
            if frame.len() >= 34 && frame[0] % 2 == 0 {
                frame[12..14].copy_from_slice(&wire::ETHERTYPE_IPV4.to_be_bytes());
                frame[30..34].copy_from_slice(&DEFAULT_IPV4_ADDR.octets());
            }
            stack.handle_frame(&frame, &store, Instant::now());
            while stack.next_frame(&mut buf).is_some() {}
        }
    }

    #[test]
    fn random_valid_header_segments_keep_memory_bounded(
        segments in proptest::collection::vec(segment_strategy(), 1..60),
        src_ports in proptest::collection::vec(1000u16..1040, 60),
        drain in any::<bool>(),
    ) {
        let (mut stack, store) = (MmdsStack::new(DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR), store());
        let mut buf = [0u8; 1600];
        for (i, (dst_port, seq, ack, flag, window, payload)) in segments.into_iter().enumerate() {
            let header = TcpHeader {
                dst_mac: DEFAULT_MAC_ADDR,
                src_mac: GUEST_MAC,
                src_ip: GUEST_IP,
                dst_ip: DEFAULT_IPV4_ADDR,
                ip_id: 1,
                src_port: src_ports[i],
                dst_port,
                seq,
                ack,
                flags: flag & 0x3f,
                window,
                mss: None,
            };
            let mut frame = vec![0u8; 1600];
            let len = wire::write_tcp_frame(&mut frame, &header, &payload).unwrap();
            prop_assert!(stack.handle_frame(&frame[..len], &store, Instant::now()));
            prop_assert!(stack.connection_count() <= MAX_CONNECTIONS);
            prop_assert!(stack.buffered_bytes() <= MAX_CONNECTIONS * (crate::http::MAX_REQUEST_LEN + 2 * connection::TX_SOFT_LIMIT));
            if drain {
                for _ in 0..500 {
                    if stack.next_frame(&mut buf).is_none() {
                        break;
                    }
                }
            }
        }
    }
}
