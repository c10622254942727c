//! `PUT /metrics`: the NDJSON metrics file. Firecracker does not deny unknown fields here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::paths::host_path;

/// `PUT /metrics` body.
#[derive(Debug, Deserialize)]
pub struct RawMetrics {
    metrics_path: String,
    #[serde(default)]
    emit_id: bool,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// A validated metrics configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// File or FIFO.
    pub metrics_path: PathBuf,
    /// Add the instance ID to each line.
    pub emit_id: bool,
    /// Extra key/value pairs in each line.
    pub properties: BTreeMap<String, String>,
}

impl TryFrom<RawMetrics> for MetricsConfig {
    type Error = SchemaError;

    fn try_from(raw: RawMetrics) -> Result<Self, SchemaError> {
        Ok(Self {
            metrics_path: host_path("metrics_path", raw.metrics_path)?,
            emit_id: raw.emit_id,
            properties: raw.properties,
        })
    }
}
