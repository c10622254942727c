//! The API's rate-limiter configurations (`rate_limiter`, `rx_rate_limiter`, ... in PUT and
//! PATCH bodies) turned into the devices' token buckets (`squib_devices::rate_limiter`).

use squib_api::schemas::{RateLimiterConfig, TokenBucketConfig};
use squib_devices::rate_limiter::{BucketUpdate, RateLimiter, TokenBucket};
use squib_devices::virtio::block::Block;
use squib_devices::virtio::net::RateLimiterUpdate;

/// A bucket for `config`; `None` when Firecracker treats it as disabled (size or refill 0).
fn bucket(config: &TokenBucketConfig) -> Option<TokenBucket> {
    TokenBucket::new(
        config.size,
        config.one_time_burst.unwrap_or(0),
        config.refill_time,
    )
}

/// PATCH semantics: an omitted bucket stays as it is, a zero one removes the limit.
fn bucket_update(config: Option<&TokenBucketConfig>) -> BucketUpdate {
    config.map_or(BucketUpdate::None, |c| {
        BucketUpdate::from_config(c.size, c.one_time_burst.unwrap_or(0), c.refill_time)
    })
}

/// The limiter a device enforces for `config`.
///
/// # Errors
/// The OS error when the limiter's timerfd cannot be created.
pub(crate) fn build_rate_limiter(config: &RateLimiterConfig) -> std::io::Result<RateLimiter> {
    let bandwidth = config.bandwidth.as_ref().and_then(bucket);
    let ops = config.ops.as_ref().and_then(bucket);
    RateLimiter::new(bandwidth, ops)
}

/// Apply a `PATCH /drives` rate limiter to a running block device.
pub(crate) fn update_block_rate_limiter(block: &mut Block, config: &RateLimiterConfig) {
    block.update_rate_limiter(
        bucket_update(config.bandwidth.as_ref()),
        bucket_update(config.ops.as_ref()),
    );
}

/// One direction of a `PATCH /network-interfaces`: omitted means unchanged.
#[must_use]
pub(crate) fn rate_limiter_update(config: Option<&RateLimiterConfig>) -> RateLimiterUpdate {
    config.map_or_else(RateLimiterUpdate::unchanged, |c| RateLimiterUpdate {
        bandwidth: bucket_update(c.bandwidth.as_ref()),
        ops: bucket_update(c.ops.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_keeps_omitted_directions_and_buckets() {
        let none = rate_limiter_update(None);
        assert!(matches!(none.bandwidth, BucketUpdate::None));
        assert!(matches!(none.ops, BucketUpdate::None));
        let config: RateLimiterConfig = serde_json::from_value(serde_json::json!({
            "bandwidth": {"size": 65536, "refill_time": 1000},
            "ops": {"size": 0, "refill_time": 100}
        }))
        .unwrap();
        let update = rate_limiter_update(Some(&config));
        assert!(matches!(update.bandwidth, BucketUpdate::Update(_)));
        assert!(matches!(update.ops, BucketUpdate::Disabled));
    }

    #[test]
    fn limiter_with_zero_buckets_is_unlimited() {
        let config: RateLimiterConfig = serde_json::from_value(serde_json::json!({
            "bandwidth": {"size": 0, "refill_time": 1000}
        }))
        .unwrap();
        let limiter = build_rate_limiter(&config).unwrap();
        assert!(limiter.bandwidth().is_none());
    }
}
