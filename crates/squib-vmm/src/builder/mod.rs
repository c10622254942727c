//! Turns the resource store into a running microVM on `InstanceStart`: a list of named steps
//! (memory, VM, kernel, devices, command line, system tables, vCPUs), each failing with a
//! [`StartMicrovmError`] that names what went wrong.

use std::io::Write;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::cmdline::Cmdline;
use squib_api::schemas::machine_config::HugePages;
use squib_arch::acpi::{create_acpi_tables, AcpiConfig};
use squib_arch::boot::{configure_system, BootConfig};
use squib_arch::cpuid::pvm::PVM_GUEST_KERNEL_ARGS;
use squib_arch::cpuid::{host_is_kvm_pvm, CpuidConfig};
use squib_arch::kernel::{load_initrd_above, load_kernel, LoadedKernel};
use squib_arch::layout::CMDLINE_MAX_SIZE;
use squib_arch::memory::{create_guest_memory_backed, GuestMemoryMmap, HugePageMode};
use squib_arch::mptable::setup_mptable;
use squib_arch::regs::{setup_boot_vcpu_state, setup_lapic};
use squib_devices::legacy::boot_timer::{BootTimer, TimestampUs};
use squib_devices::legacy::serial::{RateLimitedOutput, SerialDevice, SerialInput, StdoutPump};
use squib_devices::rate_limiter::{RateLimiter, TokenBucket};
use squib_devices::virtio::balloon::{self, Balloon, BalloonConfig as BalloonDeviceConfig};
use squib_devices::virtio::block::Block;
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::net::Net;
use squib_devices::virtio::rng::{self, Entropy};
use squib_devices::virtio::vsock::Vsock;
use vmm_sys_util::eventfd::EventFd;

use crate::cpu_config::{CpuTemplateChoice, VcpuCpuConfig};
use crate::device_manager::{
    CloneDevices, DeviceManager, LegacyDevices, SharedI8042, SharedSerial,
};
use crate::host_file::{open_host_file, OpenSpec};
use crate::limiter_config::build_rate_limiter;
use crate::net::MmdsShared;
use crate::resources::{ResourceError, VmResources};
use crate::vstate::vcpu::{StopNotifier, VcpuHandle, VcpuRunner};
use crate::vstate::vcpu_state::VcpuStateCaps;
use crate::vstate::vm::Vm;

mod errors;
pub mod restore;
pub use errors::StartMicrovmError;

/// The event loop's subscriber type: every device shares it.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// What the builder needs besides the resource store.
pub struct BuildContext<'a> {
    /// When InstanceStart arrived (the boot timer measures from here).
    pub start: TimestampUs,
    /// The same moment, for the time-to-first-`KVM_RUN` log line.
    pub instant: std::time::Instant,
    /// Attach the boot timer (`--boot-timer`).
    pub boot_timer: bool,
    /// The i8042 writes this when the guest resets.
    pub reset_evt: &'a EventFd,
    /// vCPUs report through this when they stop.
    pub stop: StopNotifier,
    /// A restore moves the guest's clock on by the wall-clock time since the snapshot.
    pub clock_realtime: bool,
}

/// A microVM that is running: everything that must live as long as the guest.
pub struct RunningVm {
    /// The KVM VM (owns the memory slots).
    pub vm: Vm,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// One handle per vCPU thread.
    pub vcpus: Vec<VcpuHandle>,
    /// Serial, i8042 and boot timer.
    pub legacy: LegacyDevices,
    /// The balloon device, when `PUT /balloon` configured one.
    pub balloon: Option<Arc<Mutex<Balloon>>>,
    /// Block devices by drive id, in attach order.
    pub blocks: Vec<AttachedBlock>,
    /// Network devices by interface id, in attach order.
    pub nets: Vec<AttachedNet>,
    /// The vsock device, when `PUT /vsock` configured one.
    pub vsock: Option<Arc<Mutex<Vsock>>>,
    /// The entropy device, when `PUT /entropy` configured one.
    pub entropy: Option<Arc<Mutex<Entropy>>>,
    /// Every virtio-mmio transport, in attach order (the devices above sit behind them).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// VMGenID and VMClock.
    pub clone_devices: CloneDevices,
    /// The kernel command line the guest got (empty for a restored VM).
    pub cmdline: String,
    /// The userfaultfd and handler connection serving a restored VM's memory: they must live
    /// as long as the guest.
    pub uffd: Option<squib_uffd::UffdHandoff>,
}

