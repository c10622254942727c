//! What a launcher does around the process, shared by the launcher tests: run squib to its
//! exit with a timeout, keep a raw child to send it signals, read the log file and the
//! metrics file, and the metric keys Firecracker writes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Firecracker's top-level metrics keys (devices add `block_<id>`, `net_<id>`...).
pub const FC_METRIC_KEYS: [&str; 23] = [
    "utc_timestamp_ms",
    "api_server",
    "balloon",
    "block",
    "deprecated_api",
    "get_api_requests",
    "i8042",
    "latencies_us",
    "logger",
    "mmds",
    "net",
    "patch_api_requests",
    "put_api_requests",
    "seccomp",
    "vcpu",
    "vmm",
    "uart",
    "signals",
    "vsock",
    "entropy",
    "interrupts",
    "pmem",
    "memory_hotplug",
];

/// Time a process that boots no guest gets to exit or to serve its socket.
pub const QUICK: Duration = Duration::from_secs(20);

/// What a short run of squib left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `squib <args>` to its exit (killed after [`QUICK`]).
pub fn run_to_exit(args: &[&str]) -> Finished {
    let mut child = Command::new(env!("CARGO_BIN_EXE_squib"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the squib binary");
    let deadline = Instant::now() + QUICK;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect squib's output");
            panic!(
                "squib {args:?} did not exit within {QUICK:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect squib's output");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A squib serving its API socket, started like a launcher would, killed on drop.
pub struct Launched {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Launched {
    /// Starts `squib --api-sock <dir>/api.sock --id <id> <extra>` and waits for the socket;
    /// `dir` (from [`workdir`]) lives as long as the process, so `extra` may name files in it.
    pub fn start(dir: tempfile::TempDir, id: &str, extra: &[String]) -> Launched {
        let sock = dir.path().join("api.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_squib"))
            .arg("--api-sock")
            .arg(&sock)
            .args(["--id", id])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the squib binary");
        let mut launched = Launched {
            child,
            sock: sock.clone(),
            _dir: dir,
        };
        let deadline = Instant::now() + QUICK;
        while UnixStream::connect(&sock).is_err() {
            if let Ok(Some(status)) = launched.child.try_wait() {
                panic!("squib exited ({status}) before serving {}", sock.display());
            }
            assert!(Instant::now() < deadline, "no API socket within {QUICK:?}");
            thread::sleep(Duration::from_millis(20));
        }
        launched
    }

    /// Sends one request (`Connection: close`) and returns the reply's status code.
    pub fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> u16 {
        let mut stream = UnixStream::connect(&self.sock).expect("connect to the API socket");
        stream
            .set_read_timeout(Some(QUICK))
            .expect("set a read timeout");
        let body = body.map(ToString::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .expect("write the request");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read the reply");
        let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok());
        status.unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"))
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: `kill` only sends a signal to our own child, which has not been reaped
        // (we hold its `Child` and have not waited on it), so the pid is still ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits up to `timeout` for the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => panic!("squib did not exit within {timeout:?}"),
                Err(e) => panic!("waiting for squib: {e}"),
            }
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh temporary directory for one launched process's files.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// `dir/name` as a command-line argument.
pub fn arg_path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The lines of a log file (empty if it does not exist yet).
pub fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the log file has a line containing `pattern`; returns all lines.
pub fn wait_for_log(path: &Path, pattern: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = log_lines(path);
        if lines.iter().any(|l| l.contains(pattern)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {pattern:?} in {} within {timeout:?}:\n{}",
            path.display(),
            lines.join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that each pattern appears in `lines`, each after the previous one.
pub fn assert_in_order(lines: &[String], patterns: &[&str]) {
    let mut from = 0;
    for pattern in patterns {
        let found = lines[from..].iter().position(|l| l.contains(pattern));
        let Some(offset) = found else {
            panic!(
                "{pattern:?} missing after line {from} of the log:\n{}",
                lines.join("\n")
            );
        };
        from += offset + 1;
    }
}

/// Every line of a metrics file, parsed as JSON (NDJSON: one object per line).
pub fn metrics_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read metrics file {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("metrics line {line:?} is not JSON: {e}"))
        })
        .collect()
}

/// Asserts that a metrics line is an object with all of Firecracker's keys.
pub fn assert_firecracker_keys(line: &serde_json::Value) {
    let object = line.as_object().expect("a metrics line is a JSON object");
    for key in FC_METRIC_KEYS {
        assert!(
            object.contains_key(key),
            "metrics line lacks {key:?}: {line}"
        );
    }
    assert!(line["utc_timestamp_ms"].as_u64().is_some_and(|ms| ms > 0));
}

/// Sum of `group.key` over all lines (counters report the increase since the last line).
pub fn metric_sum(lines: &[serde_json::Value], group: &str, key: &str) -> u64 {
    lines.iter().filter_map(|l| l[group][key].as_u64()).sum()
}

/// Splits a Firecracker log line into its bracketed prefix fields and its message:
/// `<timestamp> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] <msg>`.
pub fn split_log_line(line: &str) -> Option<(&str, Vec<&str>, &str)> {
    let (timestamp, rest) = line.split_once(" [")?;
    let (prefix, message) = rest.split_once("] ")?;
    Some((timestamp, prefix.split(':').collect(), message))
}

/// Asserts Firecracker's timestamp shape `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
pub fn assert_timestamp(timestamp: &str) {
    let bytes = timestamp.as_bytes();
    let shape_ok = bytes.len() == 29
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            _ => b.is_ascii_digit(),
        });
    assert!(shape_ok, "timestamp {timestamp:?} is not Firecracker's");
}

/// The exit status's signal, if the process died by one.
pub fn killed_by(status: ExitStatus) -> Option<i32> {
    status.signal()
}
