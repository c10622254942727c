//! The admission gate and the pre-boot handlers, driven without KVM.

use std::sync::Arc;

use serde_json::json;
use squib_api::action::{ApiAction, ApiResponse};
use squib_api::mirror::StateMirror;
use squib_api::schemas::{
    BootSourceConfig, DriveConfig, InstanceAction, MachineConfig, MmdsContents, VmStateChange,
};
use squib_api::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};

use crate::event_sources::ControlEvents;
use crate::vmm::{Vmm, VmmOptions};

fn vmm() -> Vmm {
    let (control, flags) = ControlEvents::new().unwrap();
    let mirror = Arc::new(StateMirror::new("test".into()));
    let options = VmmOptions {
        boot_timer: false,
        mmds_size_limit: 64,
    };
    Vmm::new(options, mirror, control, flags, None).unwrap()
}

fn fault_of(response: ApiResponse) -> String {
    match response {
        ApiResponse::Fault { fault_message, .. } => fault_message,
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// A drive parsed the way the API thread parses `PUT /drives/{id}`.
fn drive(id: &str, path: &std::path::Path, root: bool) -> DriveConfig {
    let body = json!({"drive_id": id, "path_on_host": path, "is_root_device": root, "is_read_only": false});
    let body = serde_json::to_vec(&body).unwrap();
    match squib_api::routes::parse_request("PUT", &format!("/drives/{id}"), &body) {
        Ok(squib_api::routes::Parsed::Action {
            action: ApiAction::PutDrive(config),
            ..
        }) => config,
        other => panic!("PUT /drives/{id} did not parse: {other:?}"),
    }
}

#[test]
fn post_boot_actions_are_refused_before_boot_with_firecrackers_message() {
    let mut vmm = vmm();
    let message = fault_of(vmm.handle_action(ApiAction::PatchVm(VmStateChange::Paused)));
    assert_eq!(message, NOT_SUPPORTED_BEFORE_START);
    let message = fault_of(vmm.handle_action(ApiAction::Action(InstanceAction::SendCtrlAltDel)));
    assert_eq!(message, NOT_SUPPORTED_BEFORE_START);
    assert_ne!(message, NOT_SUPPORTED_AFTER_START);
}

#[test]
fn instance_start_without_a_kernel_names_what_is_missing() {
    let mut vmm = vmm();
    let message = fault_of(vmm.handle_action(ApiAction::Action(InstanceAction::InstanceStart)));
    assert_eq!(
        message,
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
}

#[test]
fn boot_source_with_a_missing_kernel_reports_the_os_error() {
    let mut vmm = vmm();
    let config = BootSourceConfig {
        kernel_image_path: "/nonexistent/vmlinux".into(),
        initrd_path: None,
        boot_args: None,
    };
    let message = fault_of(vmm.handle_action(ApiAction::PutBootSource(config)));
    assert_eq!(
        message,
        "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
    );
}

#[test]
fn machine_config_round_trips_through_get() {
    let mut vmm = vmm();
    let config = MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 256,
        ..MachineConfig::default()
    };
    assert!(matches!(
        vmm.handle_action(ApiAction::PutMachineConfig(config)),
        ApiResponse::NoContent
    ));
    let ApiResponse::Json(got) = vmm.handle_action(ApiAction::GetMachineConfig) else {
        panic!("GET /machine-config is JSON");
    };
    assert_eq!(got["vcpu_count"], 2);
    assert_eq!(got["mem_size_mib"], 256);
}

#[test]
fn only_one_root_drive_and_it_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for p in [&a, &b, &c] {
        std::fs::write(p, [0u8; 512]).unwrap();
    }
    let mut vmm = vmm();
    assert!(matches!(
        vmm.handle_action(ApiAction::PutDrive(drive("data", &a, false))),
        ApiResponse::NoContent
    ));
    assert!(matches!(
        vmm.handle_action(ApiAction::PutDrive(drive("root", &b, true))),
        ApiResponse::NoContent
    ));
    let message = fault_of(vmm.handle_action(ApiAction::PutDrive(drive("root2", &c, true))));
    assert_eq!(
        message,
        "Drive config error: A root block device already exists!"
    );
    let ids: Vec<_> = vmm
        .resources
        .drives_in_attach_order()
        .map(|d| d.config.drive_id.to_string())
        .collect();
    assert_eq!(ids, ["root", "data"]);
    assert_eq!(
        vmm.resources.root_device_cmdline().as_deref(),
        Some("root=/dev/vda rw")
    );
    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config is JSON");
    };
    assert_eq!(config["drives"][0]["drive_id"], "root");
    assert_eq!(config["logger"], serde_json::Value::Null);
}

