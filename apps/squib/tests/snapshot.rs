//! Snapshots end to end (issue 14): a real guest is snapshotted and restored in new
//! processes, and the API's refusals are checked on the wire.
//!
//! One guest boot serves every restore check (boots cost minutes of a host core on
//! `kvm_pvm`): the guest writes a tagged file to its ext4 root and prints a counter; it is
//! paused, snapshotted (Full) and killed. A second process loads the snapshot with its memory
//! file mapped and `resume_vm`, its NIC moved to another TAP (`network_overrides`): the
//! counter goes on from where it stopped, the file is still there and the guest answers ping
//! through the new TAP; it is then paused again and a Diff snapshot taken of it, which,
//! merged onto the first memory file, restores in a third process where the Diff was taken;
//! Ctrl-Alt-Del reboots the second through the restored i8042. A fourth
//! process restores the first snapshot through a userfaultfd page-fault handler (squib-uffd's,
//! the library behind `squib-uffd-handler`), which serves only the pages the guest touches.
//!
//! The test runs in a network namespace of its own (as the network tests do), with its TAPs.

mod common;
// Shared with the network tests, which use all of both.
#[allow(dead_code)]
#[path = "net/icmp.rs"]
mod icmp;
#[allow(dead_code)]
#[path = "net/netns.rs"]
mod netns;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{boot_args, boot_slot, json, retry_on_pvm_crash, GuestKit, Squib, BOOT_TIMEOUT};
use serde_json::json;

/// How long a restored guest gets to print its next tick (its first output after resume).
const RESUME_TIMEOUT: Duration = Duration::from_secs(300);

/// Backstop for a restored guest's reboot after Ctrl-Alt-Del.
const EXIT_TIMEOUT: Duration = Duration::from_secs(600);

/// The snapshotted guest's address (`ip=` on the kernel command line) and its host peer.
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 7, 2);
const HOST_IP: &str = "172.16.7.1/24";
/// The TAP the snapshotted VM had, and the one its restores are moved to.
const ORIGIN_TAP: &str = "snap-tap0";
const CLONE_TAP: &str = "snap-tap1";

