//! The process-wide `log::Log` implementation, in Firecracker's line format.
//!
//! A line is `<YYYY-MM-DDTHH:MM:SS.nnnnnnnnn> [<instance id>:<thread>[:<LEVEL>][:<file>:<line>]] <msg>`
//! (Firecracker `src/vmm/src/logger/logging.rs`): the timestamp is UTC, the thread is
//! `std::thread::current().name()` (`main`, `fc_api`, `fc_vcpu N`, `-` when unnamed), the level
//! and origin appear only when `show_level` / `show_log_origin` are set. The `module` setting keeps
//! only records whose module path starts with it.
//!
//! [`init`] installs the logger early (stdout, `Info`); [`configure`] applies `--log-path`
//! and friends or `PUT /logger`. Like Firecracker, every call may change the settings again
//! (the API allows `PUT /logger` only before boot); fields left `None` keep their value, except
//! `level`, which falls back to `Info` as in Firecracker. The target is opened with
//! `O_APPEND | O_NONBLOCK`, read-write so a FIFO without a reader does not fail, and created
//! if missing. A line that cannot be written bumps `logger.missed_log_count`.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize};

use crate::metrics::METRICS;

/// Instance id used before [`init`] names one (Firecracker's `DEFAULT_INSTANCE_ID`).
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";

/// A log level filter as the API and `--level` spell it (case-insensitive, `Warning` = `Warn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Level {
    /// Nothing is logged.
    Off,
    /// Everything.
    Trace,
    /// Debug and above.
    Debug,
    /// Info and above (the default).
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

impl From<Level> for log::LevelFilter {
    fn from(level: Level) -> Self {
        match level {
            Level::Off => Self::Off,
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// `--level` or `level` named no known level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse string to level filter: {0}")]
pub struct LevelParseError(pub String);

impl FromStr for Level {
    type Err = LevelParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            _ => Err(LevelParseError(s.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom("Invalid LevelFilter"))
    }
}

/// Logger settings from the command line or `PUT /logger`; `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggerSettings {
    /// File or FIFO to write to (default stdout).
    pub log_path: Option<PathBuf>,
    /// Level filter (`None` = `Info`, as in Firecracker).
    pub level: Option<Level>,
    /// Add `:<LEVEL>` to the prefix.
    pub show_level: Option<bool>,
    /// Add `:<file>:<line>` to the prefix.
    pub show_log_origin: Option<bool>,
    /// Keep only records whose module path starts with this.
    pub module: Option<String>,
}

/// Why the logger could not be installed or configured.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// Another `log::Log` is already installed.
    #[error("Logger error: {0}")]
    Init(#[source] log::SetLoggerError),
    /// The log target could not be opened (Firecracker's `LoggerUpdateError` text).
    #[error("Failed to open target file: {0}")]
    Open(#[source] std::io::Error),
}

#[derive(Debug)]
struct Config {
    target: Option<File>,
    level: log::LevelFilter,
    module: Option<String>,
    show_level: bool,
    show_log_origin: bool,
}

/// A logger writing Firecracker's line format.
#[derive(Debug)]
pub struct Logger {
    instance_id: OnceLock<String>,
    config: Mutex<Config>,
}

static LOGGER: Logger = Logger::new();

impl Default for Logger {
    fn default() -> Self {
        Self::new()
    }
}

impl Logger {
    /// A logger to stdout at `Info`, no level, no origin, no module filter.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            instance_id: OnceLock::new(),
            config: Mutex::new(Config {
                target: None,
                level: log::LevelFilter::Info,
                module: None,
                show_level: false,
                show_log_origin: false,
            }),
        }
    }

    /// Set the instance id (the first call wins).
    pub fn set_instance_id(&self, id: &str) {
        let _ = self.instance_id.set(id.to_string());
    }

    fn instance_id(&self) -> &str {
        self.instance_id
            .get()
            .map_or(DEFAULT_INSTANCE_ID, String::as_str)
    }

    /// Apply `settings`; returns the level filter now in force.
    ///
    /// # Errors
    /// [`LoggerError::Open`] if `log_path` cannot be opened; nothing is changed then.
    pub fn apply(&self, settings: LoggerSettings) -> Result<log::LevelFilter, LoggerError> {
        let target = settings
            .log_path
            .map(|path| open_target(&path))
            .transpose()?;
        let level = log::LevelFilter::from(settings.level.unwrap_or_default());
        let mut config = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        config.level = level;
        if let Some(file) = target {
            config.target = Some(file);
        }
        if let Some(show_level) = settings.show_level {
            config.show_level = show_level;
        }
        if let Some(show_log_origin) = settings.show_log_origin {
            config.show_log_origin = show_log_origin;
        }
        if let Some(module) = settings.module {
            config.module = Some(module);
        }
        Ok(level)
    }
}

fn open_target(path: &std::path::Path) -> Result<File, LoggerError> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(LoggerError::Open)
}

/// Build one line (with its trailing newline) in Firecracker's format.
#[must_use]
pub fn format_line(
    timestamp: &str,
    instance_id: &str,
    thread: &str,
    level: Option<log::Level>,
    origin: Option<(&str, Option<u32>)>,
    message: &fmt::Arguments<'_>,
) -> String {
    use fmt::Write as _;
    let mut line = format!("{timestamp} [{instance_id}:{thread}");
    if let Some(level) = level {
        let _ = write!(line, ":{level}");
    }
    if let Some((file, number)) = origin {
        match number {
            Some(n) => {
                let _ = write!(line, ":{file}:{n}");
            }
            None => {
                let _ = write!(line, ":{file}:?");
            }
        }
    }
    let _ = writeln!(line, "] {message}");
    line
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let config = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metadata.level() <= config.level
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut config = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.level() > config.level {
            return;
        }
        if let Some(filter) = &config.module {
            if !record
                .module_path()
                .is_some_and(|m| m.starts_with(filter.as_str()))
            {
                return;
            }
        }
        let current = std::thread::current();
        let line = format_line(
            &crate::time::log_timestamp(),
            self.instance_id(),
            current.name().unwrap_or("-"),
            config.show_level.then(|| record.level()),
            config
                .show_log_origin
                .then(|| (record.file().unwrap_or("?"), record.line())),
            record.args(),
        );
        let result = match config.target.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => std::io::stdout().lock().write_all(line.as_bytes()),
        };
        if result.is_err() {
            METRICS.logger.missed_log_count.inc();
        }
    }

    fn flush(&self) {
        let mut config = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = match config.target.as_mut() {
            Some(file) => file.flush(),
            None => std::io::stdout().flush(),
        };
    }
}

/// Install the process-wide logger (stdout, `Info`) with `instance_id` in every line.
///
/// # Errors
/// [`LoggerError::Init`] if a logger is already installed.
pub fn init(instance_id: &str) -> Result<(), LoggerError> {
    LOGGER.set_instance_id(instance_id);
    log::set_logger(&LOGGER).map_err(LoggerError::Init)?;
    log::set_max_level(log::LevelFilter::Info);
    Ok(())
}

/// Apply `settings` to the process-wide logger (command line or `PUT /logger`).
///
/// # Errors
/// [`LoggerError::Open`] if the log path cannot be opened.
pub fn configure(settings: LoggerSettings) -> Result<(), LoggerError> {
    let level = LOGGER.apply(settings)?;
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
#[path = "logger_tests.rs"]
mod tests;
