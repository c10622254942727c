//! Snapshots end to end (issue 14): a real guest is snapshotted and restored in new
//! processes, and the API's refusals are checked on the wire.
//!
//! One guest boot serves every restore check (boots cost minutes of a host core on
//! `kvm_pvm`): the guest writes a tagged file to its ext4 root and prints a counter; it is
//! paused, snapshotted (Full) and killed. A second process loads the snapshot with its memory
//! file mapped and `resume_vm`: the counter goes on from where it stopped and the file is
//! still there; Ctrl-Alt-Del then reboots it through the restored i8042. A third process
//! restores the same snapshot through a userfaultfd page-fault handler (squib-uffd's, the
//! library behind `squib-uffd-handler`), which serves only the pages the guest touches.

mod common;

use std::fs;
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
    let _slot = boot_slot();
    let dir = tempfile::tempdir().expect("temporary directory");
    let rootfs = dir.path().join("rootfs.ext4");
    fs::copy(kit.rootfs(), &rootfs).expect("copy the root filesystem");
    let tag = format!("tag{}", std::process::id());
    let files = SnapshotFiles {
        state: dir.path().join("vm.snap"),
        memory: dir.path().join("vm.mem"),
    };

    let last = boot_and_snapshot(&kit, &rootfs, &tag, &files);
    restore_from_file(&files, &tag, last);
    assert_eq!(
        ext4_file(&rootfs, "/snap-file"),
        format!("SQUIB-SNAP-FILE {tag}"),
        "the file the guest wrote before the snapshot is on its disk"
    );
    restore_through_uffd(&files, &tag, last);
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
            "boot_args": boot_args(&format!("squib.action=snap-file squib.snap_tag={tag}")),
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

/// Loads the snapshot with its memory file mapped and `resume_vm`, checks the guest goes on
/// (counter, file, configuration), then reboots it with Ctrl-Alt-Del.
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
