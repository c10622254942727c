//! Replacing a file so that a crash or a full disk never leaves a half-written one in its place.
//!
//! The new contents go to a temporary file in the destination's directory (so the final
//! `rename` stays within one filesystem and is atomic), which is flushed and `fsync`ed before
//! it is renamed over the destination; the directory is `fsync`ed last so that the rename
//! itself survives a crash. Until the rename, whatever was at the destination is untouched; on
//! any failure the temporary file is removed.
//!
//! A symlink at the destination is replaced by the new file rather than written through, and
//! the new file gets the default permissions (0666 less the umask), not the old file's.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::file_op::FileOp;

/// Distinguishes the temporary files of concurrent saves in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try when one already exists (a leftover of a crashed run that
/// had the same pid).
const TEMP_NAME_ATTEMPTS: u32 = 16;

/// Writes `path` through `write` as described in the module doc. The error names the step
/// that failed.
pub(crate) fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), (FileOp, io::Error)> {
    let name = path.file_name().ok_or_else(|| {
        let msg = format!("{} does not name a file", path.display());
        (
            FileOp::Open,
            io::Error::new(io::ErrorKind::InvalidInput, msg),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (mut file, temp) = create_temp(dir, name).map_err(|e| (FileOp::Open, e))?;

    write(&mut file).map_err(|e| (FileOp::Write, e))?;
    file.flush().map_err(|e| (FileOp::Flush, e))?;
    file.sync_all().map_err(|e| (FileOp::SyncAll, e))?;
    drop(file);
    fs::rename(temp.path(), path).map_err(|e| (FileOp::Rename, e))?;
    temp.keep();

    // The rename is only durable once the directory entry is on disk.
    let dir_file = File::open(dir).map_err(|e| (FileOp::Open, e))?;
    dir_file.sync_all().map_err(|e| (FileOp::SyncAll, e))
}

/// Creates a new, empty temporary file next to the destination: `.<name>.<pid>.<n>.tmp`.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(File, TempGuard)> {
    let mut last_err = None;
    for _ in 0..TEMP_NAME_ATTEMPTS {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp_path = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
        {
            Ok(file) => {
                let guard = TempGuard {
                    path: temp_path,
                    armed: true,
                };
                return Ok((file, guard));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no temporary file name was free")))
}

/// Removes the temporary file when dropped, unless it was renamed into place.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed to the destination: nothing left to clean up.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error that got us here is the one worth reporting.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_a_new_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        replace_file(&path, |f| f.write_all(b"hello")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(dir_entries(dir.path()), ["state"]);
    }

    #[test]
    fn replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, b"a much longer old content").unwrap();
        replace_file(&path, |f| f.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(dir_entries(dir.path()), ["state"]);
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, b"old and valid").unwrap();
        // Half the data lands, then the disk is full.
        let err = replace_file(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert_eq!(err.0, FileOp::Write);
        assert_eq!(err.1.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::read(&path).unwrap(), b"old and valid");
        assert_eq!(dir_entries(dir.path()), ["state"]);
    }

    #[test]
    fn path_without_a_file_name_is_refused_before_creating_anything() {
        let err = replace_file(Path::new(".."), |_| Ok(())).unwrap_err();
        assert_eq!(err.0, FileOp::Open);
        assert_eq!(err.1.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("state");
        let err = replace_file(&path, |_| Ok(())).unwrap_err();
        assert_eq!(err.0, FileOp::Open);
        assert_eq!(err.1.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn directory_at_destination_fails_at_rename_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let err = replace_file(&path, |f| f.write_all(b"data")).unwrap_err();
        assert_eq!(err.0, FileOp::Rename);
        assert_eq!(dir_entries(dir.path()), ["state"]);
        assert!(path.join("inside").exists());
    }
}
