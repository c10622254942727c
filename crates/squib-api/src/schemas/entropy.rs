//! `PUT /entropy`: the virtio-rng device (`{}` is a valid body).

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::rate_limiter::{check_limiter, RateLimiterConfig};

/// `PUT /entropy` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntropy {
    #[serde(default)]
    rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawEntropy> for EntropyConfig {
    type Error = SchemaError;

    fn try_from(raw: RawEntropy) -> Result<Self, SchemaError> {
        Ok(Self {
            rate_limiter: check_limiter("rate_limiter", raw.rate_limiter)?,
        })
    }
}

/// A validated entropy device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    /// Rate limiter on bytes handed to the guest.
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}
