//! Opening host files named by a client without letting the path stall or confuse the VMM
//! thread.
//!
//! Every path the API hands the VMM (kernel, initrd, drives, `serial_out_path`) is opened with
//! `O_NONBLOCK`, so a FIFO without a peer answers at once (a read end opens, a write end fails
//! with `ENXIO`) instead of blocking the event loop. The open file is then `fstat`-ed and kept
//! only if its type is one the caller accepts (a directory opens read-only without complaint,
//! and a FIFO as a kernel would hang the later read). For regular files and block devices
//! `O_NONBLOCK` is cleared again, so later I/O behaves as usual; an accepted FIFO stays
//! non-blocking, as Firecracker keeps its serial, log and metrics FIFOs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A block device.
    BlockDevice,
    /// A FIFO (named pipe).
    Fifo,
    /// A directory.
    Directory,
    /// A character device.
    CharDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    fn of(file_type: std::fs::FileType) -> Self {
        if file_type.is_file() {
            Self::Regular
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_socket() {
            Self::Socket
        } else {
            Self::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular file",
            Self::BlockDevice => "block device",
            Self::Fifo => "FIFO",
            Self::Directory => "directory",
            Self::CharDevice => "character device",
            Self::Socket => "socket",
            Self::Other => "special file",
        }
    }
}

/// Which file types a caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Regular files only (kernel, initrd).
    Regular,
    /// Regular files and block devices (drives).
    RegularOrBlockDevice,
    /// Regular files and FIFOs (serial output, log and metrics paths).
    RegularOrFifo,
}

impl Accept {
    fn allows(self, kind: FileKind) -> bool {
        match self {
            Self::Regular => kind == FileKind::Regular,
            Self::RegularOrBlockDevice => {
                matches!(kind, FileKind::Regular | FileKind::BlockDevice)
            }
            Self::RegularOrFifo => matches!(kind, FileKind::Regular | FileKind::Fifo),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Regular => "a regular file",
            Self::RegularOrBlockDevice => "a regular file or a block device",
            Self::RegularOrFifo => "a regular file or a FIFO",
        }
    }
}

/// Why a host file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostFileError {
    /// The open itself failed (the OS error alone, as Firecracker words it).
    #[error("{0}")]
    Open(#[source] std::io::Error),
    /// The file is of a type the caller does not accept.
    #[error("{} is a {}, not {}", path.display(), kind.name(), expected)]
    WrongType {
        /// The path as given.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
        /// What was expected.
        expected: &'static str,
    },
    /// `fstat` or `fcntl` on the open file failed.
    #[error("Cannot inspect {}: {source}", path.display())]
    Inspect {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How to open: the access wanted and the types accepted.
#[derive(Debug, Clone, Copy)]
pub struct OpenSpec {
    /// Open for writing too (`O_RDWR`, or `O_WRONLY` without `read`).
    pub write: bool,
    /// Open for reading.
    pub read: bool,
    /// Create a missing file and append (serial output).
    pub create_append: bool,
    /// Accepted file types.
    pub accept: Accept,
}

impl OpenSpec {
    /// Read-only, regular files only.
    #[must_use]
    pub fn read_regular() -> Self {
        Self {
            read: true,
            write: false,
            create_append: false,
            accept: Accept::Regular,
        }
    }

    /// A disk image: read (and write unless `read_only`), regular file or block device.
    #[must_use]
    pub fn disk(read_only: bool) -> Self {
        Self {
            read: true,
            write: !read_only,
            create_append: false,
            accept: Accept::RegularOrBlockDevice,
        }
    }

    /// An output sink: write-only, created if missing, appended to; regular file or FIFO.
    #[must_use]
    pub fn output() -> Self {
        Self {
            read: false,
            write: true,
            create_append: true,
            accept: Accept::RegularOrFifo,
        }
    }
}

/// Open `path` without blocking and keep it only if its type is accepted.
///
/// # Errors
/// [`HostFileError::Open`] with the OS error (a FIFO opened for writing without a reader
/// fails with `ENXIO`), [`HostFileError::WrongType`] naming the path and what it is.
pub fn open_host_file(path: &Path, spec: OpenSpec) -> Result<File, HostFileError> {
    let file = OpenOptions::new()
        .read(spec.read)
        .write(spec.write && !spec.create_append)
        .append(spec.create_append)
        .create(spec.create_append)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(HostFileError::Open)?;
    let inspect = |source| HostFileError::Inspect {
        path: path.to_owned(),
        source,
    };
    let kind = FileKind::of(file.metadata().map_err(inspect)?.file_type());
    if !spec.accept.allows(kind) {
        return Err(HostFileError::WrongType {
            path: path.to_owned(),
            kind,
            expected: spec.accept.expected(),
        });
    }
    if kind != FileKind::Fifo {
        clear_nonblock(&file).map_err(inspect)?;
    }
    Ok(file)
}

fn clear_nonblock(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor `file` owns and keeps open for this call; no memory
    // is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on the same owned descriptor, with an integer argument only.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::time::Duration;

    use super::*;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Run `f` on another thread and fail (instead of hanging) if it blocks.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the open blocked the calling thread")
    }

    fn nonblocking(file: &File) -> bool {
        // SAFETY: F_GETFL on a descriptor owned by `file`.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_NONBLOCK != 0
    }

    #[test]
    fn a_regular_file_opens_blocking() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let file = open_host_file(f.path(), OpenSpec::read_regular()).unwrap();
        assert!(!nonblocking(&file));
        let file = open_host_file(f.path(), OpenSpec::disk(false)).unwrap();
        assert!(!nonblocking(&file));
    }

    #[test]
    fn a_fifo_without_writer_is_refused_at_once_as_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let path = fifo.clone();
        let err =
            within_seconds(move || open_host_file(&path, OpenSpec::read_regular())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is a FIFO, not a regular file", fifo.display())
        );
        let err = open_host_file(&fifo, OpenSpec::disk(true)).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("is a FIFO, not a regular file or a block device"));
    }

    #[test]
    fn a_fifo_without_reader_fails_at_once_as_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let path = fifo.clone();
        let err = within_seconds(move || open_host_file(&path, OpenSpec::output())).unwrap_err();
        assert!(
            matches!(&err, HostFileError::Open(e) if e.raw_os_error() == Some(libc::ENXIO)),
            "{err}"
        );
        // With a reader the FIFO is accepted and stays non-blocking.
        let _reader = open_host_file(
            &fifo,
            OpenSpec {
                accept: Accept::RegularOrFifo,
                ..OpenSpec::read_regular()
            },
        )
        .unwrap();
        let writer = open_host_file(&fifo, OpenSpec::output()).unwrap();
        assert!(nonblocking(&writer));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_host_file(dir.path(), OpenSpec::disk(true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a directory, not a regular file or a block device",
                dir.path().display()
            )
        );
        assert!(open_host_file(dir.path(), OpenSpec::read_regular()).is_err());
        assert!(open_host_file(dir.path(), OpenSpec::output()).is_err());
    }

    #[test]
    fn a_character_device_is_refused_as_a_drive() {
        let err = open_host_file(Path::new("/dev/null"), OpenSpec::disk(true)).unwrap_err();
        assert!(err.to_string().contains("is a character device"), "{err}");
    }

    #[test]
    fn a_missing_file_reports_the_os_error_alone() {
        let err =
            open_host_file(Path::new("/nonexistent/k"), OpenSpec::read_regular()).unwrap_err();
        assert_eq!(err.to_string(), "No such file or directory (os error 2)");
    }
}
