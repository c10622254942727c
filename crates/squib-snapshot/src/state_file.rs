//! The microVM state file: encoding, checking and decoding it, and saving it crash-safely.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic, [`SNAPSHOT_MAGIC_X86_64`] (the bytes `SQUIBx86`) |
//! | 8 | 6 | format [`Version`]: major, minor, patch as `u16` each |
//! | 14 | 8 | payload length `n` as `u64` |
//! | 22 | n | payload: the state, bincode 1.3 with fixed-width little-endian integers |
//! | 22 + n | 8 | CRC64 (Jones polynomial, `crc64::crc64(0, ..)`) of bytes `0 .. 22 + n` |
//!
//! Fixed-width integers (bincode's `serialize` default) rather than varints keep the payload
//! easy to inspect with a hex dump; the state is a few hundred KiB at most either way.
//!
//! A reader refuses, in this order: a file over [`MAX_STATE_FILE_SIZE`]; one too short for
//! the header and CRC; a foreign magic; a version it cannot read (see [`Version::can_read`]);
//! a payload length that does not end exactly 8 bytes before the end of the file; a CRC
//! mismatch; and a payload that does not decode as the requested type. The version is checked
//! before the CRC so that a file from a newer squib says so instead of looking corrupt.
//! Decoding is bounded by the payload length, so a hostile length prefix inside the payload
//! cannot make the reader allocate more than the file holds.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::atomic_file::replace_file;
use crate::file_op::FileOp;
use crate::version::{Version, SNAPSHOT_VERSION};

/// The magic of an x86_64 squib state file: the bytes `SQUIBx86` read as a little-endian
/// `u64`. It is not Firecracker's, so neither VMM mistakes the other's file for its own.
pub const SNAPSHOT_MAGIC_X86_64: u64 = u64::from_le_bytes(*b"SQUIBx86");

/// The magic this build writes and accepts.
pub const SNAPSHOT_MAGIC: u64 = SNAPSHOT_MAGIC_X86_64;

/// The largest state file accepted, header and CRC included (Firecracker's limit).
pub const MAX_STATE_FILE_SIZE: u64 = 10_000_000;

