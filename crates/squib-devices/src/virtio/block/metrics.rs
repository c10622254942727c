//! Per-drive block metrics, named as Firecracker's `block_<drive_id>` group.
//!
//! The VMM serialises each drive's [`BlockMetrics`] under `block_<drive_id>` and the sum of
//! all drives under `block`. Counters are atomics: the event loop bumps them while the metrics
//! writer reads them.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of one block device (Firecracker `BlockDeviceMetrics` names).
#[derive(Debug, Default, Serialize)]
pub struct BlockMetrics {
    /// Activations that failed.
    pub activate_fails: IncMetric,
    /// Config-space accesses that failed.
    pub cfg_fails: IncMetric,
    /// Queue events that found no available descriptor.
    pub no_avail_buffer: IncMetric,
    /// Failures reading an event fd.
    pub event_fails: IncMetric,
    /// Requests that failed on the host side.
    pub execute_fails: IncMetric,
    /// Malformed requests from the guest.
    pub invalid_reqs_count: IncMetric,
    /// Flushes served.
    pub flush_count: IncMetric,
    /// Queue notifications received.
    pub queue_event_count: IncMetric,
    /// Rate-limiter timer events.
    pub rate_limiter_event_count: IncMetric,
    /// `PATCH` updates applied.
    pub update_count: IncMetric,
    /// `PATCH` updates that failed.
    pub update_fails: IncMetric,
    /// Bytes read by the guest.
    pub read_bytes: IncMetric,
    /// Bytes written by the guest.
    pub write_bytes: IncMetric,
    /// Read requests served.
    pub read_count: IncMetric,
    /// Write requests served.
    pub write_count: IncMetric,
    /// Requests deferred by the rate limiter.
    pub rate_limiter_throttled_events: IncMetric,
    /// Requests deferred by the I/O engine (async engines only).
    pub io_engine_throttled_events: IncMetric,
    /// Requests left in the queue when a drain hit its cap.
    pub remaining_reqs_count: IncMetric,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_firecracker_names() {
        let m = BlockMetrics::default();
        m.read_bytes.add(4096);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["read_bytes"], 4096);
        for key in [
            "invalid_reqs_count",
            "rate_limiter_throttled_events",
            "flush_count",
        ] {
            assert_eq!(json[key], 0, "{key}");
        }
    }
}
