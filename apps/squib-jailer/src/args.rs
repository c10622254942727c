//! Firecracker's jailer command line (`src/jailer/src/main.rs`, parser `utils::arg_parser`).
//!
//! The shape follows `arg_parser` byte for byte, because launchers build these command lines and
//! grep the errors: flags are `--name value` only (no `=`, no short flags); a value may not
//! start with `--`; a flag is given at most once unless it is `--cgroup` or `--resource-limit`;
//! everything after a lone `--` is forwarded untouched to the jailed binary. `--help` and
//! `--version` anywhere before `--` win over every other check. Missing required flags are
//! reported in alphabetical order, as `arg_parser` walks a `BTreeMap`.
//!
//! This module only checks the shape of the line; what the values mean is checked by
//! [`crate::env`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The Firecracker release whose jailer this binary stands in for (squib's
/// `squib_api::version::FIRECRACKER_VERSION`).
pub const FIRECRACKER_VERSION: &str = "1.17.0";

/// One flag of the command line.
struct Flag {
    name: &'static str,
    takes_value: bool,
    required: bool,
    multiple: bool,
    default: Option<&'static str>,
    help: &'static str,
}

/// Every flag, in alphabetical order (the order of `--help` and of "required" errors).
const FLAGS: &[Flag] = &[
    Flag { name: "cgroup", takes_value: true, required: false, multiple: true, default: None,
        help: "Cgroup and value to be set by the jailer. It must follow this format: <cgroup_file>=<value> (e.g cpu.shares=10). This argument can be used multiple times to add multiple cgroups." },
    Flag { name: "cgroup-version", takes_value: true, required: false, multiple: false, default: Some("1"),
        help: "Select the cgroup version used by the jailer." },
    Flag { name: "chroot-base-dir", takes_value: true, required: false, multiple: false, default: Some("/srv/jailer"),
        help: "The base folder where chroot jails are located." },
    Flag { name: "daemonize", takes_value: false, required: false, multiple: false, default: None,
        help: "Daemonize the jailer before exec, by invoking setsid(), and redirecting the standard I/O file descriptors to /dev/null." },
    Flag { name: "exec-file", takes_value: true, required: true, multiple: false, default: None,
        help: "File path to exec into." },
    Flag { name: "gid", takes_value: true, required: true, multiple: false, default: None,
        help: "The group identifier the jailer switches to after exec." },
    Flag { name: "help", takes_value: false, required: false, multiple: false, default: None,
        help: "Show the help message." },
    Flag { name: "id", takes_value: true, required: true, multiple: false, default: None,
        help: "Jail ID." },
    Flag { name: "netns", takes_value: true, required: false, multiple: false, default: None,
        help: "Path to the network namespace this microVM should join." },
    Flag { name: "new-pid-ns", takes_value: false, required: false, multiple: false, default: None,
        help: "Exec into a new PID namespace." },
    Flag { name: "parent-cgroup", takes_value: true, required: false, multiple: false, default: None,
        help: "Parent cgroup in which the cgroup of this microvm will be placed." },
    Flag { name: "resource-limit", takes_value: true, required: false, multiple: true, default: None,
        help: "Resource limit values to be set by the jailer. It must follow this format: <resource>=<value> (e.g no-file=1024). This argument can be used multiple times to add multiple resource limits. Current available resource values are:\n\t\tfsize: The maximum size in bytes for files created by the process.\n\t\tno-file: Specifies a value one greater than the maximum file descriptor number that can be opened by this process." },
    Flag { name: "uid", takes_value: true, required: true, multiple: false, default: None,
        help: "The user identifier the jailer switches to after exec." },
    Flag { name: "version", takes_value: false, required: false, multiple: false, default: None,
        help: "Print the binary version number." },
];

/// A command line that does not have the jailer's shape (texts are `arg_parser`'s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An unknown flag or a stray value.
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    UnexpectedArgument(String),
    /// A flag that needs a value got none.
    #[error("The argument '{0}' requires a value, but none was supplied.")]
    MissingValue(String),
    /// A single-use flag was given twice.
    #[error("The argument '{0}' was provided more than once.")]
    DuplicateArgument(String),
    /// A required flag is absent.
    #[error("Argument '{0}' required, but not found.")]
    MissingArgument(String),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print [`help_text`] and exit 0.
    Help,
    /// Print [`version_text`] and exit 0.
    Version,
    /// Build the jail.
    Jail(Arguments),
}

