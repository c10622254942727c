//! API rate-limiter configurations turned into the devices' token buckets.

use squib_api::schemas::{RateLimiterConfig, TokenBucketConfig};
use squib_devices::rate_limiter::{BucketUpdate, RateLimiter, TokenBucket};
use squib_devices::virtio::block::Block;

/// A bucket for `config`; `None` when Firecracker treats it as disabled (size or refill 0).
fn bucket(config: &TokenBucketConfig) -> Option<TokenBucket> {
    TokenBucket::new(
        config.size,
        config.one_time_burst.unwrap_or(0),
        config.refill_time,
    )
}

/// PATCH semantics: an omitted bucket stays as it is, a zero one removes the limit.
pub(crate) fn bucket_update(config: Option<&TokenBucketConfig>) -> BucketUpdate {
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
