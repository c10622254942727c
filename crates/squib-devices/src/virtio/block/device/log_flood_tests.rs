//! Out-of-range available-ring heads: never handed to `add_used` (virtio-queue would log an
//! `error!` for each), counted as invalid, and warned about at a rate-limited call site.

use super::tests::harness::{default_block, BlockHarness};
use crate::log_capture::{lines_logged_by, PER_SITE};

#[test]
fn out_of_range_heads_are_skipped_without_flooding_the_log() {
    let mut h = BlockHarness::new(default_block(4096, false));
    let lines = lines_logged_by(|| {
        for _ in 0..7 {
            for _ in 0..15 {
                h.vq.publish(20); // the harness queue has 16 entries
            }
            h.simulate_queue_event();
        }
    });
    assert!(lines.len() <= PER_SITE, "{} lines: {lines:?}", lines.len());
    assert_eq!(
        h.vq.used_idx(),
        0,
        "no descriptor was named: nothing to complete"
    );
    let metrics = h.block.lock().unwrap().metrics();
    assert_eq!(metrics.invalid_reqs_count.count(), 105);
    // The device keeps serving.
    let status = h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(status), crate::virtio::block::status::OK);
}
