//! Shared harness for the integration tests that run the `squib` binary.
//!
//! It holds what every such test needs and nothing about one test in particular:
//! - [`GuestKit`]: where the guest artifacts built by `scripts/guest/build.sh` are
//!   (`SQUIB_GUEST_DIR`, else its default cache dir). A missing kit fails the test with the
//!   command to run, unless `SQUIB_SKIP_BOOT_TESTS=1` asks to skip guest boots.
//! - [`boot_slot`]: a host-wide semaphore (file locks). Guests boot slowly on these hosts
//!   (about 45 s of one core each), so no more than [`MAX_GUESTS`] test guests run at once,
//!   across every test process.
//! - [`Squib`]: a spawned `squib` process with a temporary API socket, a reader thread per
//!   output stream collecting lines (the guest console is on stdout), `wait_for` a line, and
//!   kill-on-drop so a failed test leaves no VM behind.
//! - [`ApiClient`]: a tiny raw HTTP/1.1 client over `UnixStream`, parsing replies with
//!   `httparse`, so the tests see the bytes an SDK sees.
#![allow(dead_code)] // Each test binary uses a different subset of this module.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Test guests that may run at once on the host.
pub const MAX_GUESTS: usize = 2;
/// Backstop for a guest to boot to its ready marker (boots take ~45 s of a core here, much
/// more on a loaded host). Waits fail earlier, and say so, when squib's output stays silent
/// for [`SILENCE_LIMIT`] or squib exits: progress decides, not the wall clock.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
/// How long squib's stdout (the guest console and squib's log) may stay silent while a test
/// waits for a line before the wait fails. A working guest prints far more often, but a
/// 4 GiB guest prints nothing until its console is up, after initialising its page
/// structures: about 5 minutes on an idle kvm_pvm host, more on a loaded one.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(900);
/// Time the API socket gets to appear after spawning squib.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout of one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Guest kernel arguments shared by every boot (guest-kit README).
pub const BASE_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 nomodule i8042.noaux i8042.nomux i8042.dumbkbd";
/// Line the guest init prints once it has printed its facts.
pub const READY_MARKER: &str = "SQUIB-GUEST-READY";

/// The guest artifacts built by `scripts/guest/build.sh`.
pub struct GuestKit {
    dir: PathBuf,
}

impl GuestKit {
    /// Finds the kit, or returns `None` when `SQUIB_SKIP_BOOT_TESTS=1`.
    ///
    /// # Panics
    /// When the kit is missing, with the command that builds it.
    pub fn locate() -> Option<GuestKit> {
        if std::env::var("SQUIB_SKIP_BOOT_TESTS").as_deref() == Ok("1") {
            eprintln!("SQUIB_SKIP_BOOT_TESTS=1: skipping a test that boots a guest");
            return None;
        }
        let dir = match std::env::var_os("SQUIB_GUEST_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/squib-guest"),
        };
        let kit = GuestKit { dir };
        for file in [kit.vmlinux(), kit.bz_image(), kit.initramfs(), kit.rootfs()] {
            assert!(
                file.is_file(),
                "guest artifact {} is missing: run scripts/guest/build.sh and export \
                 SQUIB_GUEST_DIR=<the directory it prints> (or SQUIB_SKIP_BOOT_TESTS=1 to skip \
                 guest boots)",
                file.display()
            );
        }
        Some(kit)
    }

    /// The ELF kernel with the PVH entry note.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The same kernel as a compressed bzImage.
    pub fn bz_image(&self) -> PathBuf {
        self.dir.join("bzImage")
    }

    /// Uncompressed newc initramfs whose `/init` is `scripts/guest/init`.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// 32 MiB ext4 image of the same tree (`/sbin/init`). Copy it before a writable boot.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }
}

/// Boot arguments: [`BASE_BOOT_ARGS`] plus the test's own (`squib.action=...`).
pub fn boot_args(extra: &str) -> String {
    format!("{BASE_BOOT_ARGS} {extra}")
}

/// Boot slots held by one test (at most [`MAX_GUESTS`]), released on drop: each is an
/// `flock` on a slot file shared by every test process on the host, so the limit holds
/// whether the test binaries run one after another (`cargo test`) or side by side (a runner
/// such as nextest, one process per test).
pub struct BootSlot(Vec<std::fs::File>);

