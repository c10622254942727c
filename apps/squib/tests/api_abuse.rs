//! Hostile API clients against the real `squib` binary, with no guest boot: held
//! connections, slow heads and bodies, a client that gives up on a slow action, and log and
//! metrics paths that are FIFOs, directories or devices. squib must keep answering fresh
//! clients promptly, keep its own file descriptors bounded and never run an action whose
//! requester has gone.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{json, Squib};
use serde_json::json;

/// squib's cap on open API connections (`squib_api::server::MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 64;
/// squib's limit for a request head or body to arrive (`HEADER_READ_TIMEOUT`,
/// `BODY_READ_TIMEOUT`).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The API socket of a squib started with [`Squib::with_api`] (`--api-sock <dir>/api.sock`).
fn socket_of(squib: &Squib) -> PathBuf {
    let pid = squib.pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read squib's cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--api-sock")
        .expect("--api-sock");
    PathBuf::from(&args[at + 1])
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list squib's fds")
        .count()
}

/// Reads until the server closes the connection; `None` on the read timeout.
fn read_to_close(stream: &mut UnixStream, timeout: Duration) -> Option<String> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(String::from_utf8_lossy(&all).into_owned()),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&all).into_owned())
            }
            Err(_) => return None,
        }
    }
}

/// A fresh `GET /` on a new connection: the status line, or `None` if closed unanswered.
fn fresh_get(sock: &Path) -> Option<String> {
    let mut stream = UnixStream::connect(sock).expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn thousands_of_held_connections_leave_the_api_responsive_and_fds_bounded() {
    let squib = Squib::with_api("abuse-conns", &[]);
    let sock = socket_of(&squib);
    let baseline = fd_count(squib.pid());
    let held: Vec<UnixStream> = (0..3000)
        .map(|_| UnixStream::connect(&sock).expect("connect"))
        .collect();
    let started = Instant::now();
    let (status, _) = squib.api().get("/");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a fresh client waited {:?} behind 3000 held connections",
        started.elapsed()
    );
    let fds = fd_count(squib.pid());
    assert!(
        fds <= baseline + MAX_CONNECTIONS + 4,
        "squib holds {fds} fds with 3000 clients connected (baseline {baseline})"
    );
    drop(held);

    // Every slot busy with a head that never ends: newcomers get 503, never a hang, until
    // the head timeout frees the slots.
    let busy: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\n")
                .expect("write half a head");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(fresh_get(&sock).as_deref(), Some("HTTP/1.1 503"));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(fd_count(squib.pid()) <= baseline + MAX_CONNECTIONS + 4);
    thread::sleep(READ_TIMEOUT + Duration::from_secs(1));
    assert_eq!(fresh_get(&sock).as_deref(), Some("HTTP/1.1 200"));
    drop(busy);
}

