//! Token buckets and rate limiters, shared by block, net, pmem, entropy and serial.
//!
//! Nothing to validate beyond the JSON types (a zero size or refill time disables a bucket),
//! so these types deserialise directly with `deny_unknown_fields`.

use serde::{Deserialize, Serialize, Serializer};

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
}