/// The guest memory backing of a `huge_pages` setting.
pub(crate) fn huge_page_mode(huge_pages: HugePages) -> HugePageMode {
    match huge_pages {
        HugePages::None => HugePageMode::None,
        HugePages::Transparent => HugePageMode::Transparent,
        HugePages::Hugetlbfs2M => HugePageMode::Hugetlbfs2M,
    }
}

/// Build the microVM described by `resources` and start its vCPUs.
///
/// # Errors
/// [`StartMicrovmError`] naming the step that failed; nothing keeps running on error.
pub fn build_microvm(
    resources: &VmResources,
    events: &mut EventManager<Subscriber>,
    ctx: BuildContext<'_>,
) -> Result<RunningVm, StartMicrovmError> {
    let boot = resources
        .boot_source()
        .ok_or(StartMicrovmError::MissingKernel)?;
    let machine = resources.machine_config();

    let kvm = Kvm::new().map_err(StartMicrovmError::Kvm)?;
    let mut cpu = VcpuCpuConfig::new(&kvm, CpuTemplateChoice::of(resources))?;
    let mem = create_guest_memory_backed(machine.mem_size_mib, huge_page_mode(machine.huge_pages))?;
    let vm = Vm::new(&kvm)?;
    vm.register_memory(&mem, machine.track_dirty_pages)?;

    let kernel = load_kernel(&mem, &mut boot.kernel_file()?)?;
    let initrd = match boot.initrd_file()? {
        Some(mut file) => Some(load_initrd_above(&mem, &mut file, kernel.kernel_end)?),
        None => None,
    };

    let mut devices = DeviceManager::new();
    // Event-loop subscribers are added only once every step has succeeded, so a failed
    // InstanceStart leaves nothing behind in the loop.
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let attached = attach_devices(&mut devices, &vm, &mem, resources, &ctx, &mut subscribers)?;

    let clone_devices = CloneDevices::attach(&vm, &mem).map_err(StartMicrovmError::CloneDevices)?;
    let cmdline = build_cmdline(resources, &devices)?;
    setup_mptable(&mem, machine.vcpu_count)?;
    let rsdp = create_acpi_tables(
        &mem,
        &AcpiConfig {
            vcpu_count: machine.vcpu_count,
            mmio_devices: &devices.mmio_devices,
            serial: true,
            i8042: true,
            vmgenid: Some(clone_devices.vmgenid_info()),
            vmclock: Some(clone_devices.vmclock_info()),
        },
    )?;
    configure_system(
        &mem,
        &BootConfig {
            kernel: &kernel,
            cmdline: &cmdline,
            initrd,
            rsdp_addr: Some(rsdp),
            num_cpus: machine.vcpu_count,
        },
    )?;

    let vcpu_fds = create_vcpus(
        &vm,
        &mem,
        &kernel,
        &mut cpu,
        machine.vcpu_count,
        machine.smt,
    )?;
    let cmdline = cmdline
        .as_cstring()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state_caps = Arc::new(vm.vcpu_state_caps(&kvm)?.with_msrs(&cpu.msr_indices()));
    let parts = VmParts {
        vm,
        mem,
        devices,
        attached,
        clone_devices,
        subscribers,
        cmdline,
        state_caps,
    };
    run_vm(parts, vcpu_fds, events, &ctx, VcpuStart::Running)
}

/// What a booted or restored microVM is made of before its vCPU threads exist.
pub(crate) struct VmParts {
    pub(crate) vm: Vm,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) devices: DeviceManager,
    pub(crate) attached: AttachedDevices,
    pub(crate) clone_devices: CloneDevices,
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) cmdline: String,
    /// What each vCPU thread needs to save its state.
    pub(crate) state_caps: Arc<VcpuStateCaps>,
}

