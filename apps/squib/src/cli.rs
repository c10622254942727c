//! Firecracker's command line (`src/firecracker/src/main.rs`, parser `utils::arg_parser`).
//!
//! Launchers pass flags in Firecracker's `--name value` form: no `=`, no short flags, each flag
//! at most once. Errors use `arg_parser`'s wording and exit 153 (`FcExitCode::ArgParsing`); a
//! bad `--level` exits 152 (`BadConfiguration`). `--help`, `--version`,
//! `--snapshot-version` and `--describe-snapshot` print and exit ([`CliOutcome::PrintAndExit`]).
//!
//! Flags for features squib does not have yet (`--enable-pci`, `--seccomp-filter`) fail with
//! a message naming the feature instead of being ignored.

use std::path::PathBuf;

use squib_logger::logger::{Level, LoggerSettings};

use squib_api::version::FIRECRACKER_VERSION;
/// Default `--api-sock`.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Default `--id` (Firecracker's `DEFAULT_INSTANCE_ID`).
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Default `--http-api-max-payload-size` in bytes.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 51_200;
/// Longest accepted `--id`.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// Exit code of an argument error (`FcExitCode::ArgParsing`).
pub const EXIT_ARG_PARSING: i32 = 153;
/// Exit code of a bad `--level` (`FcExitCode::BadConfiguration`).
pub const EXIT_BAD_CONFIGURATION: i32 = 152;

/// One known flag: its name without `--`, whether it takes a value, and its help line.
struct Flag {
    name: &'static str,
    takes_value: bool,
    help: &'static str,
}

const fn flag(name: &'static str, takes_value: bool, help: &'static str) -> Flag {
    Flag {
        name,
        takes_value,
        help,
    }
}

/// Every flag of Firecracker's command line.
const FLAGS: &[Flag] = &[
    flag("api-sock", true, "Path to unix domain socket used by the API. [default: \"/run/firecracker.socket\"]"),
    flag("id", true, "MicroVM unique identifier. [default: \"anonymous-instance\"]"),
    flag("config-file", true, "Path to a file that contains the microVM configuration in JSON format."),
    flag("no-api", false, "Optional parameter which allows starting and using a microVM without an active API socket."),
    flag("metadata", true, "Path to a file that contains metadata in JSON format to add to the mmds."),
    flag("log-path", true, "Path to a fifo or a file used for configuring the logger on startup."),
    flag("level", true, "Set the logger level."),
    flag("module", true, "Set the logger module filter."),
    flag("show-level", false, "Whether or not to output the level in the logs."),
    flag("show-log-origin", false, "Whether or not to include the file path and line number of the log's origin."),
    flag("metrics-path", true, "Path to a fifo or a file used for configuring the metrics on startup."),
    flag("boot-timer", false, "Whether or not to load boot timer device for logging elapsed time since InstanceStart command."),
    flag("start-time-us", true, "Process start time (wall clock, microseconds)."),
    flag("start-time-cpu-us", true, "Process start CPU time (wall clock, microseconds)."),
    flag("parent-cpu-time-us", true, "Parent process CPU time (wall clock, microseconds)."),
    flag("http-api-max-payload-size", true, "Http API request payload max size, in bytes. [default: \"51200\"]"),
    flag("mmds-size-limit", true, "Mmds data store limit, in bytes."),
    flag("enable-pci", false, "Enables PCIe support (not supported by squib yet)."),
    flag("seccomp-filter", true, "Optional parameter which allows specifying the path to a custom seccomp filter (not supported by squib yet)."),
    flag("no-seccomp", false, "Optional parameter which allows starting and using a microVM without seccomp filtering."),
    flag("version", false, "Print the binary version number."),
    flag("snapshot-version", false, "Print the supported data format version."),
    flag("describe-snapshot", true, "Print the data format version of the provided snapshot state file."),
    flag("help", false, "Show the help message."),
];

/// A parsed command line that starts squib.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    /// `--api-sock`.
    pub api_sock: PathBuf,
    /// `--id`: 1–64 characters, alphanumeric or `-`.
    pub id: String,
    /// `--config-file`: boot from this `GET /vm/config`-shaped JSON.
    pub config_file: Option<PathBuf>,
    /// `--no-api`: serve no socket (requires `config_file`).
    pub no_api: bool,
    /// `--metadata`: MMDS contents at start.
    pub metadata: Option<PathBuf>,
    /// `--log-path`.
    pub log_path: Option<PathBuf>,
    /// `--level`.
    pub level: Option<Level>,
    /// `--module`.
    pub module: Option<String>,
    /// `--show-level`.
    pub show_level: bool,
    /// `--show-log-origin`.
    pub show_log_origin: bool,
    /// `--metrics-path`.
    pub metrics_path: Option<PathBuf>,
    /// `--boot-timer`.
    pub boot_timer: bool,
    /// `--start-time-us` (monotonic µs, from a jailer).
    pub start_time_us: Option<u64>,
    /// `--start-time-cpu-us`.
    pub start_time_cpu_us: Option<u64>,
    /// `--parent-cpu-time-us`.
    pub parent_cpu_time_us: Option<u64>,
    /// `--http-api-max-payload-size`.
    pub http_api_max_payload_size: usize,
    /// `--mmds-size-limit` (`None` = the payload size).
    pub mmds_size_limit: Option<usize>,
    /// `--no-seccomp`. squib installs no seccomp filter yet, so this changes nothing today;
    /// it is accepted because launchers pass it and it asks for what squib already does.
    pub no_seccomp: bool,
}

