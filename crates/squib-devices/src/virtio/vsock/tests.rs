//! vsock device tests: a hand-built driver (rx, tx and event queues in real guest memory),
//! the device inside a real `EventManager`, and real Unix streams in a temporary directory.

mod flow_tests;
mod lifecycle_tests;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use harness::{Harness, GUEST_CID};

use super::packet::{op, VsockHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{CONN_BUF_ALLOC, FIRST_LOCAL_PORT, HOST_CID};

pub(crate) mod harness {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use event_manager::{EventManager, SubscriberOps};
    use vm_memory::{Bytes, GuestAddress};

    use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
    use crate::virtio::vsock::packet::{op, VsockHeader, HDR_LEN, TYPE_STREAM};
    use crate::virtio::vsock::{Vsock, EVQ_INDEX, HOST_CID, RX_INDEX, TX_INDEX};
    use crate::virtio::{features, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

    /// The guest's CID in every test.
    pub const GUEST_CID: u64 = 3;
    /// Guest RAM size.
    pub const MEM_SIZE: usize = 0x100_0000;
    /// Rx buffers: [`SLOTS`] slots of 64 KiB + a header.
    pub const RX_BUF: u64 = 0x10_0000;
    /// Tx buffers, the same.
    pub const TX_BUF: u64 = 0x60_0000;
    /// Buffer slots per direction (recycled round-robin).
    pub const SLOTS: u64 = 64;
    const SLOT_SIZE: u64 = 0x1_1000;
    /// Queue size the driver sets up.
    pub const QUEUE_SIZE: u16 = 256;

    /// A guest packet's header from `src_port` to host port `dst_port`.
    pub fn guest_hdr(op: u16, src_port: u32, dst_port: u32) -> VsockHeader {
        VsockHeader {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }

    /// An activated vsock device in an event manager, and the driver's side of its queues.
    pub struct Harness {
        pub mem: &'static GuestMemoryMmap,
        pub rxq: VirtQueue<'static>,
        pub txq: VirtQueue<'static>,
        pub evq: VirtQueue<'static>,
        pub dev: Arc<Mutex<Vsock>>,
        pub em: EventManager<Arc<Mutex<Vsock>>>,
        pub irq: Arc<VirtioInterrupt>,
        pub _dir: tempfile::TempDir,
        pub uds: PathBuf,
        rx_slot: u64,
        tx_slot: u64,
        rx_addrs: HashMap<u16, u64>,
        rx_seen: u16,
    }

    impl Harness {
        pub fn new() -> Self {
            Self::with_features(0)
        }

        /// A harness whose driver also accepted `acked` (VERSION_1 is always accepted).
        pub fn with_features(acked: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let uds = dir.path().join("v.sock");
            let vsock = Vsock::new(GUEST_CID, uds.clone()).unwrap();
            Self::activated(vsock, dir, uds, acked)
        }

        /// Set up the queues of `vsock` as a driver would and activate it.
        pub fn activated(
            mut vsock: Vsock,
            dir: tempfile::TempDir,
            uds: PathBuf,
            acked: u64,
        ) -> Self {
            // Leaked so the queue builders can borrow it for the harness's whole life.
            let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(MEM_SIZE)));
            let rxq = VirtQueue::new(mem, GuestAddress(0), QUEUE_SIZE);
            let txq = VirtQueue::new(mem, GuestAddress(0x4000), QUEUE_SIZE);
            let evq = VirtQueue::new(mem, GuestAddress(0x8000), QUEUE_SIZE);
            rxq.configure(&mut vsock.queues_mut()[RX_INDEX]);
            txq.configure(&mut vsock.queues_mut()[TX_INDEX]);
            evq.configure(&mut vsock.queues_mut()[EVQ_INDEX]);
            vsock.set_acked_features(acked | (1 << features::VERSION_1));
            let event_idx = vsock.acked_features() & (1 << features::RING_EVENT_IDX) != 0;
            for q in vsock.queues_mut() {
                virtio_queue::QueueT::set_event_idx(q, event_idx);
            }
            let irq = Arc::new(VirtioInterrupt::new().unwrap());
            vsock.activate(mem.clone(), irq.clone()).unwrap();
            let dev = Arc::new(Mutex::new(vsock));
            let mut em = EventManager::new().unwrap();
            em.add_subscriber(dev.clone());
            Self {
                mem,
                rxq,
                txq,
                evq,
                dev,
                em,
                irq,
                _dir: dir,
                uds,
                rx_slot: 0,
                tx_slot: 0,
                rx_addrs: HashMap::new(),
                rx_seen: 0,
            }
        }

        pub fn dev(&self) -> MutexGuard<'_, Vsock> {
            self.dev.lock().unwrap()
        }

        /// Run the event loop until it is idle (bounded).
        pub fn pump(&mut self) {
            for _ in 0..1000 {
                if self.em.run_with_timeout(0).unwrap() == 0 {
                    return;
                }
            }
        }

        /// Run the event loop for `ms` milliseconds.
        pub fn pump_for(&mut self, ms: u64) {
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end {
                self.em.run_with_timeout(5).unwrap();
            }
        }

        /// Post `count` rx chains of one `len`-byte writable buffer and kick the rx queue.
        pub fn post_rx(&mut self, count: usize, len: u32) {
            for _ in 0..count {
                let addr = RX_BUF + (self.rx_slot % SLOTS) * SLOT_SIZE;
                self.rx_slot += 1;
                let head = self.rxq.add_chain(&[(addr, len, F_WRITE)]);
                self.rx_addrs.insert(head, addr);
            }
            self.dev().queue_events()[RX_INDEX].write(1).unwrap();
        }

        /// Keep `count` rx chains of `len` bytes posted (post the missing ones, kick).
        pub fn ensure_rx(&mut self, count: usize, len: u32) {
            let missing = count.saturating_sub(self.rx_addrs.len());
            if missing > 0 {
                self.post_rx(missing, len);
            }
        }

        /// Write a packet into a tx buffer and publish it (no kick).
        pub fn queue_tx(&mut self, mut hdr: VsockHeader, data: &[u8]) -> u16 {
            let addr = TX_BUF + (self.tx_slot % SLOTS) * SLOT_SIZE;
            self.tx_slot += 1;
            if hdr.op == op::RW && hdr.len == 0 {
                hdr.len = data.len() as u32;
            }
            self.mem
                .write_slice(&hdr.to_bytes(), GuestAddress(addr))
                .unwrap();
            self.mem
                .write_slice(data, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            self.txq
                .add_chain(&[(addr, (HDR_LEN + data.len()) as u32, 0)])
        }

        /// Send one packet: publish it, kick the tx queue and run the loop.
        pub fn send(&mut self, hdr: VsockHeader, data: &[u8]) {
            self.queue_tx(hdr, data);
            self.kick_tx();
            self.pump();
        }

        pub fn kick_tx(&self) {
            self.dev().queue_events()[TX_INDEX].write(1).unwrap();
        }

        /// Packets the device completed on the rx queue since the last call.
        pub fn recv(&mut self) -> Vec<(VsockHeader, Vec<u8>)> {
            let mut out = Vec::new();
            while self.rx_seen != self.rxq.used_idx() {
                let (id, len) = self.rxq.used(self.rx_seen);
                self.rx_seen = self.rx_seen.wrapping_add(1);
                let addr = self.rx_addrs.remove(&(id as u16)).expect("known rx head");
                let mut buf = vec![0u8; len as usize];
                self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                assert!(buf.len() >= HDR_LEN, "rx used len {len}");
                let hdr = VsockHeader::from_bytes(buf[..HDR_LEN].try_into().unwrap());
                assert_eq!(hdr.len as usize, buf.len() - HDR_LEN, "{hdr:?}");
                out.push((hdr, buf[HDR_LEN..].to_vec()));
            }
            out
        }

        /// Post a few rx buffers, run the loop, and return what arrived.
        pub fn exchange(&mut self) -> Vec<(VsockHeader, Vec<u8>)> {
            self.ensure_rx(8, 4096 + HDR_LEN as u32);
            self.pump();
            self.recv()
        }
    }
}

/// Ops of a list of packets.
fn ops(packets: &[(VsockHeader, Vec<u8>)]) -> Vec<u16> {
    packets.iter().map(|(h, _)| h.op).collect()
}

/// A host client that connected, sent `CONNECT port` and got its `OK`; returns the
/// client and the local port the guest saw.
fn host_connect(h: &mut Harness, port: u32) -> (UnixStream, u32) {
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    h.pump();
    let got = h.exchange();
    assert_eq!(ops(&got), [op::REQUEST], "{got:?}");
    let req = got[0].0;
    assert_eq!(req.dst_port, port);
    h.send(harness::guest_hdr(op::RESPONSE, port, req.src_port), &[]);
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        client.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    assert_eq!(line, format!("OK {}\n", req.src_port).as_bytes());
    (client, req.src_port)
}

/// A guest-initiated connection from guest port `src` to host port `port`; returns the
/// host's accepted stream.
fn guest_connect(h: &mut Harness, listener: &UnixListener, src: u32, port: u32) -> UnixStream {
    h.send(harness::guest_hdr(op::REQUEST, src, port), &[]);
    let got = h.exchange();
    assert_eq!(ops(&got), [op::RESPONSE], "{got:?}");
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (port, src));
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Listen on `<uds>_<port>`.
pub(crate) fn listen(h: &Harness, port: u32) -> UnixListener {
    let mut path = h.uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    UnixListener::bind(path).unwrap()
}

/// Whether `stream` reads EOF within a second.
fn reads_eof(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn host_connect_gets_request_from_first_local_port_and_ok_reply() {
    let mut h = Harness::new();
    let (_c1, p1) = host_connect(&mut h, 52);
    assert_eq!(p1, FIRST_LOCAL_PORT);
    assert_eq!(p1, 1_073_741_824);
    let (_c2, p2) = host_connect(&mut h, 52);
    assert_eq!(p2, FIRST_LOCAL_PORT + 1);
    assert_eq!(h.dev().muxer().conn_count(), 2);
    assert_eq!(h.dev().metrics().conns_added.count(), 2);
}

#[test]
fn request_header_carries_cids_type_and_credit() {
    let mut h = Harness::new();
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"connect 1234\n").unwrap();
    h.pump();
    let got = h.exchange();
    let req = got[0].0;
    assert_eq!(
        (req.src_cid, req.dst_cid, req.type_, req.op),
        (HOST_CID, GUEST_CID, TYPE_STREAM, op::REQUEST)
    );
    assert_eq!(
        (req.dst_port, req.buf_alloc, req.len),
        (1234, CONN_BUF_ALLOC, 0)
    );
}

#[test]
fn bad_connect_line_closes_the_client() {
    let mut h = Harness::new();
    for line in [
        &b"HELLO 52\n"[..],
        b"CONNECT x\n",
        b"CONNECT 52",
        &[b'A'; 40],
    ] {
        let mut client = UnixStream::connect(&h.uds).unwrap();
        client.write_all(line).unwrap();
        h.pump();
        assert!(reads_eof(&mut client), "{line:?}");
    }
    assert!(h.exchange().is_empty());
    assert_eq!(h.dev().muxer().conn_count(), 0);
}

#[test]
fn guest_rst_to_request_closes_the_client() {
    let mut h = Harness::new();
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 7\n").unwrap();
    h.pump();
    let req = h.exchange()[0].0;
    h.send(harness::guest_hdr(op::RST, 7, req.src_port), &[]);
    assert!(reads_eof(&mut client));
    assert_eq!(h.dev().muxer().conn_count(), 0);
    assert_eq!(h.dev().metrics().conns_removed.count(), 1);
}

#[test]
fn unanswered_request_is_killed_after_the_deadline() {
    let mut h = Harness::new();
    h.dev().muxer_mut().set_timeout(Duration::from_millis(50));
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 7\n").unwrap();
    h.pump();
    assert_eq!(ops(&h.exchange()), [op::REQUEST]);
    h.pump_for(150);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    assert!(reads_eof(&mut client));
    assert_eq!(h.dev().metrics().conns_killed.count(), 1);
    assert_eq!(h.dev().muxer().conn_count(), 0);
}

#[test]
fn default_deadline_is_two_seconds() {
    assert_eq!(super::CONN_TIMEOUT_MS, 2000);
}

#[test]
fn guest_connects_to_uds_port_listener_without_text_header() {
    let mut h = Harness::new();
    let listener = listen(&h, 1234);
    let mut stream = guest_connect(&mut h, &listener, 5000, 1234);
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        stream.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn guest_connect_to_port_nobody_listens_on_gets_rst() {
    let mut h = Harness::new();
    h.send(harness::guest_hdr(op::REQUEST, 5000, 999), &[]);
    let got = h.exchange();
    assert_eq!(ops(&got), [op::RST]);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (999, 5000));
    assert_eq!(h.dev().muxer().conn_count(), 0);
    // As in Firecracker's muxer, a refused request never becomes a connection.
    assert_eq!(h.dev().metrics().conns_added.count(), 0);
}

#[test]
fn non_stream_type_gets_rst_and_foreign_cids_are_dropped() {
    let mut h = Harness::new();
    let mut dgram = harness::guest_hdr(op::REQUEST, 1, 2);
    dgram.type_ = 2;
    h.send(dgram, &[]);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    let listener = listen(&h, 2);
    let mut to_self = harness::guest_hdr(op::REQUEST, 1, 2);
    to_self.dst_cid = GUEST_CID;
    h.send(to_self, &[]);
    let mut spoofed = harness::guest_hdr(op::REQUEST, 1, 2);
    spoofed.src_cid = 77;
    h.send(spoofed, &[]);
    assert!(h.exchange().is_empty());
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err());
}