#[test]
fn a_missing_drive_file_is_refused_at_put_with_the_os_error() {
    let mut vmm = vmm();
    let message = fault_of(vmm.handle_action(ApiAction::PutDrive(drive(
        "data",
        std::path::Path::new("/nonexistent/disk"),
        false,
    ))));
    assert!(message.starts_with("Drive config error: "), "{message}");
    assert!(
        message.contains("No such file or directory (os error 2)"),
        "{message}"
    );
}

#[test]
fn mmds_over_the_limit_is_413_and_leaves_the_store_unchanged() {
    let mut vmm = vmm();
    assert!(matches!(
        vmm.handle_action(ApiAction::PutMmds(MmdsContents(json!({"k": "v"})))),
        ApiResponse::NoContent
    ));
    let big = MmdsContents(json!({ "k": "x".repeat(100) }));
    match vmm.handle_action(ApiAction::PatchMmds(big)) {
        ApiResponse::Fault {
            status,
            fault_message,
        } => {
            assert_eq!(status, 413);
            assert_eq!(
                fault_message,
                "MMDS limit exceeded error: The MMDS patch request doesn't fit."
            );
        }
        other => panic!("expected 413, got {other:?}"),
    }
    let ApiResponse::Json(data) = vmm.handle_action(ApiAction::GetMmds) else {
        panic!("GET /mmds is JSON");
    };
    assert_eq!(data, json!({"k": "v"}));
}

#[test]
fn what_squib_cannot_build_yet_is_refused_when_put_naming_it() {
    let mut vmm = vmm();
    let cases = [
        (
            "/pmem/p0",
            json!({"id": "p0", "path_on_host": "/p"}),
            "virtio-pmem is not supported by squib yet.",
        ),
        (
            "/hotplug/memory",
            json!({"total_size_mib": 1024}),
            "virtio-mem (memory hotplug) is not supported by squib yet.",
        ),
    ];
    for (path, body, message) in cases {
        assert_eq!(
            fault_of(vmm.handle_action(parsed("PUT", path, &body))),
            message,
            "{path}"
        );
    }
    let defaults = json!({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "None",
        "track_dirty_pages": false, "cpu_template": "None"});
    assert!(matches!(
        vmm.handle_action(parsed("PUT", "/machine-config", &defaults)),
        ApiResponse::NoContent
    ));
}

#[test]
fn huge_pages_are_accepted_and_shown_in_the_vm_config() {
    let mut vmm = vmm();
    for huge in ["2M", "Transparent", "None"] {
        let body = json!({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": huge});
        assert!(matches!(
            vmm.handle_action(parsed("PUT", "/machine-config", &body)),
            ApiResponse::NoContent
        ));
        let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
            panic!("GET /vm/config is JSON");
        };
        assert_eq!(config["machine-config"]["huge_pages"], huge);
    }
}

#[test]
fn balloon_is_validated_stored_and_shown_before_boot() {
    let mut vmm = vmm();
    // No balloon yet.
    assert_eq!(
        fault_of(vmm.handle_action(ApiAction::GetBalloon)),
        "Balloon config error: No balloon device found."
    );
    // Larger than guest memory (128 MiB by default).
    let big = json!({"amount_mib": 129, "deflate_on_oom": false});
    assert_eq!(
        fault_of(vmm.handle_action(parsed("PUT", "/balloon", &big))),
        "Balloon config error: Amount of pages requested is too large."
    );
    let body = json!({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 2,
        "free_page_hinting": true, "free_page_reporting": true});
    assert!(matches!(
        vmm.handle_action(parsed("PUT", "/balloon", &body)),
        ApiResponse::NoContent
    ));
    let shown = json!({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 2,
        "free_page_hinting": true, "free_page_reporting": true});
    let ApiResponse::Json(got) = vmm.handle_action(ApiAction::GetBalloon) else {
        panic!("GET /balloon is JSON");
    };
    assert_eq!(got, shown);
    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config is JSON");
    };
    assert_eq!(config["balloon"], shown);
    // Guest memory cannot shrink below the balloon's target.
    let small = json!({"vcpu_count": 1, "mem_size_mib": 32});
    assert_eq!(
        fault_of(vmm.handle_action(parsed("PUT", "/machine-config", &small))),
        "Machine config error: The memory size (MiB) is smaller than the previously set \
         balloon device target size."
    );
    // Runtime balloon actions wait for the boot.
    for (method, path, body) in [
        ("PATCH", "/balloon", json!({"amount_mib": 1})),
        (
            "PATCH",
            "/balloon/statistics",
            json!({"stats_polling_interval_s": 1}),
        ),
    ] {
        assert_eq!(
            fault_of(vmm.handle_action(parsed(method, path, &body))),
            NOT_SUPPORTED_BEFORE_START,
            "{path}"
        );
    }
}

