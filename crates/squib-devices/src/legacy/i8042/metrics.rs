//! Firecracker's `i8042` metrics group, bumped by the keyboard controller.

use serde::Serialize;
use squib_logger::metrics::IncMetric;

/// Counters of the i8042 controller (`"i8042"` in the metrics line).
#[derive(Debug, Default, Serialize)]
pub struct I8042Metrics {
    /// Interrupt or reset eventfd failures.
    pub error_count: IncMetric,
    /// Guest reads the device could not serve (wrong size or port).
    pub missed_read_count: IncMetric,
    /// Guest writes the device could not serve (wrong size, port or command).
    pub missed_write_count: IncMetric,
    /// Bytes the guest read.
    pub read_count: IncMetric,
    /// CPU resets the guest requested (0xFE on port 0x64).
    pub reset_count: IncMetric,
    /// Bytes the guest wrote.
    pub write_count: IncMetric,
}

impl I8042Metrics {
    /// All counters at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            error_count: IncMetric::new(),
            missed_read_count: IncMetric::new(),
            missed_write_count: IncMetric::new(),
            read_count: IncMetric::new(),
            reset_count: IncMetric::new(),
            write_count: IncMetric::new(),
        }
    }
}

/// The process-wide `i8042` group.
pub static I8042_METRICS: I8042Metrics = I8042Metrics::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_firecracker_keys_in_order() {
        let metrics = I8042Metrics::new();
        metrics.reset_count.inc();
        let json = serde_json::to_string(&metrics).unwrap();
        assert_eq!(
            json,
            "{\"error_count\":0,\"missed_read_count\":0,\"missed_write_count\":0,\
             \"read_count\":0,\"reset_count\":1,\"write_count\":0}"
        );
    }
}
