//! Out-of-range available-ring heads on rx and tx: never handed to `add_used` (virtio-queue
//! would log an `error!` for each), counted, and warned about at rate-limited call sites.

use super::tests::harness::{frame, NetHarness};
use crate::log_capture::{lines_logged_by, PER_SITE};

#[test]
fn out_of_range_rx_heads_are_skipped_without_flooding_the_log() {
    let mut h = NetHarness::new(0);
    let lines = lines_logged_by(|| {
        for _ in 0..7 {
            for _ in 0..15 {
                h.rxq.publish(20); // the harness queues have 16 entries
            }
            h.host.send(&frame(100, 0)).unwrap();
            h.net.process_rx_queue_event();
        }
    });
    assert!(lines.len() <= PER_SITE, "{} lines: {lines:?}", lines.len());
    assert_eq!(h.rxq.used_idx(), 0);
    assert_eq!(h.net.metrics().rx_fails.count(), 105);
    // A real buffer still gets the frame waiting for it.
    h.post_rx(&[2048]);
    h.net.process_rx_queue_event();
    assert_eq!(h.rxq.used_idx(), 1);
}

#[test]
fn out_of_range_tx_heads_are_skipped_without_flooding_the_log() {
    let mut h = NetHarness::new(0);
    let lines = lines_logged_by(|| {
        for _ in 0..7 {
            for _ in 0..15 {
                h.txq.publish(20);
            }
            h.net.process_tx_queue_event();
        }
    });
    assert!(lines.len() <= PER_SITE, "{} lines: {lines:?}", lines.len());
    assert_eq!(h.txq.used_idx(), 0);
    assert_eq!(h.net.metrics().tx_malformed_frames.count(), 105);
    h.post_tx(&frame(100, 1), &[]);
    h.net.process_tx_queue_event();
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(h.host_frames().len(), 1);
}
