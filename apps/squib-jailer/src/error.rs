//! Every way the jailer can fail, with Firecracker's jailer texts (`JailerError` in
//! `src/jailer/src/main.rs`).
//!
//! The text is what an operator sees on stderr before exit code 1, so it is a compatibility
//! surface: each message names what failed (the path, the flag value, the device) and the
//! wording is Firecracker's, paths printed without quotes. The OS error is part of the
//! sentence, as Firecracker prints it, rather than a `#[source]` printed a second time.

use std::io;
use std::path::PathBuf;

use crate::args::ArgsError;

/// Why the jailer stopped.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    /// The command line does not have the jailer's shape.
    #[error("Failed to parse arguments: {0}")]
    ArgumentParsing(#[from] ArgsError),
    /// `--id` is empty, longer than 64 bytes, or has a character other than alphanumerics and `-`.
    #[error("Invalid instance ID: {0}")]
    InvalidInstanceId(InstanceIdError),
    /// A path given on the command line cannot be resolved.
    #[error("Failed to canonicalize path {}: {}", .0.display(), .1)]
    Canonicalize(PathBuf, io::Error),
    /// `--exec-file` is not a regular file.
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    /// `--chroot-base-dir` is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `--uid` is not a u32.
    #[error("Invalid uid: {0}")]
    Uid(String),
    /// `--gid` is not a u32.
    #[error("Invalid gid: {0}")]
    Gid(String),
    /// `--parent-cgroup` is absolute or has `.`/`..`.
    #[error("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")]
    CgroupInvalidParentPath,
    /// `--cgroup-version` is not a number.
    #[error("{0} is an invalid cgroup version specifier")]
    CgroupInvalidVersion(String),
    /// A `--cgroup` argument is not `<file>=<value>`.
    #[error("Invalid format for cgroups: {0}")]
    CgroupFormat(String),
    /// A `--cgroup` file is not `<controller>.<property>` or climbs out of the cgroup.
    #[error("Cgroup invalid file: {0}")]
    CgroupInvalidFile(String),
    /// No hierarchy on this host has the controller.
    #[error("Controller {0} is unavailable")]
    CgroupControllerUnavailable(String),
    /// No hierarchy of the requested cgroup version is mounted.
    #[error("Hierarchy not found: {0}")]
    CgroupHierarchyMissing(String),
    /// Neither the new cgroup nor any ancestor up to the hierarchy root has a value to inherit.
    #[error("Failed to inherit cgroups configurations from file {} in path {}", .1, .0.display())]
    CgroupInheritFromParent(PathBuf, String),
    /// A `--resource-limit` argument is not `<resource>=<value>`.
    #[error("Invalid format for resources limits: {0}")]
    ResLimitFormat(String),
    /// A `--resource-limit` names a resource other than `fsize` and `no-file`.
    #[error("Invalid resource argument: {0}")]
    ResLimitArgument(String),
    /// A `--resource-limit` value is not a u64.
    #[error("Invalid limit value for resource: {0}: {1}")]
    ResLimitValue(String, String),
    /// `setrlimit` failed.
    #[error("Failed to set limit for resource: {0}")]
    Setrlimit(String),
    /// A directory could not be created.
    #[error("Failed to create directory {}: {}", .0.display(), .1)]
    CreateDir(PathBuf, io::Error),
    /// A file could not be opened (the exec file or its copy).
    #[error("Failed to open {}: {}", .0.display(), .1)]
    Open(PathBuf, io::Error),
    /// A file could not be opened (`/proc/mounts`, the netns, the pid file).
    #[error("Failed to open file {}: {}", .0.display(), .1)]
    FileOpen(PathBuf, io::Error),
    /// `fstat` failed.
    #[error("Cannot get metadata for a file: {}: {}", .0.display(), .1)]
    Metadata(PathBuf, io::Error),
    /// The exec file's destination in the jail is a hard link to some other file.
    #[error("Detected hard link at: {}", .0.display())]
    HardLink(PathBuf),
    /// `chown` failed.
    #[error("Failed to change owner for {}: {}", .0.display(), .1)]
    ChangeFileOwner(PathBuf, io::Error),
    /// `chmod` failed.
    #[error("Failed to change permissions on {}: {}", .0.display(), .1)]
    Chmod(PathBuf, io::Error),
    /// Copying the exec file into the jail failed.
    #[error("Failed to copy {} to {}: {}", .0.display(), .1.display(), .2)]
    Copy(PathBuf, PathBuf, io::Error),
    /// A file could not be read.
    #[error("Failed to read file {} into a string: {}", .0.display(), .1)]
    ReadToString(PathBuf, io::Error),
    /// A file (mostly a cgroup file) could not be written.
    #[error("Failed to write to {}: {}", .0.display(), .1)]
    Write(PathBuf, io::Error),
    /// `close_range` failed.
    #[error("Failed to call close range syscall: {0}")]
    CloseRange(io::Error),
    /// `setns(CLONE_NEWNET)` failed.
    #[error("Failed to join network namespace: netns: {0}")]
    SetNetNs(io::Error),
    /// `unshare(CLONE_NEWNS)` failed.
    #[error("Failed to unshare into new mount namespace: {0}")]
    UnshareNewNs(io::Error),
    /// Making `/` a recursive slave mount failed.
    #[error("Failed to change the propagation type to slave: {0}")]
    MountPropagationSlave(io::Error),
    /// Bind-mounting the jail root onto itself failed.
    #[error("Failed to bind mount the jail root directory: {0}")]
    MountBind(io::Error),
    /// `chdir` into the jail root failed.
    #[error("Failed to chdir into chroot directory: {0}")]
    ChdirNewRoot(io::Error),
    /// Creating `old_root` failed.
    #[error("Failed to create the jail root directory before pivoting root: {0}")]
    MkdirOldRoot(io::Error),
    /// `pivot_root` failed.
    #[error("Failed to pivot root: {0}")]
    PivotRoot(io::Error),
    /// Detaching the old root failed.
    #[error("Failed to unmount the old jail root: {0}")]
    UmountOldRoot(io::Error),
    /// Removing `old_root` failed.
    #[error("Failed to remove old jail root directory: {0}")]
    RmOldRootDir(io::Error),
    /// `mknod` of a device node failed.
    #[error("Failed to create {1} via mknod inside the jail: {0}")]
    MknodDev(io::Error, String),
    /// `/dev/null` could not be opened for `--daemonize`.
    #[error("Failed to open /dev/null: {0}")]
    OpenDevNull(io::Error),
    /// A `fork` of `--daemonize` failed.
    #[error("Failed to daemonize: {0}")]
    Daemonize(io::Error),
    /// `setsid` failed.
    #[error("Failed to daemonize: setsid: {0}")]
    SetSid(io::Error),
    /// `dup2` onto a standard descriptor failed.
    #[error("Failed to duplicate fd: {0}")]
    Dup2(io::Error),
    /// Entering a new PID namespace failed.
    #[error("Failed cloning into a new child process: {0}")]
    Clone(io::Error),
    /// Dropping to `--uid`/`--gid` failed.
    #[error("Failed to drop privileges to {0}: {1}")]
    DropPrivileges(String, io::Error),
    /// `execve` of the jailed binary failed.
    #[error("Failed to exec into Firecracker: {0}")]
    Exec(io::Error),
}