/// Blocks until fewer than [`MAX_GUESTS`] test guests are running on this host.
pub fn boot_slot() -> BootSlot {
    loop {
        for index in 0..MAX_GUESTS {
            let slot = open_slot(index);
            if flock(&slot, libc::LOCK_EX | libc::LOCK_NB) {
                return BootSlot(vec![slot]);
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Blocks until no other test guest runs on this host, and keeps it so: for every guest with
/// more than one vCPU. On `kvm_pvm`, an SMP guest whose vCPUs share the host's cores with
/// another guest can spin in `stop_machine` for good (the clocksource switches): seen with
/// 2 + 1 and 2 + 2 vCPUs on 2 cores, and identically with Firecracker's own binary booting the
/// same guest beside squib, so it is the emulator's, not the VMM's.
pub fn exclusive_boot_slot() -> BootSlot {
    // Always in slot order, blocking: two exclusive takers cannot deadlock, and single
    // takers never wait while holding a slot.
    BootSlot(
        (0..MAX_GUESTS)
            .map(|index| {
                let slot = open_slot(index);
                assert!(flock(&slot, libc::LOCK_EX), "flock boot slot {index}");
                slot
            })
            .collect(),
    )
}

fn open_slot(index: usize) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("squib-test-boot-slot-{index}"));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open boot slot {}: {e}", path.display()))
}

/// `flock(2)` on `file`; `false` when the lock is held elsewhere (with `LOCK_NB`).
fn flock(file: &std::fs::File, operation: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: plain syscall on a descriptor `file` owns; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return true;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not wedge the others).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines read so far from one output stream, and whether it has ended.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// One output stream of the child, collected by a reader thread.
#[derive(Clone, Default)]
struct Output(Arc<(Mutex<Lines>, Condvar)>);

impl Output {
    /// Starts a thread that collects `stream` line by line (guest `\r\n` becomes `\n`).
    fn collect(stream: impl Read + Send + 'static, echo_prefix: &'static str) -> Output {
        let output = Output::default();
        let sink = output.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                eprintln!("{echo_prefix}{line}");
                let (state, changed) = &*sink.0;
                lock(state).lines.push(line);
                changed.notify_all();
                buf.clear();
            }
            let (state, changed) = &*sink.0;
            lock(state).closed = true;
            changed.notify_all();
        });
        output
    }

    /// Index of the first line at or after `from` containing `pattern`. Waits while the
    /// stream makes progress: `Err` says whether it ended, stayed silent for
    /// [`SILENCE_LIMIT`], or `timeout` (a backstop) ran out.
    fn find(&self, from: usize, pattern: &str, timeout: Duration) -> Result<usize, String> {
        let started = Instant::now();
        let deadline = started + timeout;
        let (state, changed) = &*self.0;
        let mut guard = lock(state);
        let mut next = from;
        let mut last_progress = (guard.lines.len(), started);
        loop {
            if let Some(offset) = guard
                .lines
                .iter()
                .skip(next)
                .position(|l| l.contains(pattern))
            {
                return Ok(next + offset);
            }
            next = next.max(guard.lines.len());
            if guard.closed {
                return Err("the output ended (squib exited)".to_owned());
            }
            let now = Instant::now();
            if guard.lines.len() > last_progress.0 {
                last_progress = (guard.lines.len(), now);
            }
            let silent = now.saturating_duration_since(last_progress.1);
            if silent >= SILENCE_LIMIT {
                return Err(format!(
                    "no output for {} s (after {} s of waiting)",
                    silent.as_secs(),
                    now.saturating_duration_since(started).as_secs()
                ));
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(format!(
                    "still going after the {} s backstop",
                    timeout.as_secs()
                ));
            }
            let wake = left.min(SILENCE_LIMIT - silent);
            guard = changed
                .wait_timeout(guard, wake)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn snapshot(&self) -> Vec<String> {
        lock(&self.0 .0).lines.clone()
    }
}

/// A running `squib` process, killed on drop.
pub struct Squib {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Output,
    stderr: Output,
    api: Option<ApiClient>,
    _dir: tempfile::TempDir,
}

impl Squib {
    /// Spawns `squib --api-sock <tmp>/api.sock --id <id> <extra...>` and waits for its socket.
    pub fn with_api(id: &str, extra: &[&str]) -> Squib {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let sock = dir.path().join("api.sock");
        let mut args = vec![
            "--api-sock".into(),
            sock.display().to_string(),
            "--id".into(),
        ];
        args.push(id.to_owned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut squib = Squib::spawn(&args, dir);
        squib.wait_for_socket(&sock);
        squib.api = Some(ApiClient::new(&sock));
        squib
    }

    /// Waits until `sock` accepts connections; fails at once if squib exits first.
    fn wait_for_socket(&mut self, sock: &Path) {
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        while UnixStream::connect(sock).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "squib exited ({status}) before serving its API socket\n{}",
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "squib's API socket {} did not accept connections within {SOCKET_TIMEOUT:?}\n{}",
                sock.display(),
                self.report()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns `squib --config-file <tmp file with config> --no-api <extra...>`.
    pub fn with_config_file(config: &serde_json::Value, extra: &[&str]) -> Squib {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("vm_config.json");
        std::fs::write(&path, config.to_string()).expect("write the VM config file");
        let mut args = vec![
            "--config-file".into(),
            path.display().to_string(),
            "--no-api".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Squib::spawn(&args, dir)
    }

    fn spawn(args: &[String], dir: tempfile::TempDir) -> Squib {
        eprintln!("spawning squib {}", args.join(" "));
        let mut child = Command::new(env!("CARGO_BIN_EXE_squib"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the squib binary");
        let stdout = Output::collect(child.stdout.take().expect("piped stdout"), "[squib] ");
        let stderr = Output::collect(
            child.stderr.take().expect("piped stderr"),
            "[squib stderr] ",
        );
        let stdin = child.stdin.take();
        Squib {
            child,
            stdin,
            stdout,
            stderr,
            api: None,
            _dir: dir,
        }
    }

    /// The process id of squib.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The API client (squib started with [`Squib::with_api`]).
    pub fn api(&self) -> &ApiClient {
        self.api
            .as_ref()
            .expect("squib was started without an API socket")
    }

    /// Waits for a stdout line containing `pattern` and returns it.
    ///
    /// # Panics
    /// On timeout or end of output, with the output collected so far.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_from(0, pattern, timeout).1
    }

    /// Like [`Squib::wait_for`], looking only at lines from index `from`; returns the
    /// line's index and text.
    pub fn wait_for_from(&self, from: usize, pattern: &str, timeout: Duration) -> (usize, String) {
        match self.stdout.find(from, pattern, timeout) {
            Ok(index) => (index, self.stdout.snapshot()[index].clone()),
            Err(why) => panic!(
                "waiting for {pattern:?} on squib's stdout: {why}\n{}",
                self.report()
            ),
        }
    }

    /// Number of stdout lines collected so far.
    pub fn line_count(&self) -> usize {
        self.stdout.snapshot().len()
    }

    /// Stdout lines collected so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// The value of the guest fact `SQUIB <name>=<value>` (printed before the ready marker).
    pub fn guest_fact(&self, name: &str) -> u64 {
        let prefix = format!("SQUIB {name}=");
        let line = self.wait_for(&prefix, Duration::from_secs(1));
        let value = line.split(&prefix).nth(1).unwrap_or_default().trim();
        value
            .parse()
            .unwrap_or_else(|e| panic!("guest fact {line:?}: {e}"))
    }

    /// Waits for the process to exit and returns its status.
    ///
    /// # Panics
    /// If it is still running after its stdout stayed silent for [`SILENCE_LIMIT`], or after
    /// `timeout` (a backstop).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        let mut last_progress = (self.line_count(), started);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => panic!("waiting for squib: {e}"),
            }
            let now = Instant::now();
            let lines = self.line_count();
            if lines > last_progress.0 {
                last_progress = (lines, now);
            }
            let silent = now.saturating_duration_since(last_progress.1);
            assert!(
                silent < SILENCE_LIMIT,
                "squib did not exit and printed nothing for {} s\n{}",
                silent.as_secs(),
                self.report()
            );
            assert!(
                now < started + timeout,
                "squib did not exit within the {} s backstop\n{}",
                timeout.as_secs(),
                self.report()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of both outputs, for failure messages.
    pub fn report(&self) -> String {
        let tail = |lines: Vec<String>| lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- squib stdout (last 40 lines) ---\n{}\n--- squib stderr (last 40 lines) ---\n{}",
            tail(self.stdout.snapshot()),
            tail(self.stderr.snapshot())
        )
    }
}

impl Drop for Squib {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            // A test that fails mid-boot must not leave a VM using a host core.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw HTTP/1.1 client for the API socket: one connection per request.
pub struct ApiClient {
    sock: PathBuf,
}

impl ApiClient {
    /// A client for `sock` (which must already accept connections).
    fn new(sock: &Path) -> ApiClient {
        ApiClient {
            sock: sock.to_owned(),
        }
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None)
    }

    /// `PUT path` with a JSON body → (status, body).
    pub fn put(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        self.request("PUT", path, Some(&body.to_string()))
    }

    /// `PATCH path` with a JSON body → (status, body).
    pub fn patch(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        self.request("PATCH", path, Some(&body.to_string()))
    }

    /// Sends one request and parses the reply.
    ///
    /// # Panics
    /// On I/O errors and malformed replies: both are test failures.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = UnixStream::connect(&self.sock)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.sock.display()));
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .expect("set write timeout");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(body) = body {
            request.push_str("Content-Type: application/json\r\n");
            request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            request.push_str("\r\n");
        }
        stream
            .write_all(request.as_bytes())
            .expect("write the request");
        let (status, body) = read_response(&mut stream);
        eprintln!(
            "API {method} {path} {} -> {status} {body}",
            body_text(&request)
        );
        (status, body)
    }
}

fn body_text(request: &str) -> &str {
    request.split("\r\n\r\n").nth(1).unwrap_or_default()
}

/// Reads one HTTP/1.1 response: the head, then `Content-Length` bytes of body.
fn read_response(stream: &mut UnixStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read the response");
        assert!(
            n > 0,
            "connection closed before a full response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf).expect("a valid HTTP response head") {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => continue,
        };
        let status = response.code.expect("a status code");
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                String::from_utf8_lossy(h.value)
                    .trim()
                    .parse::<usize>()
                    .expect("a numeric Content-Length")
            })
            .unwrap_or(0);
        let mut body = buf[head_len..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).expect("read the response body");
            assert!(
                n > 0,
                "connection closed after {} of {length} body bytes",
                body.len()
            );
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        return (status, String::from_utf8_lossy(&body).into_owned());
    }
}

