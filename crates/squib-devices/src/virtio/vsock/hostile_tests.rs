//! The hostile guest: broken chains, lying headers and random input on every queue. The
//! device must never panic, never complete more chains than were published, never do more
//! than its budget per event, and keep serving well-formed traffic afterwards.

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::packet::{op, VsockHeader, HDR_LEN, TYPE_STREAM};
use super::tests::harness::{guest_hdr, Harness, GUEST_CID, MEM_SIZE, TX_BUF};
use super::{HOST_CID, PACKET_BUDGET, TX_INDEX};
use crate::virtio::test_utils::{F_INDIRECT, F_NEXT, F_WRITE};
use crate::virtio::VirtioDevice;

/// The device still answers: a request to a port nobody listens on gets an RST.
fn assert_still_serving(h: &mut Harness) {
    let _ = h.exchange();
    h.send(guest_hdr(op::REQUEST, 31_337, 4_242), &[]);
    let got = h.exchange();
    assert!(
        got.iter()
            .any(|(hdr, _)| hdr.op == op::RST && hdr.dst_port == 31_337),
        "{got:?}"
    );
}

#[test]
fn short_chains_huge_len_and_wrong_direction_are_dropped() {
    let mut h = Harness::new();
    let hdr = guest_hdr(op::REQUEST, 1, 2).to_bytes();
    h.mem.write_slice(&hdr, GuestAddress(TX_BUF)).unwrap();
    // Header-only chain shorter than a header.
    h.txq.add_chain(&[(TX_BUF, 10, 0)]);
    // A zero-length descriptor.
    h.txq.add_chain(&[(TX_BUF, 0, 0)]);
    // A device-writable descriptor on the tx queue.
    h.txq.add_chain(&[(TX_BUF, HDR_LEN as u32, F_WRITE)]);
    // Outside guest memory, and wrapping the address space.
    h.txq.add_chain(&[(MEM_SIZE as u64 - 8, HDR_LEN as u32, 0)]);
    h.txq.add_chain(&[(u64::MAX - 4, HDR_LEN as u32, 0)]);
    // `len` far beyond the chain.
    let mut huge = guest_hdr(op::RW, 1, 2);
    huge.len = u32::MAX;
    h.queue_tx(huge, &[0; 100]);
    h.kick_tx();
    h.pump();
    assert_eq!(h.txq.used_idx(), 6);
    assert!((0..6).all(|i| h.txq.used(i).1 == 0));
    assert_eq!(h.dev().metrics().tx_packets_count.count(), 0);
    assert!(h.exchange().is_empty());
    assert_still_serving(&mut h);
}

#[test]
fn bad_rx_chains_are_returned_empty_and_the_packet_waits() {
    let mut h = Harness::new();
    // Read-only, too short, and outside memory: none can carry a packet.
    let base = super::tests::harness::RX_BUF + 0x80_0000;
    h.rxq.add_chain(&[(base, 4096, 0)]);
    h.rxq.add_chain(&[(base, 20, F_WRITE)]);
    h.rxq.add_chain(&[(MEM_SIZE as u64, 4096, F_WRITE)]);
    h.send(guest_hdr(op::REQUEST, 1, 4_242), &[]);
    assert_eq!(h.rxq.used_idx(), 3);
    assert!((0..3).all(|i| h.rxq.used(i).1 == 0));
    // The RST still arrives once a good buffer shows up.
    h.post_rx(1, 4096);
    h.pump();
    assert_eq!(h.rxq.used_idx(), 4);
    assert_eq!(h.rxq.used(3).1, HDR_LEN as u32);
}

#[test]
fn descriptor_loops_and_heads_beyond_the_queue_are_survived() {
    let mut h = Harness::new();
    let hdr = guest_hdr(op::CREDIT_REQUEST, 1, 2).to_bytes();
    h.mem.write_slice(&hdr, GuestAddress(TX_BUF)).unwrap();
    // Descriptor 0 chains to itself forever.
    h.txq.set_desc(0, TX_BUF, HDR_LEN as u32, F_NEXT, 0);
    h.txq.publish(0);
    // Heads that do not exist.
    h.txq.publish(300);
    h.txq.publish(u16::MAX);
    h.rxq.set_desc(0, TX_BUF, 64, F_WRITE | F_NEXT, 0);
    h.rxq.publish(0);
    h.rxq.publish(999);
    h.kick_tx();
    h.dev().queue_events()[super::RX_INDEX].write(1).unwrap();
    h.pump();
    assert!(h.txq.used_idx() <= 3);
    assert!(h.rxq.used_idx() <= 2);
}

