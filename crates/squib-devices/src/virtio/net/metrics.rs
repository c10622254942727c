//! Per-interface network metrics, named as Firecracker's `net_<iface_id>` group.
//!
//! The VMM serialises each interface's [`NetMetrics`] under `net_<iface_id>` and the sum of
//! all interfaces under `net`. Counters are atomics: the event loop bumps them while the
//! metrics writer reads them.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of one network interface (Firecracker `NetDeviceMetrics` names).
#[derive(Debug, Default, Serialize)]
pub struct NetMetrics {
    /// Activations that failed.
    pub activate_fails: IncMetric,
    /// Config-space accesses that failed.
    pub cfg_fails: IncMetric,
    /// Guest writes to the MAC in config space.
    pub mac_address_updates: IncMetric,
    /// Times a frame waited because the guest had no rx buffer.
    pub no_rx_avail_buffer: IncMetric,
    /// Tx queue events that found no available chain.
    pub no_tx_avail_buffer: IncMetric,
    /// Failures reading an event fd or unexpected events.
    pub event_fails: IncMetric,
    /// Rx queue notifications received.
    pub rx_queue_event_count: IncMetric,
    /// Rx rate-limiter timer events.
    pub rx_event_rate_limiter_count: IncMetric,
    /// Truncated frames; kept for Firecracker's schema (squib drops, never truncates, them).
    pub rx_partial_writes: IncMetric,
    /// Frames to the guest deferred by the rate limiter.
    pub rx_rate_limiter_throttled: IncMetric,
    /// TAP readable events.
    pub rx_tap_event_count: IncMetric,
    /// Bytes delivered to the guest (headers excluded).
    pub rx_bytes_count: IncMetric,
    /// Frames delivered to the guest.
    pub rx_packets_count: IncMetric,
    /// Frames or rx chains dropped (malformed chain, frame larger than the buffers).
    pub rx_fails: IncMetric,
    /// Rx batches that completed at least one frame.
    pub rx_count: IncMetric,
    /// Failed TAP reads.
    pub tap_read_fails: IncMetric,
    /// Failed TAP writes.
    pub tap_write_fails: IncMetric,
    /// Failed aggregated TAP writes (kept for Firecracker's schema).
    pub tap_write_agg_fails: IncMetric,
    /// Bytes sent by the guest (headers excluded).
    pub tx_bytes_count: IncMetric,
    /// Malformed tx chains dropped.
    pub tx_malformed_frames: IncMetric,
    /// Tx frames that could not be sent.
    pub tx_fails: IncMetric,
    /// Tx batches that completed at least one frame.
    pub tx_count: IncMetric,
    /// Frames sent by the guest.
    pub tx_packets_count: IncMetric,
    /// Tx chains whose data could not be fully read (kept for Firecracker's schema).
    pub tx_partial_reads: IncMetric,
    /// Tx queue notifications received.
    pub tx_queue_event_count: IncMetric,
    /// Tx rate-limiter timer events.
    pub tx_rate_limiter_event_count: IncMetric,
    /// Frames from the guest deferred by the rate limiter.
    pub tx_rate_limiter_throttled: IncMetric,
    /// Frames with a source MAC other than the guest's (kept for Firecracker's schema).
    pub tx_spoofed_mac_count: IncMetric,
    /// Tx drains that stopped at the queue-size cap with chains left.
    pub tx_remaining_reqs_count: IncMetric,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_firecracker_names() {
        let m = NetMetrics::default();
        m.rx_bytes_count.add(1500);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["rx_bytes_count"], 1500);
        for key in [
            "tx_malformed_frames",
            "no_rx_avail_buffer",
            "rx_rate_limiter_throttled",
            "tx_rate_limiter_throttled",
            "tap_read_fails",
            "tx_packets_count",
        ] {
            assert_eq!(json[key], 0, "{key}");
        }
    }
}