#[test]
fn request_reusing_a_live_connection_resets_it() {
    let mut h = Harness::new();
    let (mut client, local) = host_connect(&mut h, 52);
    // The guest "connects to itself": a request whose ports name the live connection.
    h.send(harness::guest_hdr(op::REQUEST, 52, local), &[]);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    assert!(reads_eof(&mut client));
}

#[test]
fn config_space_is_the_guest_cid_and_read_only() {
    use crate::virtio::{device_type, features, has_feature, VirtioDevice};
    let h = Harness::new();
    let mut dev = h.dev();
    assert_eq!(dev.device_type(), device_type::VSOCK);
    assert_eq!(dev.device_type(), 19);
    for bit in [
        features::VERSION_1,
        features::RING_EVENT_IDX,
        super::VIRTIO_F_IN_ORDER,
    ] {
        assert!(has_feature(dev.avail_features(), bit), "bit {bit}");
    }
    assert_eq!(dev.queues().len(), 3);
    assert!(dev
        .queues()
        .iter()
        .all(|q| virtio_queue::QueueT::max_size(q) == 256));
    let mut cfg = [0xffu8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..8], &GUEST_CID.to_le_bytes());
    assert_eq!(&cfg[8..], &[0; 4]);
    dev.write_config(0, &[9; 8]);
    let mut cfg = [0u8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), GUEST_CID);
    assert_eq!(dev.metrics().cfg_fails.count(), 1);
    assert_eq!(dev.guest_cid(), GUEST_CID);
    assert_eq!(dev.uds_path(), h.uds.as_path());
}

#[test]
fn delivering_packets_raises_the_used_ring_interrupt() {
    let mut h = Harness::new();
    assert_eq!(h.irq.status(), 0);
    h.send(harness::guest_hdr(op::REQUEST, 1, 4242), &[]);
    assert_eq!(ops(&h.exchange()), [op::RST]);
    assert_eq!(h.irq.status(), crate::virtio::INTERRUPT_VRING);
    assert!(h.irq.eventfd().read().unwrap() >= 1);
}

#[test]
fn shutdown_flags_are_the_spec_values() {
    assert_eq!((SHUTDOWN_RCV, SHUTDOWN_SEND), (1, 2));
}
