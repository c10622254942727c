//! Lifecycle actions: `InstanceStart`, pause and resume, Ctrl-Alt-Del.

use squib_api::action::ApiResponse;
use squib_api::mirror::VmState;
use squib_devices::legacy::boot_timer::TimestampUs;

use crate::builder::{build_microvm, BuildContext};
use crate::controller::fault;
use crate::vmm::{Vmm, VCPU_ACK_TIMEOUT};
use crate::vstate::vcpu::VcpuCommand;

impl Vmm {
    /// `InstanceStart`: build the microVM from the resource store and run it.
    pub(crate) fn start_microvm(&mut self) -> ApiResponse {
        let instant = std::time::Instant::now();
        let start = TimestampUs::now();
        let reset_evt = {
            let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            match control.reset.try_clone() {
                Ok(evt) => evt,
                Err(e) => return fault("Start microvm error", e),
            }
        };
        let ctx = BuildContext {
            start,
            instant,
            boot_timer: self.options.boot_timer,
            reset_evt: &reset_evt,
            stop: self.stop.clone(),
        };
        match build_microvm(&self.resources, &mut self.events, ctx) {
            Ok(vm) => {
                log::info!("Started the microVM.");
                log::debug!("Guest kernel command line: {}", vm.cmdline);
                self.running = Some(vm);
                self.set_state(VmState::Running);
                self.arm_metrics_timer();
                crate::metrics::write_periodic();
                ApiResponse::NoContent
            }
            Err(e) => {
                log::error!("Start microvm error: {e}");
                fault("Start microvm error", e)
            }
        }
    }

    fn command_all_vcpus(&mut self, command: VcpuCommand) -> Result<(), String> {
        let Some(vm) = &self.running else {
            return Err("the microVM is not running".to_owned());
        };
        for vcpu in &vm.vcpus {
            vcpu.command(command, VCPU_ACK_TIMEOUT)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `PATCH /vm {"state": "Paused"}`: every vCPU leaves `KVM_RUN` and waits.
    pub(crate) fn pause(&mut self) -> ApiResponse {
        match self.command_all_vcpus(VcpuCommand::Pause) {
            Ok(()) => {
                self.set_state(VmState::Paused);
                log::info!("Paused the microVM");
                ApiResponse::NoContent
            }
            Err(e) => fault("Internal error while pausing the microVM", e),
        }
    }

    /// `PATCH /vm {"state": "Resumed"}`: every vCPU runs again.
    pub(crate) fn resume(&mut self) -> ApiResponse {
        match self.command_all_vcpus(VcpuCommand::Resume) {
            Ok(()) => {
                self.set_state(VmState::Running);
                log::info!("Resumed the microVM");
                ApiResponse::NoContent
            }
            Err(e) => fault("Internal error while resuming the microVM", e),
        }
    }

    /// `SendCtrlAltDel`: the i8042 queues the key presses and interrupts the guest.
    pub(crate) fn send_ctrl_alt_del(&mut self) -> ApiResponse {
        let Some(vm) = &self.running else {
            return ApiResponse::fault(squib_api::NOT_SUPPORTED_BEFORE_START);
        };
        let mut i8042 = vm.legacy.i8042.lock().unwrap_or_else(|e| e.into_inner());
        match i8042.trigger_ctrl_alt_del() {
            Ok(()) => ApiResponse::NoContent,
            Err(e) => fault("Failed to send CTRL+ALT+DEL", e),
        }
    }
}
