//! vsock snapshot tests: a restored device tells the guest its connections are gone
//! (`TRANSPORT_RESET`), holds the rx queue until the guest acknowledges it, then serves new
//! host connections from the saved local port; inconsistent states are refused.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::test_utils::F_WRITE;
use crate::virtio::vsock::packet::op;
use crate::virtio::vsock::tests::harness::{Harness, GUEST_CID};
use crate::virtio::vsock::{EVQ_INDEX, FIRST_LOCAL_PORT, RX_INDEX, TX_INDEX};

/// An event-queue buffer, away from the harness's rx and tx slots.
const EVQ_BUF: u64 = 0xF0_0000;

/// A device built as the VMM builds it at boot, on a new socket path (the old device still
/// holds its own, as it would in the snapshotted process or with a `vsock_override`).
fn rebuilt(h: &Harness, cid: u64) -> (Vsock, PathBuf) {
    let path = h._dir.path().join("restored.sock");
    (Vsock::new(cid, path.clone()).unwrap(), path)
}

/// Post one 8-byte event buffer filled with 0xff.
fn post_event_buffer(h: &mut Harness) {
    h.mem
        .write_obj(0xffff_ffffu32, GuestAddress(EVQ_BUF))
        .unwrap();
    h.evq.add_chain(&[(EVQ_BUF, 8, F_WRITE)]);
}

/// Run `vsock` in the harness in place of the saved device.
fn swap_in(h: &mut Harness, vsock: Vsock, uds: PathBuf) {
    let dev = Arc::new(Mutex::new(vsock));
    let mut em = EventManager::new().unwrap();
    em.add_subscriber(dev.clone());
    h.dev = dev;
    h.em = em;
    h.uds = uds;
}

#[test]
fn a_restored_device_resets_the_transport_then_serves_from_the_saved_port() {
    let mut h = Harness::new();
    assert!(h
        .dev()
        .muxer_mut()
        .set_next_local_port(FIRST_LOCAL_PORT + 7));
    post_event_buffer(&mut h);
    let state = h.dev().save();
    assert!(state.virtio.activated);
    assert!(!state.pending_event_ack);
    let state: VsockState = bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();

    let (mut vsock, uds) = rebuilt(&h, GUEST_CID);
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    vsock.restore(&state, h.mem, &irq).unwrap();
    assert!(vsock.is_activated());
    assert_eq!(h.evq.used_idx(), 1, "TRANSPORT_RESET delivered at once");
    assert_eq!(h.evq.used(0).1, 4);
    assert_eq!(h.mem.read_obj::<u32>(GuestAddress(EVQ_BUF)).unwrap(), 0);
    assert_eq!(irq.eventfd().read().unwrap(), 1);
    let after = vsock.save();
    assert!(after.pending_event_ack);
    assert_eq!(after.next_local_port, FIRST_LOCAL_PORT + 7);
    assert_eq!(after.uds_path, uds);
    let kicked = |index: usize| vsock.queue_events()[index].read().is_ok();
    assert!(kicked(RX_INDEX) && kicked(TX_INDEX));
    assert!(
        !kicked(EVQ_INDEX),
        "an event-queue kick would acknowledge the reset"
    );
    swap_in(&mut h, vsock, uds);

    // A host client connecting now waits until the guest handled the reset...
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 52\n").unwrap();
    h.pump();
    assert!(h.exchange().is_empty());
    // ...which it signals by refilling the event queue.
    post_event_buffer(&mut h);
    h.dev().queue_events()[EVQ_INDEX].write(1).unwrap();
    h.pump();
    let got = h.recv();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, op::REQUEST);
    assert_eq!(
        (got[0].0.src_port, got[0].0.dst_port),
        (FIRST_LOCAL_PORT + 7, 52)
    );
}

#[test]
fn without_an_event_buffer_the_reset_waits_for_one() {
    let mut h = Harness::new();
    let state = h.dev().save();
    let (mut vsock, _uds) = rebuilt(&h, GUEST_CID);
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    vsock.restore(&state, h.mem, &irq).unwrap();
    assert_eq!(h.evq.used_idx(), 0);
    post_event_buffer(&mut h);
    vsock.queue_events()[EVQ_INDEX].write(1).unwrap();
    vsock.process_evq_event();
    assert_eq!(h.evq.used_idx(), 1);
    assert_eq!(h.mem.read_obj::<u32>(GuestAddress(EVQ_BUF)).unwrap(), 0);
}

#[test]
fn an_inactive_device_restores_inactive_without_a_reset() {
    let h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let idle = Vsock::new(GUEST_CID, dir.path().join("idle.sock")).unwrap();
    let state = idle.save();
    let (mut vsock, _uds) = rebuilt(&h, GUEST_CID);
    vsock.restore(&state, h.mem, &h.irq).unwrap();
    assert!(!vsock.is_activated());
    assert!(!vsock.reset_event_pending);
}

#[test]
fn another_cid_or_a_bad_port_or_gate_is_refused() {
    let mut h = Harness::new();
    post_event_buffer(&mut h);
    let good = h.dev().save();
    let (mut vsock, _uds) = rebuilt(&h, GUEST_CID + 1);
    let err = vsock.restore(&good, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vsock: the snapshot's guest CID is 3, the configuration's 4"
    );
    drop(vsock);

    let (mut vsock, _uds) = rebuilt(&h, GUEST_CID);
    let mut state = good.clone();
    state.next_local_port = 5;
    let err = vsock.restore(&state, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vsock: next local port 5 is outside [2^30, 2^31)"
    );
    let mut state = good.clone();
    state.virtio.activated = false;
    state.pending_event_ack = true;
    assert!(vsock.restore(&state, h.mem, &h.irq).is_err());
    assert!(!vsock.is_activated());
    assert_eq!(h.evq.used_idx(), 0, "nothing reached the guest");
    // Still fresh: the good state applies.
    vsock.restore(&good, h.mem, &h.irq).unwrap();
    assert_eq!(h.evq.used_idx(), 1);
}
