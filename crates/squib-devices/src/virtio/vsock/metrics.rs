//! The vsock device's counters, named as Firecracker's `vsock` metrics group.
//!
//! The VMM registers the device's [`VsockMetrics`] under `vsock` (see
//! [`super::Vsock::register_metrics`]). Counters are atomics: the event loop bumps them
//! while the metrics writer reads them.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of the vsock device (Firecracker `VsockDeviceMetrics` names and order).
#[derive(Debug, Default, Serialize)]
pub struct VsockMetrics {
    /// Activations that failed.
    pub activate_fails: IncMetric,
    /// Config-space accesses that failed (out of range, or a write to the read-only CID).
    pub cfg_fails: IncMetric,
    /// Failures reading the rx queue eventfd.
    pub rx_queue_event_fails: IncMetric,
    /// Failures reading the tx queue eventfd.
    pub tx_queue_event_fails: IncMetric,
    /// Failures reading the event queue eventfd.
    pub ev_queue_event_fails: IncMetric,
    /// Failures of the muxer's own sources (listener, timer, registrations).
    pub muxer_event_fails: IncMetric,
    /// Unexpected events on a connection's stream.
    pub conn_event_fails: IncMetric,
    /// Rx queue notifications received.
    pub rx_queue_event_count: IncMetric,
    /// Tx queue notifications received.
    pub tx_queue_event_count: IncMetric,
    /// Data bytes delivered to the guest.
    pub rx_bytes_count: IncMetric,
    /// Data bytes sent by the guest.
    pub tx_bytes_count: IncMetric,
    /// Packets delivered to the guest.
    pub rx_packets_count: IncMetric,
    /// Packets sent by the guest.
    pub tx_packets_count: IncMetric,
    /// Connections added (host- or guest-initiated).
    pub conns_added: IncMetric,
    /// Connections killed because a deadline passed.
    pub conns_killed: IncMetric,
    /// Connections removed.
    pub conns_removed: IncMetric,
    /// Times the deadline queue was rebuilt from the connections.
    pub killq_resync: IncMetric,
    /// Failures flushing buffered guest bytes to a host stream.
    pub tx_flush_fails: IncMetric,
    /// Failures writing guest bytes to a host stream.
    pub tx_write_fails: IncMetric,
    /// Failures reading a host stream.
    pub rx_read_fails: IncMetric,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_exactly_firecracker_names() {
        let m = VsockMetrics::default();
        m.conns_added.add(3);
        let json = serde_json::to_value(&m).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        let expected = [
            "activate_fails",
            "cfg_fails",
            "rx_queue_event_fails",
            "tx_queue_event_fails",
            "ev_queue_event_fails",
            "muxer_event_fails",
            "conn_event_fails",
            "rx_queue_event_count",
            "tx_queue_event_count",
            "rx_bytes_count",
            "tx_bytes_count",
            "rx_packets_count",
            "tx_packets_count",
            "conns_added",
            "conns_killed",
            "conns_removed",
            "killq_resync",
            "tx_flush_fails",
            "tx_write_fails",
            "rx_read_fails",
        ];
        let mut sorted_expected: Vec<_> = expected.iter().map(|s| (*s).to_owned()).collect();
        sorted_expected.sort();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        assert_eq!(sorted_keys, sorted_expected);
        assert_eq!(json["conns_added"], 3);
        let text = serde_json::to_string(&VsockMetrics::default()).unwrap();
        let order: Vec<_> = expected.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "field order");
    }
}
