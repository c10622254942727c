//! Firecracker-compatible HTTP API for squib.
//!
//! Every action is one row of [`table`]: route, payload, admission, timeout class, request
//! counters, fault prefix and the VMM handler's name. The API thread (`fc_api`, the `server`
//! feature) parses each request with [`routes`] into a validated [`action::ApiAction`]
//! (`Raw*` body -> `TryFrom` -> validated type in [`schemas`]), hands it to the VMM event loop
//! over [`channel`], and waits for the reply with the action's timeout. `GET /` and
//! `GET /version` are answered on the API thread from [`mirror::StateMirror`] and [`version`].
//!
//! Without the `server` feature the crate is the table, the request types and the channel:
//! what the VMM links, with no HTTP stack or async runtime. No KVM or device code lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod channel;
pub mod error;
pub mod mirror;
pub mod routes;
pub mod schemas;
#[cfg(feature = "server")]
pub mod server;
pub mod table;
pub mod version;

/// Firecracker's answer to a post-boot-only request before `InstanceStart`.
pub const NOT_SUPPORTED_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";
/// Firecracker's answer to a pre-boot-only request after `InstanceStart`.
pub const NOT_SUPPORTED_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
