//! Helpers for `tests/jail.rs`: the static probe, the jailer command line, the probe's report,
//! host cgroup detection and "nothing left behind" checks.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const JAILER: &str = env!("CARGO_BIN_EXE_squib-jailer");
pub const PROBE_NAME: &str = "jail-probe";
pub const UID: u32 = 1234;
pub const GID: u32 = 2345;

/// Builds the probe once per test binary (panics with rustc's output if that fails).
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("squib-jailer-probe");
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join(PROBE_NAME);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/jail_probe.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let built = Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("run rustc for the jail probe");
        assert!(
            built.status.success(),
            "building the static jail probe failed (needs glibc's libc.a, Debian libc6-dev): {}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
}

/// Reports a skipped test on the real stderr: libtest captures `eprintln!` of passing tests, and
/// a skip must never look like a pass.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {reason}");
}

pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(test, "the jailer needs root (namespaces, mknod, chown)");
    }
    root
}

/// The jailer command line for the probe under `base`.
pub fn jailer(base: &Path, id: &str, flags: &[&str], forwarded: &[&str]) -> Command {
    let mut cmd = Command::new(JAILER);
    cmd.args(["--id", id, "--exec-file"])
        .arg(probe())
        .args([
            "--uid",
            &UID.to_string(),
            "--gid",
            &GID.to_string(),
            "--chroot-base-dir",
        ])
        .arg(base)
        .args(flags);
    if !forwarded.is_empty() {
        cmd.arg("--").args(forwarded);
    }
    cmd
}

pub fn jail_root(base: &Path, id: &str) -> PathBuf {
    base.join(PROBE_NAME).join(id).join("root")
}

/// The probe's report: `key=value` lines and the `entry=` lines.
pub struct Report {
    lines: Vec<String>,
}

impl Report {
    pub fn parse(text: &str) -> Self {
        assert!(text.contains("done\n"), "incomplete probe report: {text}");
        Self {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    pub fn get(&self, key: &str) -> &str {
        let prefix = format!("{key}=");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.lines))
    }

    /// The value of `word=` inside the line of `key`.
    pub fn field(&self, key: &str, word: &str) -> String {
        let line = self
            .lines
            .iter()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap();
        line.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{word}=")))
            .unwrap_or_else(|| panic!("no {word} in {line}"))
            .to_string()
    }

    pub fn entries(&self) -> BTreeSet<String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("entry="))
            .map(str::to_string)
            .collect()
    }
}

/// Reads the probe's stdout up to `ready` (it is then waiting for stdin to close).
pub fn read_until_ready(child: &mut Child) -> Report {
    let stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line == "ready" {
            return Report::parse(&text);
        }
        text.push_str(&line);
        text.push('\n');
    }
    panic!("the probe never became ready; it printed: {text}");
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn userfaultfd_minor() -> Option<u32> {
    fs::read_to_string("/proc/misc")
        .ok()?
        .lines()
        .find_map(|l| {
            let (minor, name) = l.trim().split_once(' ')?;
            (name == "userfaultfd")
                .then(|| minor.parse().ok())
                .flatten()
        })
}

/// Every path under `dir`, relative, for "nothing was created" checks.
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            all.insert(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    all
}

/// Removes the jail the jailer built under `base` and checks nothing else is left.
pub fn remove_jail(base: &Path) {
    fs::remove_dir_all(base.join(PROBE_NAME)).unwrap();
    assert!(tree(base).is_empty(), "left behind: {:?}", tree(base));
}

pub fn mount_table() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// A cgroup hierarchy and one controller of it the tests can set a limit with.
pub struct CgroupHost {
    pub mount: PathBuf,
    pub controller: &'static str,
    pub file: &'static str,
    pub value: &'static str,
}

pub fn mounts() -> Vec<(PathBuf, String, String)> {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                PathBuf::from(f.get(1)?),
                (*f.get(2)?).to_string(),
                (*f.get(3)?).to_string(),
            ))
        })
        .collect()
}

pub fn cgroup_v2_host() -> Result<CgroupHost, String> {
    let mount = mounts()
        .into_iter()
        .find(|(_, fstype, _)| fstype == "cgroup2")
        .map(|(dir, _, _)| dir)
        .ok_or("no cgroup2 file system is mounted")?;
    let available = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    let candidates = [
        ("pids", "pids.max", "16"),
        ("memory", "memory.max", "268435456"),
        ("hugetlb", "hugetlb.2MB.max", "2097152"),
    ];
    candidates
        .into_iter()
        .find(|(c, _, _)| available.split_whitespace().any(|a| a == *c))
        .map(|(controller, file, value)| CgroupHost {
            mount: mount.clone(),
            controller,
            file,
            value,
        })
        .ok_or(format!(
            "the cgroup2 hierarchy at {} offers none of pids, memory, hugetlb (it has: {:?})",
            mount.display(),
            available.trim()
        ))
}

pub fn cgroup_v1_host() -> Result<CgroupHost, String> {
    mounts()
        .into_iter()
        .find(|(_, fstype, opts)| fstype == "cgroup" && opts.split(',').any(|o| o == "pids"))
        .map(|(mount, _, _)| CgroupHost {
            mount,
            controller: "pids",
            file: "pids.max",
            value: "16",
        })
        .ok_or_else(|| "no cgroup v1 pids hierarchy is mounted".to_string())
}

/// Runs the jailer, expecting exit 1 with exactly `stderr` and nothing on stdout.
pub fn assert_refused(out: &Output, stderr: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{stderr}\n"));
    assert!(out.stdout.is_empty());
}
