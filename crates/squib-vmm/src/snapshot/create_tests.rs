//! `PUT /snapshot/create` through the API on a running in-process microVM whose "kernel" is a
//! hand-built ELF counting in guest memory (on the real `/dev/kvm`): a Diff written onto its
//! base equals a Full snapshot of the same moment, and a VM without dirty-page tracking
//! refuses a Diff before writing anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use squib_api::action::{ApiAction, ApiResponse};
use squib_api::mirror::StateMirror;
use squib_arch::kernel::test_images::elf_image;
use squib_logger::metrics::METRICS;
use vm_memory::{Bytes, GuestAddress};

use crate::event_sources::ControlEvents;
use crate::vmm::{Vmm, VmmOptions};

/// Where the guest keeps its counter.
const COUNTER_ADDR: u64 = 0x30_0000;

/// An ELF whose entry (its load address + 0x40) loops on `inc dword [COUNTER_ADDR]`.
fn counting_kernel(dir: &Path) -> PathBuf {
    let mut payload = vec![0x90; 0x40];
    payload.extend_from_slice(&[
        0xff, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, // inc dword [0x300000]
        0xeb, 0xf7, // jmp -9
    ]);
    let path = dir.join("counter.elf");
    std::fs::write(&path, elf_image(&payload, 0x1000, None)).unwrap();
    path
}

/// `method path body` as the API thread would hand it over, answered by `vmm`.
fn request(vmm: &mut Vmm, method: &str, path: &str, body: &serde_json::Value) -> ApiResponse {
    let bytes = serde_json::to_vec(body).unwrap();
    match squib_api::routes::parse_request(method, path, &bytes) {
        Ok(squib_api::routes::Parsed::Action { action, .. }) => vmm.handle_action(action),
        other => panic!("{method} {path} did not parse: {other:?}"),
    }
}

fn ok(response: ApiResponse) {
    assert_eq!(response, ApiResponse::NoContent);
}

/// A started microVM running the counting kernel, with serial output going to a file.
fn running_vmm(dir: &Path, track_dirty_pages: bool) -> Vmm {
    let (control, flags) = ControlEvents::new().unwrap();
    let mirror = Arc::new(StateMirror::new("snapshot-test".into()));
    let options = VmmOptions {
        boot_timer: false,
        mmds_size_limit: 64,
    };
    let mut vmm = Vmm::new(options, mirror, control, flags, None).unwrap();
    let machine =
        json!({"vcpu_count": 1, "mem_size_mib": 32, "track_dirty_pages": track_dirty_pages});
    ok(request(&mut vmm, "PUT", "/machine-config", &machine));
    let kernel = json!({"kernel_image_path": counting_kernel(dir)});
    ok(request(&mut vmm, "PUT", "/boot-source", &kernel));
    let serial = json!({"serial_out_path": dir.join("serial.out")});
    ok(request(&mut vmm, "PUT", "/serial", &serial));
    ok(vmm.handle_action(ApiAction::Action(
        squib_api::schemas::InstanceAction::InstanceStart,
    )));
    // Paused only once the guest has counted: a pause sent before the new vCPU thread first
    // runs can go unanswered (its kick comes before the thread can take it).
    wait_past(&vmm, 0);
    vmm
}