#[test]
fn slow_heads_and_bodies_are_cut_off_without_delaying_others() {
    let squib = Squib::with_api("abuse-slow", &[]);
    let sock = socket_of(&squib);
    // A body that stops after one byte.
    let mut body = UnixStream::connect(&sock).unwrap();
    body.write_all(b"PUT /mmds HTTP/1.1\r\nContent-Length: 64\r\n\r\n{")
        .unwrap();
    // A head sent a byte a second.
    let head = UnixStream::connect(&sock).unwrap();
    let mut dribble = head.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for byte in b"PUT /mmds HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
            if dribble.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    let started = Instant::now();
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(squib.api().get("/").0, 200);
        assert!(asked.elapsed() < Duration::from_millis(500));
        thread::sleep(Duration::from_millis(100));
    }
    let body_reply = read_to_close(&mut body, Duration::from_secs(20)).expect("body cut off");
    assert!(body_reply.starts_with("HTTP/1.1 408"), "{body_reply}");
    assert!(
        body_reply.contains("Timed out after 10 s reading the request body."),
        "{body_reply}"
    );
    let mut head = head;
    read_to_close(&mut head, Duration::from_secs(20)).expect("head cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed < READ_TIMEOUT + Duration::from_secs(3),
        "cut off after {elapsed:?}"
    );
    writer.join().unwrap();
    let (status, body) = squib.api().get("/mmds");
    assert_eq!(
        (status, body.as_str()),
        (200, "{}"),
        "no partial body reached the VMM"
    );
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Sends `method path body` on its own connection from a thread; the reply comes on join.
fn request_in_thread(
    sock: &Path,
    method: &'static str,
    path: &'static str,
    body: String,
) -> thread::JoinHandle<(u16, String)> {
    let sock = sock.to_owned();
    thread::spawn(move || {
        let mut stream = UnixStream::connect(&sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let reply = read_reply(&mut stream);
        let status = reply[9..12].parse().unwrap();
        let body = reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    })
}

/// Reads one response with a `Content-Length` body.
fn read_reply(stream: &mut UnixStream) -> String {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read a reply");
        assert!(n > 0, "closed before a reply");
        all.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&all).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// Stops one thread of another process (and only that thread) while alive: the test
/// attaches to it with `ptrace` and interrupts it; dropping the guard detaches, which lets
/// the thread run on. Root may trace any process.
struct FrozenThread(libc::pid_t);

impl FrozenThread {
    fn freeze(tid: libc::pid_t) -> Self {
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take no pointers; `tid` is a live thread
        // of the child this test spawned.
        let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) };
        assert_eq!(
            seized,
            0,
            "ptrace(SEIZE, {tid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: as above; the thread is now traced by this one.
        let interrupted = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) };
        assert_eq!(
            interrupted,
            0,
            "ptrace(INTERRUPT): {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let waited = unsafe { libc::waitpid(tid, &raw mut status, libc::__WALL) };
        assert_eq!(waited, tid, "waitpid: {}", std::io::Error::last_os_error());
        Self(tid)
    }
}

impl Drop for FrozenThread {
    fn drop(&mut self) {
        // SAFETY: PTRACE_DETACH takes no pointers; this thread is the tracer.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The VMM thread (`main`, whose thread id is the process id) is stopped with `ptrace` while
/// the API thread goes on: a request queued meanwhile times out, and must not run once the
/// VMM thread runs again.
#[test]
fn an_action_that_timed_out_in_the_queue_does_not_run_late() {
    let squib = Squib::with_api("abuse-late", &[]);
    let sock = socket_of(&squib);
    let vmm_thread = libc::pid_t::try_from(squib.pid()).expect("a pid fits pid_t");
    let frozen = FrozenThread::freeze(vmm_thread);
    let late = request_in_thread(
        &sock,
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 256}).to_string(),
    );
    // The API thread answers on its own while the VMM thread is stopped.
    assert_eq!(squib.api().get("/").0, 200);
    let (status, body) = late.join().unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        json(&body)["fault_message"],
        "Timed out after 5 s waiting for the VMM to complete PUT /machine-config."
    );
    drop(frozen);
    let (status, body) = squib.api().get("/machine-config");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["vcpu_count"],
        1,
        "the timed-out PUT /machine-config ran late: {body}"
    );
    squib.wait_for(
        "Skipped API request PUT /machine-config",
        Duration::from_secs(5),
    );
}

/// Opens `fifo` for reading without blocking, so squib's writes have a reader.
fn fifo_reader(fifo: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .expect("open the FIFO for reading")
}

