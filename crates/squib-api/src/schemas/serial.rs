//! `PUT /serial`: where COM1 output goes, and its rate limiter.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::paths::opt_host_path;
use super::rate_limiter::{check_bucket, TokenBucketConfig};

/// `PUT /serial` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    #[serde(default)]
    serial_out_path: Option<String>,
    #[serde(default)]
    rate_limiter: Option<TokenBucketConfig>,
}

/// A validated serial configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SerialConfig {
    /// Output file; `None` = stdout.
    pub serial_out_path: Option<PathBuf>,
    /// Output byte limit.
    pub rate_limiter: Option<TokenBucketConfig>,
}

impl TryFrom<RawSerial> for SerialConfig {
    type Error = SchemaError;

    fn try_from(raw: RawSerial) -> Result<Self, SchemaError> {
        Ok(Self {
            serial_out_path: opt_host_path("serial_out_path", raw.serial_out_path)?,
            rate_limiter: check_bucket("rate_limiter", raw.rate_limiter)?,
        })
    }
}
