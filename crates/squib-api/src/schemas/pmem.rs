//! `PUT`/`PATCH /pmem/{id}`: virtio-pmem devices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::ids::DriveId;
use super::paths::host_path;
use super::rate_limiter::{check_limiter, RateLimiterConfig};
use crate::routes::parse::BodyId;

/// `PUT /pmem/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmem {
    pub(crate) id: String,
    path_on_host: String,
    #[serde(default)]
    root_device: bool,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
}

/// A validated pmem device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmemConfig {
    /// Device ID.
    pub id: DriveId,
    /// Backing file.
    pub path_on_host: PathBuf,
    /// Root device (`root=/dev/pmem<i>`).
    pub root_device: bool,
    /// Read-only mapping.
    pub read_only: bool,
    /// Flush rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawPmem> for PmemConfig {
    type Error = SchemaError;

    fn try_from(raw: RawPmem) -> Result<Self, SchemaError> {
        Ok(Self {
            id: DriveId::try_from(raw.id)?,
            path_on_host: host_path("path_on_host", raw.path_on_host)?,
            root_device: raw.root_device,
            read_only: raw.read_only,
            rate_limiter: check_limiter("rate_limiter", raw.rate_limiter)?,
        })
    }
}

/// `PATCH /pmem/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmemPatch {
    pub(crate) id: String,
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
}

/// A validated pmem update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmemPatch {
    /// Device ID.
    pub id: DriveId,
    /// New rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawPmemPatch> for PmemPatch {
    type Error = SchemaError;

    fn try_from(raw: RawPmemPatch) -> Result<Self, SchemaError> {
        Ok(Self {
            id: DriveId::try_from(raw.id)?,
            rate_limiter: check_limiter("rate_limiter", raw.rate_limiter)?,
        })
    }
}

impl BodyId for RawPmem {
    type PathId = DriveId;
    fn body_id(&self) -> &str {
        &self.id
    }
}

impl BodyId for RawPmemPatch {
    type PathId = DriveId;
    fn body_id(&self) -> &str {
        &self.id
    }
}