/// A host TAP named `name` holding [`HOST_IP`], deleted on drop (`HostTap` names TAPs by
/// subnet; a clone needs the same subnet on another TAP).
struct Tap(&'static str);

impl Tap {
    fn create(name: &'static str) -> Tap {
        for args in [
            vec!["tuntap", "add", "dev", name, "mode", "tap"],
            vec!["addr", "add", HOST_IP, "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            netns::ip(&args).unwrap_or_else(|e| panic!("creating TAP {name}: {e}"));
        }
        Tap(name)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Err(e) = netns::ip(&["link", "del", self.0]) {
            eprintln!("deleting TAP {}: {e}", self.0);
        }
    }
}

/// Pings the guest until it answers (a restored guest first resolves the new TAP's MAC).
fn assert_guest_answers_ping(squib: &Squib) {
    let deadline = std::time::Instant::now() + RESUME_TIMEOUT;
    loop {
        let result = icmp::ping(GUEST_IP, 1, 56, Duration::ZERO, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("ping {GUEST_IP}: {e}"));
        if result.received == 1 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restored guest did not answer ping through {CLONE_TAP}\n{}",
            squib.report()
        );
    }
}

/// The number in a `SQUIB tick <n>` line.
fn tick_number(line: &str) -> u32 {
    let n = line.trim().rsplit(' ').next().unwrap_or_default();
    n.parse()
        .unwrap_or_else(|e| panic!("tick line {line:?}: {e}"))
}

/// The highest tick a process printed.
fn last_tick(squib: &Squib) -> u32 {
    squib
        .lines()
        .iter()
        .filter_map(|l| l.trim().strip_prefix("SQUIB tick "))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Asserts a 204 for `PUT path body`.
fn put_ok(squib: &Squib, path: &str, body: &serde_json::Value) {
    let (status, reply) = squib.api().put(path, body);
    assert_eq!(status, 204, "PUT {path}: {reply}\n{}", squib.report());
}

/// The first line of `file` in the ext4 image `image`, read with e2fsprogs' debugfs.
fn ext4_file(image: &Path, file: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .expect("run debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Files of one snapshot.
struct SnapshotFiles {
    state: PathBuf,
    memory: PathBuf,
}

#[test]
fn a_full_snapshot_resumes_in_new_processes_from_a_file_and_through_userfaultfd() {
    retry_on_pvm_crash(full_snapshot_resumes_in_new_processes);
}

fn full_snapshot_resumes_in_new_processes() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    assert!(
        netns::enter_private_netns(),
        "the snapshot test needs a network namespace and /dev/net/tun (run as root)"
    );
    let _slot = boot_slot();
    let dir = tempfile::tempdir().expect("temporary directory");
    let rootfs = dir.path().join("rootfs.ext4");
    fs::copy(kit.rootfs(), &rootfs).expect("copy the root filesystem");
    let tag = format!("tag{}", std::process::id());
    let files = SnapshotFiles {
        state: dir.path().join("vm.snap"),
        memory: dir.path().join("vm.mem"),
    };

    let origin_tap = Tap::create(ORIGIN_TAP);
    let last = boot_and_snapshot(&kit, &rootfs, &tag, &files);
    drop(origin_tap);
    let _clone_tap = Tap::create(CLONE_TAP);
    restore_from_file(&files, &tag, last);
    assert_eq!(
        ext4_file(&rootfs, "/snap-file"),
        format!("SQUIB-SNAP-FILE {tag}"),
        "the file the guest wrote before the snapshot is on its disk"
    );
    restore_through_uffd(&files, &tag, last);
    bad_loads_of_a_good_snapshot_fail_cleanly(&files);
}

/// Loads of this valid snapshot that must fail: each gets a 400 naming the problem, then the
/// process exits 1 (a failed load is fatal).
fn bad_loads_of_a_good_snapshot_fail_cleanly(files: &SnapshotFiles) {
    let short = files.memory.with_file_name("short.mem");
    fs::copy(&files.memory, &short).expect("copy the memory file");
    fs::File::options()
        .write(true)
        .open(&short)
        .and_then(|f| f.set_len(64 << 20))
        .expect("truncate the copy");
    let state = files.state.display().to_string();
    let file_backend =
        |path: &Path| json!({ "backend_type": "File", "backend_path": path.display().to_string() });
    let cases = [
        (
            json!({ "snapshot_path": state, "mem_backend": file_backend(&short) }),
            "Total sum of memory regions exceeds largest possible file offset",
        ),
        (
            json!({
                "snapshot_path": state,
                "mem_backend": { "backend_type": "Uffd", "backend_path": files.state.with_file_name("nobody.sock").display().to_string() },
            }),
            "Failed to connect to UDS Unix stream",
        ),
        (
            json!({
                "snapshot_path": state,
                "mem_backend": file_backend(&files.memory),
                "network_overrides": [{ "iface_id": "eth9", "host_dev_name": CLONE_TAP }],
            }),
            "Unknown Network Device.",
        ),
    ];
    for (load, expected) in cases {
        let mut squib = Squib::with_api("snap-bad-load", &[]);
        let (status, body) = squib.api().put("/snapshot/load", &load);
        assert_eq!(status, 400, "{load}: {body}");
        let message = json(&body)["fault_message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.starts_with("Load snapshot error: ") && message.contains(expected),
            "{load}: {message}"
        );
        let status = squib.wait_exit(Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(1),
            "{load}: a failed load ends the process"
        );
    }
}

/// Boots the guest, checks that a running VM cannot be snapshotted, pauses it, takes a Full
/// snapshot and kills the process. Returns the last tick printed before the pause.
fn boot_and_snapshot(kit: &GuestKit, rootfs: &Path, tag: &str, files: &SnapshotFiles) -> u32 {
    let squib = Squib::with_api("snap-origin", &[]);
    put_ok(
        &squib,
        "/boot-source",
        &json!({
            "kernel_image_path": kit.vmlinux().display().to_string(),
            "boot_args": boot_args(&format!(
                "ip={GUEST_IP}::{}:255.255.255.0::eth0:off squib.action=snap-file \
                 squib.snap_tag={tag}",
                HOST_IP.trim_end_matches("/24")
            )),
        }),
    );
    put_ok(
        &squib,
        "/machine-config",
        &json!({ "vcpu_count": 1, "mem_size_mib": 128 }),
    );
    put_ok(
        &squib,
        "/drives/rootfs",
        &json!({
            "drive_id": "rootfs",
            "path_on_host": rootfs.display().to_string(),
            "is_root_device": true,
            "is_read_only": false,
        }),
    );
    put_ok(
        &squib,
        "/network-interfaces/eth0",
        &json!({ "iface_id": "eth0", "host_dev_name": ORIGIN_TAP, "guest_mac": "06:00:ac:10:07:02" }),
    );
    put_ok(&squib, "/entropy", &json!({}));
    put_ok(
        &squib,
        "/actions",
        &json!({ "action_type": "InstanceStart" }),
    );

    squib.wait_for("SQUIB snap-file written", BOOT_TIMEOUT);
    squib.wait_for(
        &format!("SQUIB tick-file SQUIB-SNAP-FILE {tag}"),
        BOOT_TIMEOUT,
    );
    squib.wait_for("SQUIB tick 3", BOOT_TIMEOUT);

    let create = json!({
        "snapshot_type": "Full",
        "snapshot_path": files.state.display().to_string(),
        "mem_file_path": files.memory.display().to_string(),
    });
    let (status, body) = squib.api().put("/snapshot/create", &create);
    assert_eq!(status, 400, "a running VM must not be snapshotted: {body}");
    assert!(
        body.contains("save/restore unavailable while running"),
        "{body}"
    );

    let (status, body) = squib.api().patch("/vm", &json!({ "state": "Paused" }));
    assert_eq!(status, 204, "pause: {body}");
    // A tick already on its way to stdout may still arrive: read the counter after it.
    thread::sleep(Duration::from_millis(1500));
    let last = last_tick(&squib);
    put_ok(&squib, "/snapshot/create", &create);
    let mem_len = fs::metadata(&files.memory).expect("memory file").len();
    assert_eq!(mem_len, 128 << 20, "the memory file holds all guest memory");
    let (status, body) = squib.api().get("/");
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["state"],
        "Paused",
        "creating a snapshot keeps the VM paused"
    );
    drop(squib); // kills the process: only the snapshot is left
    last
}

/// Loads the snapshot with its memory file mapped, `resume_vm` and the NIC moved to another
/// TAP; checks the guest goes on (counter, file, configuration, ping), then reboots it with
/// Ctrl-Alt-Del.
fn restore_from_file(files: &SnapshotFiles, tag: &str, last: u32) {
    let mut squib = Squib::with_api("snap-file-restore", &[]);
    let from = squib.line_count();
    put_ok(
        &squib,
        "/snapshot/load",
        &json!({
            "snapshot_path": files.state.display().to_string(),
            "mem_backend": { "backend_type": "File", "backend_path": files.memory.display().to_string() },
            "resume_vm": true,
            "network_overrides": [{ "iface_id": "eth0", "host_dev_name": CLONE_TAP }],
            "track_dirty_pages": true,
            // No file there yet: the pages the guest touches in its first second are
            // recorded for the next load (squib's working-set prefetch).
            "working_set": { "path": working_set_path(files).display().to_string(), "record_ms": 1000 },
        }),
    );
    let (_, body) = squib.api().get("/");
    assert_eq!(json(&body)["state"], "Running", "resume_vm resumes: {body}");
    let (status, body) = squib.api().get("/vm/config");
    assert_eq!(status, 200);
    let config = json(&body);
    assert_eq!(config["drives"][0]["drive_id"], "rootfs", "{body}");
    assert_eq!(config["machine-config"]["mem_size_mib"], 128, "{body}");
    assert!(config["entropy"].is_object(), "{body}");
    assert_eq!(
        config["network-interfaces"][0]["host_dev_name"], CLONE_TAP,
        "network_overrides moves the NIC: {body}"
    );

    let (_, next) = squib.wait_for_from(from, "SQUIB tick ", RESUME_TIMEOUT);
    assert_eq!(
        tick_number(&next),
        last + 1,
        "the restored guest goes on counting where it was paused"
    );
    squib.wait_for_from(
        from,
        &format!("SQUIB tick-file SQUIB-SNAP-FILE {tag}"),
        RESUME_TIMEOUT,
    );
    assert_guest_answers_ping(&squib);
    let (_, recorded) = squib.wait_for_from(from, "Working set: ", RESUME_TIMEOUT);
    assert!(
        working_set_pages(&recorded, "Working set: ") > 0 && recorded.contains("saved to"),
        "the working set of the restored guest is recorded: {recorded}"
    );
    let diff_last = diff_snapshot(&squib, files);

    let (status, body) = squib.api().patch("/vm", &json!({ "state": "Resumed" }));
    assert_eq!(status, 204, "resume after the Diff snapshot: {body}");
    let (status, body) = squib
        .api()
        .put("/actions", &json!({ "action_type": "SendCtrlAltDel" }));
    assert_eq!(status, 204, "Ctrl-Alt-Del: {body}");
    squib.wait_for_from(from, "SQUIB ctrl-alt-del", RESUME_TIMEOUT);
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "a restored guest reboots cleanly\n{}",
        squib.report()
    );
    drop(squib);
    restore_merged_diff(files, diff_last);
}

/// Pauses the restored guest and takes a Diff snapshot of it (only the pages written since
/// its restore); returns the last tick before the pause.
fn diff_snapshot(squib: &Squib, files: &SnapshotFiles) -> u32 {
    let (status, body) = squib.api().patch("/vm", &json!({ "state": "Paused" }));
    assert_eq!(status, 204, "pause: {body}");
    thread::sleep(Duration::from_millis(1500));
    let last = last_tick(squib);
    put_ok(
        squib,
        "/snapshot/create",
        &json!({
            "snapshot_type": "Diff",
            "snapshot_path": files.state.with_file_name("diff.snap").display().to_string(),
            "mem_file_path": files.state.with_file_name("diff.mem").display().to_string(),
        }),
    );
    last
}

/// Merges the Diff memory file onto a copy of the base (what `squib-rebase-snap` does) and
/// restores the Diff's state over it: the guest goes on from where the Diff was taken.
fn restore_merged_diff(files: &SnapshotFiles, last: u32) {
    let merged = files.state.with_file_name("merged.mem");
    fs::copy(&files.memory, &merged).expect("copy the base memory file");
    let diff = fs::File::open(files.state.with_file_name("diff.mem")).expect("the Diff memory");
    let base = fs::File::options()
        .read(true)
        .write(true)
        .open(&merged)
        .expect("open the merged copy");
    let copied = squib_snapshot::rebase(&base, &diff).expect("merge the Diff onto its base");
    assert!(
        copied > 0 && copied < 128 << 20,
        "a Diff holds some pages, not all guest memory: {copied} bytes"
    );

    let squib = Squib::with_api("snap-diff-restore", &[]);
    let from = squib.line_count();
    put_ok(
        &squib,
        "/snapshot/load",
        &json!({
            "snapshot_path": files.state.with_file_name("diff.snap").display().to_string(),
            "mem_backend": { "backend_type": "File", "backend_path": merged.display().to_string() },
            "resume_vm": true,
            "network_overrides": [{ "iface_id": "eth0", "host_dev_name": CLONE_TAP }],
            // The set recorded by the previous restore of the same guest: read in before the
            // resume.
            "working_set": { "path": working_set_path(files).display().to_string() },
        }),
    );
    let (_, prefetched) = squib.wait_for_from(from, "Working set: prefetched ", RESUME_TIMEOUT);
    assert!(
        working_set_pages(&prefetched, "Working set: prefetched ") > 0,
        "{prefetched}"
    );
    let (_, next) = squib.wait_for_from(from, "SQUIB tick ", RESUME_TIMEOUT);
    assert_eq!(
        tick_number(&next),
        last + 1,
        "the Diff merged onto its base restores where the Diff was taken"
    );
}

/// The working-set file the File restores record and prefetch.
fn working_set_path(files: &SnapshotFiles) -> PathBuf {
    files.state.with_file_name("vm.ws")
}

/// The page count right after `prefix` in a working-set log line.
fn working_set_pages(line: &str, prefix: &str) -> u64 {
    line.split(prefix)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no page count in {line:?}"))
}

/// Loads the snapshot through a userfaultfd handler serving the memory file: the guest goes
/// on, and only the pages it touched were copied.
fn restore_through_uffd(files: &SnapshotFiles, tag: &str, last: u32) {
    let socket = files.state.with_file_name("uffd.sock");
    let listener = UnixListener::bind(&socket).expect("bind the handler's socket");
    let memory = fs::File::open(&files.memory).expect("open the memory file");
    let handler = thread::spawn(move || {
        let (vmm, _) = listener.accept().expect("accept the VMM");
        let handoff = squib_uffd::receive_handoff(&vmm).expect("receive the userfaultfd");
        let mut server = squib_uffd::PageServer::new(handoff.mappings, handoff.uffd, &memory)
            .expect("page server");
        server
            .serve(&vmm, squib_uffd::FaultMode::OnDemand, |_| {})
            .expect("serve page faults")
    });

    let squib = Squib::with_api("snap-uffd-restore", &[]);
    let from = squib.line_count();
    put_ok(
        &squib,
        "/snapshot/load",
        &json!({
            "snapshot_path": files.state.display().to_string(),
            "mem_backend": { "backend_type": "Uffd", "backend_path": socket.display().to_string() },
            "resume_vm": true,
            "network_overrides": [{ "iface_id": "eth0", "host_dev_name": CLONE_TAP }],
        }),
    );
    let (_, next) = squib.wait_for_from(from, "SQUIB tick ", RESUME_TIMEOUT);
    assert_eq!(tick_number(&next), last + 1, "restored through userfaultfd");
    squib.wait_for_from(
        from,
        &format!("SQUIB tick-file SQUIB-SNAP-FILE {tag}"),
        RESUME_TIMEOUT,
    );
    drop(squib); // the VMM goes away: the handler stops serving
    let stats = handler.join().expect("the handler thread");
    let pages = (128u64 << 20) / 4096;
    assert!(
        stats.pages_copied > 0 && stats.pages_copied < pages,
        "the handler copies the pages the guest touches, not all {pages}: {stats:?}"
    );
}

/// A VMM that has configured a boot resource refuses a load, and stays up.
#[test]
fn a_load_after_boot_resources_is_refused_without_ending_the_process() {
    let mut squib = Squib::with_api("snap-refused", &[]);
    put_ok(
        &squib,
        "/machine-config",
        &json!({ "vcpu_count": 1, "mem_size_mib": 128 }),
    );
    let (status, body) = squib.api().put(
        "/snapshot/load",
        &json!({ "snapshot_path": "/nonexistent", "mem_file_path": "/nonexistent" }),
    );
    assert_eq!(status, 400);
    assert_eq!(
        json(&body)["fault_message"],
        "Loading a microVM snapshot not allowed after configuring boot-specific resources."
    );
    assert!(squib.is_running(), "a refused load is not fatal");
    let (status, _) = squib.api().get("/");
    assert_eq!(status, 200);
}

/// A damaged state file fails the load with the checksum error, and the process exits 1
/// (a failed load is fatal, as in Firecracker).
#[test]
fn a_corrupt_snapshot_fails_the_load_and_the_process_exits_1() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let state = dir.path().join("vm.snap");
    // A valid state file of another payload, then one flipped byte: the checksum catches it
    // before anything is decoded.
    let mut bytes = valid_state_file_bytes(dir.path());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&state, &bytes).expect("write the damaged state file");
    let memory = dir.path().join("vm.mem");
    fs::write(&memory, vec![0u8; 4096]).expect("write a memory file");

    let mut squib = Squib::with_api("snap-corrupt", &[]);
    let (status, body) = squib.api().put(
        "/snapshot/load",
        &json!({
            "snapshot_path": state.display().to_string(),
            "mem_backend": { "backend_type": "File", "backend_path": memory.display().to_string() },
        }),
    );
    assert_eq!(status, 400);
    let message = json(&body)["fault_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with("Load snapshot error: Failed to restore from snapshot: ")
            && message.contains("CRC64 validation failed"),
        "{message}"
    );
    let status = squib.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "a failed load ends the process");
}

/// The bytes of a well-formed state file (squib's format, any payload).
fn valid_state_file_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("valid.snap");
    squib_snapshot::save_state(&path, &vec![7u64; 64]).expect("write a state file");
    fs::read(path).expect("read it back")
}

/// A snapshot cannot be created before the VM runs.
#[test]
fn a_snapshot_of_a_vm_that_never_started_is_refused() {
    let squib = Squib::with_api("snap-early", &[]);
    let (status, body) = squib.api().put(
        "/snapshot/create",
        &json!({ "snapshot_path": "/tmp/x.snap", "mem_file_path": "/tmp/x.mem" }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        json(&body)["fault_message"],
        squib_api::NOT_SUPPORTED_BEFORE_START,
        "{body}"
    );
}