/// Why an `--id` is refused (Firecracker's `validators::ValidatorError` texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceIdError {
    /// Not 1 to 64 bytes long.
    #[error("Invalid len ({0});  the length must be between {1} and {2}")]
    InvalidLen(usize, usize, usize),
    /// A character that is neither alphanumeric nor `-`, and its position.
    #[error("Invalid char ({0}) at position {1}")]
    InvalidChar(char, usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_firecrackers() {
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        let cases: Vec<(JailerError, &str)> = vec![
            (
                JailerError::InvalidInstanceId(InstanceIdError::InvalidChar('/', 1)),
                "Invalid instance ID: Invalid char (/) at position 1",
            ),
            (
                JailerError::InvalidInstanceId(InstanceIdError::InvalidLen(65, 1, 64)),
                "Invalid instance ID: Invalid len (65);  the length must be between 1 and 64",
            ),
            (
                JailerError::Canonicalize("/nonexist".into(), enoent()),
                "Failed to canonicalize path /nonexist: No such file or directory (os error 2)",
            ),
            (JailerError::NotAFile("/tmp".into()), "/tmp is not a file"),
            (JailerError::NotADirectory("/etc/passwd".into()), "/etc/passwd is not a directory"),
            (JailerError::Uid("-1".into()), "Invalid uid: -1"),
            (JailerError::CgroupFormat("foo".into()), "Invalid format for cgroups: foo"),
            (JailerError::CgroupInvalidFile("foo".into()), "Cgroup invalid file: foo"),
            (
                JailerError::CgroupControllerUnavailable("nosuch".into()),
                "Controller nosuch is unavailable",
            ),
            (
                JailerError::ResLimitValue("x".into(), "invalid digit found in string".into()),
                "Invalid limit value for resource: x: invalid digit found in string",
            ),
            (
                JailerError::HardLink("/srv/jailer/fc/a/root/fc".into()),
                "Detected hard link at: /srv/jailer/fc/a/root/fc",
            ),
            (
                JailerError::MknodDev(io::Error::from_raw_os_error(libc::EEXIST), "/dev/net/tun".into()),
                "Failed to create /dev/net/tun via mknod inside the jail: File exists (os error 17)",
            ),
            (
                JailerError::CgroupInvalidParentPath,
                "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
