//! What the jailer created on the host, so a failed run can take it back.
//!
//! Firecracker's jailer leaves a half-built jail behind when a later step fails. squib-jailer
//! records each directory and file it creates (never the ones that already existed) and, when a
//! step before the pivot fails, removes them newest first (the caller first moves the process
//! out of any cgroup it joined, since a populated cgroup cannot be removed). Removal is best
//! effort: a directory someone else filled meanwhile is left alone (`rmdir` only removes empty
//! directories).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One thing the jailer created.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    Dir(PathBuf),
    File(PathBuf),
}

/// The host paths created so far, oldest first.
#[derive(Debug, Default)]
pub struct Undo {
    created: Vec<Created>,
}

impl Undo {
    /// `create_dir_all` that records each directory it had to create.
    ///
    /// # Errors
    /// The first `mkdir` that fails; what was created before it stays recorded.
    pub fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
        for dir in missing.into_iter().rev() {
            match fs::create_dir(dir) {
                Ok(()) => self.created.push(Created::Dir(dir.to_path_buf())),
                // Another jailer raced us to it: it is theirs, not ours to remove.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Records a file this run created.
    pub fn file(&mut self, path: &Path) {
        self.created.push(Created::File(path.to_path_buf()));
    }

    /// Removes everything recorded, newest first, ignoring what cannot be removed.
    pub fn roll_back(self) {
        for created in self.created.into_iter().rev() {
            let _ = match created {
                Created::Dir(dir) => fs::remove_dir(dir),
                Created::File(file) => fs::remove_file(file),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_back_removes_only_what_was_created() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("existing");
        fs::create_dir(&existing).unwrap();
        fs::write(existing.join("keep"), b"x").unwrap();

        let mut undo = Undo::default();
        let deep = existing.join("a/b/c");
        undo.create_dir_all(&deep).unwrap();
        let file = deep.join("f");
        fs::write(&file, b"y").unwrap();
        undo.file(&file);
        undo.create_dir_all(&deep).unwrap();
        assert_eq!(undo.created.len(), 4);

        undo.roll_back();
        assert!(!existing.join("a").exists());
        assert!(existing.join("keep").exists());
    }
}
