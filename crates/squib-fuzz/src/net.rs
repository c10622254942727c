//! `virtio_net`: tx chains and rx buffer chains on a net device whose TAP is a datagram
//! socket pair, with the VMM's MMDS frame interceptor installed, so guest frames to
//! 169.254.169.254 reach the MMDS ARP/IPv4/TCP/HTTP stack and its replies come back on rx.
//!
//! Scenario: byte 0 (bit 0: MMDS V2, bit 1: IMDS format, bit 2: verify checksums, bit 3:
//! offer an MTU given by the next 16 bits), register accesses, wanted features, then steps:
//! below 0xc0 a [`queue_op`] on rx (even) or tx (odd); 0xc0-0xcf kick tx; 0xd0-0xdf kick
//! rx; 0xe0-0xef the host sends a frame (length-prefixed bytes, then a 16-bit extension) to
//! the guest; 0xf0-0xf5 the host drains what the guest sent; 0xf6-0xf7 the TAP turned
//! writable; 0xf8 and above a TCP segment to MMDS port 80 (flags and a length-prefixed
//! payload from the bytes) that acknowledges what MMDS last sent.
//!
//! MMDS picks a random initial sequence number, which no input can guess; so the target
//! reads the frames MMDS delivers into the rx buffers, as a guest's TCP would, and its TCP
//! step carries the right `ack`. That way fuzzed HTTP requests reach the responder through
//! a real handshake.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;
use squib_devices::virtio::iovec::{readv_guest, writev_guest};
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::net::tap::read_frame_fd;
use squib_devices::virtio::net::{Net, NetConfig, TapIo, RX_INDEX, TX_INDEX, VNET_HDR_LEN};
use squib_devices::virtio::test_utils::VirtQueue;
use squib_devices::virtio::{GuestMemoryMmap, VirtioDevice};
use squib_mmds::stack::wire::{self, TcpHeader};
use squib_mmds::{GuestAccess, MmdsStack, MmdsVersion, DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR};
use squib_vmm::mmds_interceptor::{MmdsInterceptor, SharedMmdsStore};
use std::net::Ipv4Addr;
use vm_memory::{Bytes, GuestAddress};

use crate::guest::{
    self, activate, queue_addr, queue_op, register_accesses, slot_addr, QUEUE_SIZE,
};
use crate::{Input, MAX_STEPS};

/// The guest's MAC address.
pub const GUEST_MAC: [u8; 6] = [6, 0, 0xac, 0x10, 0, 2];

/// One end of a datagram socket pair standing in for the TAP.
#[derive(Debug)]
pub(crate) struct SocketTap(UnixDatagram);

impl AsRawFd for SocketTap {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl TapIo for SocketTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_frame_fd(self.0.as_raw_fd(), buf)
    }

    fn read_frame_into(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        readv_guest(self.0.as_raw_fd(), mem, segs)
    }

    fn write_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        writev_guest(self.0.as_raw_fd(), mem, segs)
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// A net device on a socket-pair TAP, and the host's end of the pair.
pub(crate) fn net_device(mtu: Option<u16>) -> Option<(Net, UnixDatagram)> {
    let (dev_end, host) = UnixDatagram::pair().ok()?;
    dev_end.set_nonblocking(true).ok()?;
    host.set_nonblocking(true).ok()?;
    let cfg = NetConfig {
        iface_id: "fuzz".to_owned(),
        tap_name: "fuzz".to_owned(),
        guest_mac: Some(GUEST_MAC),
        mtu,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    };
    let net = Net::with_tap(cfg, Box::new(SocketTap(dev_end))).ok()?;
    Some((net, host))
}

/// The VMM's MMDS interceptor on a small document.
fn mmds_interceptor(mode: u8) -> MmdsInterceptor {
    let access = GuestAccess {
        version: if mode & 1 != 0 {
            MmdsVersion::V2
        } else {
            MmdsVersion::V1
        },
        imds_compat: mode & 2 != 0,
    };
    let mut stack = MmdsStack::new(DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR).with_access(access);
    stack.set_verify_checksums(mode & 4 != 0);
    let store = SharedMmdsStore::default();
    let _ = store.put(json!({
        "latest": {"meta-data": {"hostname": "fuzz", "ids": [1, 2], "n": 3}},
        "s": "text"
    }));
    MmdsInterceptor::new(stack, store)
}

/// Read every frame the guest sent to the TAP (bounded).
fn drain_host(host: &UnixDatagram) {
    let mut buf = vec![0u8; 70_000];
    for _ in 0..64 {
        if host.recv(&mut buf).is_err() {
            break;
        }
    }
}

/// The guest's end of its TCP conversation with MMDS.
struct Peer {
    /// Next sequence number the guest sends.
    seq: u32,
    /// Next sequence number expected from MMDS (the guest's `ack`).
    ack: u32,
    /// Rx used-ring entries already looked at.
    seen: u16,
}

