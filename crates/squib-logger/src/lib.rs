//! Logging and metrics for squib, in Firecracker's formats.
//!
//! Every crate logs through the `log` facade; this crate installs the `log::Log`
//! implementation that writes Firecracker's line format ([`logger`]), limits guest-triggered
//! lines ([`rate_limited`]), and owns the metrics that launchers read as NDJSON ([`metrics`]).
//! [`time`] holds the clocks both use.
#![warn(missing_docs)]

pub mod logger;
pub mod metrics;
pub mod rate_limited;
pub mod time;

#[doc(hidden)]
pub use log as __log;
