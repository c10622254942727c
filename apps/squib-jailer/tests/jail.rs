//! Runs the real `squib-jailer` binary against a stand-in VMM, `tests/support/jail_probe.rs`,
//! compiled statically by the first test that needs it.
//!
//! The jailing tests need root (mount namespaces, `mknod`, `chown`, cgroups); without it they
//! print `SKIP <test>: <reason>` and return. The cgroup tests also print a reason and return
//! when the host has no hierarchy of that version with a usable controller. Every test removes
//! what the jailer created (the jail, cgroups, the controller it enabled) and checks it is gone.
//! One test is `#[ignore]`d because it needs Firecracker's own jailer to compare against.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{
    assert_refused, cgroup_v1_host, cgroup_v2_host, is_root, jail_root, jailer, mount_table, probe,
    read_until_ready, remove_jail, skip, tree, userfaultfd_minor, wait_until, CgroupHost, Report,
    GID, JAILER, PROBE_NAME, UID,
};

#[test]
fn jailed_vmm_runs_as_uid_gid_with_devices_limits_and_firecrackers_arguments() {
    if !is_root("jailed_vmm_runs_as_uid_gid_with_devices_limits_and_firecrackers_arguments") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let id = "basic-1";
    // A descriptor without O_CLOEXEC and an environment variable: neither may reach the VMM.
    let leaked = fs::File::open("/proc/version").unwrap();
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let mut cmd = jailer(
        base.path(),
        id,
        &[
            "--resource-limit",
            "no-file=123",
            "--resource-limit",
            "fsize=1048576",
        ],
        &["--api-sock", "/run/api.sock"],
    );
    cmd.env("SQUIB_JAILER_LEAK", "1");
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on a descriptor this
    // process owns.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(leaked_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "jailer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = Report::parse(&String::from_utf8_lossy(&out.stdout));

    assert_eq!(
        report.get("uid"),
        format!("{UID} euid={UID} gid={GID} egid={GID} groups=0")
    );
    let argv: Vec<&str> = report.get("argv").split(' ').collect();
    assert_eq!(argv[..3], [format!("/{PROBE_NAME}").as_str(), "--id", id]);
    assert_eq!(
        [argv[3], argv[5], argv[7]],
        [
            "--start-time-us",
            "--start-time-cpu-us",
            "--parent-cpu-time-us"
        ]
    );
    for n in [argv[4], argv[6], argv[8]] {
        n.parse::<u64>()
            .unwrap_or_else(|_| panic!("not a number: {n}"));
    }
    assert!(argv[4].parse::<u64>().unwrap() > 0);
    assert_eq!(argv[9..], ["--api-sock", "/run/api.sock"]);
    assert_eq!(report.get("env"), "0");
    assert_eq!(
        report.get("fds"),
        "",
        "inherited descriptors reached the VMM"
    );
    assert_eq!(report.get("nofile"), "123/123 fsize=1048576/1048576");

    let owner = format!("{UID}:{GID}");
    let mut expected: BTreeSet<String> = [
        format!("/dev d 700 {owner} 0:0"),
        format!("/dev/kvm c 600 {owner} 10:232"),
        format!("/dev/net d 700 {owner} 0:0"),
        format!("/dev/net/tun c 600 {owner} 10:200"),
        format!("/dev/urandom c 600 {owner} 1:9"),
        format!("/{PROBE_NAME} f 755 {owner} 0:0"),
        format!("/{PROBE_NAME}.pid f 644 0:0 0:0"),
        format!("/run d 700 {owner} 0:0"),
    ]
    .into();
    if let Some(minor) = userfaultfd_minor() {
        expected.insert(format!("/dev/userfaultfd c 600 {owner} 10:{minor}"));
    }
    assert_eq!(report.entries(), expected);

    let root = jail_root(base.path(), id);
    let meta = fs::metadata(&root).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o700, UID, GID)
    );
    let pid = fs::read_to_string(root.join(format!("{PROBE_NAME}.pid"))).unwrap();
    assert_eq!(
        report.field("pid", "pid"),
        pid,
        "the pid file holds the VMM's pid"
    );
    assert_eq!(
        fs::read(root.join(PROBE_NAME)).unwrap(),
        fs::read(probe()).unwrap()
    );
    assert!(
        !mount_table().contains(root.to_str().unwrap()),
        "the jail's mounts leaked to the host"
    );
    assert_eq!(
        tree(base.path()),
        [PROBE_NAME, "jail-probe/basic-1", "jail-probe/basic-1/root"]
            .iter()
            .map(PathBuf::from)
            .chain(
                tree(&root)
                    .into_iter()
                    .map(|p| Path::new("jail-probe/basic-1/root").join(p))
            )
            .collect(),
        "the jailer writes only inside <base>/<exec name>/<id>"
    );
    remove_jail(base.path());
}