/// Bytes before the payload: magic, version, payload length.
const HEADER_LEN: usize = 8 + 6 + 8;
/// Bytes of the trailing CRC64.
const CRC_LEN: usize = 8;
/// Where the version starts, and how long it is.
const VERSION_AT: usize = 8;
const VERSION_LEN: usize = 6;

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Writing the state file failed at `op`.
    #[error("Cannot perform {op} on the snapshot backing file: {source}")]
    BackingFile {
        /// The step that failed.
        op: FileOp,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The state file could not be opened for reading.
    #[error("Failed to open snapshot file: {0}")]
    Open(#[source] io::Error),
    /// Reading the state file failed.
    #[error("IO Error: {0}")]
    Io(#[source] io::Error),
    /// The file ends before its CRC (or before its header).
    #[error("IO Error: File too short to contain CRC")]
    TooShort,
    /// The file is over [`MAX_STATE_FILE_SIZE`], or the state would make it so.
    #[error("Snapshot size exceeds limit of {MAX_STATE_FILE_SIZE} bytes")]
    SizeLimit,
    /// Not a state file of this architecture (the value is the file's magic).
    #[error("Magic value does not match arch: {0}")]
    InvalidMagic(u64),
    /// A version this build cannot read.
    #[error("Invalid data version: {}", .0.semver())]
    InvalidVersion(Version),
    /// The payload length in the header disagrees with the file's length.
    #[error("Snapshot payload length {declared} does not match the {available} bytes between header and CRC")]
    LengthMismatch {
        /// Length in the header.
        declared: u64,
        /// Bytes actually between the header and the CRC.
        available: u64,
    },
    /// The contents do not match their CRC.
    #[error("CRC64 validation failed")]
    Crc,
    /// The state could not be encoded.
    #[error("An error occurred during bincode serialization: {0}")]
    Serialize(#[source] bincode::Error),
    /// The payload is not a valid encoding of the requested type.
    #[error("An error occurred during bincode deserialization: {0}")]
    Deserialize(#[source] bincode::Error),
}

/// The bincode settings of the payload (see the module doc).
fn payload_options() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// Writes `state` to `path` as a state file, replacing any file there only once the new one
/// is complete and on disk: a crash or a full disk leaves either the old file or none, never a
/// partial one.
///
/// # Errors
/// [`SnapshotError::Serialize`] or [`SnapshotError::SizeLimit`] before anything is written;
/// [`SnapshotError::BackingFile`] naming the step that failed.
pub fn save_state<T: Serialize>(path: &Path, state: &T) -> Result<(), SnapshotError> {
    let bytes = encode_state(state)?;
    replace_file(path, |file| file.write_all(&bytes))
        .map_err(|(op, source)| SnapshotError::BackingFile { op, source })
}

/// Reads and checks the state file at `path` and decodes its payload as `T`.
///
/// # Errors
/// Any [`SnapshotError`] other than `BackingFile` and `Serialize`; see the module doc for the
/// order of the checks.
pub fn load_state<T: DeserializeOwned>(path: &Path) -> Result<T, SnapshotError> {
    let file = File::open(path).map_err(SnapshotError::Open)?;
    let len = file.metadata().map_err(SnapshotError::Io)?.len();
    if len > MAX_STATE_FILE_SIZE {
        return Err(SnapshotError::SizeLimit);
    }
    // The file may grow after the check: read at most one byte past the limit to notice.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_STATE_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(SnapshotError::Io)?;
    decode_state(&bytes)
}

/// The version of the state file at `path`, read from its header without checking its magic,
/// length or CRC (for `--describe-snapshot`).
///
/// # Errors
/// [`SnapshotError::Open`], [`SnapshotError::TooShort`] for a file that ends inside the
/// version, [`SnapshotError::Io`].
pub fn describe(path: &Path) -> Result<Version, SnapshotError> {
    let mut file = File::open(path).map_err(SnapshotError::Open)?;
    let mut head = [0u8; VERSION_AT + VERSION_LEN];
    file.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SnapshotError::TooShort,
        _ => SnapshotError::Io(e),
    })?;
    Ok(read_version(&head[VERSION_AT..]))
}

/// The bytes of a state file holding `state`, in the current format.
///
/// # Errors
/// [`SnapshotError::Serialize`], or [`SnapshotError::SizeLimit`] when the file would be too
/// large to be loaded again.
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, SnapshotError> {
    encode_with(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, state)
}

/// Encodes with any magic and version, so that tests can build files from other builds.
fn encode_with<T: Serialize>(
    magic: u64,
    version: Version,
    state: &T,
) -> Result<Vec<u8>, SnapshotError> {
    let options = payload_options();
    let payload_len = options
        .serialized_size(state)
        .map_err(SnapshotError::Serialize)?;
    let total = payload_len.saturating_add((HEADER_LEN + CRC_LEN) as u64);
    if total > MAX_STATE_FILE_SIZE {
        return Err(SnapshotError::SizeLimit);
    }
    // At most MAX_STATE_FILE_SIZE: fits a usize.
    let mut bytes = Vec::with_capacity(total as usize);
    bytes.extend_from_slice(&magic.to_le_bytes());
    for part in [version.major, version.minor, version.patch] {
        bytes.extend_from_slice(&part.to_le_bytes());
    }
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    options
        .serialize_into(&mut bytes, state)
        .map_err(SnapshotError::Serialize)?;
    let crc = crc64::crc64(0, &bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Checks the bytes of a whole state file and decodes its payload as `T`.
///
/// # Errors
/// As [`load_state`], except `Open` and `Io`.
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() as u64 > MAX_STATE_FILE_SIZE {
        return Err(SnapshotError::SizeLimit);
    }
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(SnapshotError::TooShort);
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let magic = read_u64(&header[..VERSION_AT]);
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::InvalidMagic(magic));
    }
    let version = read_version(&header[VERSION_AT..VERSION_AT + VERSION_LEN]);
    if !SNAPSHOT_VERSION.can_read(version) {
        return Err(SnapshotError::InvalidVersion(version));
    }
    let declared = read_u64(&header[VERSION_AT + VERSION_LEN..]);
    // `rest` is at least CRC_LEN long (checked above).
    let available = (rest.len() - CRC_LEN) as u64;
    if declared > available {
        return Err(SnapshotError::TooShort);
    }
    if declared < available {
        return Err(SnapshotError::LengthMismatch {
            declared,
            available,
        });
    }
    let (checked, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    if crc64::crc64(0, checked) != read_u64(crc) {
        return Err(SnapshotError::Crc);
    }
    let payload = &checked[HEADER_LEN..];
    payload_options()
        .with_limit(payload.len() as u64)
        .reject_trailing_bytes()
        .deserialize(payload)
        .map_err(SnapshotError::Deserialize)
}

/// A little-endian `u64` from exactly 8 bytes (callers slice them from checked lengths).
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// A [`Version`] from exactly 6 bytes.
fn read_version(bytes: &[u8]) -> Version {
    let part = |i: usize| u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
    Version::new(part(0), part(1), part(2))
}

#[cfg(test)]
#[path = "state_file_tests.rs"]
mod tests;
