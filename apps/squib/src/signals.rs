//! Firecracker's fatal-signal handling: exit codes, metrics and log lines.
//!
//! | signal  | exit code | metric                 |
//! |---------|-----------|------------------------|
//! | SIGSYS  | 148 (seccomp only, else 2) | `seccomp.num_faults` |
//! | SIGBUS  | 149       | `signals.sigbus`       |
//! | SIGSEGV | 150       | `signals.sigsegv`      |
//! | SIGXFSZ | 151       | `signals.sigxfsz`      |
//! | SIGXCPU | 154       | `signals.sigxcpu`      |
//! | SIGHUP  | 156       | `signals.sighup`       |
//! | SIGILL  | 157       | `signals.sigill`       |
//! | SIGPIPE | not fatal | `signals.sigpipe` (+1) |
//!
//! SIGTERM and SIGINT get no handler, as in Firecracker: the process dies by the signal.
//!
//! Why this shape: Firecracker logs and writes metrics inside the handler, which takes the
//! logger's and the metrics file's locks; if the signal interrupted a thread holding one of
//! them, the process would hang instead of exiting. Here the handler does only
//! async-signal-safe work: it sets the metric (an atomic), writes a fixed-size [`Record`] to a
//! non-blocking pipe and sleeps. The `fc_signal` thread, which blocks every signal, reads the
//! record, logs `Shutting down VM after intercepting signal N, code C.`, writes a metrics line
//! and the final `Firecracker exiting with error. exit_code=N`, then calls `_exit`. If it has
//! not done so within [`REPORT_TIMEOUT`] (it is stuck on a lock the faulting thread held), the
//! handler calls `_exit` itself. A synchronous fault (SIGSEGV, SIGBUS, SIGILL) never returns
//! to the faulting instruction.
//!
//! The handlers are installed without `SA_ONSTACK` (vmm-sys-util's `register_signal_handler`),
//! like Firecracker's: a stack overflow still kills the process with SIGSEGV, unreported.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use libc::{c_int, c_void, siginfo_t};
use squib_logger::metrics::METRICS;
use squib_vmm::exit_code::FcExitCode;
use vmm_sys_util::signal::register_signal_handler;

/// How long a fatal handler waits for the `fc_signal` thread to log and exit.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Step of that wait.
const REPORT_POLL: Duration = Duration::from_millis(10);
/// `si_code` of a SIGSYS raised by a seccomp filter (`SYS_SECCOMP` in `<signal.h>`).
const SYS_SECCOMP: c_int = 1;
/// Name of the reporting thread.
const THREAD_NAME: &str = "fc_signal";