impl Default for Cli {
    fn default() -> Self {
        Self {
            api_sock: PathBuf::from(DEFAULT_API_SOCK),
            id: DEFAULT_INSTANCE_ID.to_string(),
            config_file: None,
            no_api: false,
            metadata: None,
            log_path: None,
            level: None,
            module: None,
            show_level: false,
            show_log_origin: false,
            metrics_path: None,
            boot_timer: false,
            start_time_us: None,
            start_time_cpu_us: None,
            parent_cpu_time_us: None,
            http_api_max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            mmds_size_limit: None,
            no_seccomp: false,
        }
    }
}

impl Cli {
    /// The logger settings the command line asks for.
    #[must_use]
    pub fn logger_settings(&self) -> LoggerSettings {
        LoggerSettings {
            log_path: self.log_path.clone(),
            level: self.level,
            show_level: Some(self.show_level),
            show_log_origin: Some(self.show_log_origin),
            module: self.module.clone(),
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliOutcome {
    /// Start squib (boxed: a `Cli` is much larger than the other variant).
    Run(Box<Cli>),
    /// Print `text` to stdout and exit with `code` (`--help`, `--version`, ...).
    PrintAndExit {
        /// What to print.
        text: String,
        /// The exit code.
        code: i32,
    },
}

/// A command line squib cannot run with (texts follow Firecracker's `arg_parser`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An unknown flag or a stray value.
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    UnexpectedArgument(String),
    /// A flag that needs a value got none.
    #[error("The argument '{0}' requires a value, but none was supplied.")]
    MissingValue(String),
    /// A flag was given twice.
    #[error("The argument '{0}' was provided more than once.")]
    DuplicateArgument(String),
    /// A flag needs another one that is absent.
    #[error("Argument '{0}' required, but not found.")]
    MissingArgument(String),
    /// Two flags that exclude each other.
    #[error("Argument '{0}' cannot be used together with argument '{1}'.")]
    ForbiddenArgument(String, String),
    /// A numeric flag's value is not a number.
    #[error("Invalid value for argument '{arg}': '{value}' is not a valid number.")]
    InvalidNumber {
        /// The flag.
        arg: String,
        /// What was given.
        value: String,
    },
    /// `--id` is empty, too long or has characters other than alphanumerics and `-`.
    #[error("Invalid instance ID: '{0}' must be 1 to 64 characters, alphanumeric or '-'.")]
    InvalidId(String),
    /// `--level` names no level.
    #[error("Invalid value for logger level: {0}. Possible values: [Error, Warning, Info, Debug, Trace, Off]")]
    BadLevel(String),
    /// A flag for a feature squib does not have yet.
    #[error("The argument '{flag}' is not supported by squib: {feature} is not implemented.")]
    Unsupported {
        /// The flag.
        flag: &'static str,
        /// The missing feature.
        feature: &'static str,
    },
}

impl CliError {
    /// The process exit code for this error (Firecracker's `FcExitCode`).
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadLevel(_) => EXIT_BAD_CONFIGURATION,
            _ => EXIT_ARG_PARSING,
        }
    }
}

/// Parse the arguments after the program name.
///
/// # Errors
/// [`CliError`] for anything Firecracker would reject, and for flags of missing features.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<CliOutcome, CliError> {
    let given = collect(args)?;
    if given.has("help") {
        return Ok(CliOutcome::PrintAndExit {
            text: help_text(),
            code: 0,
        });
    }
    if given.has("version") {
        return Ok(CliOutcome::PrintAndExit {
            text: version_text(),
            code: 0,
        });
    }
    if given.has("snapshot-version") {
        return Ok(CliOutcome::PrintAndExit {
            text: format!("{}\n", squib_snapshot::SNAPSHOT_VERSION),
            code: 0,
        });
    }
    if let Some(path) = given.value("describe-snapshot") {
        return Ok(describe_snapshot(std::path::Path::new(path)));
    }
    check_combinations(&given)?;
    build(&given).map(|cli| CliOutcome::Run(Box::new(cli)))
}

