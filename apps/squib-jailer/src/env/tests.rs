//! `JailEnv::new` against fake host files in a tempdir.

use std::path::Path;

use super::*;
use crate::args::{self, Command};

struct Host {
    dir: tempfile::TempDir,
    files: HostFiles,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("unified");
        fs::create_dir_all(v2.join("firecracker")).unwrap();
        fs::write(v2.join("cgroup.controllers"), "pids hugetlb\n").unwrap();
        let mounts = format!(
            "cgroup {0}/pids cgroup rw,pids 0 0\ncgroup2 {1} cgroup2 rw 0 0\n",
            dir.path().display(),
            v2.display()
        );
        fs::write(dir.path().join("mounts"), mounts).unwrap();
        fs::write(dir.path().join("misc"), "200 tun\n57 userfaultfd\n").unwrap();
        fs::create_dir(dir.path().join("base")).unwrap();
        fs::write(dir.path().join("firecracker"), b"elf").unwrap();
        let files = HostFiles {
            proc_mounts: dir.path().join("mounts"),
            proc_misc: dir.path().join("misc"),
        };
        Self { dir, files }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    fn env(&self, more: &[&str]) -> Result<JailEnv, JailerError> {
        let mut line: Vec<String> = vec![
            "--id".into(),
            "vm-1".into(),
            "--exec-file".into(),
            self.path("firecracker"),
            "--uid".into(),
            "123".into(),
            "--gid".into(),
            "456".into(),
            "--chroot-base-dir".into(),
            self.path("base"),
        ];
        line.extend(more.iter().map(|s| (*s).to_string()));
        let Ok(Command::Jail(parsed)) = args::parse(line) else {
            panic!("bad test command line");
        };
        JailEnv::new(&parsed, &self.files)
    }
}

#[test]
fn validate_id_follows_firecracker() {
    assert_eq!(validate_id("vm-1"), Ok(()));
    assert_eq!(validate_id(&"a".repeat(64)), Ok(()));
    assert_eq!(
        validate_id(&"a".repeat(65)),
        Err(InstanceIdError::InvalidLen(65, 1, 64))
    );
    assert_eq!(validate_id(""), Err(InstanceIdError::InvalidLen(0, 1, 64)));
    assert_eq!(
        validate_id("a/b"),
        Err(InstanceIdError::InvalidChar('/', 1))
    );
    assert_eq!(
        validate_id("a_b"),
        Err(InstanceIdError::InvalidChar('_', 1))
    );
    assert_eq!(validate_id(".."), Err(InstanceIdError::InvalidChar('.', 0)));
}

#[test]
fn new_builds_the_chroot_path_and_reads_uffd_minor() {
    let host = Host::new();
    let env = host.env(&["--", "--api-sock", "/run/api.sock"]).unwrap();
    let base = fs::canonicalize(host.path("base")).unwrap();
    assert_eq!(env.chroot_dir, base.join("firecracker/vm-1/root"));
    assert_eq!(env.exec_name, "firecracker");
    assert_eq!((env.uid, env.gid), (123, 456));
    assert_eq!(env.uffd_minor, Some(57));
    assert_eq!(env.extra_args, ["--api-sock", "/run/api.sock"]);
    assert_eq!(env.limits.no_file, 2048);
    assert!(env.cgroups.is_empty() && env.join_cgroup.is_none());
}

#[test]
fn new_refuses_bad_paths_and_ids_before_creating_anything() {
    let host = Host::new();
    let missing = host.path("nope");
    let e = Host::env_with(&host, "--exec-file", &missing);
    assert_eq!(
        e,
        format!("Failed to canonicalize path {missing}: No such file or directory (os error 2)")
    );
    let e = Host::env_with(&host, "--exec-file", &host.path("base"));
    assert_eq!(
        e,
        format!(
            "{} is not a file",
            fs::canonicalize(host.path("base")).unwrap().display()
        )
    );
    let file_base = host.path("firecracker");
    let e = Host::env_with(&host, "--chroot-base-dir", &file_base);
    assert_eq!(e, format!("{file_base} is not a directory"));
    assert_eq!(Host::env_with(&host, "--uid", "-1"), "Invalid uid: -1");
    assert_eq!(
        Host::env_with(&host, "--gid", "4294967296"),
        "Invalid gid: 4294967296"
    );
    assert_eq!(
        Host::env_with(&host, "--id", "a/b"),
        "Invalid instance ID: Invalid char (/) at position 1"
    );
    assert_eq!(
        fs::read_dir(host.path("base")).unwrap().count(),
        0,
        "nothing created"
    );
}

impl Host {
    /// The error text with one required flag's value replaced.
    fn env_with(&self, flag: &str, value: &str) -> String {
        let mut line: Vec<String> = ["--id", "vm-1", "--uid", "123", "--gid", "456"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        line.extend(["--exec-file".to_string(), self.path("firecracker")]);
        line.extend(["--chroot-base-dir".to_string(), self.path("base")]);
        let at = line.iter().position(|a| a == flag).unwrap();
        line[at + 1] = value.to_string();
        let Ok(Command::Jail(parsed)) = args::parse(line) else {
            panic!("bad test command line");
        };
        JailEnv::new(&parsed, &self.files).unwrap_err().to_string()
    }
}

#[test]
fn new_plans_cgroups_and_limits() {
    let host = Host::new();
    let env = host
        .env(&[
            "--cgroup",
            "pids.max=10",
            "--parent-cgroup",
            "jails",
            "--resource-limit",
            "fsize=4096",
        ])
        .unwrap();
    assert_eq!(env.cgroups.len(), 1);
    assert_eq!(
        env.cgroups[0].location,
        Path::new(&host.path("pids/jails/vm-1"))
    );
    assert_eq!(env.limits.file_size, Some(4096));

    let env = host
        .env(&["--cgroup-version", "2", "--cgroup", "hugetlb.2MB.max=0"])
        .unwrap();
    assert_eq!(
        env.cgroups[0].location,
        Path::new(&host.path("unified/firecracker/vm-1"))
    );
}

#[test]
fn new_v2_without_cgroups_joins_an_existing_parent() {
    let host = Host::new();
    let env = host.env(&["--cgroup-version", "2"]).unwrap();
    assert_eq!(
        env.join_cgroup.as_deref(),
        Some(Path::new(&host.path("unified/firecracker")))
    );
    let env = host
        .env(&["--cgroup-version", "2", "--parent-cgroup", "absent"])
        .unwrap();
    assert_eq!(env.join_cgroup, None);
}

#[test]
fn new_refuses_bad_cgroup_and_limit_arguments() {
    let host = Host::new();
    let err = |more: &[&str]| host.env(more).unwrap_err().to_string();
    assert_eq!(
        err(&["--cgroup", "nosuch.x=1"]),
        "Controller nosuch is unavailable"
    );
    assert_eq!(
        err(&["--cgroup-version", "2", "--cgroup", "cpu.max=1"]),
        "Controller cpu is unavailable"
    );
    assert_eq!(err(&["--cgroup", "foo"]), "Invalid format for cgroups: foo");
    assert_eq!(
        err(&["--cgroup-version", "x"]),
        "x is an invalid cgroup version specifier"
    );
    assert_eq!(
        err(&["--parent-cgroup", "a/../b"]),
        "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
    );
    assert_eq!(
        err(&["--resource-limit", "foo=1"]),
        "Invalid resource argument: foo"
    );
    assert_eq!(
        fs::read_dir(host.path("base")).unwrap().count(),
        0,
        "nothing created"
    );
}