impl Peer {
    /// Read the frames delivered since the last look; remember where MMDS's TCP stream is.
    fn observe(&mut self, mem: &GuestMemoryMmap, rxq: &VirtQueue<'_>) {
        let (desc_table, _, _) = rxq.addresses();
        while self.seen != rxq.used_idx() {
            let (id, len) = rxq.used(self.seen);
            self.seen = self.seen.wrapping_add(1);
            let at = desc_table + 16 * u64::from(id % u32::from(QUEUE_SIZE));
            let Ok(addr) = mem.read_obj::<u64>(GuestAddress(at)) else {
                continue;
            };
            let mut buf = vec![0u8; (len as usize).min(2048)];
            if mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
                continue;
            }
            let seg = buf
                .get(VNET_HDR_LEN..)
                .and_then(wire::parse_ethernet)
                .and_then(|eth| wire::parse_ipv4(eth.payload, false))
                .and_then(|ip| {
                    wire::parse_tcp(ip.payload, ip.src, ip.dst, false).map(|t| (t.seq, t.seq_len()))
                });
            if let Some((seq, seq_len)) = seg {
                self.ack = seq.wrapping_add(seq_len);
            }
        }
    }

    /// Send one TCP segment to MMDS port 80 on tx.
    fn send(&mut self, input: &mut Input<'_>, mem: &GuestMemoryMmap, txq: &mut VirtQueue<'_>) {
        let flags = input.u8();
        let payload = input.prefixed(255);
        let header = TcpHeader {
            dst_mac: DEFAULT_MAC_ADDR,
            src_mac: GUEST_MAC,
            src_ip: GUEST_IP,
            dst_ip: DEFAULT_IPV4_ADDR,
            ip_id: 1,
            src_port: 40_000,
            dst_port: 80,
            seq: self.seq,
            ack: self.ack,
            flags,
            window: 65_535,
            mss: None,
        };
        let mut frame = vec![0u8; VNET_HDR_LEN + 1514];
        let Some(len) = wire::write_tcp_frame(&mut frame[VNET_HDR_LEN..], &header, payload) else {
            return;
        };
        let syn_fin =
            u32::from(flags & wire::flags::SYN != 0) + u32::from(flags & wire::flags::FIN != 0);
        self.seq = self.seq.wrapping_add(payload.len() as u32 + syn_fin);
        let addr = slot_addr(14);
        let _ = mem.write_slice(&frame[..VNET_HDR_LEN + len], GuestAddress(addr));
        txq.add_chain(&[(addr, (VNET_HDR_LEN + len) as u32, 0)]);
    }
}

/// The guest's IPv4 address.
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);

/// The `virtio_net` target.
pub fn virtio_net(data: &[u8]) {
    crate::ignore_sigpipe();
    let mut input = Input::new(data);
    let mode = input.u8();
    let mtu = (mode & 8 != 0).then(|| input.u16());
    let Some((mut net, host)) = net_device(mtu) else {
        return;
    };
    net.set_interceptor(Some(Box::new(mmds_interceptor(mode))));
    let mem = guest::guest_memory();
    let dev = Arc::new(Mutex::new(net));
    let Ok(mut transport) = MmioTransport::new(mem.clone(), dev.clone()) else {
        return;
    };
    register_accesses(&mut input, &mut transport, 16);
    let mut rxq = VirtQueue::new(&mem, queue_addr(RX_INDEX), QUEUE_SIZE);
    let mut txq = VirtQueue::new(&mem, queue_addr(TX_INDEX), QUEUE_SIZE);
    if !activate(&mut transport, &[&rxq, &txq], input.u64()) {
        return;
    }
    let lock = || dev.lock().unwrap_or_else(PoisonError::into_inner);
    let mut peer = Peer {
        seq: 1000,
        ack: 0,
        seen: 0,
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() {
            op @ 0..0xc0 if op & 1 == 0 => queue_op(&mut input, &mem, &mut rxq, op >> 1),
            op @ 0..0xc0 => queue_op(&mut input, &mem, &mut txq, op >> 1),
            0xc0..0xd0 => {
                let mut net = lock();
                let _ = net.queue_events()[TX_INDEX].write(1);
                net.process_tx_queue_event();
            }
            0xd0..0xe0 => {
                let mut net = lock();
                let _ = net.queue_events()[RX_INDEX].write(1);
                net.process_rx_queue_event();
            }
            0xe0..0xf0 => {
                let mut frame = input.prefixed(255).to_vec();
                frame.resize(frame.len() + usize::from(input.u16()), 0);
                let _ = host.send(&frame);
                lock().process_tap_rx_event();
            }
            0xf0..0xf6 => drain_host(&host),
            0xf6..0xf8 => lock().process_tap_tx_event(),
            _ => {
                peer.send(&mut input, &mem, &mut txq);
                let mut net = lock();
                net.process_tx();
                net.process_rx();
            }
        }
        peer.observe(&mem, &rxq);
    }
    let mut net = lock();
    net.process_tx();
    net.process_rx();
    drop(net);
    drain_host(&host);
}