/// Parses a JSON reply body.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("reply body {body:?} is not JSON: {e}"))
}

/// Asserts that MemTotal (KiB) fits a guest of `mem_mib` MiB: at most the RAM given, and at
/// least 90% of it minus 16 MiB (kernel image, memmap, reserved pages).
pub fn assert_memtotal_consistent(memtotal_kib: u64, mem_mib: u64) {
    let ram_kib = mem_mib * 1024;
    let floor = ram_kib * 9 / 10 - 16 * 1024;
    assert!(
        (floor..=ram_kib).contains(&memtotal_kib),
        "guest MemTotal {memtotal_kib} KiB is not consistent with {mem_mib} MiB of RAM \
         (expected {floor}..={ram_kib} KiB)"
    );
}

/// Console text by which a boot failed inside the guest for a `kvm_pvm` reason (guest
/// programs lose their FS base now and then there: guest-kit README), not squib's.
pub const PVM_GUEST_CRASH_SIGNS: [&str; 3] =
    ["segfault at", "Kernel panic", "KVM_EXIT_INTERNAL_ERROR"];

/// Runs a boot test again, up to twice, when a try died of a `kvm_pvm` guest crash (its panic
/// message holds one of [`PVM_GUEST_CRASH_SIGNS`]; more likely with more vCPUs). On hardware
/// KVM it never retries.
pub fn retry_on_pvm_crash(test: impl Fn() + std::panic::RefUnwindSafe) {
    for attempt in 1.. {
        let Err(panic) = std::panic::catch_unwind(&test) else {
            return;
        };
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let pvm_crash = PVM_GUEST_CRASH_SIGNS
            .iter()
            .any(|sign| message.contains(sign));
        if !pvm_crash || attempt == 3 {
            std::panic::resume_unwind(panic);
        }
        eprintln!(
            "a guest program crashed (a kvm_pvm quirk): boot attempt {} of 3",
            attempt + 1
        );
    }
}

/// Today's date and time from the host's `date` (no date crate in these tests).
pub fn utc_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces the part of `BENCHMARKS.md` (workspace root) from `<!-- NAME:begin -->` to
/// `<!-- NAME:end -->` with `section`, which holds both markers; appends it when the
/// markers are missing. Benchmarks that boot guests write their figures this way.
pub fn write_bench_section(name: &str, section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            let rest = &text[e + end.len()..];
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            format!("{}{section}{rest}", &text[..b])
        }
        _ => format!("{text}\n{section}"),
    };
    std::fs::write(&path, updated).expect("write BENCHMARKS.md");
}
