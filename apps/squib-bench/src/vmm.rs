//! One VMM process under measurement, started with Firecracker's flags only, so any binary
//! that accepts them can be measured: `--api-sock`, `--id`, `--log-path`, `--level`,
//! `--metrics-path`, `--start-time-us`/`--start-time-cpu-us` (as the jailer passes them) and
//! optionally `--boot-timer`.
//!
//! Each process gets its own temporary directory for the socket, log, metrics and console
//! files. It is killed and reaped with `wait4`, which also yields the child's CPU time, and
//! dropping a [`VmmProcess`] kills it, so a failed run leaves no VM behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http::ApiClient;

/// Pause between two attempts to reach the API socket.
const POLL_INTERVAL: Duration = Duration::from_micros(200);
/// Timeout of one API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting, reaching or stopping a VMM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The temporary run directory or its files could not be created.
    #[error("cannot prepare the run directory: {0}")]
    Setup(#[source] std::io::Error),
    /// The binary could not be executed.
    #[error("cannot execute {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The exec error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited while it was expected to run.
    #[error("the VMM exited ({status}); last output: {tail}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log and stderr.
        tail: String,
    },
    /// The API did not answer in time.
    #[error("the API socket did not answer GET / within {0:?}")]
    ApiTimeout(Duration),
    /// Waiting for the process failed.
    #[error("cannot wait for the VMM: {0}")]
    Wait(#[source] std::io::Error),
}

/// A running VMM.
pub struct VmmProcess {
    child: Child,
    reaped: bool,
    dir: tempfile::TempDir,
    /// Taken just before the exec.
    pub started: Instant,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its `--log-path` file.
    pub log: PathBuf,
    /// Its `--metrics-path` file.
    pub metrics: PathBuf,
    /// Its stdout: the guest's serial console.
    pub console: PathBuf,
}

