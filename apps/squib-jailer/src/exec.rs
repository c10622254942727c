//! The process transitions at the end of a jailing (Firecracker `src/jailer/src/env.rs`,
//! `run`): joining the network namespace, `--daemonize`, `--new-pid-ns`, the pid file,
//! dropping to `--uid`/`--gid` and the exec of the VMM.
//!
//! - **Daemonize:** fork (the parent exits 0), `setsid`, fork again (so the daemon is not a
//!   session leader and cannot regain a terminal), stdio onto `/dev/null`, which was opened
//!   before the pivot because the jail has no `/dev/null`.
//! - **PID namespace:** `unshare(CLONE_NEWPID)` then fork: the child is pid 1 of the new
//!   namespace and execs the VMM; the parent writes the child's host pid into
//!   `/<exec name>.pid` inside the jail and exits 0. Without it the jailer writes its own pid,
//!   which the exec keeps.
//! - **Privileges:** supplementary groups cleared, then gid, then uid (the order that still has
//!   the right to do the next step).
//! - **Arguments:** `--id <id> --start-time-us <t0> --start-time-cpu-us <cpu now>
//!   --parent-cpu-time-us <jailer cpu>` then the forwarded ones; t0 is `CLOCK_MONOTONIC` at
//!   the jailer's start, the CPU times are `CLOCK_PROCESS_CPUTIME_ID`, the jailer's own
//!   including the processes that forked and exited on the way.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::JailerError;

/// A clock read in microseconds.
pub fn clock_us(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec the kernel writes into; both clocks used here exist on
    // every Linux the jailer runs on.
    unsafe { libc::clock_gettime(clock, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(now.tv_nsec).unwrap_or_default();
    secs * 1_000_000 + nanos / 1_000
}

/// This process's CPU time in microseconds.
pub fn cpu_us() -> u64 {
    clock_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// `setns(<path>, CLONE_NEWNET)`.
///
/// # Errors
/// [`JailerError::FileOpen`] naming the path, or [`JailerError::SetNetNs`].
pub fn join_netns(path: &Path) -> Result<(), JailerError> {
    let netns = File::open(path).map_err(|err| JailerError::FileOpen(path.to_path_buf(), err))?;
    // SAFETY: `netns` is an open descriptor owned by this function for the whole call.
    let ret = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret != 0 {
        return Err(JailerError::SetNetNs(io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens `/dev/null` for [`daemonize`] (before the pivot: the jail has none).
///
/// # Errors
/// [`JailerError::OpenDevNull`].
pub fn open_dev_null() -> Result<File, JailerError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(JailerError::OpenDevNull)
}

/// Double-fork daemonization; returns in the daemon with the CPU time (µs) the two exited
/// processes had used since `start_cpu_us`.
///
/// # Errors
/// The failed fork, `setsid` or `dup2`.
pub fn daemonize(dev_null: &File, start_cpu_us: u64) -> Result<u64, JailerError> {
    let mut used = cpu_us().saturating_sub(start_cpu_us);
    fork_and_leave_parent()?;
    // SAFETY: setsid takes no arguments; the caller is a fresh child, not a group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(JailerError::SetSid(io::Error::last_os_error()));
    }
    used += cpu_us();
    fork_and_leave_parent()?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: both are descriptors of this process; dup2 replaces `fd` atomically.
        if unsafe { libc::dup2(dev_null.as_raw_fd(), fd) } < 0 {
            return Err(JailerError::Dup2(io::Error::last_os_error()));
        }
    }
    Ok(used)
}

/// Forks; the parent exits 0 at once, the child returns.
fn fork_and_leave_parent() -> Result<(), JailerError> {
    // SAFETY: the jailer is single-threaded, so the child may run any code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(JailerError::Daemonize(io::Error::last_os_error())),
        0 => Ok(()),
        // SAFETY: ends the parent without running destructors the child still relies on.
        _ => unsafe { libc::_exit(0) },
    }
}

/// Enters a new PID namespace: returns in the child (pid 1 there); the parent writes the
/// child's pid to `pid_file` and exits 0.
///
/// # Errors
/// [`JailerError::Clone`] if the namespace or the child cannot be created.
pub fn enter_new_pid_ns(pid_file: &Path) -> Result<(), JailerError> {
    // SAFETY: unshare takes a flag word only; CLONE_NEWPID affects this process's children.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(JailerError::Clone(io::Error::last_os_error()));
    }
    // SAFETY: the jailer is single-threaded, so the child may run any code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(JailerError::Clone(io::Error::last_os_error())),
        0 => Ok(()),
        child => {
            let code = match write_pid_file(pid_file, child) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("{err}");
                    1
                }
            };
            // SAFETY: ends the parent; the child carries on with the jail.
            unsafe { libc::_exit(code) }
        }
    }
}

