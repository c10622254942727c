//! Firecracker's `uart` metrics group, bumped by COM1.
//!
//! Field names are Firecracker's byte for byte (launchers grep them). `flush_count` and
//! `rate_limiter_dropped_bytes` are kept for the key set: Firecracker never bumps the first,
//! and the second waits for the serial rate limiter.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of the serial console (`"uart"` in the metrics line).
#[derive(Debug, Default, Serialize)]
pub struct SerialMetrics {
    /// Output or interrupt failures.
    pub error_count: IncMetric,
    /// Output flushes (never bumped, as in Firecracker).
    pub flush_count: IncMetric,
    /// Guest reads the device could not serve (wrong size or offset).
    pub missed_read_count: IncMetric,
    /// Guest writes the device could not serve, and output bytes lost.
    pub missed_write_count: IncMetric,
    /// Bytes the guest read from the receive FIFO.
    pub read_count: IncMetric,
    /// Bytes written to the output.
    pub write_count: IncMetric,
    /// Output bytes dropped by the serial rate limiter.
    pub rate_limiter_dropped_bytes: IncMetric,
}

impl SerialMetrics {
    /// All counters at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            error_count: IncMetric::new(),
            flush_count: IncMetric::new(),
            missed_read_count: IncMetric::new(),
            missed_write_count: IncMetric::new(),
            read_count: IncMetric::new(),
            write_count: IncMetric::new(),
            rate_limiter_dropped_bytes: IncMetric::new(),
        }
    }
}

/// The process-wide `uart` group.
pub static UART_METRICS: SerialMetrics = SerialMetrics::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_firecracker_keys_in_order() {
        let metrics = SerialMetrics::new();
        metrics.write_count.add(3);
        let json = serde_json::to_string(&metrics).unwrap();
        assert_eq!(
            json,
            "{\"error_count\":0,\"flush_count\":0,\"missed_read_count\":0,\
             \"missed_write_count\":0,\"read_count\":0,\"write_count\":3,\
             \"rate_limiter_dropped_bytes\":0}"
        );
    }
}
