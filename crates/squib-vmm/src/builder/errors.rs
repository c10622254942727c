//! Why `InstanceStart` failed. The API answers with `Start microvm error: <Display>`.

use std::path::PathBuf;

use crate::device_manager::{LegacyError, MmioError};
use crate::host_file::HostFileError;
use crate::resources::{DriveBuildError, ResourceError};
use crate::vstate::vm::VmError;

/// One variant per build step that can fail.
#[derive(Debug, thiserror::Error)]
pub enum StartMicrovmError {
    /// VMGenID or VMClock could not be set up.
    #[error("Cannot set up the VMGenID and VMClock devices: {0}")]
    CloneDevices(#[source] crate::device_manager::CloneDevicesError),
    /// No `PUT /boot-source` yet.
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernel,
    /// A configured resource cannot be built (yet), or its file went away.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// A KVM call failed.
    #[error("KVM error: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
    /// Guest memory could not be allocated.
    #[error("Cannot create guest memory: {0}")]
    Memory(#[from] squib_arch::memory::MemoryError),
    /// The VM could not be set up.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The kernel or initrd could not be loaded.
    #[error("Cannot load kernel due to invalid memory configuration or invalid kernel image: {0}")]
    Kernel(#[from] squib_arch::kernel::KernelError),
    /// The zero page / PVH start info could not be written.
    #[error("System configuration error: {0}")]
    Boot(#[from] squib_arch::boot::BootError),
    /// The MP table could not be written.
    #[error("Cannot write the MP table: {0}")]
    Mptable(#[from] squib_arch::mptable::MptableError),
    /// The ACPI tables could not be written.
    #[error("Cannot write the ACPI tables: {0}")]
    Acpi(#[from] squib_arch::acpi::AcpiError),
    /// The CPU template does not fit this host or its KVM.
    #[error(transparent)]
    CpuConfig(#[from] crate::cpu_config::CpuConfigError),
    /// CPUID normalisation failed.
    #[error("Cannot configure CPUID: {0}")]
    Cpuid(#[from] squib_arch::cpuid::CpuidError),
    /// vCPU registers could not be set.
    #[error("Cannot configure vCPU registers: {0}")]
    Regs(#[from] squib_arch::regs::RegsError),
    /// The kernel command line is invalid or too long.
    #[error("Invalid kernel command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The serial output file could not be opened.
    #[error("Cannot open the serial output {}: {}", .0.display(), .1)]
    SerialOutput(PathBuf, #[source] HostFileError),
    /// The thread that writes the guest console to standard output could not start.
    #[error("Cannot start the serial output thread: {0}")]
    SerialStdout(#[source] std::io::Error),
    /// A legacy device could not be attached.
    #[error(transparent)]
    Legacy(#[from] LegacyError),
    /// The boot timer could not be attached.
    #[error("Cannot attach the boot timer: {0}")]
    BootTimer(#[from] squib_devices::bus::BusError),
    /// A virtio device could not be attached.
    #[error("Cannot attach a virtio device: {0}")]
    Mmio(#[from] MmioError),
    /// A block device could not be created.
    #[error("Cannot create a block device: {0}")]
    Block(#[from] squib_devices::virtio::block::BlockError),
    /// The balloon device could not be created.
    #[error("Cannot create the balloon device: {0}")]
    Balloon(#[from] squib_devices::virtio::balloon::BalloonError),
    /// The entropy device could not be created.
    #[error("Cannot create the entropy device: {0}")]
    Entropy(#[from] squib_devices::virtio::rng::EntropyError),
    /// A vCPU thread could not be started.
    #[error("Cannot spawn a vCPU thread: {0}")]
    SpawnVcpu(#[source] std::io::Error),
}

impl From<DriveBuildError> for StartMicrovmError {
    fn from(e: DriveBuildError) -> Self {
        match e {
            DriveBuildError::Resource(e) => Self::Resource(e),
            DriveBuildError::Block(e) => Self::Block(e),
        }
    }
}
