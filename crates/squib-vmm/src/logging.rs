//! `PUT /logger`: the API's logger configuration applied to `squib-logger`.

use squib_api::action::ApiResponse;
use squib_api::schemas::{LogLevel, LoggerConfig};
use squib_logger::logger::Level;

use crate::controller::fault;

/// Apply a `PUT /logger` body.
pub(crate) fn put_logger(config: LoggerConfig) -> ApiResponse {
    let settings = squib_logger::logger::LoggerSettings {
        log_path: config.log_path,
        level: config.level.map(to_logger_level),
        show_level: config.show_level,
        show_log_origin: config.show_log_origin,
        module: config.module,
    };
    match squib_logger::logger::configure(settings) {
        Ok(()) => ApiResponse::NoContent,
        Err(e) => fault("Logger error", e),
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
