//! Firecracker-format metrics: counters, the process-wide [`METRICS`] and the NDJSON writer.
//!
//! (Skeleton: the metric groups and the writer are built by the logger/metrics work.)

pub mod counter;

pub use counter::{IncMetric, StoreMetric};