#[test]
fn indirect_chain_of_a_hostile_guest_is_bounded() {
    let mut h = Harness::new();
    let hdr = guest_hdr(op::REQUEST, 1, 4_242).to_bytes();
    h.mem.write_slice(&hdr, GuestAddress(TX_BUF)).unwrap();
    // INDIRECT was not offered; a driver using it anyway must not hurt the device.
    h.txq
        .add_indirect_chain(TX_BUF + 0x1000, &[(TX_BUF, HDR_LEN as u32, 0)]);
    h.kick_tx();
    h.pump();
    assert_eq!(h.txq.used_idx(), 1);
}

#[test]
fn indirect_table_longer_than_the_queue_is_refused() {
    let mut h = Harness::new();
    let hdr = guest_hdr(op::REQUEST, 1, 4_242).to_bytes();
    h.mem.write_slice(&hdr, GuestAddress(TX_BUF)).unwrap();
    // 300 one-byte pieces: more than one writev may take.
    let pieces: Vec<_> = (0..300u64).map(|i| (TX_BUF + i, 1, 0)).collect();
    h.txq.add_indirect_chain(TX_BUF + 0x1_0000, &pieces);
    h.kick_tx();
    h.pump();
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.dev().metrics().tx_packets_count.count(), 0);
    assert_still_serving(&mut h);
}

fn header() -> impl Strategy<Value = VsockHeader> {
    let cid = prop_oneof![Just(GUEST_CID), Just(HOST_CID), any::<u64>()];
    let port = prop_oneof![0u32..4, Just(1 << 30), any::<u32>()];
    let len = prop_oneof![0u32..200, Just(65_536), Just(65_537), any::<u32>()];
    (
        (cid.clone(), cid, port.clone(), port),
        (len, prop_oneof![Just(TYPE_STREAM), any::<u16>()], 0u16..9),
        (
            any::<u32>(),
            prop_oneof![Just(0u32), Just(1000), any::<u32>()],
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (src_cid, dst_cid, src_port, dst_port),
                (len, type_, op),
                (flags, buf_alloc, fwd),
            )| {
                VsockHeader {
                    src_cid,
                    dst_cid,
                    src_port,
                    dst_port,
                    len,
                    type_,
                    op,
                    flags,
                    buf_alloc,
                    fwd_cnt: fwd,
                }
            },
        )
}

fn descriptor() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        Just(TX_BUF),
        0u64..MEM_SIZE as u64,
        Just(MEM_SIZE as u64 - 1),
        any::<u64>()
    ];
    let len = prop_oneof![
        0u32..100,
        Just(HDR_LEN as u32),
        0u32..70_000,
        Just(u32::MAX)
    ];
    let flags = prop::sample::select(vec![0, F_NEXT, F_WRITE, F_NEXT | F_WRITE, F_INDIRECT]);
    (addr, len, flags, 0u16..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_packets_never_panic_and_work_is_bounded(
        packets in prop::collection::vec((header(), 0usize..300, any::<bool>()), 1..40),
        raw in prop::collection::vec(descriptor(), 0..12),
    ) {
        let mut h = Harness::new();
        let _listener = super::tests::listen(&h, 1);
        let mut published = 0u16;
        for (hdr, data_len, split) in &packets {
            let data = vec![0x5a; *data_len];
            if *split {
                // Header and data in separate descriptors.
                let at = TX_BUF + 0x10_0000 + u64::from(published) * 0x400;
                h.mem.write_slice(&hdr.to_bytes(), GuestAddress(at)).unwrap();
                h.mem.write_slice(&data, GuestAddress(at + 0x100)).unwrap();
                h.txq.add_chain(&[(at, HDR_LEN as u32, 0), (at + 0x100, *data_len as u32, 0)]);
            } else {
                h.queue_tx(*hdr, &data);
            }
            published += 1;
        }
        // Raw descriptors written verbatim at the end of the table, heads published as is.
        for (i, &(addr, len, flags, next)) in raw.iter().enumerate() {
            let index = 200 + i as u16;
            h.txq.set_desc(index, addr, len, flags, next);
            h.rxq.set_desc(index, addr, len, flags, next);
            h.txq.publish(if next >= 256 { next } else { index });
            h.rxq.publish(index);
            published += 1;
        }
        h.kick_tx();
        let before = h.txq.used_idx();
        h.dev().process_tx_queue_event();
        prop_assert!(h.txq.used_idx().wrapping_sub(before) <= PACKET_BUDGET as u16);
        h.pump();
        prop_assert!(h.txq.used_idx() <= published);
        prop_assert!(h.rxq.used_idx() <= raw.len() as u16 + 8);
        let _ = h.dev().queue_events()[TX_INDEX].read();
        // Whatever happened, nothing is buffered beyond the limits.
        for state in h.dev().muxer().conn_states() {
            prop_assert!(state.unforwarded() <= super::CONN_BUF_ALLOC);
        }
        prop_assert!(h.dev().muxer().conn_count() <= super::MAX_CONNECTIONS);
    }
}

