//! Firecracker-compatible HTTP API for squib.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
