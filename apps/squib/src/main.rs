//! `squib`: a Firecracker-compatible microVM monitor.
//!
//! The binary parses Firecracker's command line, sets up logging and metrics, starts the API
//! server thread (`fc_api`) unless `--no-api`, applies `--config-file` and `--metadata`, then
//! runs the VMM event loop on the main thread until the guest or a request ends it, and exits
//! with Firecracker's exit code.

mod cli;
mod panic_hook;
mod signals;
mod startup;

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = startup::run(std::env::args().skip(1));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
