//! `PUT /logger`: log file, level and format switches.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SchemaError;
use super::paths::opt_host_path;

/// Firecracker's log levels (`Warn` and `Warning` are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum LogLevel {
    Off,
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl std::str::FromStr for LogLevel {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            _ => return Err(SchemaError::InvalidLogLevel(s.to_owned())),
        })
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Off => Self::Off,
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

/// `PUT /logger` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogger {
    #[serde(default)]
    log_path: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    show_level: Option<bool>,
    #[serde(default)]
    show_log_origin: Option<bool>,
    #[serde(default)]
    module: Option<String>,
}

/// A validated logger configuration (absent fields keep their current value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoggerConfig {
    /// Log file or FIFO.
    pub log_path: Option<PathBuf>,
    /// Level filter.
    pub level: Option<LogLevel>,
    /// Print the level in each line.
    pub show_level: Option<bool>,
    /// Print file:line in each line.
    pub show_log_origin: Option<bool>,
    /// Module path prefix filter.
    pub module: Option<String>,
}

impl TryFrom<RawLogger> for LoggerConfig {
    type Error = SchemaError;

    fn try_from(raw: RawLogger) -> Result<Self, SchemaError> {
        Ok(Self {
            log_path: opt_host_path("log_path", raw.log_path)?,
            level: raw.level.as_deref().map(str::parse).transpose()?,
            show_level: raw.show_level,
            show_log_origin: raw.show_log_origin,
            module: raw.module,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_case_insensitive() {
        assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("debug".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert!("loud".parse::<LogLevel>().is_err());
        assert_eq!(
            log::LevelFilter::from(LogLevel::Warn),
            log::LevelFilter::Warn
        );
    }
}