/// A well-formed jail command line: each flag's values, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arguments {
    values: BTreeMap<&'static str, Vec<String>>,
    extra: Vec<String>,
}

impl Arguments {
    /// The value of a single-valued flag (or its default).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of a repeatable flag, in command-line order.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether a switch (a flag without a value) was given.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The arguments after `--`, forwarded to the jailed binary.
    pub fn extra(&self) -> &[String] {
        &self.extra
    }
}

/// Parses the arguments after the program name.
///
/// # Errors
/// [`ArgsError`] when the line does not have the jailer's shape.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut args: Vec<String> = args.into_iter().collect();
    let extra = match args.iter().position(|a| a == "--") {
        Some(at) => {
            let rest = args.split_off(at);
            rest[1..].to_vec()
        }
        None => Vec::new(),
    };
    if args.iter().any(|a| a == "--help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "--version") {
        return Ok(Command::Version);
    }
    let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let name = arg.strip_prefix("--").unwrap_or(&arg);
        let flag = FLAGS
            .iter()
            .find(|f| arg.starts_with("--") && f.name == name)
            .ok_or_else(|| ArgsError::UnexpectedArgument(name.to_string()))?;
        if values.contains_key(flag.name) && !flag.multiple {
            return Err(ArgsError::DuplicateArgument(flag.name.to_string()));
        }
        let value = if flag.takes_value {
            args.next_if(|next| !next.starts_with("--"))
                .ok_or_else(|| ArgsError::MissingValue(flag.name.to_string()))?
        } else {
            String::new()
        };
        values.entry(flag.name).or_default().push(value);
    }
    for flag in FLAGS {
        if flag.required && !values.contains_key(flag.name) {
            return Err(ArgsError::MissingArgument(flag.name.to_string()));
        }
        if let Some(default) = flag.default {
            values
                .entry(flag.name)
                .or_insert_with(|| vec![default.to_string()]);
        }
    }
    Ok(Command::Jail(Arguments { values, extra }))
}