#[test]
fn dirty_page_tracking_is_accepted_and_shown_in_the_vm_config() {
    let mut vmm = vmm();
    let body = json!({"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": true});
    assert!(matches!(
        vmm.handle_action(parsed("PUT", "/machine-config", &body)),
        ApiResponse::NoContent
    ));
    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config is JSON");
    };
    assert_eq!(config["machine-config"]["track_dirty_pages"], true);
    // A PATCH that leaves it out keeps it; one that names it turns it off.
    assert_eq!(
        patch(&mut vmm, json!({"vcpu_count": 2}))["track_dirty_pages"],
        true
    );
    assert_eq!(
        patch(&mut vmm, json!({"track_dirty_pages": false}))["track_dirty_pages"],
        false
    );
}

/// `PATCH /machine-config` with `body`, then the machine configuration `GET` shows.
fn patch(vmm: &mut Vmm, body: serde_json::Value) -> serde_json::Value {
    assert!(matches!(
        vmm.handle_action(parsed("PATCH", "/machine-config", &body)),
        ApiResponse::NoContent
    ));
    match vmm.handle_action(ApiAction::GetMachineConfig) {
        ApiResponse::Json(got) => got,
        other => panic!("GET /machine-config answered {other:?}"),
    }
}

#[test]
fn a_snapshot_load_sets_dirty_page_tracking_and_keeps_the_boot_source_in_the_config() {
    // The configuration a snapshot of a VM without tracking carries.
    let kernel = tempfile::NamedTempFile::new().unwrap();
    let mut source = vmm();
    let body = json!({"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": false});
    source.handle_action(parsed("PUT", "/machine-config", &body));
    let body = json!({"kernel_image_path": kernel.path()});
    source.handle_action(parsed("PUT", "/boot-source", &body));
    let saved = source.snapshot_config_json();
    let load = |track: bool| {
        let body = json!({"snapshot_path": "/s", "mem_backend":
            {"backend_type": "File", "backend_path": "/m"}, "track_dirty_pages": track});
        match parsed("PUT", "/snapshot/load", &body) {
            ApiAction::SnapshotLoad(config) => config,
            other => panic!("PUT /snapshot/load parsed as {other:?}"),
        }
    };
    for track in [true, false] {
        let mut vmm = vmm();
        vmm.restore_resources(&saved, &load(track)).unwrap();
        let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
            panic!("GET /vm/config is JSON");
        };
        assert_eq!(config["machine-config"]["track_dirty_pages"], track);
        // The boot source is kept for the restored VM's own snapshots, not reopened.
        let kernel_path = kernel.path().to_str().unwrap();
        assert_eq!(config["boot-source"]["kernel_image_path"], kernel_path);
        assert!(vmm.resources.boot_source().is_none());
    }
}

