//! Token buckets and rate limiters, shared by block, net, pmem, entropy and serial.
//!
//! A zero size or refill time disables a bucket, as in Firecracker. One rule goes beyond the
//! JSON types: the refill time in nanoseconds must fit in 64 bits
//! (`refill_time <=` [`MAX_REFILL_TIME_MS`], about 584 years). Firecracker's token bucket
//! computes `refill_time * 1_000_000` with `checked_mul` and, past that, silently builds *no*
//! bucket: the client asked for a limit and gets none. squib refuses such a value at the API
//! instead, naming the field, behind the route's fault prefix (`Drive config error: ...`).
//! Any `size` and `one_time_burst` is kept: a huge size is a coherent "practically
//! unlimited" bucket, and the device's arithmetic is saturating for every u64.
//!
//! The types deserialise directly with `deny_unknown_fields`; each route's `TryFrom` calls
//! [`check_limiter`] or [`check_bucket`] with the field's JSON path.

use serde::{Deserialize, Serialize, Serializer};

use super::error::SchemaError;

/// The longest refill time, in ms, whose nanosecond count fits in a u64.
pub const MAX_REFILL_TIME_MS: u64 = u64::MAX / 1_000_000;

/// One token bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Bucket size in tokens (bytes or operations).
    pub size: u64,
    /// Extra initial budget.
    #[serde(default, serialize_with = "zero_as_null")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the whole bucket.
    pub refill_time: u64,
}

/// Firecracker serialises a burst of 0 (or none) as `null`.
fn zero_as_null<S: Serializer>(burst: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match burst {
        Some(b) if *b > 0 => serializer.serialize_some(b),
        _ => serializer.serialize_none(),
    }
}

/// Check a bucket given at JSON path `field` (`rate_limiter.bandwidth`).
///
/// # Errors
/// [`SchemaError::RefillTimeTooLarge`] naming the field.
pub fn check_bucket(
    field: &str,
    bucket: Option<TokenBucketConfig>,
) -> Result<Option<TokenBucketConfig>, SchemaError> {
    match bucket {
        Some(b) if b.refill_time > MAX_REFILL_TIME_MS => Err(SchemaError::RefillTimeTooLarge {
            field: format!("{field}.refill_time"),
            value: b.refill_time,
        }),
        other => Ok(other),
    }
}

/// Check a rate limiter given at JSON field `field` (`rx_rate_limiter`).
///
/// # Errors
/// [`SchemaError::RefillTimeTooLarge`] naming the bucket's field.
pub fn check_limiter(
    field: &str,
    limiter: Option<RateLimiterConfig>,
) -> Result<Option<RateLimiterConfig>, SchemaError> {
    let Some(limiter) = limiter else {
        return Ok(None);
    };
    Ok(Some(RateLimiterConfig {
        bandwidth: check_bucket(&format!("{field}.bandwidth"), limiter.bandwidth)?,
        ops: check_bucket(&format!("{field}.ops"), limiter.ops)?,
    }))
}

/// A bandwidth and an operations bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes per refill period.
    #[serde(default)]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations per refill period.
    #[serde(default)]
    pub ops: Option<TokenBucketConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_zero_serialises_as_null() {
        let tb: TokenBucketConfig =
            serde_json::from_str(r#"{"size":1,"one_time_burst":0,"refill_time":2}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&tb).unwrap(),
            r#"{"size":1,"one_time_burst":null,"refill_time":2}"#
        );
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"bw":{}}"#).is_err());
    }

    fn bucket(size: u64, refill_time: u64) -> Option<TokenBucketConfig> {
        Some(TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        })
    }

    #[test]
    fn a_refill_time_whose_nanoseconds_overflow_is_refused_naming_the_field() {
        let limiter = |refill_time| {
            Some(RateLimiterConfig {
                bandwidth: bucket(1, 100),
                ops: bucket(u64::MAX, refill_time),
            })
        };
        assert_eq!(
            check_limiter("rx_rate_limiter", limiter(MAX_REFILL_TIME_MS)),
            Ok(limiter(MAX_REFILL_TIME_MS))
        );
        let err = check_limiter("rx_rate_limiter", limiter(MAX_REFILL_TIME_MS + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The rx_rate_limiter.ops.refill_time of 18446744073710 ms is too large: \
             the refill time in nanoseconds must fit in 64 bits (at most 18446744073709 ms)."
        );
        assert!(check_bucket("rate_limiter", bucket(1, u64::MAX)).is_err());
        // Zero disables a bucket, as in Firecracker; any size is kept.
        assert_eq!(check_bucket("rate_limiter", bucket(0, 0)), Ok(bucket(0, 0)));
        assert_eq!(check_limiter("rate_limiter", None), Ok(None));
    }
}
