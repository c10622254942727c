//! The one admission gate and the dispatch of every API action.
//!
//! [`Vmm::handle_action`] checks the action against the VM's state with
//! `ApiAction::admission()` (Firecracker's pre-boot / post-boot table), then hands it to
//! [`Vmm::handle_preboot`] or [`Vmm::handle_runtime`]. Each is one exhaustive `match` naming
//! every action, so a new action cannot be forgotten; what squib cannot do yet answers 400
//! naming it.

use squib_api::action::{Admission, ApiAction, ApiResponse};
use squib_api::schemas::{InstanceAction, VmStateChange};
use squib_api::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};

use crate::vmm::Vmm;

/// A 400 with Firecracker's `<prefix>: <error>` text.
pub(crate) fn fault(prefix: &str, err: impl std::fmt::Display) -> ApiResponse {
    ApiResponse::fault(format!("{prefix}: {err}"))
}

/// What an action that squib cannot perform yet answers.
pub(crate) fn not_supported(what: &str) -> ApiResponse {
    ApiResponse::fault(format!("{what} is not supported by squib yet."))
}

impl Vmm {
    /// Admit and perform one API action.
    pub fn handle_action(&mut self, action: ApiAction) -> ApiResponse {
        let booted = self.running.is_some();
        match (action.admission(), booted) {
            (Admission::PostBootOnly, false) => ApiResponse::fault(NOT_SUPPORTED_BEFORE_START),
            (Admission::PreBootOnly, true) => ApiResponse::fault(NOT_SUPPORTED_AFTER_START),
            (_, false) => self.handle_preboot(action),
            (_, true) => self.handle_runtime(action),
        }
    }

    /// Actions before `InstanceStart`: they configure the resource store.
    fn handle_preboot(&mut self, action: ApiAction) -> ApiResponse {
        use ApiAction as A;
        match action {
            A::GetVmConfig => self.vm_config_response(),
            A::GetMachineConfig => self.machine_config_response(),
            A::GetMmds => ApiResponse::Json(self.mmds.get()),
            A::GetBalloon => self.balloon_config_response(),
            A::GetBalloonStats | A::GetBalloonHintingStatus | A::GetHotplugMemory => {
                ApiResponse::fault(NOT_SUPPORTED_BEFORE_START)
            }
            A::PutMachineConfig(config) => self.put_machine_config(config),
            A::PatchMachineConfig(patch) => self.patch_machine_config(patch),
            A::PutBootSource(config) => match self.resources.set_boot_source(config) {
                Ok(()) => ApiResponse::NoContent,
                Err(e) => fault("Boot source error", e),
            },
            A::PutDrive(config) => match self.resources.put_drive(config) {
                Ok(()) => ApiResponse::NoContent,
                Err(e) => fault("Drive config error", e),
            },
            A::PutSerial(config) => {
                self.resources.set_serial(config);
                ApiResponse::NoContent
            }
            A::PutNetwork(config) => self.put_network(config),
            A::PutVsock(config) => {
                self.resources.vsock = Some(config);
                ApiResponse::NoContent
            }
            A::PutBalloon(config) => self.put_balloon(config),
            A::PutEntropy(config) => {
                self.resources.entropy = Some(config);
                ApiResponse::NoContent
            }
            A::PutPmem(config) => self.put_pmem(config),
            A::PutHotplugMemory(config) => {
                self.resources.memory_hotplug = Some(config);
                ApiResponse::NoContent
            }
            A::PutCpuConfig(config) => {
                self.resources.cpu_config = Some(config);
                ApiResponse::NoContent
            }
            A::PutMmdsConfig(config) => self.put_mmds_config(config),
            A::PutMmds(contents) => self.put_mmds(contents),
            A::PatchMmds(contents) => self.patch_mmds(contents),
            A::PutLogger(config) => crate::logging::put_logger(config),
            A::PutMetrics(config) => crate::metrics::put_metrics(config),
            A::Action(InstanceAction::InstanceStart) => self.start_microvm(),
            A::Action(InstanceAction::FlushMetrics | InstanceAction::SendCtrlAltDel) => {
                ApiResponse::fault(NOT_SUPPORTED_BEFORE_START)
            }
            A::SnapshotLoad(_) => not_supported("Loading a snapshot"),
            A::PatchDrive(_)
            | A::DeleteDrive { .. }
            | A::PatchNetwork(_)
            | A::DeleteNetwork { .. }
            | A::PatchPmem(_)
            | A::DeletePmem { .. }
            | A::PatchBalloon(_)
            | A::PatchBalloonStats(_)
            | A::PatchBalloonHinting { .. }
            | A::PatchHotplugMemory(_)
            | A::PatchVm(_)
            | A::SnapshotCreate(_) => ApiResponse::fault(NOT_SUPPORTED_BEFORE_START),
        }
    }

    /// Actions on a running (or paused) microVM.
    fn handle_runtime(&mut self, action: ApiAction) -> ApiResponse {
        use ApiAction as A;
        match action {
            A::GetVmConfig => self.vm_config_response(),
            A::GetMachineConfig => self.machine_config_response(),
            A::GetMmds => ApiResponse::Json(self.mmds.get()),
            A::GetBalloon | A::GetBalloonStats | A::GetBalloonHintingStatus => {
                ApiResponse::fault("Balloon config error: No balloon device found.")
            }
            A::GetHotplugMemory => not_supported("virtio-mem (memory hotplug)"),
            A::PutMmds(contents) => self.put_mmds(contents),
            A::PatchMmds(contents) => self.patch_mmds(contents),
            A::PatchVm(VmStateChange::Paused) => self.pause(),
            A::PatchVm(VmStateChange::Resumed) => self.resume(),
            A::Action(InstanceAction::FlushMetrics) => crate::metrics::flush_metrics(),
            A::Action(InstanceAction::SendCtrlAltDel) => self.send_ctrl_alt_del(),
            A::PatchDrive(patch) => self.patch_drive(patch),
            A::PutDrive(_) | A::PutNetwork(_) | A::PutPmem(_) => {
                ApiResponse::fault("Device hotplug error: PCI is not enabled.")
            }
            A::DeleteDrive { .. } | A::DeleteNetwork { .. } | A::DeletePmem { .. } => {
                ApiResponse::fault("Device hot-unplug error: PCI is not enabled.")
            }
            A::PatchNetwork(patch) => self.patch_network(&patch),
            A::PatchPmem(_) => ApiResponse::fault("Pmem update error: no pmem device found."),
            A::PatchBalloon(_) | A::PatchBalloonStats(_) | A::PatchBalloonHinting { .. } => {
                ApiResponse::fault("Balloon config error: No balloon device found.")
            }
            A::PatchHotplugMemory(_) => not_supported("virtio-mem (memory hotplug)"),
            A::SnapshotCreate(_) => not_supported("Creating a snapshot"),
            A::PutMachineConfig(_)
            | A::PatchMachineConfig(_)
            | A::PutBootSource(_)
            | A::PutSerial(_)
            | A::PutVsock(_)
            | A::PutBalloon(_)
            | A::PutEntropy(_)
            | A::PutHotplugMemory(_)
            | A::PutCpuConfig(_)
            | A::PutMmdsConfig(_)
            | A::PutLogger(_)
            | A::PutMetrics(_)
            | A::SnapshotLoad(_)
            | A::Action(InstanceAction::InstanceStart) => {
                ApiResponse::fault(NOT_SUPPORTED_AFTER_START)
            }
        }
    }
}

#[cfg(test)]
mod tests;
