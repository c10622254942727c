//! `virtio_vsock`: tx packets (headers and data) and rx buffers on the vsock device, with
//! its Unix-socket muxer bound in a temp dir, host streams connecting to it (`CONNECT <port>`)
//! and a host listener for guest-initiated connections, all dispatched by a real
//! `event_manager` loop as in the VMM.
//!
//! Scenario: register accesses, wanted features, then steps: below 0x90 a [`queue_op`] on
//! queue `op % 3` (rx, tx, event); 0x90-0xaf a well-formed-ish tx packet (op, ports, flags,
//! credit and length from the bytes, its data in a slot) published on tx; 0xb0-0xbf kick
//! a queue; 0xc0-0xcf a host client connects and writes a line; 0xd0-0xdf the host listener
//! accepts; 0xe0-0xef a host stream writes bytes; 0xf0-0xf7 a host stream reads; 0xf8 and
//! above a host stream closes. Every step ends with one non-blocking turn of the event loop.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventManager, SubscriberOps};
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::test_utils::{VirtQueue, F_WRITE};
use squib_devices::virtio::vsock::packet::{VsockHeader, HDR_LEN, TYPE_STREAM};
use squib_devices::virtio::vsock::{Vsock, EVQ_INDEX, HOST_CID, RX_INDEX, TX_INDEX};
use squib_devices::virtio::{GuestMemoryMmap, VirtioDevice};
use vm_memory::{Bytes, GuestAddress};

use crate::guest::{
    self, activate, queue_addr, queue_op, register_accesses, slot_addr, QUEUE_SIZE,
};
use crate::{scratch_dir, Input, MAX_STEPS};

/// The guest's CID.
pub const GUEST_CID: u64 = 3;
/// The port of the host listener for guest-initiated connections.
pub const LISTEN_PORT: u32 = 1024;
/// Most host streams a scenario keeps open.
const MAX_STREAMS: usize = 8;

/// A tx packet: a 44-byte header mostly as a driver writes it, and its data.
fn tx_packet(input: &mut Input<'_>, mem: &GuestMemoryMmap, txq: &mut VirtQueue<'_>) {
    let c = input.u8();
    let hdr = VsockHeader {
        src_cid: if c & 1 == 0 { GUEST_CID } else { input.u64() },
        dst_cid: if c & 2 == 0 { HOST_CID } else { input.u64() },
        src_port: u32::from(input.u8()),
        dst_port: if c & 4 == 0 { LISTEN_PORT } else { input.u32() },
        len: u32::from(input.u16()),
        type_: if c & 8 == 0 { TYPE_STREAM } else { input.u16() },
        op: u16::from(input.u8() % 8),
        flags: u32::from(input.u8() % 4),
        buf_alloc: input.u32(),
        fwd_cnt: input.u32(),
    };
    let slot = input.u8();
    let (hdr_addr, data_addr) = (slot_addr(slot), slot_addr(slot.wrapping_add(1)));
    let _ = mem.write_slice(&hdr.to_bytes(), GuestAddress(hdr_addr));
    let payload = input.prefixed(255);
    let _ = mem.write_slice(payload, GuestAddress(data_addr));
    if c & 0x10 == 0 {
        txq.add_chain(&[(hdr_addr, HDR_LEN as u32, 0), (data_addr, hdr.len, 0)]);
    } else {
        // Header and data in one descriptor.
        let _ = mem.write_slice(payload, GuestAddress(hdr_addr + HDR_LEN as u64));
        txq.add_chain(&[(hdr_addr, HDR_LEN as u32 + hdr.len, 0)]);
    }
}

/// Host-side sockets of a scenario.
struct Host {
    uds: std::path::PathBuf,
    listener: UnixListener,
    streams: Vec<UnixStream>,
}

impl Host {
    fn step(&mut self, op: u8, input: &mut Input<'_>) {
        let pick = usize::from(input.u8());
        match op {
            0xc0..0xd0 => {
                if self.streams.len() < MAX_STREAMS {
                    if let Ok(mut s) = UnixStream::connect(&self.uds) {
                        let _ = s.set_nonblocking(true);
                        let _ = s.write_all(input.prefixed(64));
                        self.streams.push(s);
                    }
                }
            }
            0xd0..0xe0 => {
                if self.streams.len() < MAX_STREAMS {
                    if let Ok((s, _)) = self.listener.accept() {
                        let _ = s.set_nonblocking(true);
                        self.streams.push(s);
                    }
                }
            }
            _ if self.streams.is_empty() => {}
            0xe0..0xf0 => {
                let i = pick % self.streams.len();
                let mut data = input.prefixed(255).to_vec();
                data.resize(data.len() + usize::from(input.u16()), 0x5a);
                let _ = self.streams[i].write(&data);
            }
            0xf0..0xf8 => {
                let i = pick % self.streams.len();
                let mut buf = [0u8; 4096];
                let _ = self.streams[i].read(&mut buf);
            }
            _ => {
                self.streams.swap_remove(pick % self.streams.len());
            }
        }
    }
}

/// The `virtio_vsock` target.
pub fn virtio_vsock(data: &[u8]) {
    crate::ignore_sigpipe();
    let mut input = Input::new(data);
    let Some(dir) = scratch_dir() else {
        return;
    };
    let uds = dir.path().join("v.sock");
    let Ok(listener) = UnixListener::bind(dir.path().join(format!("v.sock_{LISTEN_PORT}"))) else {
        return;
    };
    let _ = listener.set_nonblocking(true);
    let Ok(vsock) = Vsock::new(GUEST_CID, uds.clone()) else {
        return;
    };
    let mem = guest::guest_memory();
    let dev = Arc::new(Mutex::new(vsock));
    let Ok(mut em) = EventManager::<Arc<Mutex<Vsock>>>::new() else {
        return;
    };
    em.add_subscriber(dev.clone());
    let Ok(mut transport) = MmioTransport::new(mem.clone(), dev.clone()) else {
        return;
    };
    register_accesses(&mut input, &mut transport, 16);
    let mut queues =
        [RX_INDEX, TX_INDEX, EVQ_INDEX].map(|i| VirtQueue::new(&mem, queue_addr(i), QUEUE_SIZE));
    {
        let [rx, tx, ev] = &queues;
        if !activate(&mut transport, &[rx, tx, ev], input.u64()) {
            return;
        }
    }
    let mut host = Host {
        uds,
        listener,
        streams: Vec::new(),
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() {
            op @ 0..0x90 => queue_op(&mut input, &mem, &mut queues[usize::from(op % 3)], op / 3),
            0x90..0xb0 => tx_packet(&mut input, &mem, &mut queues[TX_INDEX]),
            0xb0..0xc0 => {
                let i = usize::from(input.u8() % 3);
                let dev = dev.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = dev.queue_events()[i].write(1);
            }
            op => host.step(op, &mut input),
        }
        let _ = em.run_with_timeout(0);
    }
    // A last rx buffer and a kick of every queue.
    let rx_buf = slot_addr(15);
    queues[RX_INDEX].add_chain(&[(rx_buf, 4096, F_WRITE)]);
    {
        let dev = dev.lock().unwrap_or_else(PoisonError::into_inner);
        for evt in dev.queue_events() {
            let _ = evt.write(1);
        }
    }
    let _ = em.run_with_timeout(0);
}
