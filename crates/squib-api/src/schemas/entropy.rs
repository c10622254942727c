//! `PUT /entropy`: the virtio-rng device (`{}` is a valid body).

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiterConfig;

/// A validated entropy device (nothing beyond the JSON types to check).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    /// Rate limiter on bytes handed to the guest.
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}
