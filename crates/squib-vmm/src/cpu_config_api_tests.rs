//! CPU templates through the VMM's API actions: the last of `cpu_template` and
//! `/cpu-config` wins and shows in `GET /vm/config`, a snapshot's configuration keeps the
//! custom template, and `InstanceStart` refuses a template this host cannot take with
//! Firecracker's messages, before it loads the kernel.

use std::sync::Arc;

use serde_json::{json, Value};
use squib_api::action::{ApiAction, ApiResponse};
use squib_api::mirror::StateMirror;
use squib_api::schemas::{InstanceAction, SnapshotLoadConfig};

use super::*;
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

/// The API thread's action for `method path body`.
fn parsed(method: &str, path: &str, body: &Value) -> ApiAction {
    let bytes = serde_json::to_vec(body).unwrap();
    match squib_api::routes::parse_request(method, path, &bytes) {
        Ok(squib_api::routes::Parsed::Action { action, .. }) => action,
        other => panic!("{method} {path} did not parse: {other:?}"),
    }
}

/// Perform `method path body`: `Ok` for a success, the fault message otherwise.
fn request(vmm: &mut Vmm, method: &str, path: &str, body: Value) -> Result<(), String> {
    match vmm.handle_action(parsed(method, path, &body)) {
        ApiResponse::Fault { fault_message, .. } => Err(fault_message),
        _ => Ok(()),
    }
}

fn vm_config(vmm: &mut Vmm) -> Value {
    match vmm.handle_action(ApiAction::GetVmConfig) {
        ApiResponse::Json(value) => value,
        other => panic!("GET /vm/config: {other:?}"),
    }
}

fn instance_start(vmm: &mut Vmm) -> Result<(), String> {
    match vmm.handle_action(ApiAction::Action(InstanceAction::InstanceStart)) {
        ApiResponse::Fault { fault_message, .. } => Err(fault_message),
        _ => Ok(()),
    }
}

fn custom() -> Value {
    json!({"kvm_capabilities": ["!56"], "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0"}]})
}

#[test]
fn the_last_of_cpu_template_and_cpu_config_wins() {
    let mut vmm = vmm();
    let machine = json!({"vcpu_count": 2, "mem_size_mib": 256});
    request(&mut vmm, "PUT", "/cpu-config", custom()).unwrap();
    let config = vm_config(&mut vmm);
    assert_eq!(config["cpu-config"]["kvm_capabilities"], json!(["!56"]));
    assert_eq!(config["cpu-config"]["msr_modifiers"][0]["addr"], "0x10a");

    // A machine configuration without `cpu_template` keeps the custom template.
    request(&mut vmm, "PUT", "/machine-config", machine.clone()).unwrap();
    request(
        &mut vmm,
        "PATCH",
        "/machine-config",
        json!({"vcpu_count": 1}),
    )
    .unwrap();
    assert!(matches!(
        CpuTemplateChoice::of(&vmm.resources),
        CpuTemplateChoice::Custom(_)
    ));
    assert!(vm_config(&mut vmm)["machine-config"]
        .get("cpu_template")
        .is_none());

    // A static template set later replaces it...
    request(
        &mut vmm,
        "PATCH",
        "/machine-config",
        json!({"cpu_template": "T2A"}),
    )
    .unwrap();
    let config = vm_config(&mut vmm);
    assert_eq!(config["cpu-config"], Value::Null);
    assert_eq!(config["machine-config"]["cpu_template"], "T2A");
    request(&mut vmm, "PUT", "/machine-config", machine.clone()).unwrap();
    assert_eq!(
        CpuTemplateChoice::of(&vmm.resources),
        CpuTemplateChoice::Static(CpuTemplate::T2A)
    );

    // ... and a custom one set later replaces the static one.
    request(&mut vmm, "PUT", "/cpu-config", custom()).unwrap();
    let config = vm_config(&mut vmm);
    assert!(config["machine-config"].get("cpu_template").is_none());
    assert!(matches!(
        CpuTemplateChoice::of(&vmm.resources),
        CpuTemplateChoice::Custom(_)
    ));

    // `None` is a choice too: no template at all.
    let mut none = machine;
    none["cpu_template"] = json!("None");
    request(&mut vmm, "PUT", "/machine-config", none).unwrap();
    assert_eq!(vm_config(&mut vmm)["cpu-config"], Value::Null);
    assert_eq!(
        CpuTemplateChoice::of(&vmm.resources),
        CpuTemplateChoice::None
    );
}

