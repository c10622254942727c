//! Metric primitives, with Firecracker's semantics.
//!
//! - [`IncMetric`]: a counter. Each metrics line reports what was added since the previous
//!   line (Firecracker's `SharedIncMetric`), so a reader sums lines to get a total.
//! - [`StoreMetric`]: a gauge. Each line reports the latest stored value.
//!
//! Both are lock-free atomics: safe to bump from vCPU threads and device paths.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};

/// A counter that reports the increase since it was last written.
#[derive(Debug, Default)]
pub struct IncMetric {
    total: AtomicU64,
    reported: AtomicU64,
}

impl IncMetric {
    /// A counter at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            total: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Everything ever added (not reset by writing).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The increase since the last call, which marks it as reported.
    pub fn take_delta(&self) -> u64 {
        let total = self.total.load(Ordering::Relaxed);
        let before = self.reported.swap(total, Ordering::Relaxed);
        total.wrapping_sub(before)
    }
}

impl Serialize for IncMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.take_delta())
    }
}

/// A gauge that reports its latest value.
#[derive(Debug, Default)]
pub struct StoreMetric(AtomicU64);

impl StoreMetric {
    /// A gauge at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Replace the value.
    pub fn store(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    #[must_use]
    pub fn fetch(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for StoreMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.fetch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inc_metric_reports_delta_since_last_write() {
        let m = IncMetric::new();
        m.add(5);
        assert_eq!(serde_json::to_string(&m).unwrap(), "5");
        m.inc();
        assert_eq!(serde_json::to_string(&m).unwrap(), "1");
        assert_eq!(serde_json::to_string(&m).unwrap(), "0");
        assert_eq!(m.count(), 6);
    }

    #[test]
    fn store_metric_reports_latest_value() {
        let m = StoreMetric::new();
        m.store(42);
        assert_eq!(serde_json::to_string(&m).unwrap(), "42");
        assert_eq!(serde_json::to_string(&m).unwrap(), "42");
    }
}
