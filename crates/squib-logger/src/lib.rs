//! Logging and metrics for squib, in Firecracker's formats.
//!
//! Every crate logs through the `log` facade; this crate installs the `log::Log`
//! implementation that writes Firecracker's line format, and owns the metrics that
//! launchers read as NDJSON.
#![warn(missing_docs)]

pub mod metrics;
