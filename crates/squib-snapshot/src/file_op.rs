//! The file operations named in "Cannot perform `<op>` on the ... backing file" errors.

use std::fmt;

/// One operation on a snapshot's state or memory file, spelled as Firecracker spells it in its
/// error messages (`open`, `get_metadata`, `truncate`, `set_length`, `flush`, `sync_all`),
/// plus the steps of squib's crash-safe replacement of the state file (`write`, `rename`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// Creating or opening the file.
    Open,
    /// Reading its length.
    GetMetadata,
    /// Cutting a file of the wrong size down to nothing.
    Truncate,
    /// Setting the final length.
    SetLength,
    /// Writing the contents.
    Write,
    /// Flushing buffered writes.
    Flush,
    /// `fsync` of the file or of its directory.
    SyncAll,
    /// Moving the complete temporary file over the destination.
    Rename,
}

impl fmt::Display for FileOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileOp::Open => "open",
            FileOp::GetMetadata => "get_metadata",
            FileOp::Truncate => "truncate",
            FileOp::SetLength => "set_length",
            FileOp::Write => "write",
            FileOp::Flush => "flush",
            FileOp::SyncAll => "sync_all",
            FileOp::Rename => "rename",
        })
    }
}