/// One step of a guest and a host poking at one connection.
#[derive(Clone, Debug)]
enum Step {
    GuestData(usize),
    GuestCredit(u32, u32),
    GuestCreditRequest,
    GuestShutdown(u32),
    HostWrite(usize),
    HostRead,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..20_000).prop_map(Step::GuestData),
        2 => (prop_oneof![Just(0u32), 0u32..70_000, any::<u32>()], any::<u32>())
            .prop_map(|(a, f)| Step::GuestCredit(a, f)),
        1 => Just(Step::GuestCreditRequest),
        1 => (0u32..4).prop_map(Step::GuestShutdown),
        4 => (0usize..50_000).prop_map(Step::HostWrite),
        3 => Just(Step::HostRead),
    ]
}

fn byte(i: usize) -> u8 {
    (i % 253) as u8
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_connection_under_random_traffic_never_reorders_or_overbuffers(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        use std::io::{Read, Write};

        let mut h = Harness::new();
        let listener = super::tests::listen(&h, 80);
        h.send(guest_hdr(op::REQUEST, 4000, 80), &[]);
        let (mut host, _) = listener.accept().unwrap();
        host.set_nonblocking(true).unwrap();
        let (mut guest_sent, mut host_got) = (0usize, Vec::new());
        let (mut host_sent, mut guest_got) = (0usize, Vec::new());
        for step in steps {
            match step {
                Step::GuestData(n) => {
                    let data: Vec<u8> = (guest_sent..guest_sent + n).map(byte).collect();
                    let mut hdr = guest_hdr(op::RW, 4000, 80);
                    hdr.len = n as u32;
                    h.send(hdr, &data);
                    guest_sent += n;
                }
                Step::GuestCredit(buf_alloc, fwd_cnt) => {
                    let mut hdr = guest_hdr(op::CREDIT_UPDATE, 4000, 80);
                    hdr.buf_alloc = buf_alloc;
                    hdr.fwd_cnt = fwd_cnt;
                    h.send(hdr, &[]);
                }
                Step::GuestCreditRequest => {
                    h.send(guest_hdr(op::CREDIT_REQUEST, 4000, 80), &[]);
                }
                Step::GuestShutdown(flags) => {
                    let mut hdr = guest_hdr(op::SHUTDOWN, 4000, 80);
                    hdr.flags = flags;
                    h.send(hdr, &[]);
                }
                Step::HostWrite(n) => {
                    let data: Vec<u8> = (host_sent..host_sent + n).map(byte).collect();
                    if let Ok(written) = host.write(&data) {
                        host_sent += written;
                    }
                }
                Step::HostRead => {
                    let mut buf = vec![0u8; 256 * 1024];
                    if let Ok(n) = host.read(&mut buf) {
                        host_got.extend_from_slice(&buf[..n]);
                    }
                }
            }
            h.pump();
            for (hdr, data) in h.exchange() {
                if hdr.op == op::RW && hdr.dst_port == 4000 {
                    guest_got.extend(data);
                }
            }
            for state in h.dev().muxer().conn_states() {
                prop_assert!(state.unforwarded() <= super::CONN_BUF_ALLOC, "{state:?}");
            }
            // Whatever the guest claims, bytes arrive in order, without gaps or duplicates.
            prop_assert!(host_got.len() <= guest_sent);
            prop_assert!(host_got.iter().enumerate().all(|(i, &b)| b == byte(i)));
            prop_assert!(guest_got.len() <= host_sent);
            prop_assert!(guest_got.iter().enumerate().all(|(i, &b)| b == byte(i)));
        }
    }
}
