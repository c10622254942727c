//! `squib-rebase-snap`: a drop-in replacement for Firecracker's `rebase-snap`.
//!
//! `squib-rebase-snap --base-file <base> --diff-file <diff>` copies every data range of a
//! sparse Diff memory file onto the same offsets of its base, in place, so that the base
//! becomes the Full memory file of the later snapshot (see `squib_snapshot::rebase`). The base
//! is `fsync`ed before the tool exits 0. Errors go to stderr, with Firecracker's texts, and
//! the exit code is 1.

mod args;

use std::fs::{File, OpenOptions};
use std::io;
use std::process::ExitCode;

use crate::args::{ArgsError, Command};

/// A file named on the command line that cannot be opened (Firecracker's texts).
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("Invalid base file: {0}")]
    InvalidBaseFile(#[source] io::Error),
    #[error("Invalid diff file: {0}")]
    InvalidDiffFile(#[source] io::Error),
}

/// Everything that makes the tool exit 1.
#[derive(Debug, thiserror::Error)]
enum RebaseSnapError {
    #[error("Arguments parsing error: {0} \n\nFor more information try --help.")]
    ArgParse(#[source] ArgsError),
    #[error("Error parsing the cmd line args: {0}")]
    SnapFile(#[source] FileError),
    #[error("Error merging the files: {0}")]
    RebaseFiles(#[source] squib_snapshot::RebaseError),
    #[error("Error syncing the base file: {0}")]
    SyncBase(#[source] io::Error),
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Does what the command line asks; returns what to print on stdout.
fn run(args: impl IntoIterator<Item = String>) -> Result<String, RebaseSnapError> {
    let (base_path, diff_path) = match args::parse(args).map_err(RebaseSnapError::ArgParse)? {
        Command::Help => return Ok(args::help_text()),
        Command::Version => return Ok(args::version_text()),
        Command::Rebase {
            base_file,
            diff_file,
        } => (base_file, diff_file),
    };
    let (base, diff) = open_files(&base_path, &diff_path).map_err(RebaseSnapError::SnapFile)?;
    squib_snapshot::rebase(&base, &diff).map_err(RebaseSnapError::RebaseFiles)?;
    // Firecracker's tool leaves this to the page cache; a merged snapshot is worth keeping.
    base.sync_all().map_err(RebaseSnapError::SyncBase)?;
    Ok(String::new())
}

/// The base for writing (it is updated in place, never created) and the diff for reading.
fn open_files(base_path: &str, diff_path: &str) -> Result<(File, File), FileError> {
    let base = OpenOptions::new()
        .write(true)
        .open(base_path)
        .map_err(FileError::InvalidBaseFile)?;
    let diff = File::open(diff_path).map_err(FileError::InvalidDiffFile)?;
    Ok((base, diff))
}