/// Whether new vCPU threads run the guest at once (boot) or wait for a resume (a restored
/// VM is `Paused` until asked to resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VcpuStart {
    Running,
    Paused,
}

/// Spawn one thread per vCPU fd, add the devices to the event loop and hand back the
/// running VM.
pub(crate) fn run_vm(
    parts: VmParts,
    vcpu_fds: Vec<VcpuFd>,
    events: &mut EventManager<Subscriber>,
    ctx: &BuildContext<'_>,
    start: VcpuStart,
) -> Result<RunningVm, StartMicrovmError> {
    let VmParts {
        vm,
        mem,
        devices,
        attached,
        clone_devices,
        subscribers,
        cmdline,
        state_caps,
    } = parts;
    let pio_bus = Arc::new(devices.pio_bus);
    let mmio_bus = Arc::new(devices.mmio_bus);
    let runners = (0u8..).zip(vcpu_fds).map(|(index, fd)| VcpuRunner {
        index,
        fd,
        pio_bus: pio_bus.clone(),
        mmio_bus: mmio_bus.clone(),
        stop: ctx.stop.clone(),
        instance_start: (index == 0).then_some(ctx.instant),
        state_caps: state_caps.clone(),
    });
    let vcpus = spawn_vcpus(runners, start)?;
    for subscriber in subscribers {
        events.add_subscriber(subscriber);
    }
    Ok(RunningVm {
        vm,
        mem,
        vcpus,
        legacy: attached.legacy,
        balloon: attached.balloon,
        blocks: attached.blocks,
        nets: attached.nets,
        vsock: attached.vsock,
        entropy: attached.entropy,
        transports: devices.mmio_transports,
        clone_devices,
        cmdline,
        uffd: None,
    })
}

/// The devices of a microVM, attached in Firecracker's order.
pub(crate) struct AttachedDevices {
    pub(crate) legacy: LegacyDevices,
    pub(crate) balloon: Option<Arc<Mutex<Balloon>>>,
    pub(crate) blocks: Vec<AttachedBlock>,
    pub(crate) nets: Vec<AttachedNet>,
    pub(crate) vsock: Option<Arc<Mutex<Vsock>>>,
    pub(crate) entropy: Option<Arc<Mutex<Entropy>>>,
}

/// Attach every device `resources` describes (boot timer, serial and i8042, then the virtio
/// devices), in the order that decides their MMIO slots and GSIs: a restore attaches the same
/// configuration in the same order, so each device gets back the slot it had.
pub(crate) fn attach_devices(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    ctx: &BuildContext<'_>,
    subscribers: &mut Vec<Subscriber>,
) -> Result<AttachedDevices, StartMicrovmError> {
    let boot_timer = if ctx.boot_timer {
        Some(devices.attach_boot_timer(ctx.start)?)
    } else {
        None
    };
    let (serial, i8042) =
        attach_serial_and_i8042(devices, vm, resources, ctx.reset_evt, subscribers)?;
    Ok(AttachedDevices {
        legacy: LegacyDevices {
            serial,
            i8042,
            boot_timer,
        },
        // Firecracker attaches the balloon first of the virtio devices (lowest MMIO slot).
        balloon: attach_balloon(devices, vm, mem, resources, subscribers)?,
        blocks: attach_blocks(devices, vm, mem, resources, subscribers)?,
        nets: attach_nets(devices, vm, mem, resources, subscribers)?,
        vsock: attach_vsock(devices, vm, mem, resources, subscribers)?,
        entropy: attach_entropy(devices, vm, mem, resources, subscribers)?,
    })
}

