//! A third-party launcher, the `fctools` crate from crates.io, spawning squib as its
//! `firecracker` binary: it builds Firecracker's command line (`--api-sock`, `--id`,
//! `--level`, `--log-path`, `--metrics-path`), waits for the socket, configures the VM with
//! its own API client (`PUT /boot-source`, `/machine-config`, `/actions`), reads
//! `GET /version` and `GET /`, and watches the process until the guest reboots.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fctools::process_spawner::DirectProcessSpawner;
use fctools::runtime::tokio::TokioRuntime;
use fctools::vm::api::VmApi;
use fctools::vm::configuration::{InitMethod, VmConfiguration, VmConfigurationData};
use fctools::vm::models::{BootSource, MachineConfiguration};
use fctools::vm::{Vm, VmState};
use fctools::vmm::arguments::{VmmApiSocket, VmmArguments, VmmLogLevel};
use fctools::vmm::executor::unrestricted::UnrestrictedVmmExecutor;
use fctools::vmm::id::VmmId;
use fctools::vmm::installation::VmmInstallation;
use fctools::vmm::ownership::VmmOwnershipModel;
use fctools::vmm::resource::system::ResourceSystem;
use fctools::vmm::resource::{CreatedResourceType, MovedResourceType, ResourceType};
use futures_util::AsyncBufReadExt;

use crate::common::{boot_args, boot_slot, GuestKit, READY_MARKER};
use crate::support::{assert_in_order, log_lines, metrics_lines, workdir};

type SquibVm = Vm<UnrestrictedVmmExecutor, DirectProcessSpawner, TokioRuntime>;

const ID: &str = "fctools-squib";
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// Boot and reboot take minutes when the 2-core host is shared.
const BOOT_AND_REBOOT_TIMEOUT: Duration = Duration::from_secs(480);

#[test]
fn fctools_spawns_squib_as_firecracker_and_boots_a_guest() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(boot_with_fctools(&kit));
}

async fn boot_with_fctools(kit: &GuestKit) {
    let dir = workdir();
    let squib = PathBuf::from(env!("CARGO_BIN_EXE_squib"));
    // Only the firecracker path is used without a jailer.
    let installation = VmmInstallation::new(squib.clone(), squib.clone(), squib);
    let mut resources = ResourceSystem::new(
        DirectProcessSpawner,
        TokioRuntime,
        VmmOwnershipModel::Shared,
    );
    let file = ResourceType::Created(CreatedResourceType::File);
    let log = resources.create_resource(dir.path().join("fc.log"), file);
    let metrics = resources.create_resource(dir.path().join("fc.metrics"), file);
    let arguments = VmmArguments::new(VmmApiSocket::Enabled(dir.path().join("fc.sock")))
        .log_level(VmmLogLevel::Debug)
        .logs(log.expect("a log resource"))
        .metrics(metrics.expect("a metrics resource"));
    let executor = UnrestrictedVmmExecutor::new(arguments).id(VmmId::new(ID).expect("an id"));
    let data = configuration_data(&mut resources, kit);
    let configuration = VmConfiguration::New {
        init_method: InitMethod::ViaApiCalls,
        data,
    };
    let mut vm = SquibVm::prepare(executor, resources, installation, configuration)
        .await
        .expect("fctools prepares the VM");
    vm.start(SOCKET_TIMEOUT)
        .await
        .expect("fctools starts squib and configures the guest");
    let console = collect_console(&mut vm);
    check_api_as_seen_by_fctools(&mut vm).await;
    wait_until_exited(&mut vm, &console).await;

    let log = log_lines(&dir.path().join("fc.log"));
    assert_in_order(
        &log,
        &[
            "Running Firecracker v",
            "The API server received a Put request on \"/boot-source\"",
            "The API server received a Put request on \"/actions\"",
            "Firecracker exiting successfully. exit_code=0",
        ],
    );
    let metrics = metrics_lines(&dir.path().join("fc.metrics"));
    assert!(metrics.len() >= 2, "metrics lines: {metrics:?}");
    let lines = console.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        lines.iter().any(|l| l.contains(READY_MARKER)),
        "the guest never got ready:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("SQUIB nproc=1")),
        "guest facts missing"
    );
    // fctools then deletes the resources it created; what it cannot find is its own
    // bookkeeping (the guest's files were never moved without a jailer), not squib's.
    if let Err(e) = vm.cleanup().await {
        eprintln!("fctools cleanup reported: {e:?}");
    }
}

fn configuration_data(
    resources: &mut ResourceSystem<DirectProcessSpawner, TokioRuntime>,
    kit: &GuestKit,
) -> VmConfigurationData {
    // Same source and destination without a jailer: fctools leaves the files in place.
    let moved = ResourceType::Moved(MovedResourceType::HardLinkedOrCopied);
    let kernel = resources.create_resource(kit.vmlinux(), moved);
    let initrd = resources.create_resource(kit.initramfs(), moved);
    VmConfigurationData {
        boot_source: BootSource {
            kernel_image: kernel.expect("a kernel resource"),
            boot_args: Some(boot_args("squib.action=reboot")),
            initrd: Some(initrd.expect("an initrd resource")),
        },
        drives: Vec::new(),
        pmem_devices: Vec::new(),
        machine_configuration: MachineConfiguration {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
        },
        cpu_template: None,
        network_interfaces: Vec::new(),
        balloon_device: None,
        vsock_device: None,
        logger_system: None,
        metrics_system: None,
        memory_hotplug_configuration: None,
        mmds_configuration: None,
        entropy_device: None,
    }
}

/// Reads squib's stdout (the guest console) on a task, so the pipe never fills up. The task
/// owns all three pipes: squib's stdin stays open, as a terminal-like console would be.
fn collect_console(vm: &mut SquibVm) -> Arc<Mutex<Vec<String>>> {
    let pipes = vm.take_pipes().expect("fctools hands over squib's pipes");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut pipes = pipes;
        let mut reader = futures_util::io::BufReader::new(&mut pipes.stdout);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line).await, Ok(n) if n > 0) {
            let text = line.trim_end_matches(['\r', '\n']).to_owned();
            eprintln!("[fctools squib] {text}");
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            line.clear();
        }
    });
    lines
}

async fn check_api_as_seen_by_fctools(vm: &mut SquibVm) {
    let version = vm
        .get_firecracker_version()
        .await
        .expect("GET /version through fctools");
    assert!(
        version
            .split('.')
            .next()
            .is_some_and(|major| major.parse::<u32>().is_ok()),
        "firecracker_version {version:?}"
    );
    let info = vm.get_info().await.expect("GET / through fctools");
    assert_eq!(info.id, ID);
    assert_eq!(info.app_name, "Firecracker");
    assert!(!info.is_paused);
    assert_eq!(vm.get_state(), VmState::Running);
}

/// Polls fctools' view of the VM until the guest's reboot ends the process.
async fn wait_until_exited(vm: &mut SquibVm, console: &Arc<Mutex<Vec<String>>>) {
    let deadline = Instant::now() + BOOT_AND_REBOOT_TIMEOUT;
    loop {
        match vm.get_state() {
            VmState::Exited => return,
            VmState::Crashed(status) => panic!(
                "squib under fctools exited with {status}:\n{}",
                console.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
            ),
            _ if Instant::now() > deadline => panic!("the guest did not reboot in time"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
