//! The `squib` binary's answers to bad API input, with no guest boot (issue 3).
//!
//! A bad kernel path fails at `PUT /boot-source` with the OS error; a file that is not a
//! kernel passes that PUT and fails at `InstanceStart`. Each failure is a 400 with a
//! `fault_message`, and the process keeps serving: `GET /` still answers "Not started".

mod common;

use common::{json, Squib};
use serde_json::json;

/// Asserts a 400 whose `fault_message` contains `expected`.
fn assert_fault(reply: (u16, String), expected: &str) {
    let (status, body) = reply;
    assert_eq!(status, 400, "expected 400, got {status}: {body}");
    let message = json(&body)["fault_message"].as_str().map(str::to_owned);
    let message = message.unwrap_or_else(|| panic!("no fault_message in {body}"));
    assert!(
        message.contains(expected),
        "fault_message {message:?} lacks {expected:?}"
    );
}

/// Asserts the process is alive and `GET /` says the VM was not started.
fn assert_still_serving(squib: &mut Squib, id: &str) {
    assert!(
        squib.is_running(),
        "squib exited after a bad request\n{}",
        squib.report()
    );
    let (status, body) = squib.api().get("/");
    assert_eq!(status, 200, "GET / answered {status}: {body}");
    let info = json(&body);
    assert_eq!(info["state"], "Not started", "{body}");
    assert_eq!(info["id"], id, "{body}");
}

#[test]
fn missing_kernel_file_is_rejected_at_boot_source_with_the_os_error() {
    let mut squib = Squib::with_api("bad-kernel-path", &[]);
    let boot =
        json!({ "kernel_image_path": "/nonexistent/squib/vmlinux", "boot_args": "console=ttyS0" });
    assert_fault(
        squib.api().put("/boot-source", &boot),
        "The kernel file cannot be opened: No such file or directory (os error 2)",
    );
    assert_still_serving(&mut squib, "bad-kernel-path");

    let start = squib
        .api()
        .put("/actions", &json!({ "action_type": "InstanceStart" }));
    assert_eq!(
        start.0, 400,
        "InstanceStart without a boot source: {}",
        start.1
    );
    assert_still_serving(&mut squib, "bad-kernel-path");
}

#[test]
fn a_file_that_is_not_a_kernel_is_rejected_at_instance_start() {
    let mut squib = Squib::with_api("not-a-kernel", &[]);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let fake = dir.path().join("not-a-kernel");
    std::fs::write(&fake, vec![0x5a_u8; 64 * 1024]).expect("write the fake kernel");

    let boot = json!({ "kernel_image_path": fake, "boot_args": "console=ttyS0" });
    let (status, body) = squib.api().put("/boot-source", &boot);
    assert_eq!(
        status, 204,
        "a readable file passes PUT /boot-source: {body}"
    );
    let machine = json!({ "vcpu_count": 1, "mem_size_mib": 128 });
    let (status, body) = squib.api().put("/machine-config", &machine);
    assert_eq!(status, 204, "PUT /machine-config: {body}");

    let (status, body) = squib
        .api()
        .put("/actions", &json!({ "action_type": "InstanceStart" }));
    assert_eq!(status, 400, "InstanceStart with a non-kernel file: {body}");
    assert!(
        json(&body)["fault_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_still_serving(&mut squib, "not-a-kernel");
}
