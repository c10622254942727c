//! Rebuilds a microVM from a snapshot: KVM VM and memory slots, vCPUs with their saved
//! registers, the in-kernel devices, then every emulated device — attached from the restored
//! configuration in boot order, so each gets its old MMIO slot and GSI — with its saved state.
//! The vCPU threads are left paused: the VMM resumes them when asked.

use std::sync::{Arc, PoisonError};

use event_manager::EventManager;
use kvm_ioctls::{Kvm, VcpuFd};
use squib_arch::memory::GuestMemoryMmap;

use super::{attach_devices, run_vm, BuildContext, RunningVm, StartMicrovmError, Subscriber};
use super::{VcpuStart, VmParts};
use crate::cpu_config::CpuTemplateChoice;
use crate::device_manager::{CloneDevices, DeviceManager};
use crate::resources::VmResources;
use crate::snapshot::MicrovmState;
use crate::vstate::vcpu_state::{restore_vcpu, VcpuStateCaps, VcpuStateError};
use crate::vstate::vm::{Vm, VmError};

/// Why a snapshot could not be turned back into a microVM (Firecracker's wording after
/// `Failed to build microVM from snapshot: `).
#[derive(Debug, thiserror::Error)]
pub enum RestoreMicrovmError {
    /// `/dev/kvm`, the VM or its memory slots.
    #[error("Failed to create the VM: {0}")]
    Vm(#[from] VmError),
    /// A vCPU could not be created.
    #[error("Failed to restore vCPUs: {0}")]
    CreateVcpu(#[source] kvm_ioctls::Error),
    /// A vCPU refused its saved state.
    #[error("Failed to restore vCPUs: {0}")]
    Vcpu(#[from] VcpuStateError),
    /// The in-kernel devices or clock refused their saved state.
    #[error("Failed to restore microVM state: {0}")]
    VmState(#[source] VmError),
    /// A device could not be attached or refused its saved state.
    #[error("Failed to restore devices: {0}")]
    Devices(String),
    /// The saved state does not match the configuration it came with.
    #[error("Invalid snapshot state: {0}")]
    Inconsistent(String),
}

impl From<StartMicrovmError> for RestoreMicrovmError {
    fn from(e: StartMicrovmError) -> Self {
        Self::Devices(e.to_string())
    }
}

/// Restore `state` over `mem` (already holding the guest's memory) with the devices
/// `resources` describes; the vCPUs stay paused.
///
/// # Errors
/// [`RestoreMicrovmError`] naming the step; nothing keeps running on error.
pub fn restore_microvm(
    resources: &VmResources,
    events: &mut EventManager<Subscriber>,
    ctx: &BuildContext<'_>,
    state: &MicrovmState,
    mem: GuestMemoryMmap,
) -> Result<RunningVm, RestoreMicrovmError> {
    let machine = resources.machine_config();
    if state.vcpus.len() != usize::from(machine.vcpu_count) {
        return Err(RestoreMicrovmError::Inconsistent(format!(
            "{} vCPU states for {} vCPUs",
            state.vcpus.len(),
            machine.vcpu_count
        )));
    }
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    let vm = Vm::new(&kvm)?;
    vm.register_memory(&mem, machine.track_dirty_pages)?;
    // The template's MSRs, saved again in a snapshot of the restored VM.
    let template_msrs = CpuTemplateChoice::of(resources).msr_indices();
    let state_caps = Arc::new(vm.vcpu_state_caps(&kvm)?.with_msrs(&template_msrs));
    let vcpu_fds = restore_vcpus(&vm, &state_caps, state)?;
    vm.restore_state(&state.vm, ctx.clock_realtime)
        .map_err(RestoreMicrovmError::VmState)?;
    // A new generation ID, announced once the irqchip is back and before any vCPU runs.
    let clone_devices = CloneDevices::restore(&vm, &mem, &state.clone_devices)
        .map_err(|e| RestoreMicrovmError::Devices(e.to_string()))?;

    let mut devices = DeviceManager::new();
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let attached = attach_devices(&mut devices, &vm, &mem, resources, ctx, &mut subscribers)?;
    restore_devices(&devices, &attached, state)?;
    let parts = VmParts {
        vm,
        mem,
        devices,
        attached,
        clone_devices,
        subscribers,
        cmdline: String::new(),
        state_caps,
    };
    Ok(run_vm(parts, vcpu_fds, events, ctx, VcpuStart::Paused)?)
}

/// One vCPU per saved state, in index order, each with its registers put back.
fn restore_vcpus(
    vm: &Vm,
    caps: &VcpuStateCaps,
    state: &MicrovmState,
) -> Result<Vec<VcpuFd>, RestoreMicrovmError> {
    let mut fds = Vec::with_capacity(state.vcpus.len());
    for (index, saved) in (0u64..).zip(&state.vcpus) {
        let fd = vm
            .fd()
            .create_vcpu(index)
            .map_err(RestoreMicrovmError::CreateVcpu)?;
        restore_vcpu(&fd, caps, saved)?;
        fds.push(fd);
    }
    Ok(fds)
}

/// Legacy devices and every virtio-mmio slot get their saved state.
fn restore_devices(
    devices: &DeviceManager,
    attached: &super::AttachedDevices,
    state: &MicrovmState,
) -> Result<(), RestoreMicrovmError> {
    let devices_error = |e: &dyn std::fmt::Display| RestoreMicrovmError::Devices(e.to_string());
    attached
        .legacy
        .serial
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .restore(&state.serial)
        .map_err(|e| devices_error(&e))?;
    attached
        .legacy
        .i8042
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .restore(&state.i8042)
        .map_err(|e| devices_error(&e))?;
    if devices.mmio_transports.len() != state.virtio.len() {
        return Err(RestoreMicrovmError::Inconsistent(format!(
            "{} virtio devices saved, {} configured",
            state.virtio.len(),
            devices.mmio_transports.len()
        )));
    }
    for (transport, saved) in devices.mmio_transports.iter().zip(&state.virtio) {
        transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .restore(saved)
            .map_err(|e| devices_error(&e))?;
    }
    Ok(())
}
