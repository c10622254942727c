//! `squib-uffd-handler`: an example page-fault handler for snapshot restores with a `Uffd`
//! memory backend, for squib and for Firecracker alike.
//!
//! `squib-uffd-handler <socket-path> <memory-file> [--mode on-demand|fault-all]` binds
//! `<socket-path>`, accepts one VMM, receives its guest memory description and userfaultfd,
//! and fills guest pages from `<memory-file>` as the guest touches them, until the VMM goes
//! away. With `--mode fault-all` the first fault copies all guest memory and prints
//! `Finished Faulting All: <n>us`.
//!
//! Exit status: 0 when the VMM went away, 1 when setting up or serving failed (the reason is
//! logged on standard error), 2 for a bad command line. A handler that dies leaves the guest
//! waiting on its next fault, so every failure is logged before exiting.

mod args;
mod stderr_log;

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use squib_uffd::{receive_handoff, HandlerError, PageServer};

use crate::args::{Args, Command, USAGE};

fn main() -> ExitCode {
    stderr_log::init();
    match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Run(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                log::error!("{err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("squib-uffd-handler: {err}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Why the handler stopped before its VMM went away.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("Cannot open the memory file {}: {}", .0.display(), .1)]
    MemoryFile(PathBuf, #[source] std::io::Error),
    #[error("Cannot listen on {}: {}", .0.display(), .1)]
    Bind(PathBuf, #[source] std::io::Error),
    #[error("Cannot accept the VMM's connection: {0}")]
    Accept(#[source] std::io::Error),
    #[error(transparent)]
    Handler(#[from] HandlerError),
}

fn run(args: &Args) -> Result<(), RunError> {
    // The memory file first: a typo there should fail before a VMM is kept waiting.
    let memory_file = File::open(&args.memory_file)
        .map_err(|err| RunError::MemoryFile(args.memory_file.clone(), err))?;
    let listener =
        UnixListener::bind(&args.socket).map_err(|err| RunError::Bind(args.socket.clone(), err))?;
    let _socket_file = RemoveOnDrop(&args.socket);
    log::info!("Listening on {}", args.socket.display());
    let (vmm, _) = listener.accept().map_err(RunError::Accept)?;
    let handoff = receive_handoff(&vmm)?;
    let mut server = PageServer::new(handoff.mappings, handoff.uffd, &memory_file)?;
    log::info!(
        "Serving {} guest memory region(s) from {} ({:?})",
        server.regions().len(),
        args.memory_file.display(),
        args.mode
    );
    let stats = server.serve(&vmm, args.mode, |took| {
        println!("Finished Faulting All: {}us", took.as_micros());
    })?;
    log::info!(
        "The VMM has gone: {} faults, {} pages copied, {} pages zeroed, {} discards",
        stats.faults,
        stats.pages_copied,
        stats.pages_zeroed,
        stats.removes
    );
    Ok(())
}

/// Removes the socket file this process bound, so the next handler can bind the same path.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(self.0) {
            log::warn!("Cannot remove {}: {err}", self.0.display());
        }
    }
}
