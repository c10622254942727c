//! `PUT /logger`: the API's logger configuration applied to `squib-logger`.

use squib_api::action::ApiResponse;
use squib_api::schemas::{LogLevel, LoggerConfig};
use squib_logger::logger::{Level, LoggerSettings};

use crate::controller::ActionResult;
use crate::vmm::Vmm;

impl Vmm {
    /// `PUT /logger`: configure `squib-logger`.
    pub(crate) fn put_logger(&mut self, config: LoggerConfig) -> ActionResult {
        let settings = LoggerSettings {
            log_path: config.log_path,
            level: config.level.map(to_logger_level),
            show_level: config.show_level,
            show_log_origin: config.show_log_origin,
            module: config.module,
        };
        squib_logger::logger::configure(settings)?;
        Ok(ApiResponse::NoContent)
    }
}

fn to_logger_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Off => Level::Off,
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warn,
        LogLevel::Error => Level::Error,
    }
}