#[test]
fn a_snapshot_load_asking_for_dirty_page_tracking_goes_on_to_read_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.snap");
    let body = json!({"snapshot_path": missing, "mem_backend":
        {"backend_type": "File", "backend_path": dir.path().join("mem")},
        "track_dirty_pages": true});
    let message = fault_of(vmm().handle_action(parsed("PUT", "/snapshot/load", &body)));
    assert!(
        message.starts_with(
            "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state \
             from file: Failed to open snapshot file: "
        ),
        "{message}"
    );
}

/// The action the API thread makes of `method path body`.
fn parsed(method: &str, path: &str, body: &serde_json::Value) -> ApiAction {
    let bytes = serde_json::to_vec(body).unwrap();
    match squib_api::routes::parse_request(method, path, &bytes) {
        Ok(squib_api::routes::Parsed::Action { action, .. }) => action,
        other => panic!("{method} {path} did not parse: {other:?}"),
    }
}

#[test]
fn put_vsock_binds_at_once_and_a_second_put_replaces_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("v1.sock");
    let second = dir.path().join("v2.sock");
    let mut vmm = vmm();
    let put = |path: &std::path::Path| {
        parsed(
            "PUT",
            "/vsock",
            &json!({"guest_cid": 3, "uds_path": path.display().to_string()}),
        )
    };
    assert!(matches!(
        vmm.handle_action(put(&first)),
        ApiResponse::NoContent
    ));
    assert!(first.exists(), "the uds is bound at PUT time");
    assert!(matches!(
        vmm.handle_action(put(&first)),
        ApiResponse::NoContent
    ));
    assert!(matches!(
        vmm.handle_action(put(&second)),
        ApiResponse::NoContent
    ));
    assert!(!first.exists(), "the replaced device's socket is unlinked");
    assert!(second.exists());
    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config");
    };
    assert_eq!(config["vsock"]["uds_path"], second.display().to_string());

    let missing = dir.path().join("no-such-dir/v.sock");
    let message = fault_of(vmm.handle_action(put(&missing)));
    assert!(
        message.starts_with(
            "Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: "
        ),
        "{message}"
    );
}

/// A network interface parsed the way the API thread parses `PUT /network-interfaces/{id}`.
fn network(body: &serde_json::Value) -> squib_api::schemas::NetworkInterfaceConfig {
    let id = body["iface_id"].as_str().unwrap();
    let bytes = serde_json::to_vec(body).unwrap();
    match squib_api::routes::parse_request("PUT", &format!("/network-interfaces/{id}"), &bytes) {
        Ok(squib_api::routes::Parsed::Action {
            action: ApiAction::PutNetwork(config),
            ..
        }) => config,
        other => panic!("PUT /network-interfaces/{id} did not parse: {other:?}"),
    }
}

/// A TAP name unique to this test process (TUNSETIFF creates it; it goes with the last fd).
fn tap_name(tag: &str) -> String {
    format!("sqv{tag}{}", std::process::id() % 100_000)
}

#[test]
fn a_tap_that_cannot_be_opened_is_refused_at_put_naming_it() {
    let mut vmm = vmm();
    // `lo` exists and is not a TAP: TUNSETIFF refuses it even for root.
    let config = network(&json!({"iface_id": "eth0", "host_dev_name": "lo"}));
    let message = fault_of(vmm.handle_action(ApiAction::PutNetwork(config)));
    assert!(
        message.starts_with("Could not create the network device: Open tap device failed: lo: "),
        "{message}"
    );
    assert!(message.contains("(os error "), "{message}");
    let message = fault_of(vmm.handle_action(ApiAction::PutMmdsConfig(
        squib_api::schemas::MmdsConfig {
            version: squib_api::schemas::MmdsVersion::V2,
            network_interfaces: vec!["eth0".try_into().unwrap()],
            ipv4_address: squib_mmds::DEFAULT_IPV4_ADDR,
            imds_compat: false,
        },
    )));
    assert!(message.contains("does not correspond to any existing network interface"));
}

