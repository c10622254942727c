//! Metrics actions: `PUT /metrics`, `FlushMetrics`, and the periodic flush.

use squib_api::action::ApiResponse;
use squib_api::schemas::MetricsConfig;

use crate::controller::ActionResult;
use crate::vmm::Vmm;

impl Vmm {
    /// `PUT /metrics`: start writing metrics to the given file or FIFO.
    pub(crate) fn put_metrics(&mut self, config: MetricsConfig) -> ActionResult {
        squib_logger::metrics::init_metrics(&config.metrics_path)?;
        Ok(ApiResponse::NoContent)
    }
}

/// `FlushMetrics`: write a metrics line now.
pub(crate) fn flush_metrics() -> ActionResult {
    squib_logger::metrics::write_metrics()?;
    Ok(ApiResponse::NoContent)
}

/// The periodic (and after-boot) flush: a failure is logged, not fatal.
pub(crate) fn write_periodic() {
    if let Err(e) = squib_logger::metrics::write_metrics() {
        log::warn!("Failed to write metrics: {e}");
    }
}
