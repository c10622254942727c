//! Entropy device metrics, named as Firecracker's `entropy` group.
//!
//! The VMM registers the device's [`EntropyMetrics`] under [`super::METRICS_GROUP`]
//! (`entropy`) with `squib_logger::metrics::register_group`. Counters are atomics: the event
//! loop bumps them while the metrics writer reads them.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of the entropy device (Firecracker `EntropyDeviceMetrics` names and order).
#[derive(Debug, Default, Serialize)]
pub struct EntropyMetrics {
    /// Activations that failed.
    pub activate_fails: IncMetric,
    /// Failures: unreadable event fds, malformed chains, failed completions or interrupts.
    pub entropy_event_fails: IncMetric,
    /// Requests handled (valid or not; a throttled request counts once, when served).
    pub entropy_event_count: IncMetric,
    /// Random bytes written into guest memory.
    pub entropy_bytes: IncMetric,
    /// Host `getrandom` failures.
    pub host_rng_fails: IncMetric,
    /// Requests deferred by the rate limiter.
    pub entropy_rate_limiter_throttled: IncMetric,
    /// Rate-limiter timer events, and queue events that arrived while throttled.
    pub rate_limiter_event_count: IncMetric,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_firecracker_names_in_order() {
        let m = EntropyMetrics::default();
        m.entropy_bytes.add(64);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"activate_fails":0,"entropy_event_fails":0,"entropy_event_count":0,"#,
                r#""entropy_bytes":64,"host_rng_fails":0,"entropy_rate_limiter_throttled":0,"#,
                r#""rate_limiter_event_count":0}"#
            )
        );
    }
}
