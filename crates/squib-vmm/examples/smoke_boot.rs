//! Temporary smoke driver: boots a kernel + initrd through the VMM's own dispatch.
use std::sync::Arc;

use squib_api::action::ApiAction;
use squib_api::mirror::StateMirror;
use squib_api::schemas::InstanceAction;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}", "boot_args": "{}"}},
            "machine-config": {{"vcpu_count": {}, "mem_size_mib": {}}}}}"#,
        args[1], args[2], args[3], args[4], args[5]
    );
    squib_logger::logger::init("smoke").unwrap();
    let (control, flags) = squib_vmm::control::ControlEvents::new().unwrap();
    let mirror = Arc::new(StateMirror::new("smoke".into()));
    let options = squib_vmm::vmm::VmmOptions {
        boot_timer: true,
        mmds_size_limit: 51200,
    };
    let mut vmm = squib_vmm::vmm::Vmm::new(options, mirror, control, flags, None).unwrap();
    if let Err(e) = vmm.boot_from_config(json.as_bytes()) {
        eprintln!("boot failed: {e}");
        std::process::exit(1);
    }
    let _ = ApiAction::Action(InstanceAction::FlushMetrics);
    let code = vmm.run();
    eprintln!("exit code {code:?}");
}