/// Reads what is in the FIFO now, waiting up to 2 s for something.
fn drain(reader: &mut std::fs::File) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match reader.read(&mut chunk) {
            Ok(n) if n > 0 => all.extend_from_slice(&chunk[..n]),
            _ if !all.is_empty() => break,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Asserts a prompt 400 whose `fault_message` starts with `prefix` and contains `why`.
fn assert_prompt_fault(
    squib: &Squib,
    path: &str,
    body: serde_json::Value,
    prefix: &str,
    why: &str,
) {
    let started = Instant::now();
    let (status, reply) = squib.api().put(path, &body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "PUT {path} hung"
    );
    assert_eq!(status, 400, "PUT {path}: {reply}");
    let message = json(&reply)["fault_message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(prefix) && message.contains(why),
        "PUT {path}: {message}"
    );
}

#[test]
fn log_and_metrics_paths_take_fifos_and_devices_and_refuse_directories() {
    let squib = Squib::with_api("abuse-paths", &[]);
    let dir = tempfile::tempdir().unwrap();
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    assert_prompt_fault(
        &squib,
        "/logger",
        json!({ "log_path": directory }),
        "Logger error: ",
        "Is a directory",
    );
    assert_prompt_fault(
        &squib,
        "/metrics",
        json!({ "metrics_path": directory }),
        "Metrics error: ",
        "Is a directory",
    );
    // A device works for the logger (the metrics destination is set once per process).
    let (status, body) = squib
        .api()
        .put("/logger", &json!({ "log_path": "/dev/null" }));
    assert_eq!(status, 204, "{body}");

    // FIFOs without a reader are accepted at once, and lines reach a reader.
    let log_fifo = dir.path().join("log.fifo");
    let metrics_fifo = dir.path().join("metrics.fifo");
    mkfifo(&log_fifo);
    mkfifo(&metrics_fifo);
    let started = Instant::now();
    let logger = json!({ "log_path": log_fifo, "level": "Debug" });
    let (status, body) = squib.api().put("/logger", &logger);
    assert_eq!(status, 204, "{body}");
    let (status, body) = squib
        .api()
        .put("/metrics", &json!({ "metrics_path": metrics_fifo }));
    assert_eq!(status, 204, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a FIFO without a reader hung"
    );
    let mut log = fifo_reader(&log_fifo);
    assert_eq!(squib.api().get("/machine-config").0, 200);
    let lines = drain(&mut log);
    assert!(
        lines.contains("The API server received a Get request on \"/machine-config\"."),
        "{lines}"
    );
    assert_eq!(squib.api().get("/").0, 200);
}

/// Sets squib's open-file limit (soft and hard) with util-linux `prlimit`.
fn limit_fds(pid: u32, limit: usize) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid={pid} --nofile={limit}");
}

/// User plus system CPU time of squib's `fc_api` thread, in clock ticks.
fn api_thread_ticks(pid: u32) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == "fc_api" {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            // Fields 14 and 15 of stat; `fields` starts at field 3.
            return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
    }
    panic!("squib has no fc_api thread");
}

#[test]
fn out_of_file_descriptors_the_api_backs_off_and_still_lets_a_fresh_client_in() {
    let squib = Squib::with_api("abuse-emfile", &[]);
    let sock = socket_of(&squib);
    let pid = squib.pid();
    let limit = fd_count(pid) + 8;
    limit_fds(pid, limit);
    // Idle connections past the limit: accept fails with EMFILE.
    let idle: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(fresh_get(&sock).as_deref(), Some("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a fresh client waited {:?} while squib was out of fds",
        started.elapsed()
    );
    assert!(fd_count(pid) <= limit);
    drop(idle);

    // Out of fds with every connection busy: nothing to free, so accept keeps failing. It
    // must back off (little CPU) and log once, not once per attempt.
    let busy: Vec<UnixStream> = (0..16)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let lines_before = squib.line_count();
    let ticks_before = api_thread_ticks(pid);
    thread::sleep(Duration::from_secs(3));
    let ticks = api_thread_ticks(pid) - ticks_before;
    let failures = squib.lines()[lines_before..]
        .iter()
        .filter(|l| l.contains("failed to accept a connection"))
        .count();
    assert!(ticks < 30, "fc_api used {ticks} ticks in 3 s out of fds");
    assert!(failures <= 1, "{failures} accept failures logged in 3 s");
    drop(busy);
}
