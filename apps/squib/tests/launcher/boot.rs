//! One guest booted as a launcher does it (log file, metrics file, API configuration), then
//! its `GET /vm/config` written to a file boots an identical VM in a second squib with
//! `--config-file <file> --no-api` (issue 5, "Done when").

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{
    assert_memtotal_consistent, boot_args, boot_slot, json, GuestKit, Squib, READY_MARKER,
};
use crate::support::{
    arg_path, assert_firecracker_keys, assert_in_order, log_lines, metric_sum, metrics_lines,
    workdir,
};

/// Time a guest gets to boot, print its facts and reboot: minutes when the host is shared.
const LAUNCHER_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// One vCPU keeps the boot affordable on a loaded 2-core host; the memory size differs from
/// the default so that a config file which lost the machine config would show.
const VCPUS: u64 = 1;
const MEM_MIB: u64 = 160;

/// The guest facts two identical VMs must print alike, read after the guest rebooted.
fn facts(squib: &Squib) -> Vec<String> {
    let lines = squib.lines();
    assert!(
        lines.iter().any(|l| l.contains(READY_MARKER)),
        "the guest's console never showed {READY_MARKER}\n{}",
        squib.report()
    );
    lines
        .into_iter()
        .filter(|l| l.starts_with("SQUIB nproc=") || l.starts_with("SQUIB memtotal_kib="))
        .chain(
            squib
                .lines()
                .into_iter()
                .filter(|l| l.starts_with("SQUIB blk ")),
        )
        .collect()
}

/// Configures the first VM through the API: kernel, initramfs, a read-only data drive.
fn configure(squib: &Squib, kit: &GuestKit, drive: &Path) {
    let api = squib.api();
    let boot = json!({
        "kernel_image_path": kit.vmlinux().display().to_string(),
        "initrd_path": kit.initramfs().display().to_string(),
        "boot_args": boot_args("squib.action=reboot"),
    });
    assert_eq!(api.put("/boot-source", &boot).0, 204, "{}", squib.report());
    let machine = json!({ "vcpu_count": VCPUS, "mem_size_mib": MEM_MIB });
    assert_eq!(
        api.put("/machine-config", &machine).0,
        204,
        "{}",
        squib.report()
    );
    let data = json!({
        "drive_id": "data",
        "path_on_host": drive.display().to_string(),
        "is_root_device": false,
        "is_read_only": true,
    });
    let (status, body) = api.put("/drives/data", &data);
    assert_eq!(status, 204, "PUT /drives/data: {body}\n{}", squib.report());
    let (status, body) = api.put("/actions", &json!({ "action_type": "InstanceStart" }));
    assert_eq!(status, 204, "InstanceStart: {body}\n{}", squib.report());
}

#[test]
fn api_boot_logs_metrics_exit_0_and_its_config_boots_an_identical_vm() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let dir = workdir();
    let drive = dir.path().join("data.ext4");
    std::fs::copy(kit.rootfs(), &drive).expect("copy the data drive");
    let (config, first_facts) = first_vm(&kit, dir.path(), &drive);
    let config_file = dir.path().join("vm_config.json");
    std::fs::write(&config_file, config.to_string()).expect("write the config file");

    let _slot = boot_slot();
    let mut second = Squib::with_config_file(&config, &[]);
    let status = second.wait_exit(LAUNCHER_BOOT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "second VM exit\n{}",
        second.report()
    );
    assert_eq!(first_facts, facts(&second), "the two VMs differ");
}

/// Boots the first VM; returns its `GET /vm/config` and its guest facts.
fn first_vm(kit: &GuestKit, dir: &Path, drive: &Path) -> (Value, Vec<String>) {
    let _slot = boot_slot();
    let log = dir.join("squib.log");
    let metrics = dir.join("metrics.ndjson");
    let (log_arg, metrics_arg) = (arg_path(dir, "squib.log"), arg_path(dir, "metrics.ndjson"));
    let extra = ["--log-path", &log_arg, "--metrics-path", &metrics_arg];
    let mut squib = Squib::with_api("launcher-boot", &extra);
    configure(&squib, kit, drive);
    let (status, body) = squib.api().get("/vm/config");
    assert_eq!(status, 200, "GET /vm/config: {body}");
    let config = json(&body);
    assert_eq!(config["machine-config"]["vcpu_count"], VCPUS, "{config}");
    assert_eq!(
        config["machine-config"]["mem_size_mib"], MEM_MIB,
        "{config}"
    );
    assert_eq!(config["drives"][0]["drive_id"], "data", "{config}");

    let status = squib.wait_exit(LAUNCHER_BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "first VM exit\n{}", squib.report());
    let lines = log_lines(&log);
    assert_in_order(
        &lines,
        &[
            "Running Firecracker v",
            "API server started.",
            "Vmm is stopping.",
            "Firecracker exiting successfully. exit_code=0",
        ],
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("Firecracker exiting successfully. exit_code=0")),
        "last log line: {:?}",
        lines.last()
    );
    check_metrics(&metrics_lines(&metrics));
    let facts = facts(&squib);
    assert_memtotal_consistent(squib.guest_fact("memtotal_kib"), MEM_MIB);
    (config, facts)
}

/// After boot and at exit at least: every line has Firecracker's keys and the counters moved.
fn check_metrics(lines: &[Value]) {
    assert!(lines.len() >= 2, "{} metrics lines: {lines:?}", lines.len());
    for line in lines {
        assert_firecracker_keys(line);
    }
    for (group, key) in [
        ("vcpu", "exit_io_out"),
        ("uart", "write_count"),
        ("block_data", "read_count"),
        ("block", "read_bytes"),
    ] {
        assert!(
            metric_sum(lines, group, key) > 0,
            "{group}.{key} did not move: {lines:?}"
        );
    }
}

#[test]
fn guest_console_output_survives_a_null_stdin() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let dir = workdir();
    let config = json!({
        "boot-source": {
            "kernel_image_path": kit.vmlinux().display().to_string(),
            "initrd_path": kit.initramfs().display().to_string(),
            "boot_args": boot_args("squib.action=reboot"),
        },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
    });
    let config_file = dir.path().join("vm_config.json");
    std::fs::write(&config_file, config.to_string()).expect("write the config file");
    let console = dir.path().join("console.txt");
    let status = Command::new(env!("CARGO_BIN_EXE_squib"))
        .arg("--no-api")
        .arg("--config-file")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).expect("create the console file"))
        .stderr(Stdio::null())
        .status()
        .expect("run squib");
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(text.contains("Run /init as init process"), "{text}");
    assert!(
        text.contains(READY_MARKER),
        "user-space output lost:\n{text}"
    );
}