#[test]
fn a_snapshot_configuration_brings_the_custom_template_back() {
    // A snapshotted VM was booted: its configuration has a boot source.
    let dir = tempfile::tempdir().unwrap();
    let mut origin = vmm_with_boot_source(&dir);
    request(&mut origin, "PUT", "/cpu-config", custom()).unwrap();
    let saved = origin.snapshot_config_json();

    let mut restored = vmm();
    // A template set before the load gives way to the snapshot's.
    request(
        &mut restored,
        "PUT",
        "/cpu-config",
        json!({"kvm_capabilities": ["1"]}),
    )
    .unwrap();
    let load: SnapshotLoadConfig = match parsed(
        "PUT",
        "/snapshot/load",
        &json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}),
    ) {
        ApiAction::SnapshotLoad(load) => load,
        other => panic!("{other:?}"),
    };
    restored.restore_resources(&saved, &load).unwrap();
    assert_eq!(restored.resources.cpu_config, origin.resources.cpu_config);
    assert_eq!(
        vm_config(&mut restored)["cpu-config"],
        vm_config(&mut origin)["cpu-config"]
    );

    // A snapshot without a custom template restores none.
    let plain = vmm_with_boot_source(&dir).snapshot_config_json();
    restored.restore_resources(&plain, &load).unwrap();
    assert_eq!(restored.resources.cpu_config, None);
}

/// A VMM with a boot source (any file: the template is checked before the kernel loads).
fn vmm_with_boot_source(dir: &tempfile::TempDir) -> Vmm {
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let mut vmm = vmm();
    request(
        &mut vmm,
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": kernel}),
    )
    .unwrap();
    vmm
}

#[test]
fn instance_start_refuses_what_this_host_lacks_with_firecrackers_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut vmm = vmm_with_boot_source(&dir);
    request(
        &mut vmm,
        "PUT",
        "/cpu-config",
        json!({"kvm_capabilities": ["999"]}),
    )
    .unwrap();
    assert_eq!(
        instance_start(&mut vmm),
        Err("Start microvm error: Kvm error: Missing KVM capabilities: 0x3e7".into())
    );
    let leaf = json!({"cpuid_modifiers": [{"leaf": "0x4fffffff", "subleaf": "0x0", "flags": 0, "modifiers": []}]});
    request(&mut vmm, "PUT", "/cpu-config", leaf).unwrap();
    assert_eq!(
        instance_start(&mut vmm),
        Err(
            "Start microvm error: System configuration error: Failed to create guest config: \
             Template changes a CPUID entry not supported by KVM: Leaf: 4fffffff, Subleaf: 0"
                .into()
        )
    );
    // The template passes: the junk kernel is what fails now.
    request(&mut vmm, "PUT", "/cpu-config", json!({})).unwrap();
    let err = instance_start(&mut vmm).unwrap_err();
    assert!(
        err.starts_with("Start microvm error: Cannot load kernel"),
        "{err}"
    );
}

#[test]
fn instance_start_refuses_a_static_template_for_another_cpu() {
    let kvm = Kvm::new().expect("this test needs /dev/kvm");
    let host = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vmm = vmm_with_boot_source(&dir);
    let mut refused = 0;
    for name in ["C3", "T2", "T2S", "T2CL", "T2A"] {
        let machine = json!({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": name});
        request(&mut vmm, "PUT", "/machine-config", machine).unwrap();
        let template: CpuTemplate = serde_json::from_value(json!(name)).unwrap();
        let Err(why) = static_template(template).unwrap().for_host(host.as_slice()) else {
            continue; // this host is one the template is for
        };
        refused += 1;
        assert_eq!(
            instance_start(&mut vmm),
            Err(format!(
                "Start microvm error: Failed to get CPU template: {why}"
            )),
            "{name}"
        );
    }
    // Every host is refused one at least: the Intel ones on AMD, T2A on Intel.
    assert!(refused >= 1, "{refused}");
    if squib_arch::cpuid::vendor(host.as_slice()) == squib_arch::cpuid::Vendor::Amd {
        request(
            &mut vmm,
            "PATCH",
            "/machine-config",
            json!({"cpu_template": "T2"}),
        )
        .unwrap();
        assert_eq!(
            instance_start(&mut vmm),
            Err("Start microvm error: Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template.".into())
        );
    }
}
