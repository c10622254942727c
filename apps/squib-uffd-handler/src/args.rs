//! The command line: `<socket-path> <memory-file> [--mode on-demand|fault-all]`.

use std::ffi::OsString;
use std::path::PathBuf;

use squib_uffd::FaultMode;

/// How to run the handler.
pub const USAGE: &str =
    "usage: squib-uffd-handler <socket-path> <memory-file> [--mode on-demand|fault-all]

Listens on <socket-path> for one VMM restoring a snapshot with a Uffd memory backend and
serves its guest memory page faults from <memory-file>, the snapshot's memory file, until
the VMM goes away.

  --mode on-demand   copy one page per fault (the default)
  --mode fault-all   copy all guest memory at the first fault";

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// Where to listen for the VMM.
    pub socket: PathBuf,
    /// The snapshot memory file.
    pub memory_file: PathBuf,
    /// How much a fault fills.
    pub mode: FaultMode,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve a VMM.
    Run(Args),
    /// Print [`USAGE`].
    Help,
}

/// Parses the arguments after the program name. The error says what is wrong.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut positional = Vec::new();
    let mut mode = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("--mode") => {
                let value = args.next().ok_or("--mode needs a value")?;
                if mode.is_some() {
                    return Err("--mode given twice".into());
                }
                mode = Some(parse_mode(&value.to_string_lossy())?);
            }
            Some(flag) if flag.starts_with("--mode=") => {
                if mode.is_some() {
                    return Err("--mode given twice".into());
                }
                mode = Some(parse_mode(&flag["--mode=".len()..])?);
            }
            Some(flag) if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option {flag}"));
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [socket, memory_file]: [PathBuf; 2] = positional.try_into().map_err(|given: Vec<_>| {
        format!(
            "expected <socket-path> and <memory-file>, got {} argument(s)",
            given.len()
        )
    })?;
    Ok(Command::Run(Args {
        socket,
        memory_file,
        mode: mode.unwrap_or(FaultMode::OnDemand),
    }))
}

fn parse_mode(value: &str) -> Result<FaultMode, String> {
    match value {
        "on-demand" => Ok(FaultMode::OnDemand),
        "fault-all" => Ok(FaultMode::FaultAll),
        other => Err(format!(
            "unknown --mode {other:?}: expected on-demand or fault-all"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    fn run(socket: &str, memory_file: &str, mode: FaultMode) -> Command {
        Command::Run(Args {
            socket: socket.into(),
            memory_file: memory_file.into(),
            mode,
        })
    }

    #[test]
    fn firecrackers_two_arguments_serve_on_demand() {
        assert_eq!(
            parse_strs(&["/run/h.sock", "/snap/mem"]),
            Ok(run("/run/h.sock", "/snap/mem", FaultMode::OnDemand))
        );
    }

    #[test]
    fn mode_may_come_anywhere_in_either_spelling() {
        assert_eq!(
            parse_strs(&["--mode", "fault-all", "s", "m"]),
            Ok(run("s", "m", FaultMode::FaultAll))
        );
        assert_eq!(
            parse_strs(&["s", "m", "--mode=on-demand"]),
            Ok(run("s", "m", FaultMode::OnDemand))
        );
        assert_eq!(parse_strs(&["s", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse_strs(&["s"]),
            Err("expected <socket-path> and <memory-file>, got 1 argument(s)".into())
        );
        assert_eq!(
            parse_strs(&["s", "m", "x"]),
            Err("expected <socket-path> and <memory-file>, got 3 argument(s)".into())
        );
        assert_eq!(
            parse_strs(&["s", "m", "--mode", "eager"]),
            Err("unknown --mode \"eager\": expected on-demand or fault-all".into())
        );
        assert_eq!(
            parse_strs(&["s", "m", "--mode"]),
            Err("--mode needs a value".into())
        );
        assert_eq!(
            parse_strs(&["s", "m", "--mode", "fault-all", "--mode=on-demand"]),
            Err("--mode given twice".into())
        );
        assert_eq!(
            parse_strs(&["s", "m", "--verbose"]),
            Err("unknown option --verbose".into())
        );
    }
}
