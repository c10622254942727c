//! `PUT /vsock`: the virtio-vsock device and its host Unix socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::paths::socket_path;

use crate::error::RequestError;
use crate::routes::{parse, RouteInput};

/// `PUT /vsock` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVsock {
    #[serde(default)]
    vsock_id: Option<String>,
    guest_cid: u32,
    uds_path: String,
}

impl RawVsock {
    /// `true` when the deprecated `vsock_id` was given.
    #[must_use]
    pub fn uses_deprecated_id(&self) -> bool {
        self.vsock_id.is_some()
    }
}

/// A validated vsock device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VsockConfig {
    /// Guest context ID.
    pub guest_cid: u32,
    /// Host socket the device listens on.
    pub uds_path: PathBuf,
}

impl TryFrom<RawVsock> for VsockConfig {
    type Error = SchemaError;

    fn try_from(raw: RawVsock) -> Result<Self, SchemaError> {
        Ok(Self {
            guest_cid: raw.guest_cid,
            uds_path: socket_path("uds_path", raw.uds_path)?,
        })
    }
}

/// `PUT /vsock`, with the deprecation warning for `vsock_id`.
pub(crate) fn parse_put(input: &RouteInput<'_>) -> Result<VsockConfig, RequestError> {
    let raw = parse::json::<RawVsock>(input)?;
    if raw.uses_deprecated_id() {
        input.deprecate("PUT /vsock: vsock_id field is deprecated.");
    }
    parse::validate(input, raw)
}
