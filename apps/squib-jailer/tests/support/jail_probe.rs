//! A stand-in VMM for the jailer tests: `tests/jail.rs` compiles it statically (the jail holds
//! nothing but the exec file) and uses it as `--exec-file`.
//!
//! It reports what it sees from inside the jail, one `key=value` line each, then `done`:
//! identity, pid, session, arguments, environment, open descriptors above 2, resource limits,
//! stdin's device and every entry under `/` with type, mode, owner and device numbers.
//!
//! Forwarded flags (after the jailer's own): `--report-file <path>` writes the report there
//! instead of stdout (for `--daemonize`, whose stdout is `/dev/null`); `--wait-stdin` prints
//! `ready` and waits for stdin to close before exiting, so the test can look at the live
//! process from the host.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn getuid() -> u32;
    fn geteuid() -> u32;
    fn getgid() -> u32;
    fn getegid() -> u32;
    fn getgroups(size: i32, list: *mut u32) -> i32;
    fn getsid(pid: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
}

const F_GETFD: i32 = 1;
const RLIMIT_FSIZE: i32 = 1;
const RLIMIT_NOFILE: i32 = 7;

fn limit(resource: i32) -> String {
    let mut l = Rlimit { cur: 0, max: 0 };
    // SAFETY: `l` is a valid rlimit (two u64s on x86_64) the kernel writes into.
    unsafe { getrlimit(resource, &mut l) };
    format!("{}/{}", l.cur, l.max)
}

fn walk(dir: &Path, out: &mut String) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = if meta.is_dir() {
            "d"
        } else if meta.file_type().is_char_device() {
            "c"
        } else {
            "f"
        };
        let rdev = meta.rdev();
        let (major, minor) = (
            (rdev >> 8) & 0xfff,
            (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
        );
        let _ = writeln!(
            out,
            "entry={} {kind} {:o} {}:{} {major}:{minor}",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        if meta.is_dir() {
            walk(&path, out);
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut out = String::new();
    // SAFETY: these getters have no preconditions.
    let (uid, euid, gid, egid) = unsafe { (getuid(), geteuid(), getgid(), getegid()) };
    // SAFETY: size 0 with a NULL list only counts the supplementary groups.
    let groups = unsafe { getgroups(0, std::ptr::null_mut()) };
    let pid = std::process::id();
    // SAFETY: getsid(0) asks about this process.
    let sid = unsafe { getsid(0) };
    // SAFETY: F_GETFD on a number that may not be open only returns -1 with EBADF.
    let open_fds: Vec<String> = (3..1024)
        .filter(|fd| unsafe { fcntl(*fd, F_GETFD) } >= 0)
        .map(|fd| fd.to_string())
        .collect();
    let stdin_rdev = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| fs::File::from(fd).metadata().ok())
        .map_or(0, |m| m.rdev());
    let _ = writeln!(
        out,
        "uid={uid} euid={euid} gid={gid} egid={egid} groups={groups}"
    );
    let _ = writeln!(out, "pid={pid} sid={sid}");
    let _ = writeln!(out, "argv={}", argv.join(" "));
    let _ = writeln!(out, "env={}", std::env::vars_os().count());
    let _ = writeln!(out, "fds={}", open_fds.join(","));
    let _ = writeln!(
        out,
        "nofile={} fsize={}",
        limit(RLIMIT_NOFILE),
        limit(RLIMIT_FSIZE)
    );
    let _ = writeln!(
        out,
        "stdin_rdev={}:{}",
        (stdin_rdev >> 8) & 0xfff,
        stdin_rdev & 0xff
    );
    walk(Path::new("/"), &mut out);
    out.push_str("done\n");

    let flag_value = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
    };
    match flag_value("--report-file") {
        Some(path) => fs::write(path, &out).unwrap(),
        None => {
            print!("{out}");
        }
    }
    if argv.iter().any(|a| a == "--wait-stdin") {
        println!("ready");
        std::io::stdout().flush().unwrap();
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
}