/// Wait until the guest's counter passes `above`.
fn wait_past(vmm: &Vmm, above: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(vmm) <= above {
        assert!(Instant::now() < deadline, "the guest did not count");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn counter(vmm: &Vmm) -> u32 {
    let vm = vmm.running.as_ref().unwrap();
    vm.mem.read_obj(GuestAddress(COUNTER_ADDR)).unwrap()
}

/// Let the guest run until its counter passes `above`, then pause it.
fn run_past(vmm: &mut Vmm, above: u32) {
    ok(request(vmm, "PATCH", "/vm", &json!({"state": "Resumed"})));
    wait_past(vmm, above);
    ok(request(vmm, "PATCH", "/vm", &json!({"state": "Paused"})));
}

fn create(vmm: &mut Vmm, kind: &str, state: &Path, mem: &Path) -> ApiResponse {
    let body = json!({"snapshot_type": kind, "snapshot_path": state, "mem_file_path": mem});
    request(vmm, "PUT", "/snapshot/create", &body)
}

#[test]
fn a_diff_written_onto_its_base_equals_a_full_snapshot_of_the_same_moment() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let mut vmm = running_vmm(dir.path(), true);
    ok(request(
        &mut vmm,
        "PATCH",
        "/vm",
        &json!({"state": "Paused"}),
    ));
    ok(create(
        &mut vmm,
        "Full",
        &file("base.state"),
        &file("base.mem"),
    ));

    let at_base = counter(&vmm);
    run_past(&mut vmm, at_base);
    std::fs::copy(file("base.mem"), file("merged.mem")).unwrap();
    ok(create(
        &mut vmm,
        "Diff",
        &file("diff.state"),
        &file("merged.mem"),
    ));
    assert_ne!(METRICS.latencies_us.vmm_diff_create_snapshot.fetch(), 0);
    ok(create(
        &mut vmm,
        "Full",
        &file("now.state"),
        &file("now.mem"),
    ));

    let merged = std::fs::read(file("merged.mem")).unwrap();
    assert!(merged == std::fs::read(file("now.mem")).unwrap());
    let at = COUNTER_ADDR as usize;
    let in_merged = u32::from_le_bytes(merged[at..at + 4].try_into().unwrap());
    assert!(in_merged > at_base, "{in_merged} <= {at_base}");
    assert_eq!(in_merged, counter(&vmm));
    // A Diff on its own, in a new file, is the one page the guest changed; the rest are holes.
    run_past(&mut vmm, in_merged);
    ok(create(
        &mut vmm,
        "Diff",
        &file("diff2.state"),
        &file("diff2.mem"),
    ));
    let diff = std::fs::read(file("diff2.mem")).unwrap();
    assert_eq!(diff.len(), 32 << 20);
    let written: Vec<usize> = (0..diff.len() / 4096)
        .filter(|&page| diff[page * 4096..(page + 1) * 4096].iter().any(|&b| b != 0))
        .collect();
    assert_eq!(written, [at / 4096]);
}

#[test]
fn a_diff_of_a_restored_vm_merged_onto_its_base_restores_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let mut origin = running_vmm(dir.path(), false);
    ok(request(
        &mut origin,
        "PATCH",
        "/vm",
        &json!({"state": "Paused"}),
    ));
    ok(create(
        &mut origin,
        "Full",
        &file("base.state"),
        &file("base.mem"),
    ));
    let at_base = counter(&origin);

    // Restored with tracking (the origin had none), resumed, and a Diff taken onto a copy of
    // the base memory file.
    let mut restored = restore(&file("base.state"), &file("base.mem"));
    assert_eq!(counter(&restored), at_base);
    run_past(&mut restored, at_base);
    std::fs::copy(file("base.mem"), file("merged.mem")).unwrap();
    ok(create(
        &mut restored,
        "Diff",
        &file("diff.state"),
        &file("merged.mem"),
    ));
    let at_diff = counter(&restored);

    // The Diff's state with the merged memory is the restored VM at the time of the Diff (its
    // snapshot names the original kernel although the restored VM never opened it).
    let mut again = restore(&file("diff.state"), &file("merged.mem"));
    assert_eq!(counter(&again), at_diff);
    run_past(&mut again, at_diff);
}

/// A new VMM that loaded `state` and `mem` with dirty-page tracking, left paused.
fn restore(state: &Path, mem: &Path) -> Vmm {
    let (control, flags) = ControlEvents::new().unwrap();
    let mirror = Arc::new(StateMirror::new("restored".into()));
    let options = VmmOptions {
        boot_timer: false,
        mmds_size_limit: 64,
    };
    let mut vmm = Vmm::new(options, mirror, control, flags, None).unwrap();
    let body = json!({"snapshot_path": state, "track_dirty_pages": true,
        "mem_backend": {"backend_type": "File", "backend_path": mem}});
    ok(request(&mut vmm, "PUT", "/snapshot/load", &body));
    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config is JSON");
    };
    assert_eq!(config["machine-config"]["track_dirty_pages"], true);
    vmm
}

#[test]
fn a_diff_of_a_vm_without_dirty_page_tracking_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let mut vmm = running_vmm(dir.path(), false);
    ok(request(
        &mut vmm,
        "PATCH",
        "/vm",
        &json!({"state": "Paused"}),
    ));
    let ApiResponse::Fault { fault_message, .. } =
        create(&mut vmm, "Diff", &file("diff.state"), &file("diff.mem"))
    else {
        panic!("a Diff without tracking was accepted");
    };
    assert_eq!(
        fault_message,
        "Create snapshot error: Diff snapshots need dirty page tracking: this microVM was \
         started without track_dirty_pages (set it in PUT /machine-config before boot, or in \
         PUT /snapshot/load)"
    );
    assert!(!file("diff.state").exists() && !file("diff.mem").exists());
    ok(create(
        &mut vmm,
        "Full",
        &file("full.state"),
        &file("full.mem"),
    ));
}