/// `--describe-snapshot FILE`: the format version the state file was written with (its
/// checksum is not checked, so a damaged file still tells its version), or why it cannot be
/// read (exit 1).
fn describe_snapshot(path: &std::path::Path) -> CliOutcome {
    match squib_snapshot::describe(path) {
        Ok(version) => CliOutcome::PrintAndExit {
            text: format!("{version}\n"),
            code: 0,
        },
        Err(e) => CliOutcome::PrintAndExit {
            text: format!("Failed to describe the snapshot {}: {e}\n", path.display()),
            code: 1,
        },
    }
}

/// `--version` output: Firecracker's `Firecracker v<version>\n\n`, then squib's own version.
///
/// Launchers check it with "starts with `Firecracker`" and "contains `<version>`" (fctools
/// `VmmInstallation::verify`), which the extra line does not disturb.
#[must_use]
pub fn version_text() -> String {
    format!(
        "Firecracker v{FIRECRACKER_VERSION}\n\nsquib v{}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `--help` output: the version line, then every flag.
#[must_use]
pub fn help_text() -> String {
    use std::fmt::Write as _;
    let mut text = format!("Firecracker v{FIRECRACKER_VERSION}\n\noptional arguments:\n");
    for f in FLAGS {
        let value = if f.takes_value {
            format!(" <{}>", f.name)
        } else {
            String::new()
        };
        let _ = writeln!(text, "  --{}{value}\n        {}", f.name, f.help);
    }
    text
}

/// The flags given, each with its value (empty for switches), in order.
struct Given(Vec<(&'static str, String)>);

impl Given {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| *n == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn collect(args: impl IntoIterator<Item = String>) -> Result<Given, CliError> {
    let mut given: Vec<(&'static str, String)> = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let flag = arg
            .strip_prefix("--")
            .and_then(|name| FLAGS.iter().find(|f| f.name == name))
            .ok_or_else(|| CliError::UnexpectedArgument(arg.clone()))?;
        if given.iter().any(|(n, _)| *n == flag.name) {
            return Err(CliError::DuplicateArgument(flag.name.to_string()));
        }
        let value = if flag.takes_value {
            match args.next_if(|next| !next.starts_with("--")) {
                Some(value) => value,
                None => return Err(CliError::MissingValue(flag.name.to_string())),
            }
        } else {
            String::new()
        };
        given.push((flag.name, value));
    }
    Ok(Given(given))
}

fn check_combinations(given: &Given) -> Result<(), CliError> {
    if given.has("no-api") && !given.has("config-file") {
        return Err(CliError::MissingArgument("config-file".into()));
    }
    if given.has("no-seccomp") && given.has("seccomp-filter") {
        return Err(CliError::ForbiddenArgument(
            "no-seccomp".into(),
            "seccomp-filter".into(),
        ));
    }
    let unsupported = [
        ("enable-pci", "the virtio-pci transport"),
        ("seccomp-filter", "loading a custom seccomp filter"),
    ];
    for (flag, feature) in unsupported {
        if given.has(flag) {
            return Err(CliError::Unsupported { flag, feature });
        }
    }
    Ok(())
}

fn build(given: &Given) -> Result<Cli, CliError> {
    let path = |name: &str| given.value(name).map(PathBuf::from);
    let defaults = Cli::default();
    let id = given.value("id").map_or(defaults.id, str::to_string);
    if !valid_id(&id) {
        return Err(CliError::InvalidId(id));
    }
    let level = given
        .value("level")
        .map(|text| {
            text.parse::<Level>()
                .map_err(|_| CliError::BadLevel(text.to_string()))
        })
        .transpose()?;
    Ok(Cli {
        api_sock: path("api-sock").unwrap_or(defaults.api_sock),
        id,
        config_file: path("config-file"),
        no_api: given.has("no-api"),
        metadata: path("metadata"),
        log_path: path("log-path"),
        level,
        module: given.value("module").map(str::to_string),
        show_level: given.has("show-level"),
        show_log_origin: given.has("show-log-origin"),
        metrics_path: path("metrics-path"),
        boot_timer: given.has("boot-timer"),
        start_time_us: number(given, "start-time-us")?,
        start_time_cpu_us: number(given, "start-time-cpu-us")?,
        parent_cpu_time_us: number(given, "parent-cpu-time-us")?,
        http_api_max_payload_size: number(given, "http-api-max-payload-size")?
            .unwrap_or(defaults.http_api_max_payload_size),
        mmds_size_limit: number(given, "mmds-size-limit")?,
        no_seccomp: given.has("no-seccomp"),
    })
}

fn number<T: std::str::FromStr>(given: &Given, name: &str) -> Result<Option<T>, CliError> {
    given
        .value(name)
        .map(|value| {
            value.parse::<T>().map_err(|_| CliError::InvalidNumber {
                arg: name.to_string(),
                value: value.to_string(),
            })
        })
        .transpose()
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_INSTANCE_ID_LEN).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests;