/// Write end of the handler → `fc_signal` pipe, `-1` until [`install`] ran.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the first fatal handler; later fatal signals wait for it to end the process.
static FATAL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Why the handlers could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// `sigaction` refused a handler.
    #[error("Cannot register the handler of signal {signal}: {source}")]
    Register {
        /// The signal number.
        signal: c_int,
        /// The `sigaction` error.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// The report pipe could not be created.
    #[error("Cannot create the signal report pipe: {0}")]
    Pipe(#[source] std::io::Error),
    /// The `fc_signal` thread could not be started.
    #[error("Cannot start the signal report thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The signals this module handles, each with its fate.
const HANDLED: [c_int; 8] = [
    libc::SIGSYS,
    libc::SIGBUS,
    libc::SIGSEGV,
    libc::SIGXFSZ,
    libc::SIGXCPU,
    libc::SIGHUP,
    libc::SIGILL,
    libc::SIGPIPE,
];

/// Installs the handlers and creates the report pipe. Call once, early, after the logger is
/// configured (Firecracker's `register_signal_handlers`); then [`Reporter::start`] once the
/// API socket is listening.
///
/// The `fc_signal` thread is started later because spawning a thread is one of the few costs
/// of start-up (BENCHMARKS.md, "Start-up: where the time goes") and nothing needs it before
/// the socket accepts: a record sent before it runs waits in the pipe, and a fatal signal in
/// that window still ends the process with its exit code (the handler's own `_exit` after
/// [`REPORT_TIMEOUT`], as when the thread is stuck).
///
/// # Errors
/// When the pipe or a `sigaction` fails: start-up then exits 1, as Firecracker.
pub fn install() -> Result<Reporter, SignalError> {
    let (read_end, write_end) = report_pipe().map_err(SignalError::Pipe)?;
    // The write end lives as long as the process: handlers may run until `_exit`.
    REPORT_FD.store(write_end, Ordering::SeqCst);
    for signal in HANDLED {
        let handler = if signal == libc::SIGPIPE {
            handle_sigpipe
        } else {
            handle_fatal
        };
        register_signal_handler(signal, handler)
            .map_err(|source| SignalError::Register { signal, source })?;
    }
    Ok(Reporter { read_end })
}

/// The read end of the report pipe, waiting for its `fc_signal` thread.
#[must_use = "without `start`, fatal signals are not logged"]
pub struct Reporter {
    read_end: OwnedFd,
}

impl Reporter {
    /// Starts the `fc_signal` thread, which logs what the handlers sent so far and from now.
    ///
    /// # Errors
    /// When the thread cannot be spawned: start-up then exits 1, as Firecracker.
    pub fn start(self) -> Result<(), SignalError> {
        let read_end = self.read_end;
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || report_loop(read_end))
            .map_err(SignalError::Thread)?;
        Ok(())
    }
}

/// A pipe whose read end blocks and whose write end does not (a handler must never block
/// on a full pipe). Returns the read end and the raw write end.
fn report_pipe() -> std::io::Result<(OwnedFd, c_int)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill; the result is checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `pipe2` succeeded, so `fds[0]` is an open descriptor owned by nobody else.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: `fds[1]` is the open write end just created; F_SETFL only changes its flags.
    if unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: `fds[1]` is open and owned here; nothing else uses it.
        unsafe { libc::close(fds[1]) };
        return Err(e);
    }
    Ok((read_end, fds[1]))
}

/// What a handler tells the `fc_signal` thread: plain integers, one pipe write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    /// The signal number.
    signal: c_int,
    /// `siginfo.si_code`.
    si_code: c_int,
    /// The exit code, or `-1` for a signal that is only reported (SIGPIPE).
    exit_code: c_int,
    /// The system call number of a seccomp SIGSYS, else `-1`.
    syscall: c_int,
}

/// Size of an encoded [`Record`]: below `PIPE_BUF`, so a write is atomic.
const RECORD_LEN: usize = 16;

impl Record {
    fn encode(self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let fields = [self.signal, self.si_code, self.exit_code, self.syscall];
        for (chunk, field) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        out
    }

    fn decode(bytes: &[u8; RECORD_LEN]) -> Record {
        let field = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            c_int::from_ne_bytes(b)
        };
        Record {
            signal: field(0),
            si_code: field(1),
            exit_code: field(2),
            syscall: field(3),
        }
    }

    /// The error line Firecracker logs for this record.
    fn message(&self) -> String {
        if self.signal == libc::SIGSYS && self.syscall >= 0 {
            format!(
                "Shutting down VM after intercepting a bad syscall ({}).",
                self.syscall
            )
        } else if self.exit_code < 0 {
            format!("Received signal {}, code {}.", self.signal, self.si_code)
        } else {
            format!(
                "Shutting down VM after intercepting signal {}, code {}.",
                self.signal, self.si_code
            )
        }
    }
}

/// The exit code of a fatal signal, or `None` for one this module does not end on.
fn exit_code_for(signal: c_int, si_code: c_int) -> Option<FcExitCode> {
    Some(match signal {
        libc::SIGSYS if si_code == SYS_SECCOMP => FcExitCode::BadSyscall,
        libc::SIGSYS => FcExitCode::UnexpectedError,
        libc::SIGBUS => FcExitCode::SigBus,
        libc::SIGSEGV => FcExitCode::SigSegv,
        libc::SIGXFSZ => FcExitCode::SigXfsz,
        libc::SIGXCPU => FcExitCode::SigXcpu,
        libc::SIGHUP => FcExitCode::SigHup,
        libc::SIGILL => FcExitCode::SigIll,
        _ => return None,
    })
}