/// Spawn every vCPU thread (each parked), then start them all unless `start` keeps them
/// paused. When a spawn fails, the threads already spawned end without having run the guest.
fn spawn_vcpus(
    runners: impl Iterator<Item = VcpuRunner>,
    start: VcpuStart,
) -> Result<Vec<VcpuHandle>, StartMicrovmError> {
    let mut vcpus = Vec::new();
    for runner in runners {
        match runner.spawn() {
            Ok(handle) => vcpus.push(handle),
            Err(e) => {
                vcpus.into_iter().for_each(VcpuHandle::abandon);
                return Err(StartMicrovmError::SpawnVcpu(e));
            }
        }
    }
    if start == VcpuStart::Paused {
        return Ok(vcpus);
    }
    for vcpu in &vcpus {
        // A parked thread only ends if its handle is dropped: this cannot fail here.
        if let Err(e) = vcpu.start() {
            log::error!("Cannot start a vCPU: {e}");
        }
    }
    Ok(vcpus)
}

/// A block device shared by its MMIO transport and the event loop, with its drive id.
pub type AttachedBlock = (String, Arc<Mutex<Block>>);

/// COM1 writes to `serial_out_path` when `PUT /serial` set one, else to stdout and reads
/// stdin.
fn attach_serial_and_i8042(
    devices: &mut DeviceManager,
    vm: &Vm,
    resources: &VmResources,
    reset_evt: &EventFd,
    subscribers: &mut Vec<Subscriber>,
) -> Result<(SharedSerial, SharedI8042), StartMicrovmError> {
    let out_path = resources.serial().and_then(|s| s.serial_out_path.clone());
    let output: Box<dyn Write + Send> = match &out_path {
        Some(path) => Box::new(
            open_host_file(path, OpenSpec::output())
                .map_err(|e| StartMicrovmError::SerialOutput(path.clone(), e))?,
        ),
        None => {
            Box::new(StdoutPump::spawn(std::io::stdout()).map_err(StartMicrovmError::SerialStdout)?)
        }
    };
    let limit = resources
        .serial()
        .and_then(|s| s.rate_limiter.as_ref())
        .and_then(|b| TokenBucket::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time));
    let output = match limit {
        Some(bucket) => Box::new(RateLimitedOutput::new(output, bucket)),
        None => output,
    };
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(StartMicrovmError::EventFd)?;
    let serial = SerialDevice::new(irq.try_clone().map_err(StartMicrovmError::EventFd)?, output);
    let reset = reset_evt.try_clone().map_err(StartMicrovmError::EventFd)?;
    let (serial, i8042) = devices.attach_legacy(vm, serial, &irq, reset)?;
    if out_path.is_none() {
        let input = SerialInput::stdin(serial.clone()).map_err(StartMicrovmError::EventFd)?;
        subscribers.push(Arc::new(Mutex::new(input)));
    }
    Ok((serial, i8042))
}

fn attach_blocks(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    subscribers: &mut Vec<Subscriber>,
) -> Result<Vec<AttachedBlock>, StartMicrovmError> {
    let mut blocks = Vec::new();
    for drive in resources.drives_in_attach_order() {
        let block = drive.build_block()?;
        let drive_id = drive.config.drive_id.as_str();
        squib_logger::metrics::register_group(format!("block_{drive_id}"), block.metrics());
        let block = Arc::new(Mutex::new(block));
        devices.attach_virtio(vm, mem, block.clone())?;
        subscribers.push(block.clone());
        blocks.push((drive_id.to_owned(), block));
    }
    Ok(blocks)
}

/// A network device shared by its MMIO transport and the event loop, with its interface id.
pub type AttachedNet = (String, Arc<Mutex<Net>>);

/// One virtio-net device per interface, after the drives (Firecracker's order), each with an
/// MMDS endpoint when `PUT /mmds/config` listed it. One token authority serves them all.
fn attach_nets(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    subscribers: &mut Vec<Subscriber>,
) -> Result<Vec<AttachedNet>, StartMicrovmError> {
    let mmds = resources
        .mmds_config
        .clone()
        .map(|config| MmdsShared::new(config, resources.mmds_store().clone()));
    let mut nets = Vec::new();
    for iface in resources.net_interfaces() {
        let mut net = iface.build_net().map_err(ResourceError::Net)?;
        let iface_id = iface.config.iface_id.as_str();
        if let Some(interceptor) = mmds.as_ref().and_then(|m| m.interceptor_for(iface_id)) {
            net.set_interceptor(Some(Box::new(interceptor)));
        }
        squib_logger::metrics::register_group(format!("net_{iface_id}"), net.metrics());
        let net = Arc::new(Mutex::new(net));
        devices.attach_virtio(vm, mem, net.clone())?;
        subscribers.push(net.clone());
        nets.push((iface_id.to_owned(), net));
    }
    Ok(nets)
}

