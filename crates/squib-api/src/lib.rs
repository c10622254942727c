//! Firecracker-compatible HTTP API for squib.
//!
//! The API thread (`fc_api`) parses each request into a validated [`action::ApiAction`]
//! (`Raw*` body -> `TryFrom` -> validated type in [`schemas`]), hands it to the VMM event loop
//! over [`channel`], and waits for the reply with the action class's timeout. `GET /` and
//! `GET /version` are answered on the API thread from [`mirror::StateMirror`] and [`version`].
//! No KVM or device code lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod channel;
pub mod error;
pub mod mirror;
pub mod routes;
pub mod schemas;
pub mod server;
pub mod version;

/// Firecracker's answer to a post-boot-only request before `InstanceStart`.
pub const NOT_SUPPORTED_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";
/// Firecracker's answer to a pre-boot-only request after `InstanceStart`.
pub const NOT_SUPPORTED_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