/// Marks the metric of a fatal signal (async-signal-safe: atomic stores only).
fn mark_metric(signal: c_int) {
    let metric = match signal {
        libc::SIGSYS => &METRICS.seccomp.num_faults,
        libc::SIGBUS => &METRICS.signals.sigbus,
        libc::SIGSEGV => &METRICS.signals.sigsegv,
        libc::SIGXFSZ => &METRICS.signals.sigxfsz,
        libc::SIGXCPU => &METRICS.signals.sigxcpu,
        libc::SIGHUP => &METRICS.signals.sighup,
        libc::SIGILL => &METRICS.signals.sigill,
        _ => return,
    };
    metric.store(1);
}

/// Reads `(si_signo, si_code, syscall)` from the kernel's `siginfo_t`.
///
/// # Safety
/// `info` must point to the `siginfo_t` the kernel passed to an `SA_SIGINFO` handler.
unsafe fn read_siginfo(info: *const siginfo_t) -> (c_int, c_int, c_int) {
    // SAFETY: the caller guarantees `info` is the kernel's valid siginfo.
    let (signo, code) = unsafe { ((*info).si_signo, (*info).si_code) };
    if signo != libc::SIGSYS || code != SYS_SECCOMP {
        return (signo, code, -1);
    }
    // The kernel's `_sigsys` member of the union that starts after the three leading ints
    // (and padding to pointer alignment): `{ void *_call_addr; int _syscall; unsigned _arch; }`.
    let union_offset =
        (3 * std::mem::size_of::<c_int>()).next_multiple_of(std::mem::align_of::<*const c_void>());
    let syscall_offset = union_offset + std::mem::size_of::<*const c_void>();
    // SAFETY: for a seccomp SIGSYS the kernel fills `_sigsys`; the offset is inside the
    // 128-byte `siginfo_t`, and `read_unaligned` needs no alignment.
    let syscall =
        unsafe { std::ptr::read_unaligned(info.cast::<u8>().add(syscall_offset).cast::<c_int>()) };
    (signo, code, syscall)
}

/// Writes `record` to the `fc_signal` thread; `false` if it could not be sent.
fn send(record: Record) -> bool {
    let fd = REPORT_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return false;
    }
    let bytes = record.encode();
    // SAFETY: `fd` is the pipe's write end, open for the life of the process; `bytes` is a
    // valid buffer of `RECORD_LEN` bytes. `write` is async-signal-safe.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), RECORD_LEN) };
    usize::try_from(written) == Ok(RECORD_LEN)
}

/// Ends the process now (async-signal-safe).
fn exit_now(code: c_int) -> ! {
    // SAFETY: `_exit` is async-signal-safe and ends the process without running any code
    // that could touch state the interrupted thread left half-updated.
    unsafe { libc::_exit(code) }
}

/// Sleeps for `d` (async-signal-safe, unlike `std::thread::sleep` on every platform).
fn nap(d: Duration) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    };
    // SAFETY: `ts` is a valid timespec; a null remainder pointer is allowed.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Handler of every fatal signal.
extern "C" fn handle_fatal(num: c_int, info: *mut siginfo_t, _unused: *mut c_void) {
    // SAFETY: registered with SA_SIGINFO, so `info` is the kernel's siginfo.
    let (signo, si_code, syscall) = unsafe { read_siginfo(info) };
    let Some(code) = exit_code_for(num, si_code).filter(|_| signo == num) else {
        exit_now(FcExitCode::UnexpectedError.code());
    };
    mark_metric(num);
    if FATAL_CLAIMED.swap(true, Ordering::SeqCst) {
        // Another thread is already ending the process: never return to the fault.
        loop {
            nap(REPORT_POLL);
        }
    }
    let record = Record {
        signal: num,
        si_code,
        exit_code: code.code(),
        syscall,
    };
    if send(record) {
        let steps = REPORT_TIMEOUT.as_millis() / REPORT_POLL.as_millis().max(1);
        for _ in 0..steps {
            nap(REPORT_POLL);
        }
    }
    exit_now(code.code());
}

/// Handler of SIGPIPE: counted and reported, not fatal (the writer sees EPIPE).
extern "C" fn handle_sigpipe(num: c_int, info: *mut siginfo_t, _unused: *mut c_void) {
    // SAFETY: registered with SA_SIGINFO, so `info` is the kernel's siginfo.
    let (signo, si_code, _) = unsafe { read_siginfo(info) };
    if signo != num || num != libc::SIGPIPE {
        return;
    }
    METRICS.signals.sigpipe.inc();
    // A full pipe drops the report; the counter already moved.
    send(Record {
        signal: num,
        si_code,
        exit_code: -1,
        syscall: -1,
    });
}

