//! Bounded work per event against a driver that refills the ring while the device runs.
//!
//! The fake driver lives in the TAP double: each time the device reads a frame it refills
//! the rx ring with a ring's worth of chains (all malformed but the last), each time the
//! device sends a frame it posts another tx chain. Deterministic, and exactly what a guest
//! vCPU racing the event loop can do. One event must pop at most the queue size of chains
//! and re-arm the queue eventfd for the rest.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::tests::harness::{config, frame, NetHarness, RX_BUF, TX_BUF};
use crate::virtio::net::tap::TapIo;
use crate::virtio::net::{Net, RX_INDEX, TX_INDEX, VNET_HDR_LEN};
use crate::virtio::test_utils::{VirtQueue, F_WRITE};
use crate::virtio::{GuestMemoryMmap, VirtioDevice};

/// The harness's queue size: one event's budget of chains.
const RING: u16 = 16;
/// Frames the fake driver keeps feeding before the TAP runs dry.
const FEED: usize = 1000;

/// The driver's view of the rx and tx rings, set once the harness has mapped guest memory.
#[derive(Default)]
struct Driver {
    rxq: Option<VirtQueue<'static>>,
    txq: Option<VirtQueue<'static>>,
    reads: usize,
    writes: usize,
}

/// A TAP double whose reads and writes let the fake driver refill the rings.
struct RefillingTap {
    fd: EventFd,
    driver: Arc<Mutex<Driver>>,
}

impl std::fmt::Debug for RefillingTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefillingTap")
    }
}

impl AsRawFd for RefillingTap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl TapIo for RefillingTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut driver = self.driver.lock().unwrap();
        if driver.reads == FEED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        driver.reads += 1;
        let rxq = driver.rxq.as_mut().expect("driver set up");
        // RING - 1 device-readable (malformed) rx chains, then one the frame fits in.
        for _ in 1..RING {
            rxq.add_chain(&[(RX_BUF, 64, 0)]);
        }
        rxq.add_chain(&[(RX_BUF, 2048, F_WRITE)]);
        let bytes = frame(100, 7);
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    fn read_frame_into(
        &mut self,
        _mem: &GuestMemoryMmap,
        _segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn write_frame(
        &mut self,
        _mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        let mut driver = self.driver.lock().unwrap();
        driver.writes += 1;
        if driver.writes < FEED {
            post_tx_frame(driver.txq.as_mut().expect("driver set up"));
        }
        Ok(segs.iter().map(|&(_, len)| len as usize).sum())
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

fn post_tx_frame(txq: &mut VirtQueue<'static>) {
    txq.add_chain(&[(TX_BUF, (VNET_HDR_LEN + 100) as u32, 0)]);
}

/// A harness on the refilling TAP, with the fake driver's own views of the rings.
fn refilling_harness() -> (NetHarness, Arc<Mutex<Driver>>) {
    let driver = Arc::new(Mutex::new(Driver::default()));
    let tap = RefillingTap {
        fd: EventFd::new(EFD_NONBLOCK).unwrap(),
        driver: driver.clone(),
    };
    let h = NetHarness::activated(Net::with_tap(config(), Box::new(tap)).unwrap(), 0);
    h.mem
        .write_slice(&frame(100, 1), GuestAddress(TX_BUF))
        .unwrap();
    {
        let mut d = driver.lock().unwrap();
        let (rx_desc, _, _) = h.rxq.addresses();
        let (tx_desc, _, _) = h.txq.addresses();
        d.rxq = Some(VirtQueue::new(h.mem, GuestAddress(rx_desc), RING));
        d.txq = Some(VirtQueue::new(h.mem, GuestAddress(tx_desc), RING));
    }
    (h, driver)
}

/// Whether queue `index`'s eventfd was written (the device re-armed itself); clears it.
fn rearmed(net: &Net, index: usize) -> bool {
    net.queue_events()[index].read().is_ok()
}

#[test]
fn rx_event_pops_at_most_the_ring_while_the_driver_refills_it() {
    let (mut h, driver) = refilling_harness();
    h.net.process_tap_rx_event();
    let used = h.rxq.used_idx();
    assert!(used <= RING, "one rx event popped {used} chains");
    assert!(
        rearmed(&h.net, RX_INDEX),
        "the rx drain must re-kick itself"
    );

    // The self-kick carries on where the last event stopped: frames keep flowing.
    let reads = driver.lock().unwrap().reads;
    h.net.process_rx_queue_event();
    let more = h.rxq.used_idx().wrapping_sub(used);
    assert!(
        more > 0 && more <= RING,
        "the next event popped {more} chains"
    );
    assert!(driver.lock().unwrap().reads > reads);
    assert!(h.net.metrics().rx_packets_count.count() >= 2);
}

#[test]
fn tx_event_pops_at_most_the_ring_while_the_driver_refills_it() {
    let (mut h, driver) = refilling_harness();
    for _ in 0..RING {
        post_tx_frame(driver.lock().unwrap().txq.as_mut().unwrap());
    }
    h.net.process_tx_queue_event();
    let used = h.txq.used_idx();
    assert!(used <= RING, "one tx event popped {used} chains");
    assert!(
        rearmed(&h.net, TX_INDEX),
        "the tx drain must re-kick itself"
    );

    h.net.process_tx_queue_event();
    let more = h.txq.used_idx().wrapping_sub(used);
    assert!(
        more > 0 && more <= RING,
        "the next event popped {more} chains"
    );
}
