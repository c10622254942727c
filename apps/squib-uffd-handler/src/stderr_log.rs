//! A logger for the `log` macros of this binary and of `squib-uffd`: one line per record on
//! standard error, with the level.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // Nowhere to report a failed write to standard error.
            let _ = writeln!(
                std::io::stderr().lock(),
                "squib-uffd-handler [{}] {}",
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

/// Installs the logger at `Info` (errors, warnings and the summary line).
pub fn init() {
    // Fails only if a logger is already installed, which then keeps working.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