/// The `fc_signal` thread: blocks every signal, then logs each record; a fatal one ends
/// the process with its exit code after a metrics line and the final log line.
fn report_loop(read_end: OwnedFd) {
    block_all_signals();
    let mut pipe = std::fs::File::from(read_end);
    let mut buf = [0u8; RECORD_LEN];
    while pipe.read_exact(&mut buf).is_ok() {
        let record = Record::decode(&buf);
        log::error!("{}", record.message());
        if record.exit_code >= 0 {
            finish(record.exit_code);
        }
    }
}

/// Writes the last metrics line and exit line, then `_exit(code)`.
fn finish(code: c_int) -> ! {
    if let Err(e) = squib_logger::metrics::write_metrics() {
        log::error!("Failed to write metrics while stopping: {e}");
    }
    log::error!("Firecracker exiting with error. exit_code={code}");
    log::logger().flush();
    exit_now(code)
}

/// Blocks every signal on the calling thread, so no handler ever runs on `fc_signal` (it
/// would wait for itself).
fn block_all_signals() {
    // SAFETY: zeroed memory is a valid `sigset_t` for `sigfillset` to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset; both calls only read/write it and the mask.
    let rc = unsafe {
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        log::warn!("fc_signal: cannot block signals (error {rc})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_firecracker_table() {
        let table = [
            (libc::SIGSYS, SYS_SECCOMP, 148),
            (libc::SIGBUS, 0, 149),
            (libc::SIGSEGV, 0, 150),
            (libc::SIGXFSZ, 0, 151),
            (libc::SIGXCPU, 0, 154),
            (libc::SIGHUP, 0, 156),
            (libc::SIGILL, 0, 157),
        ];
        for (signal, si_code, code) in table {
            assert_eq!(
                exit_code_for(signal, si_code).map(FcExitCode::code),
                Some(code),
                "signal {signal}"
            );
        }
    }

    #[test]
    fn sigsys_not_from_seccomp_is_unexpected_error() {
        assert_eq!(
            exit_code_for(libc::SIGSYS, 0),
            Some(FcExitCode::UnexpectedError)
        );
    }

    #[test]
    fn sigpipe_sigterm_and_sigint_are_not_fatal_here() {
        for signal in [libc::SIGPIPE, libc::SIGTERM, libc::SIGINT] {
            assert_eq!(exit_code_for(signal, 0), None, "signal {signal}");
        }
        assert!(!HANDLED.contains(&libc::SIGTERM) && !HANDLED.contains(&libc::SIGINT));
    }

    #[test]
    fn record_round_trips_through_its_encoding() {
        let record = Record {
            signal: libc::SIGSYS,
            si_code: SYS_SECCOMP,
            exit_code: 148,
            syscall: 59,
        };
        assert_eq!(Record::decode(&record.encode()), record);
    }

    #[test]
    fn messages_are_firecrackers() {
        let fatal = Record {
            signal: libc::SIGHUP,
            si_code: 0,
            exit_code: 156,
            syscall: -1,
        };
        assert_eq!(
            fatal.message(),
            "Shutting down VM after intercepting signal 1, code 0."
        );
        let sys = Record {
            signal: libc::SIGSYS,
            syscall: 59,
            exit_code: 148,
            si_code: SYS_SECCOMP,
        };
        assert_eq!(
            sys.message(),
            "Shutting down VM after intercepting a bad syscall (59)."
        );
        let pipe = Record {
            signal: libc::SIGPIPE,
            si_code: 0,
            exit_code: -1,
            syscall: -1,
        };
        assert_eq!(pipe.message(), "Received signal 13, code 0.");
    }

    #[test]
    fn sigpipe_is_counted_and_the_process_survives() {
        install()
            .expect("install the signal handlers")
            .start()
            .expect("start the report thread");
        let before = METRICS.signals.sigpipe.count();
        // SAFETY: raising SIGPIPE runs `handle_sigpipe`, which only counts and reports it.
        let rc = unsafe { libc::raise(libc::SIGPIPE) };
        assert_eq!(rc, 0);
        assert_eq!(METRICS.signals.sigpipe.count(), before + 1);
    }
}