/// `--version` output: Firecracker's `Jailer v<version>\n\n`, then squib-jailer's own version.
pub fn version_text() -> String {
    format!(
        "Jailer v{FIRECRACKER_VERSION}\n\nsquib-jailer v{}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `--help` output, laid out as `arg_parser::formatted_help` does.
pub fn help_text() -> String {
    let mut text = format!("Jailer v{FIRECRACKER_VERSION}\n\n");
    let sections = [
        ("required arguments:", true),
        ("optional arguments:", false),
    ];
    for (index, (title, required)) in sections.into_iter().enumerate() {
        let flags: Vec<(String, &Flag)> = FLAGS
            .iter()
            .filter(|f| f.required == required)
            .map(|f| (usage(f), f))
            .collect();
        let width = flags.iter().map(|(u, _)| u.len()).max().unwrap_or(0) + 3;
        if index > 0 {
            text.push('\n');
        }
        let _ = writeln!(text, "{title}");
        for (usage, flag) in flags {
            let default = flag
                .default
                .map(|d| format!(" [default: \"{d}\"]"))
                .unwrap_or_default();
            let _ = writeln!(text, "  {usage:width$}{}{default}", flag.help);
        }
    }
    text.push_str(
        "\nAny arguments after the -- separator will be supplied to the jailed binary.\n\n",
    );
    text
}

fn usage(flag: &Flag) -> String {
    if flag.takes_value {
        format!("--{0} <{0}>", flag.name)
    } else {
        format!("--{}", flag.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, ArgsError> {
        parse(args.iter().map(|s| (*s).to_string()))
    }

    fn jail(args: &[&str]) -> Arguments {
        match parse_strs(args) {
            Ok(Command::Jail(a)) => a,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    const REQUIRED: &[&str] = &["--id", "a", "--exec-file", "/f", "--uid", "1", "--gid", "2"];

    fn with_required(more: &[&str]) -> Vec<&'static str> {
        let mut all: Vec<&str> = REQUIRED.to_vec();
        all.extend_from_slice(more);
        all.into_iter()
            .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
            .collect()
    }

    #[test]
    fn parse_fills_defaults_and_keeps_values() {
        let a = jail(REQUIRED);
        assert_eq!(a.value("id"), Some("a"));
        assert_eq!(a.value("exec-file"), Some("/f"));
        assert_eq!(a.value("uid"), Some("1"));
        assert_eq!(a.value("gid"), Some("2"));
        assert_eq!(a.value("chroot-base-dir"), Some("/srv/jailer"));
        assert_eq!(a.value("cgroup-version"), Some("1"));
        assert_eq!(a.value("netns"), None);
        assert!(!a.has("daemonize"));
        assert!(a.values("cgroup").is_empty());
        assert!(a.extra().is_empty());
    }

    #[test]
    fn parse_collects_repeatable_flags_switches_and_forwarded_args() {
        let a = jail(&with_required(&[
            "--cgroup",
            "cpu.shares=10",
            "--daemonize",
            "--cgroup",
            "pids.max=5",
            "--resource-limit",
            "no-file=10",
            "--new-pid-ns",
            "--",
            "--api-sock",
            "/s",
            "--",
        ]));
        assert_eq!(a.values("cgroup"), ["cpu.shares=10", "pids.max=5"]);
        assert_eq!(a.values("resource-limit"), ["no-file=10"]);
        assert!(a.has("daemonize") && a.has("new-pid-ns"));
        assert_eq!(a.extra(), ["--api-sock", "/s", "--"]);
    }

    #[test]
    fn parse_rejects_equals_form_unknown_flags_and_stray_values() {
        let err = parse_strs(&["--id=abc"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Found argument 'id=abc' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            parse_strs(&["-x"]).unwrap_err(),
            ArgsError::UnexpectedArgument("-x".into())
        );
        assert_eq!(
            parse_strs(&["--uid", "1", "stray"]).unwrap_err(),
            ArgsError::UnexpectedArgument("stray".into())
        );
    }

    #[test]
    fn parse_rejects_missing_values_and_duplicates() {
        assert_eq!(
            parse_strs(&["--id"]).unwrap_err().to_string(),
            "The argument 'id' requires a value, but none was supplied."
        );
        assert_eq!(
            parse_strs(&["--id", "--uid", "1"]).unwrap_err(),
            ArgsError::MissingValue("id".into())
        );
        assert_eq!(
            parse_strs(&["--daemonize", "--daemonize"])
                .unwrap_err()
                .to_string(),
            "The argument 'daemonize' was provided more than once."
        );
        assert_eq!(
            parse_strs(&["--id", "a", "--id", "b"]).unwrap_err(),
            ArgsError::DuplicateArgument("id".into())
        );
    }

    #[test]
    fn parse_reports_missing_required_flags_alphabetically() {
        assert_eq!(
            parse_strs(&["--uid", "1"]).unwrap_err().to_string(),
            "Argument 'exec-file' required, but not found."
        );
        assert_eq!(
            parse_strs(&["--gid", "1", "--uid", "1", "--exec-file", "x"]).unwrap_err(),
            ArgsError::MissingArgument("id".into())
        );
        assert_eq!(
            parse_strs(&["--", "--version"]).unwrap_err(),
            ArgsError::MissingArgument("exec-file".into())
        );
    }

    #[test]
    fn help_and_version_win_over_other_errors() {
        assert_eq!(parse_strs(&["--help", "--bogus"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["--version", "--id"]), Ok(Command::Version));
        assert_eq!(
            parse_strs(&["--daemonize", "--daemonize", "--version"]),
            Ok(Command::Version)
        );
    }

    #[test]
    fn help_text_matches_arg_parser_layout() {
        let help = help_text();
        assert!(help.starts_with("Jailer v1.17.0\n\nrequired arguments:\n  --exec-file <exec-file>   File path to exec into.\n  --gid <gid>               The group"));
        assert!(help.contains(
            "\n\noptional arguments:\n  --cgroup <cgroup>                     Cgroup and value"
        ));
        assert!(help.contains("  --cgroup-version <cgroup-version>     Select the cgroup version used by the jailer. [default: \"1\"]\n"));
        assert!(help.contains("  --help                                Show the help message.\n"));
        assert!(help.ends_with("  --version                             Print the binary version number.\n\nAny arguments after the -- separator will be supplied to the jailed binary.\n\n"));
        assert!(version_text().starts_with("Jailer v1.17.0\n\n"));
    }
}
