//! Net snapshot tests: what the device holds in flight (held rx chains, a frame waiting for
//! buffers, a frame in guest buffers held back by the rate limiter, a tx frame the TAP
//! refused) reaches its destination after a restore onto a new TAP; inconsistent states are
//! refused.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::rate_limiter::{RateLimiter, TokenBucket};
use crate::virtio::net::device::tests::harness::{config, frame, NetHarness, SocketTap};
use crate::virtio::net::{features as net, NetConfig};

/// A device built from `cfg` on a new socket "TAP", as the VMM builds it at boot; and the
/// host end of that socket.
fn rebuilt(cfg: NetConfig) -> (Net, UnixDatagram, Arc<AtomicBool>) {
    let (dev_end, host) = UnixDatagram::pair().unwrap();
    dev_end.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let tap = SocketTap {
        sock: dev_end,
        full: full.clone(),
        offload: Arc::default(),
    };
    (Net::with_tap(cfg, Box::new(tap)).unwrap(), host, full)
}

/// Save the harness's device, restore it onto a rebuilt one (new TAP, new interrupt line) and
/// put that in the harness.
fn save_and_restore(h: &mut NetHarness, cfg: NetConfig) -> NetState {
    let state = h.net.save();
    let bytes = bincode::serialize(&state).unwrap();
    let state: NetState = bincode::deserialize(&bytes).unwrap();
    let (mut net, host, full) = rebuilt(cfg);
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    net.restore(&state, h.mem, &irq).unwrap();
    assert_eq!(net.save(), state);
    for index in [RX_INDEX, TX_INDEX] {
        assert_eq!(
            net.queue_events()[index].read().unwrap(),
            1,
            "queue {index} kicked"
        );
    }
    h.net = net;
    h.host = host;
    h.full = full;
    h.irq = irq;
    state
}

/// `frame` as the guest receives it in one buffer: `num_buffers` = 1.
fn received(frame: &[u8]) -> Vec<u8> {
    let mut want = frame.to_vec();
    want[10] = 1;
    want
}

#[test]
fn held_rx_chains_survive_and_take_the_next_frame() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.post_rx(&[1500]);
    h.post_rx(&[1000, 500]);
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 0);
    let state = save_and_restore(&mut h, config());
    assert_eq!(state.rx_held.len(), 2);
    assert_eq!(state.rx_held[1].buffers.len(), 2);
    assert_eq!(state.virtio.queues[RX_INDEX].next_avail, 2);

    let data = frame(1400, 7);
    h.host.send(&data).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.rxq.used(0), (0, 1412));
    assert_eq!(h.read_rx_used(0, &[1500], 0), received(&data));
    // The second held chain (two buffers) takes a frame that spans them.
    let data = frame(1200, 8);
    h.host.send(&data).unwrap();
    h.net.process_tap_rx_event();
    assert_eq!(h.rxq.used(1), (1, 1212));
    assert_eq!(h.read_rx_used(1, &[1000, 500], 1), received(&data));
    assert_eq!(h.irq.eventfd().read().unwrap(), 2);
}

#[test]
fn a_frame_waiting_for_rx_buffers_is_delivered_after_restore() {
    let mut h = NetHarness::new(0);
    let data = frame(300, 4);
    h.host.send(&data).unwrap();
    h.net.process_tap_rx_event();
    let state = save_and_restore(&mut h, config());
    assert_eq!(state.rx_frame, data);
    h.post_rx(&[2048]);
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.read_rx_used(0, &[2048], 0), received(&data));
}

