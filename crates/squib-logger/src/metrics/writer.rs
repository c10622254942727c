//! The metrics destination: a file or FIFO opened once, one NDJSON line per write.
//!
//! Like Firecracker (`Metrics::init`), the destination can be set only once per process:
//! `--metrics-path` or `PUT /metrics`, and a second attempt fails with
//! `Reinitialization of metrics not allowed.`. Before initialisation, writing is a no-op that
//! returns `Ok(false)`. The file is opened `O_APPEND | O_NONBLOCK`, read-write so a FIFO
//! without a reader opens, and created if missing.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::{registry, SquibMetrics, METRICS};

/// Why metrics could not be initialised or written (texts are Firecracker's).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The destination was already set.
    #[error("Reinitialization of metrics not allowed.")]
    AlreadyInitialized,
    /// The destination could not be opened.
    #[error("Failed to open the metrics file: {0}")]
    Open(#[source] std::io::Error),
    /// A group failed to serialise.
    #[error("{0}")]
    Serde(#[source] serde_json::Error),
    /// The line could not be written.
    #[error("Failed to write metrics: {0}")]
    Write(#[source] std::io::Error),
}

/// A set-once metrics destination.
#[derive(Debug, Default)]
pub struct MetricsWriter {
    dest: OnceLock<Mutex<File>>,
}

impl MetricsWriter {
    /// A writer with no destination yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            dest: OnceLock::new(),
        }
    }

    /// Open `path` as the destination.
    ///
    /// # Errors
    /// [`MetricsError::AlreadyInitialized`] on a second call, [`MetricsError::Open`] if the
    /// path cannot be opened (the writer stays uninitialised then).
    pub fn init(&self, path: &Path) -> Result<(), MetricsError> {
        if self.dest.get().is_some() {
            return Err(MetricsError::AlreadyInitialized);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(MetricsError::Open)?;
        self.dest
            .set(Mutex::new(file))
            .map_err(|_| MetricsError::AlreadyInitialized)
    }

    /// Whether a destination is set.
    #[must_use]
    pub fn is_initialized(&self) -> bool {
        self.dest.get().is_some()
    }

    /// Write one line of `metrics`: `Ok(true)` if written, `Ok(false)` if not initialised.
    ///
    /// # Errors
    /// Serialisation or write failure; `logger.metrics_fails` / `logger.missed_metrics_count`
    /// count them too.
    pub fn write(&self, metrics: &SquibMetrics) -> Result<bool, MetricsError> {
        let Some(dest) = self.dest.get() else {
            return Ok(false);
        };
        let mut line = registry::render_line(metrics, &registry::REGISTRY, crate::time::utc_ms())
            .map_err(|e| {
            METRICS.logger.metrics_fails.inc();
            MetricsError::Serde(e)
        })?;
        line.push(b'\n');
        let mut file = dest.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line).map_err(|e| {
            METRICS.logger.missed_metrics_count.inc();
            MetricsError::Write(e)
        })?;
        Ok(true)
    }
}

static WRITER: MetricsWriter = MetricsWriter::new();

/// Set the process-wide metrics destination (`--metrics-path` or `PUT /metrics`).
///
/// # Errors
/// See [`MetricsWriter::init`].
pub fn init_metrics(path: impl AsRef<Path>) -> Result<(), MetricsError> {
    WRITER.init(path.as_ref())
}

/// Write one line of [`METRICS`] to the process-wide destination.
///
/// # Errors
/// See [`MetricsWriter::write`].
pub fn write_metrics() -> Result<bool, MetricsError> {
    WRITER.write(&METRICS)
}
