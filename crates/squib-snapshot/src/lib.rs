//! squib's snapshot files: reading and writing the microVM state file and the guest memory
//! file, and merging a Diff memory file onto its base.
//!
//! A snapshot is two files, as in Firecracker, but the state file's format is squib's own.
//!
//! **State file** ([`save_state`], [`load_state`], [`describe`]): a 22-byte header — the magic
//! `SQUIBx86` ([`SNAPSHOT_MAGIC_X86_64`]), the format [`Version`] as three little-endian
//! `u16`s (major, minor, patch; currently [`SNAPSHOT_VERSION`] = 1.0.0) and the payload length
//! as a little-endian `u64` — then the payload, which is the VMM's state encoded with bincode
//! 1.3 (fixed-width little-endian integers), then a little-endian CRC64 (Jones polynomial) of
//! everything before it. Readers accept the same major version and an older or equal minor
//! one, and files of at most [`MAX_STATE_FILE_SIZE`] bytes. Saving is crash-safe: a temporary
//! file, `fsync`, `rename`, `fsync` of the directory.
//!
//! **Memory file** ([`write_full`], [`write_diff`], [`MemoryLayout`]): the guest memory
//! regions back to back in guest-address order, Firecracker's layout. A Diff holds only the
//! dirty pages; written onto a copy of its base it yields a Full file, written to a new file it
//! is sparse and [`rebase()`] merges it onto the base later.
//!
//! **Working-set file** ([`save_working_set`], [`load_working_set`]): squib's own, the pages
//! a restored guest touched first, read in before the guest resumes on the next load.

mod atomic_file;
mod file_op;
mod memory_file;
mod memory_layout;
mod rebase;
mod state_file;
mod version;
mod working_set;

pub use file_op::FileOp;
pub use memory_file::{open_for_write, write_diff, write_full, MemoryFileError, PAGE_SIZE};
pub use memory_layout::{LayoutError, LayoutRegion, MemoryLayout};
pub use rebase::{rebase, RebaseError};
pub use state_file::{
    decode_state, describe, encode_state, load_state, save_state, SnapshotError,
    MAX_STATE_FILE_SIZE, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_X86_64,
};
pub use version::{Version, SNAPSHOT_VERSION};
pub use working_set::{
    load_working_set, save_working_set, PageRun, WorkingSet, WorkingSetError, WORKING_SET_MARKER,
};