#[test]
fn a_frame_in_guest_buffers_held_by_the_rate_limiter_is_published_after_restore() {
    let mut cfg = config();
    cfg.rx_rate_limiter = Some(RateLimiter::new(None, TokenBucket::new(1, 0, 60_000)).unwrap());
    let mut h = NetHarness::with_config(cfg, 1 << net::MRG_RXBUF);
    h.post_rx(&[40_000, 40_000]);
    h.post_rx(&[40_000, 40_000]);
    let frames = [frame(100, 1), frame(200, 2)];
    for f in &frames {
        h.host.send(f).unwrap();
    }
    h.net.process_tap_rx_event();
    assert_eq!(
        h.rxq.used_idx(),
        1,
        "the second frame waits for the limiter"
    );
    // Restored without a limiter (the configuration decides).
    let state = save_and_restore(&mut h, config());
    assert_eq!(state.rx_frame_in_guest, 212);
    assert_eq!(state.rx_held.len(), 1);
    // On the restore's kick of the rx queue.
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 2);
    let got = h.read_rx_used(1, &[40_000, 40_000], 2);
    assert_eq!(got, received(&frames[1]));
}

#[test]
fn a_tx_frame_the_tap_refused_is_sent_after_restore() {
    let mut h = NetHarness::new(0);
    let data = frame(100, 3);
    h.post_tx(&data, &[40]);
    h.full.store(true, Ordering::SeqCst);
    h.net.process_tx();
    assert_eq!(h.txq.used_idx(), 0);
    let state = save_and_restore(&mut h, config());
    assert_eq!(state.virtio.queues[TX_INDEX].next_avail, 0);
    h.net.process_tx_queue_event();
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.host_frames(), vec![data]);
}

#[test]
fn the_mac_the_driver_wrote_survives() {
    let mut h = NetHarness::new(0);
    h.net.write_config(0, &[2, 1, 2, 3, 4, 5]);
    save_and_restore(&mut h, config());
    assert_eq!(h.net.guest_mac(), Some([2, 1, 2, 3, 4, 5]));
    let mut mac = [0u8; 6];
    h.net.read_config(0, &mut mac);
    assert_eq!(mac, [2, 1, 2, 3, 4, 5]);
}

#[test]
fn a_configuration_the_guest_did_not_see_is_refused() {
    let h = NetHarness::new(0);
    let state = h.net.save();
    let mut cfg = config();
    cfg.mtu = Some(1400);
    let err = rebuilt(cfg).0.restore(&state, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "net eth0: the snapshot's MTU is none, the configuration's 1400"
    );
    let mut cfg = config();
    cfg.guest_mac = None;
    let err = rebuilt(cfg).0.restore(&state, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "net eth0: the snapshot's guest MAC is 06:00:ac:10:00:02, the configuration's none"
    );
    let mut cfg = config();
    cfg.iface_id = "eth1".to_owned();
    assert!(rebuilt(cfg).0.restore(&state, h.mem, &h.irq).is_err());
}

#[test]
fn unusable_in_flight_state_is_refused_and_changes_nothing() {
    let mut h = NetHarness::new(1 << net::MRG_RXBUF);
    h.post_rx(&[1500]);
    h.net.process_rx_queue_event();
    let good = h.net.save();
    let refused = |state: &NetState| {
        let (mut net, _, _) = rebuilt(config());
        let err = net.restore(state, h.mem, &h.irq).unwrap_err();
        assert!(!net.is_activated());
        assert!(net.save().rx_held.is_empty());
        err.to_string()
    };

    let mut state = good.clone();
    state.rx_held[0].buffers[0].addr = 0x1_0000_0000;
    assert_eq!(
        refused(&state),
        "net eth0: held rx head 0: buffer 0x100000000 (1500 bytes) is not writable guest memory"
    );
    let mut state = good.clone();
    state.rx_held[0].head = 16;
    assert!(refused(&state).contains("held rx head 16 is outside the queue of 16"));
    let mut state = good.clone();
    state.rx_held[0].buffers.clear();
    assert!(refused(&state).contains("holds 0 bytes"));
    let mut state = good.clone();
    state.rx_frame_in_guest = 1600;
    assert!(refused(&state).contains("is in held buffers of 1500"));
    let mut state = good.clone();
    state.rx_frame = vec![0; 5];
    assert!(refused(&state).contains("are not one frame"));
    let mut state = good.clone();
    state.virtio.activated = false;
    assert!(refused(&state).contains("not activated"));
    let mut state = good;
    state.rx_held = vec![state.rx_held[0].clone(); 17];
    assert!(refused(&state).contains("17 rx chains held"));
}