#[test]
fn network_interfaces_open_their_tap_and_keep_macs_unique() {
    let mut vmm = vmm();
    let (tap0, tap1) = (tap_name("a"), tap_name("b"));
    let first = network(
        &json!({"iface_id": "eth0", "host_dev_name": tap0, "guest_mac": "06:00:AC:10:00:02"}),
    );
    if let ApiResponse::Fault { fault_message, .. } =
        vmm.handle_action(ApiAction::PutNetwork(first.clone()))
    {
        eprintln!("skipping: cannot create a TAP here ({fault_message})");
        return;
    }
    // A re-PUT naming the same TAP reuses the open one (a TAP cannot be attached twice).
    assert_eq!(
        vmm.handle_action(ApiAction::PutNetwork(first)),
        ApiResponse::NoContent
    );
    let clash = network(
        &json!({"iface_id": "eth1", "host_dev_name": tap1, "guest_mac": "06:00:ac:10:00:02"}),
    );
    assert_eq!(
        fault_of(vmm.handle_action(ApiAction::PutNetwork(clash))),
        "Network interface error: The MAC address is already in use: 06:00:ac:10:00:02"
    );
    // Another interface on the TAP eth0 holds: the kernel refuses the second attach.
    let busy = network(&json!({"iface_id": "eth1", "host_dev_name": tap0}));
    let message = fault_of(vmm.handle_action(ApiAction::PutNetwork(busy)));
    assert!(
        message.contains(&format!("Open tap device failed: {tap0}: ")),
        "{message}"
    );

    let ApiResponse::Json(config) = vmm.handle_action(ApiAction::GetVmConfig) else {
        panic!("GET /vm/config is JSON");
    };
    let ifaces = config["network-interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1);
    assert_eq!(ifaces[0]["host_dev_name"], json!(tap0));
    assert_eq!(ifaces[0]["guest_mac"], json!("06:00:ac:10:00:02"));
}

#[test]
fn patch_network_is_post_boot_only() {
    let mut vmm = vmm();
    let patch = squib_api::schemas::NetworkPatch {
        iface_id: "eth0".try_into().unwrap(),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    };
    let message = fault_of(vmm.handle_action(ApiAction::PatchNetwork(patch)));
    assert_eq!(message, NOT_SUPPORTED_BEFORE_START);
}

/// Polls `future` once: enough for a send into a channel with room.
fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the future was not ready at once"),
    }
}

/// A VMM serving a real API channel, and the channel's sending end.
fn vmm_with_api() -> (Vmm, squib_api::channel::ApiSender) {
    let (control, flags) = ControlEvents::new().unwrap();
    let mirror = Arc::new(StateMirror::new("test".into()));
    let wake = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
    let (tx, rx) = squib_api::channel::api_channel(4, wake);
    let options = VmmOptions {
        boot_timer: false,
        mmds_size_limit: 64,
    };
    (
        Vmm::new(options, mirror, control, flags, Some(rx)).unwrap(),
        tx,
    )
}

fn machine(vcpu_count: u8) -> ApiAction {
    ApiAction::PutMachineConfig(MachineConfig {
        vcpu_count,
        mem_size_mib: 256,
        ..MachineConfig::default()
    })
}

fn vcpus(vmm: &mut Vmm) -> serde_json::Value {
    match vmm.handle_action(ApiAction::GetMachineConfig) {
        ApiResponse::Json(got) => got["vcpu_count"].clone(),
        other => panic!("GET /machine-config answered {other:?}"),
    }
}

#[test]
fn an_action_whose_requester_gave_up_is_skipped_not_run() {
    let (mut vmm, mut tx) = vmm_with_api();
    let mut live = poll_once(tx.send(machine(3))).unwrap();
    // The requester's timeout fired (or its client went away) while the action was queued.
    let abandoned = poll_once(tx.send(machine(2))).unwrap();
    drop(abandoned);
    vmm.serve_api();
    assert_eq!(vcpus(&mut vmm), 3, "only the live request may run");
    assert_eq!(vmm.skipped_api_requests(), 1);
    assert_eq!(poll_once(live.wait()).unwrap(), ApiResponse::NoContent);
    // Abandoning after the fact is harmless: the receiver is gone too.
    let gone = poll_once(tx.send(machine(4))).unwrap();
    assert_eq!(gone.abandon(), squib_api::channel::Abandon::NotStarted);
    vmm.serve_api();
    assert_eq!(vcpus(&mut vmm), 3);
    assert_eq!(vmm.skipped_api_requests(), 2);
}