impl VmmProcess {
    /// Starts `binary` with instance id `id` (alphanumeric and `-` only).
    pub fn spawn(binary: &Path, id: &str, boot_timer: bool) -> Result<VmmProcess, VmmError> {
        let dir = tempfile::Builder::new()
            .prefix("squib-bench-")
            .tempdir()
            .map_err(VmmError::Setup)?;
        let socket = dir.path().join("api.sock");
        let log = dir.path().join("vmm.log");
        let metrics = dir.path().join("metrics.ndjson");
        // Firecracker opens --log-path and --metrics-path without creating them.
        let create = |p: &Path| File::create(p).map_err(VmmError::Setup);
        let console = dir.path().join("console.txt");
        let (stdout, stderr) = (create(&console)?, create(&dir.path().join("stderr.txt"))?);
        create(&log)?;
        create(&metrics)?;
        let mut cmd = Command::new(binary);
        cmd.arg("--api-sock").arg(&socket).args(["--id", id]);
        cmd.arg("--log-path").arg(&log).args(["--level", "Info"]);
        cmd.arg("--metrics-path").arg(&metrics);
        if boot_timer {
            cmd.arg("--boot-timer");
        }
        cmd.args(["--start-time-cpu-us", "0", "--start-time-us"]);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // Last, so that the start time is as close to exec as possible.
        cmd.arg(monotonic_us().to_string());
        let started = Instant::now();
        let child = cmd.spawn().map_err(|source| VmmError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
        Ok(VmmProcess {
            child,
            reaped: false,
            dir,
            started,
            socket,
            log,
            metrics,
            console,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls the socket until `GET /` answers 200; returns the connected client.
    pub fn wait_api(&mut self, timeout: Duration) -> Result<ApiClient, VmmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut client) = ApiClient::connect(&self.socket, REQUEST_TIMEOUT) {
                if client.get("/").is_ok_and(|r| r.status == 200) {
                    return Ok(client);
                }
            }
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(VmmError::ApiTimeout(timeout));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `Err(Exited)` when the process has exited (it is then reaped).
    pub fn check_running(&mut self) -> Result<(), VmmError> {
        match self.child.try_wait().map_err(VmmError::Wait)? {
            Some(status) => {
                self.reaped = true;
                Err(VmmError::Exited {
                    status,
                    tail: self.tail(),
                })
            }
            None => Ok(()),
        }
    }

    /// The log file's text so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log and of stderr, on one line, for error messages.
    pub fn tail(&self) -> String {
        let stderr =
            std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default();
        let text = self.log_text() + &stderr;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(strip_log_prefix)
            .collect();
        let tail = lines[lines.len().saturating_sub(2)..].join(" / ");
        if tail.is_empty() {
            "(none)".to_owned()
        } else {
            tail
        }
    }

    /// Kills the process (SIGKILL) and reaps it; returns its CPU time (user + system), or
    /// `None` when it had already been reaped.
    pub fn kill(&mut self) -> Result<Option<Duration>, VmmError> {
        if self.reaped {
            return Ok(None);
        }
        // ESRCH (already exited, not yet reaped) is fine: wait4 below reaps it.
        let _ = self.child.kill();
        let usage = wait4(self.child.id()).map_err(VmmError::Wait)?;
        self.reaped = true;
        Ok(Some(usage))
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A Firecracker log line without its `<timestamp> [<id>:<thread>] ` prefix.
fn strip_log_prefix(line: &str) -> &str {
    match line.split_once("] ") {
        Some((prefix, rest)) if prefix.contains(" [") && !prefix.contains(']') => rest,
        _ => line,
    }
}

/// Waits for child `pid` and returns its user + system CPU time.
fn wait4(pid: u32) -> std::io::Result<Duration> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    loop {
        // SAFETY: `status` and `usage` are valid, writable and live for the call; `pid` is
        // our own unreaped child, so no other process can be reaped by mistake.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: wait4 returned the pid, so it filled `usage`; rusage is plain integers, so the
    // zeroed value was already valid anyway.
    let usage = unsafe { usage.assume_init() };
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// Microseconds on `CLOCK_MONOTONIC`, the clock of Firecracker's `--start-time-us`.
pub use squib_logger::time::monotonic_us;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_of_missing_binary_names_it() {
        let err = VmmProcess::spawn(Path::new("/nonexistent/vmm"), "t", false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/vmm"), "{err}");
    }

    #[test]
    fn process_that_exits_is_reported_with_its_output() {
        // `sh` rejects Firecracker's flags and exits: the harness must say so, not hang.
        let mut vmm = VmmProcess::spawn(Path::new("/bin/sh"), "t", false).unwrap();
        let err = vmm.wait_api(Duration::from_secs(10)).err().unwrap();
        assert!(matches!(err, VmmError::Exited { .. }), "{err}");
        assert_eq!(vmm.kill().unwrap(), None);
    }

    #[test]
    fn kill_reaps_and_reports_cpu_time() {
        let mut vmm = VmmProcess::spawn(Path::new("/bin/sleep"), "t", false);
        // `sleep` rejects the flags too, but may still be running when killed.
        let cpu = vmm.as_mut().unwrap().kill().unwrap();
        assert!(cpu.is_some_and(|c| c < Duration::from_secs(5)));
        assert!(
            vmm.unwrap().kill().unwrap().is_none(),
            "second kill is a no-op"
        );
    }

    #[test]
    fn strip_log_prefix_keeps_the_message() {
        let line = "2026-11-26T18:40:16.8 [bench-a:fc_vcpu 0] Started the microVM.";
        assert_eq!(strip_log_prefix(line), "Started the microVM.");
        assert_eq!(
            strip_log_prefix("Arguments parsing error: x"),
            "Arguments parsing error: x"
        );
        assert_eq!(strip_log_prefix("a] b"), "a] b");
    }

    #[test]
    fn monotonic_us_advances() {
        let a = monotonic_us();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_us() >= a + 2000);
    }
}