/// The vsock device `PUT /vsock` built, after the network devices (Firecracker's order).
fn attach_vsock(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    subscribers: &mut Vec<Subscriber>,
) -> Result<Option<Arc<Mutex<Vsock>>>, StartMicrovmError> {
    let Some(vsock) = resources.vsock() else {
        return Ok(None);
    };
    let device = vsock.device.clone();
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .register_metrics();
    devices.attach_virtio(vm, mem, device.clone())?;
    subscribers.push(device.clone());
    Ok(Some(device))
}

/// The virtio-balloon device `PUT /balloon` asked for.
fn attach_balloon(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    subscribers: &mut Vec<Subscriber>,
) -> Result<Option<Arc<Mutex<Balloon>>>, StartMicrovmError> {
    let Some(config) = &resources.balloon else {
        return Ok(None);
    };
    let device = Balloon::new(BalloonDeviceConfig {
        amount_mib: config.amount_mib,
        deflate_on_oom: config.deflate_on_oom,
        stats_polling_interval_s: config.stats_polling_interval_s,
        free_page_hinting: config.free_page_hinting,
        free_page_reporting: config.free_page_reporting,
    })?;
    squib_logger::metrics::register_group(balloon::METRICS_GROUP, device.metrics());
    let device = Arc::new(Mutex::new(device));
    devices.attach_virtio(vm, mem, device.clone())?;
    subscribers.push(device.clone());
    Ok(Some(device))
}

/// The virtio-rng device `PUT /entropy` asked for, after vsock (Firecracker's order), with
/// its rate limiter.
fn attach_entropy(
    devices: &mut DeviceManager,
    vm: &Vm,
    mem: &GuestMemoryMmap,
    resources: &VmResources,
    subscribers: &mut Vec<Subscriber>,
) -> Result<Option<Arc<Mutex<Entropy>>>, StartMicrovmError> {
    let Some(config) = &resources.entropy else {
        return Ok(None);
    };
    let limiter = match &config.rate_limiter {
        Some(limiter) => build_rate_limiter(limiter).map_err(StartMicrovmError::EventFd)?,
        None => RateLimiter::unlimited().map_err(StartMicrovmError::EventFd)?,
    };
    let entropy = Entropy::new(limiter)?;
    squib_logger::metrics::register_group(rng::METRICS_GROUP, entropy.metrics());
    let entropy = Arc::new(Mutex::new(entropy));
    devices.attach_virtio(vm, mem, entropy.clone())?;
    subscribers.push(entropy.clone());
    Ok(Some(entropy))
}