#[test]
fn new_pid_ns_runs_the_vmm_as_pid_1_and_records_its_host_pid() {
    if !is_root("new_pid_ns_runs_the_vmm_as_pid_1_and_records_its_host_pid") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let id = "pidns-1";
    let mut child = jailer(base.path(), id, &["--new-pid-ns"], &["--wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = read_until_ready(&mut child);
    assert!(
        child.wait().unwrap().success(),
        "the jailer's parent exits 0 after the clone"
    );
    assert_eq!(report.field("pid", "pid"), "1");

    let pid_file = jail_root(base.path(), id).join(format!("{PROBE_NAME}.pid"));
    let host_pid: u32 = fs::read_to_string(pid_file).unwrap().parse().unwrap();
    assert_ne!(host_pid, child.id());
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().collect::<Vec<_>>(),
        ["NSpid:", &host_pid.to_string(), "1"]
    );

    drop(child.stdin.take());
    wait_until("the probe to exit", || {
        !Path::new(&format!("/proc/{host_pid}")).exists()
    });
    remove_jail(base.path());
}

#[test]
fn daemonize_detaches_the_vmm_and_points_its_stdio_at_dev_null() {
    if !is_root("daemonize_detaches_the_vmm_and_points_its_stdio_at_dev_null") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let id = "daemon-1";
    let out = jailer(
        base.path(),
        id,
        &["--daemonize"],
        &["--report-file", "/run/report"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let report_path = jail_root(base.path(), id).join("run/report");
    wait_until("the daemon's report", || {
        fs::read_to_string(&report_path).is_ok_and(|t| t.ends_with("done\n"))
    });
    let report = Report::parse(&fs::read_to_string(&report_path).unwrap());
    let pid = report.field("pid", "pid");
    assert_ne!(
        report.field("pid", "sid"),
        pid,
        "the daemon is not a session leader"
    );
    assert_eq!(report.get("stdin_rdev"), "1:3", "stdin is /dev/null");
    let pid_file = jail_root(base.path(), id).join(format!("{PROBE_NAME}.pid"));
    assert_eq!(fs::read_to_string(pid_file).unwrap(), pid);
    wait_until("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    remove_jail(base.path());
}

/// Runs the probe in a jail cgroup, checks the limit and the membership, and cleans up.
fn check_cgroup_limit(version: u8, host: &CgroupHost) {
    let base = tempfile::tempdir().unwrap();
    let id = format!("cgroup-v{version}");
    let parent = format!("squib-jailer-test-{}", std::process::id());
    let subtree = host.mount.join("cgroup.subtree_control");
    let enabled_before = fs::read_to_string(&subtree).unwrap_or_default();
    let setting = format!("{}={}", host.file, host.value);
    let mut child = jailer(
        base.path(),
        &id,
        &[
            "--cgroup-version",
            &version.to_string(),
            "--cgroup",
            &setting,
            "--parent-cgroup",
            &parent,
        ],
        &["--wait-stdin"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let _report = read_until_ready(&mut child);

    let cgroup_dir = host.mount.join(&parent).join(&id);
    assert_eq!(
        fs::read_to_string(cgroup_dir.join(host.file))
            .unwrap()
            .trim(),
        host.value
    );
    let membership = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    let wanted = format!("/{parent}/{id}");
    let joined = membership.lines().any(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let right_hierarchy = if version == 2 {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == host.controller)
        };
        right_hierarchy && path == wanted
    });
    assert!(joined, "the VMM is not in {wanted}: {membership}");

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    fs::remove_dir(&cgroup_dir).unwrap();
    if version == 2 {
        fs::write(
            host.mount.join(&parent).join("cgroup.subtree_control"),
            format!("-{}", host.controller),
        )
        .unwrap();
    }
    fs::remove_dir(host.mount.join(&parent)).unwrap();
    if version == 2
        && !enabled_before
            .split_whitespace()
            .any(|c| c == host.controller)
    {
        // Best effort: another user of the hierarchy may have started needing it meanwhile.
        let _ = fs::write(&subtree, format!("-{}", host.controller));
    }
    assert!(!host.mount.join(&parent).exists());
    remove_jail(base.path());
}

#[test]
fn cgroup_v2_limit_is_written_and_the_vmm_joins_the_cgroup() {
    if !is_root("cgroup_v2_limit_is_written_and_the_vmm_joins_the_cgroup") {
        return;
    }
    match cgroup_v2_host() {
        Ok(host) => check_cgroup_limit(2, &host),
        Err(reason) => skip(
            "cgroup_v2_limit_is_written_and_the_vmm_joins_the_cgroup",
            &reason,
        ),
    }
}

#[test]
fn cgroup_v1_limit_is_written_and_the_vmm_joins_the_cgroup() {
    if !is_root("cgroup_v1_limit_is_written_and_the_vmm_joins_the_cgroup") {
        return;
    }
    match cgroup_v1_host() {
        Ok(host) => check_cgroup_limit(1, &host),
        Err(reason) => skip(
            "cgroup_v1_limit_is_written_and_the_vmm_joins_the_cgroup",
            &reason,
        ),
    }
}

#[test]
fn bad_command_lines_exit_1_with_a_clear_error_and_create_nothing() {
    let base = tempfile::tempdir().unwrap();
    let a_file = base.path().join("not-a-dir");
    fs::write(&a_file, b"x").unwrap();
    let missing = base.path().join("missing-vmm");
    let base_str = base.path().to_str().unwrap();
    let long_id = "a".repeat(65);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--id", "a/b"], "Invalid instance ID: Invalid char (/) at position 1".into()),
        (vec!["--id", &long_id], "Invalid instance ID: Invalid len (65);  the length must be between 1 and 64".into()),
        (vec!["--chroot-base-dir", a_file.to_str().unwrap()], format!("{} is not a directory", a_file.display())),
        (
            vec!["--exec-file", missing.to_str().unwrap()],
            format!("Failed to canonicalize path {}: No such file or directory (os error 2)", missing.display()),
        ),
        (vec!["--cgroup", "nosuch.limit=1"], "Controller nosuch is unavailable".into()),
        (vec!["--cgroup", "pids.max"], "Invalid format for cgroups: pids.max".into()),
        (vec!["--cgroup", "max=1"], "Cgroup invalid file: max".into()),
        (vec!["--cgroup-version", "two"], "two is an invalid cgroup version specifier".into()),
        (vec!["--resource-limit", "no-file=many"], "Invalid limit value for resource: many: invalid digit found in string".into()),
        (vec!["--resource-limit", "cpu=1"], "Invalid resource argument: cpu".into()),
        (vec!["--resource-limit", "fsize"], "Invalid format for resources limits: fsize".into()),
        (vec!["--uid", "root"], "Invalid uid: root".into()),
        (vec!["--parent-cgroup", "../escape"], "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'".into()),
        (
            vec!["--id=abc"],
            "Failed to parse arguments: Found argument 'id=abc' which wasn't expected, or isn't valid in this context.".into(),
        ),
    ];
    let before = tree(base.path());
    for (change, stderr) in cases {
        // Replace a required flag's value, or append the extra flags.
        let mut line: Vec<String> = [
            "--id",
            "bad-1",
            "--uid",
            "1",
            "--gid",
            "1",
            "--chroot-base-dir",
            base_str,
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        line.extend(["--exec-file".to_string(), probe_or_self()]);
        match line
            .iter()
            .position(|a| a == change[0])
            .filter(|_| change.len() == 2)
        {
            Some(at) => line[at + 1] = change[1].to_string(),
            None => line.extend(change.iter().map(|s| (*s).to_string())),
        }
        let out = Command::new(JAILER).args(&line).output().unwrap();
        assert_refused(&out, &stderr);
        assert_eq!(tree(base.path()), before, "{line:?} created something");
    }
}

/// An exec file for tests that never get as far as copying it (no need to build the probe).
fn probe_or_self() -> String {
    JAILER.to_string()
}

#[test]
fn planted_hard_link_at_the_destination_is_refused_and_its_target_untouched() {
    let base = tempfile::tempdir().unwrap();
    let victim = base.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let exec_name = Path::new(JAILER).file_name().unwrap().to_str().unwrap();
    let root = base.path().join(exec_name).join("hl-1").join("root");
    fs::create_dir_all(&root).unwrap();
    fs::hard_link(&victim, root.join(exec_name)).unwrap();
    let before = tree(base.path());

    let out = Command::new(JAILER)
        .args([
            "--id",
            "hl-1",
            "--exec-file",
            JAILER,
            "--uid",
            "1",
            "--gid",
            "1",
            "--chroot-base-dir",
        ])
        .arg(base.path())
        .output()
        .unwrap();
    assert_refused(
        &out,
        &format!("Detected hard link at: {}", root.join(exec_name).display()),
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(tree(base.path()), before);
}

#[test]
fn failure_after_the_jail_is_started_removes_what_it_created() {
    if !is_root("failure_after_the_jail_is_started_removes_what_it_created") {
        return;
    }
    let host = match cgroup_v1_host() {
        Ok(host) => host,
        Err(reason) => {
            skip(
                "failure_after_the_jail_is_started_removes_what_it_created",
                &reason,
            );
            return;
        }
    };
    let base = tempfile::tempdir().unwrap();
    let parent = format!("squib-jailer-undo-{}", std::process::id());
    // The controller exists, the file does not: refused only once the jail is being built.
    let out = jailer(
        base.path(),
        "undo-1",
        &["--cgroup", "pids.nosuch=1", "--parent-cgroup", &parent],
        &[],
    )
    .output()
    .unwrap();
    let missing = host.mount.join(&parent).join("pids.nosuch");
    assert_refused(
        &out,
        &format!(
            "Failed to read file {} into a string: No such file or directory (os error 2)",
            missing.display()
        ),
    );
    assert!(
        tree(base.path()).is_empty(),
        "left behind: {:?}",
        tree(base.path())
    );
    assert!(
        !host.mount.join(&parent).exists(),
        "the cgroup was left behind"
    );
}

#[test]
fn help_and_version_print_firecrackers_texts() {
    let out = Command::new(JAILER).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Jailer v1.17.0\n\n"));
    let out = Command::new(JAILER)
        .args(["--help", "--bogus"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("required arguments:\n  --exec-file <exec-file>   File path to exec into.\n")
    );
    assert!(help.ends_with(
        "Any arguments after the -- separator will be supplied to the jailed binary.\n\n"
    ));
}

#[test]
fn netns_is_joined_and_a_missing_one_is_refused_without_leftovers() {
    if !is_root("netns_is_joined_and_a_missing_one_is_refused_without_leftovers") {
        return;
    }
    // A network namespace held open by a sleeping child of ours.
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .unwrap();
    let ns_path = format!("/proc/{}/ns/net", holder.id());
    wait_until("the namespace holder", || {
        fs::read_link(&ns_path).ok() != fs::read_link("/proc/self/ns/net").ok()
    });
    let wanted = fs::read_link(&ns_path).unwrap();

    let base = tempfile::tempdir().unwrap();
    let mut child = jailer(
        base.path(),
        "netns-1",
        &["--netns", &ns_path],
        &["--wait-stdin"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let _report = read_until_ready(&mut child);
    let joined = fs::read_link(format!("/proc/{}/ns/net", child.id())).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(joined, wanted);
    remove_jail(base.path());

    let missing = base.path().join("no-such-netns");
    let out = jailer(
        base.path(),
        "netns-2",
        &["--netns", missing.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_refused(
        &out,
        &format!(
            "Failed to open file {}: No such file or directory (os error 2)",
            missing.display()
        ),
    );
    assert!(
        tree(base.path()).is_empty(),
        "left behind: {:?}",
        tree(base.path())
    );
}

/// Differential check against Firecracker's own jailer (`SQUIB_REFERENCE_JAILER=<path> cargo
/// test -p squib-jailer -- --ignored`): both binaries get the same refused command lines and
/// must answer with the same first stderr line and exit code.
#[test]
#[ignore = "needs SQUIB_REFERENCE_JAILER=<Firecracker's jailer>; run with --ignored"]
fn refusals_match_firecrackers_jailer_when_it_is_given() {
    let reference = std::env::var("SQUIB_REFERENCE_JAILER")
        .expect("SQUIB_REFERENCE_JAILER must name Firecracker's jailer binary");
    let base = tempfile::tempdir().unwrap();
    let base_str = base.path().to_str().unwrap().to_string();
    let ok: Vec<String> = [
        "--exec-file",
        JAILER,
        "--uid",
        "1",
        "--gid",
        "1",
        "--chroot-base-dir",
        &base_str,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let long_id = "a".repeat(65);
    let lines: Vec<Vec<&str>> = vec![
        vec!["--id", "a/b"],
        vec!["--id", ""],
        vec!["--id", &long_id],
        vec!["--id", "x", "--uid", "2"],
        vec!["--id", "x", "--cgroup", "foo"],
        vec!["--id", "x", "--cgroup", "foo=1"],
        vec!["--id", "x", "--cgroup", "a=b=c"],
        vec!["--id", "x", "--cgroup", "../a.b=1"],
        vec!["--id", "x", "--cgroup", "nosuch.x=1"],
        vec![
            "--id",
            "x",
            "--cgroup",
            "nosuch.x=1",
            "--cgroup-version",
            "2",
        ],
        vec![
            "--id",
            "x",
            "--cgroup",
            "pids.max=1",
            "--cgroup-version",
            "3",
        ],
        vec!["--id", "x", "--cgroup-version", "x"],
        vec!["--id", "x", "--resource-limit", "foo"],
        vec!["--id", "x", "--resource-limit", "foo=1"],
        vec!["--id", "x", "--resource-limit", "no-file="],
        vec!["--id", "x", "--parent-cgroup", "/abs"],
        vec!["--id=x"],
        vec!["--id", "x", "stray"],
        vec!["--id", "x", "--cgroup"],
    ];
    let first_line = |bin: &str, args: &[String]| {
        let out = Command::new(bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        (out.status.code(), stderr)
    };
    for line in lines {
        let args: Vec<String> = line
            .iter()
            .map(|s| (*s).to_string())
            .chain(ok.iter().cloned())
            .collect();
        assert_eq!(
            first_line(JAILER, &args),
            first_line(&reference, &args),
            "{args:?}"
        );
    }
    assert!(tree(base.path()).is_empty());
}
