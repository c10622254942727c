//! Version strings: the Firecracker API version squib implements and squib's own.
//!
//! Clients (SDKs, test frameworks) compare `GET /version`'s `firecracker_version` and
//! `GET /`'s `vmm_version` against Firecracker release numbers, so they carry the Firecracker
//! version squib matches, not squib's crate version.

/// The Firecracker version whose API squib implements.
pub const FIRECRACKER_VERSION: &str = "1.17.0";
/// squib's own version.
pub const SQUIB_VERSION: &str = env!("CARGO_PKG_VERSION");
/// `app_name` in `GET /`.
pub const APP_NAME: &str = "Firecracker";

/// The body of `GET /version`.
#[must_use]
pub fn version_json() -> serde_json::Value {
    serde_json::json!({ "firecracker_version": FIRECRACKER_VERSION })
}
