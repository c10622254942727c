//! `rebase-snap`'s command line: `--base-file <path> --diff-file <path>`, `--help`, `--version`.
//!
//! It has the shape of Firecracker's `utils::arg_parser`, so that scripts written for
//! Firecracker's tool get the same results and error texts: flags are `--name value` only (no
//! `=`, no short flags), a value may not start with `--`, each flag is given at most once,
//! `--help` and `--version` anywhere win over every other check, and missing required flags
//! are reported in alphabetical order.

use std::fmt::Write as _;

/// The Firecracker release whose `rebase-snap` this binary stands in for.
pub const FIRECRACKER_VERSION: &str = "1.17.0";

/// One flag of the command line.
struct Flag {
    name: &'static str,
    takes_value: bool,
    required: bool,
    help: &'static str,
}

/// Every flag, in alphabetical order (the order of `--help` and of "required" errors).
const FLAGS: &[Flag] = &[
    Flag {
        name: "base-file",
        takes_value: true,
        required: true,
        help: "File path of the base mem snapshot.",
    },
    Flag {
        name: "diff-file",
        takes_value: true,
        required: true,
        help: "File path of the diff mem snapshot.",
    },
    Flag {
        name: "help",
        takes_value: false,
        required: false,
        help: "Show the help message.",
    },
    Flag {
        name: "version",
        takes_value: false,
        required: false,
        help: "Print the binary version number.",
    },
];

/// A command line without the expected shape (texts are `arg_parser`'s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An unknown flag or a stray value.
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    UnexpectedArgument(String),
    /// A flag that needs a value got none.
    #[error("The argument '{0}' requires a value, but none was supplied.")]
    MissingValue(String),
    /// A flag was given twice.
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
    /// Merge the diff file onto the base file.
    Rebase {
        /// `--base-file`.
        base_file: String,
        /// `--diff-file`.
        diff_file: String,
    },
}

/// Parses the arguments after the program name.
///
/// # Errors
/// [`ArgsError`] when the line does not have the expected shape.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|a| a == "--help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "--version") {
        return Ok(Command::Version);
    }
    let mut base_file = None;
    let mut diff_file = None;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let flag = arg
            .strip_prefix("--")
            .and_then(|name| FLAGS.iter().find(|f| f.name == name))
            .ok_or_else(|| ArgsError::UnexpectedArgument(shown_name(&arg)))?;
        let slot = match flag.name {
            "base-file" => &mut base_file,
            "diff-file" => &mut diff_file,
            // `--help` and `--version` returned above.
            other => return Err(ArgsError::UnexpectedArgument(other.to_string())),
        };
        if slot.is_some() {
            return Err(ArgsError::DuplicateArgument(flag.name.to_string()));
        }
        let value = args
            .next_if(|next| !next.starts_with("--"))
            .ok_or_else(|| ArgsError::MissingValue(flag.name.to_string()))?;
        *slot = Some(value);
    }
    match (base_file, diff_file) {
        (Some(base_file), Some(diff_file)) => Ok(Command::Rebase {
            base_file,
            diff_file,
        }),
        (None, _) => Err(ArgsError::MissingArgument("base-file".into())),
        (_, None) => Err(ArgsError::MissingArgument("diff-file".into())),
    }
}

/// An argument as `arg_parser` names it in errors: without its leading `--`, unless nothing
/// would be left.
fn shown_name(arg: &str) -> String {
    match arg.strip_prefix("--") {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => arg.to_string(),
    }
}

/// `--version` output: Firecracker's `Rebase_snap v<version>`, then squib's own version.
pub fn version_text() -> String {
    format!(
        "Rebase_snap v{FIRECRACKER_VERSION}\n\nsquib-rebase-snap v{}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `--help` output: the tool's title and purpose, then the flags laid out as
/// `arg_parser::formatted_help` does.
pub fn help_text() -> String {
    let mut text = format!(
        "Rebase_snap v{FIRECRACKER_VERSION}\n\
         Tool that copies all the non-sparse sections from a diff file onto a base file.\n\n"
    );
    for (index, (title, required)) in [
        ("required arguments:", true),
        ("optional arguments:", false),
    ]
    .into_iter()
    .enumerate()
    {
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
            let _ = writeln!(text, "  {usage:width$}{}", flag.help);
        }
    }
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

    #[test]
    fn both_files_in_any_order() {
        let expected = Command::Rebase {
            base_file: "b".into(),
            diff_file: "d".into(),
        };
        assert_eq!(
            parse_strs(&["--base-file", "b", "--diff-file", "d"]),
            Ok(expected.clone())
        );
        assert_eq!(
            parse_strs(&["--diff-file", "d", "--base-file", "b"]),
            Ok(expected)
        );
    }

    #[test]
    fn missing_flags_are_reported_alphabetically() {
        assert_eq!(
            parse_strs(&[]).unwrap_err().to_string(),
            "Argument 'base-file' required, but not found."
        );
        assert_eq!(
            parse_strs(&["--diff-file", "d"]).unwrap_err(),
            ArgsError::MissingArgument("base-file".into())
        );
        assert_eq!(
            parse_strs(&["--base-file", "b"]).unwrap_err(),
            ArgsError::MissingArgument("diff-file".into())
        );
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert_eq!(
            parse_strs(&["--base-file=b"]).unwrap_err().to_string(),
            "Found argument 'base-file=b' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            parse_strs(&["stray"]).unwrap_err(),
            ArgsError::UnexpectedArgument("stray".into())
        );
        assert_eq!(
            parse_strs(&["--"]).unwrap_err(),
            ArgsError::UnexpectedArgument("--".into())
        );
        assert_eq!(
            parse_strs(&["--base-file", "--diff-file", "d"])
                .unwrap_err()
                .to_string(),
            "The argument 'base-file' requires a value, but none was supplied."
        );
        assert_eq!(
            parse_strs(&["--base-file", "a", "--base-file", "b"])
                .unwrap_err()
                .to_string(),
            "The argument 'base-file' was provided more than once."
        );
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse_strs(&["--bogus", "--help"]), Ok(Command::Help));
        assert_eq!(
            parse_strs(&["--base-file", "--version"]),
            Ok(Command::Version)
        );
    }

    #[test]
    fn help_text_layout() {
        assert_eq!(
            help_text(),
            "Rebase_snap v1.17.0\n\
             Tool that copies all the non-sparse sections from a diff file onto a base file.\n\
             \n\
             required arguments:\n  \
             --base-file <base-file>   File path of the base mem snapshot.\n  \
             --diff-file <diff-file>   File path of the diff mem snapshot.\n\
             \n\
             optional arguments:\n  \
             --help      Show the help message.\n  \
             --version   Print the binary version number.\n"
        );
        assert!(version_text().starts_with("Rebase_snap v1.17.0\n"));
    }
}