/// The user's `boot_args` (or Firecracker's default) plus what Firecracker appends.
fn build_cmdline(
    resources: &VmResources,
    devices: &DeviceManager,
) -> Result<Cmdline, StartMicrovmError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(StartMicrovmError::Cmdline)?;
    let boot_args = resources.boot_args();
    // Init arguments after ` -- ` must stay last: kernel parameters go before them.
    let (kernel_args, init_args) = match boot_args.split_once(" -- ") {
        Some((k, i)) => (k, Some(i)),
        None => (boot_args.as_str(), None),
    };
    cmdline
        .insert_str(kernel_args)
        .map_err(StartMicrovmError::Cmdline)?;
    cmdline
        .insert_str("pci=off")
        .map_err(StartMicrovmError::Cmdline)?;
    if host_is_kvm_pvm() {
        // kvm_pvm shows guests the host's own CPUID leaves 1 and 7 whatever KVM_SET_CPUID2
        // says, so hiding XSAVE/POPCNT/SMAP/FSGSBASE there takes the kernel's own switches.
        cmdline
            .insert_str(PVM_GUEST_KERNEL_ARGS)
            .map_err(StartMicrovmError::Cmdline)?;
    }
    if let Some(root_args) = resources.root_device_cmdline() {
        cmdline
            .insert_str(root_args)
            .map_err(StartMicrovmError::Cmdline)?;
    }
    for entry in devices.cmdline_entries() {
        cmdline
            .insert_str(entry)
            .map_err(StartMicrovmError::Cmdline)?;
    }
    if let Some(init_args) = init_args {
        cmdline
            .insert_init_args(init_args)
            .map_err(StartMicrovmError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Create and configure every vCPU (on this thread, before any runs): CPUID, MSRs and FPU
/// from `cpu` (the CPU template, then the normalisation and boot MSRs), LAPIC, and the boot
/// vCPU's registers.
fn create_vcpus(
    vm: &Vm,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cpu: &mut VcpuCpuConfig,
    vcpu_count: u8,
    smt: bool,
) -> Result<Vec<VcpuFd>, StartMicrovmError> {
    let hide_pvm_unsupported = host_is_kvm_pvm();
    let mut fds = Vec::with_capacity(usize::from(vcpu_count));
    for index in 0..vcpu_count {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(StartMicrovmError::Kvm)?;
        cpu.configure(
            &fd,
            &CpuidConfig {
                vcpu_index: index,
                vcpu_count,
                smt,
                hide_pvm_unsupported,
            },
        )?;
        setup_lapic(&fd)?;
        if index == 0 {
            setup_boot_vcpu_state(&fd, mem, kernel)?;
        }
        fds.push(fd);
    }
    Ok(fds)
}

/// The boot timer's reading, for benchmarks and logs.
#[must_use]
pub fn boot_time(timer: &Mutex<BootTimer>) -> Option<(u64, u64)> {
    timer.lock().ok()?.last_boot_time()
}

#[cfg(test)]
mod tests {
    use squib_arch::acpi::MmioDeviceInfo;

    use super::*;

    /// `build_cmdline` for a resource store whose boot source has `boot_args`.
    fn build_cmdline_for(
        boot_args: &str,
        devices: &DeviceManager,
    ) -> Result<Cmdline, StartMicrovmError> {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"x").unwrap();
        let mut resources = VmResources::default();
        resources
            .set_boot_source(squib_api::schemas::BootSourceConfig {
                kernel_image_path: kernel,
                initrd_path: None,
                boot_args: Some(boot_args.to_owned()),
            })
            .unwrap();
        build_cmdline(&resources, devices)
    }

    #[test]
    fn cmdline_appends_firecrackers_entries_before_init_args() {
        let mut devices = DeviceManager::new();
        devices.mmio_devices.push(MmioDeviceInfo {
            addr: 0xc000_1000,
            len: 0x1000,
            gsi: 5,
        });
        devices.mmio_devices.push(MmioDeviceInfo {
            addr: 0xc000_2000,
            len: 0x1000,
            gsi: 6,
        });
        let cmdline = build_cmdline_for("console=ttyS0 -- init_arg", &devices).unwrap();
        let cmdline = cmdline.as_cstring().unwrap().into_string().unwrap();
        assert!(cmdline.starts_with("console=ttyS0 pci=off "), "{cmdline}");
        assert!(
            cmdline
                .contains("virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6"),
            "{cmdline}"
        );
        assert!(cmdline.ends_with(" -- init_arg"), "{cmdline}");
        assert_eq!(cmdline.contains("noxsave"), host_is_kvm_pvm(), "{cmdline}");
    }

    #[test]
    fn an_over_long_cmdline_is_refused() {
        let long_args = "a".repeat(CMDLINE_MAX_SIZE);
        let err = build_cmdline_for(&long_args, &DeviceManager::new()).unwrap_err();
        assert!(
            err.to_string().starts_with("Invalid kernel command line"),
            "{err}"
        );
    }
}