/// `<exec path>.pid`, holding the VMM's pid.
pub fn pid_file_path(exec_in_jail: &Path) -> PathBuf {
    let mut path = exec_in_jail.as_os_str().to_owned();
    path.push(".pid");
    PathBuf::from(path)
}

/// Writes `pid` to a new file at `path`.
///
/// # Errors
/// [`JailerError::FileOpen`] if it exists or cannot be created, [`JailerError::Write`].
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), JailerError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|err| JailerError::FileOpen(path.to_path_buf(), err))?;
    write!(file, "{pid}").map_err(|err| JailerError::Write(path.to_path_buf(), err))
}

/// Clears supplementary groups, then sets gid and uid.
///
/// # Errors
/// [`JailerError::DropPrivileges`] naming the failed call.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), JailerError> {
    let fail = |what: String| JailerError::DropPrivileges(what, io::Error::last_os_error());
    // SAFETY: a zero-length group list with a NULL pointer is how setgroups clears the list.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(fail("no supplementary groups".into()));
    }
    // SAFETY: setgid takes a plain integer.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(fail(format!("gid {gid}")));
    }
    // SAFETY: setuid takes a plain integer.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(fail(format!("uid {uid}")));
    }
    Ok(())
}

/// The times handed to the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTimes {
    /// `CLOCK_MONOTONIC` µs when the jailer started.
    pub start_us: u64,
    /// This process's CPU µs right before the exec.
    pub start_cpu_us: u64,
    /// CPU µs the jailer spent (its processes together).
    pub parent_cpu_us: u64,
}

/// The VMM's command line after its path: Firecracker's jailer arguments, then `extra`.
pub fn vmm_args(id: &str, times: StartTimes, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--id".to_string(),
        id.to_string(),
        "--start-time-us".to_string(),
        times.start_us.to_string(),
        "--start-time-cpu-us".to_string(),
        times.start_cpu_us.to_string(),
        "--parent-cpu-time-us".to_string(),
        times.parent_cpu_us.to_string(),
    ];
    args.extend_from_slice(extra);
    args
}

/// Replaces this process with the VMM; returns only on failure.
pub fn exec(path: &Path, args: &[String]) -> JailerError {
    JailerError::Exec(Command::new(path).args(args).exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_args_put_jailer_flags_first() {
        let times = StartTimes {
            start_us: 11,
            start_cpu_us: 22,
            parent_cpu_us: 33,
        };
        let extra = vec!["--api-sock".to_string(), "/run/s".to_string()];
        assert_eq!(
            vmm_args("vm", times, &extra),
            [
                "--id",
                "vm",
                "--start-time-us",
                "11",
                "--start-time-cpu-us",
                "22",
                "--parent-cpu-time-us",
                "33",
                "--api-sock",
                "/run/s",
            ]
        );
    }

    #[test]
    fn pid_file_is_exec_path_plus_pid() {
        assert_eq!(
            pid_file_path(Path::new("/firecracker")),
            PathBuf::from("/firecracker.pid")
        );
    }

    #[test]
    fn write_pid_file_refuses_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("fc.pid");
        write_pid_file(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42");
        assert!(matches!(
            write_pid_file(&path, 43),
            Err(JailerError::FileOpen(..))
        ));
    }

    #[test]
    fn clocks_move_forward() {
        let a = clock_us(libc::CLOCK_MONOTONIC);
        let b = clock_us(libc::CLOCK_MONOTONIC);
        assert!(a > 0 && b >= a);
    }
}
