//! `/balloon` routes: the balloon device, its target, statistics and free-page hinting.

use serde::{Deserialize, Serialize};

use super::error::SchemaError;

/// `PUT /balloon` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalloon {
    amount_mib: u32,
    deflate_on_oom: bool,
    #[serde(default)]
    stats_polling_interval_s: u16,
    #[serde(default)]
    free_page_hinting: bool,
    #[serde(default)]
    free_page_reporting: bool,
}

/// A validated balloon device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalloonConfig {
    /// Target size in MiB.
    pub amount_mib: u32,
    /// Deflate when the guest runs out of memory.
    pub deflate_on_oom: bool,
    /// Statistics period (0 = disabled).
    pub stats_polling_interval_s: u16,
    /// Free page hinting.
    pub free_page_hinting: bool,
    /// Free page reporting.
    pub free_page_reporting: bool,
}

impl TryFrom<RawBalloon> for BalloonConfig {
    type Error = SchemaError;

    fn try_from(raw: RawBalloon) -> Result<Self, SchemaError> {
        Ok(Self {
            amount_mib: raw.amount_mib,
            deflate_on_oom: raw.deflate_on_oom,
            stats_polling_interval_s: raw.stats_polling_interval_s,
            free_page_hinting: raw.free_page_hinting,
            free_page_reporting: raw.free_page_reporting,
        })
    }
}

/// `PATCH /balloon` body (new target).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// New target in MiB.
    pub amount_mib: u32,
}

/// `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    /// New statistics period.
    pub stats_polling_interval_s: u16,
}

/// `PATCH /balloon/hinting/start` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStartCmd {
    /// Whether the guest acknowledges the stop command.
    #[serde(default)]
    pub acknowledge_on_stop: Option<bool>,
}
