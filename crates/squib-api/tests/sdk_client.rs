//! A Firecracker client published by someone else (`firecracker-rs-sdk` 0.1.0, sync runtime),
//! used unchanged, configures a VM through squib's API.
//!
//! The SDK spawns its "firecracker" command and then connects to the API socket; here the
//! command is `/bin/true` and the socket is served in-process by squib-api with a fake VMM.
//! It speaks HTTP/1.0 on one connection for every call, as Firecracker's micro_http allows.

mod common;

use common::TestServer;
use firecracker_rs_sdk::firecracker::FirecrackerOption;
use firecracker_rs_sdk::models::{BootSource, Drive, MachineConfiguration};

#[test]
fn firecracker_rs_sdk_configures_a_vm() {
    let server = TestServer::start();
    let mut instance = FirecrackerOption::new("/bin/true")
        .api_sock(&server.path)
        .build()
        .expect("build instance");
    instance.start_vmm().expect("connect to squib");

    let info = instance.describe_instance().expect("GET /");
    assert_eq!(info.app_name, "Firecracker");
    assert_eq!(info.id, "test_vm");
    let version = instance.get_firecracker_version().expect("GET /version");
    assert_eq!(
        version.firecracker_version,
        squib_api::version::FIRECRACKER_VERSION
    );

    let machine = MachineConfiguration {
        cpu_template: None,
        smt: Some(false),
        mem_size_mib: 256,
        track_dirty_pages: None,
        vcpu_count: 2,
        huge_pages: None,
    };
    instance
        .put_machine_configuration(&machine)
        .expect("PUT /machine-config");
    let got = instance
        .get_machine_configuration()
        .expect("GET /machine-config");
    assert_eq!((got.vcpu_count, got.mem_size_mib), (2, 256));

    let boot = BootSource {
        boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
        initrd_path: None,
        kernel_image_path: "/vmlinux".into(),
    };
    instance
        .put_guest_boot_source(&boot)
        .expect("PUT /boot-source");
    let drive = Drive {
        drive_id: "rootfs".into(),
        partuuid: None,
        is_root_device: true,
        cache_type: None,
        is_read_only: false,
        path_on_host: "/rootfs.ext4".into(),
        rate_limiter: None,
        io_engine: None,
        socket: None,
    };
    instance
        .put_guest_drive_by_id(&drive)
        .expect("PUT /drives/rootfs");
    instance.start().expect("InstanceStart");
    assert_eq!(
        server.actions(),
        [
            "PUT /machine-config",
            "GET /machine-config",
            "PUT /boot-source",
            "PUT /drives",
            "InstanceStart"
        ]
    );
}
