//! Lifecycle actions: `PUT /actions` (`InstanceStart`, `FlushMetrics`, `SendCtrlAltDel`),
//! pause and resume, snapshots.

use squib_api::action::ApiResponse;
use squib_api::mirror::VmState;
use squib_api::schemas::{InstanceAction, VmStateChange};
use squib_devices::legacy::boot_timer::TimestampUs;
use squib_logger::metrics::{StoreMetric, METRICS};
use squib_logger::time::monotonic_us;

use super::metrics::{flush_metrics, write_periodic};
use crate::builder::{build_microvm, BuildContext};
use crate::controller::{ActionError, ActionResult};
use crate::vmm::{Vmm, VCPU_ACK_TIMEOUT};
use crate::vstate::vcpu::{pause_all, resume_all};

/// Store the microseconds since `start_us` in `metric` (Firecracker's
/// `update_metric_with_elapsed_time`) and return them.
fn store_elapsed(metric: &StoreMetric, start_us: u64) -> u64 {
    let us = monotonic_us().saturating_sub(start_us);
    metric.store(us);
    us
}

fn not_running(doing: &str) -> ActionError {
    ActionError::fault(format!(
        "Internal error while {doing} the microVM: the microVM is not running"
    ))
}

impl Vmm {
    /// `PUT /actions`.
    pub(crate) fn instance_action(&mut self, action: InstanceAction) -> ActionResult {
        match action {
            InstanceAction::InstanceStart => self.start_microvm(),
            InstanceAction::FlushMetrics => flush_metrics(),
            InstanceAction::SendCtrlAltDel => self.send_ctrl_alt_del(),
        }
    }

    /// `PATCH /vm`.
    pub(crate) fn patch_vm(&mut self, state: VmStateChange) -> ActionResult {
        match state {
            VmStateChange::Paused => self.pause(),
            VmStateChange::Resumed => self.resume(),
        }
    }

    /// `InstanceStart`: build the microVM from the resource store and run it.
    fn start_microvm(&mut self) -> ActionResult {
        let instant = std::time::Instant::now();
        let start = TimestampUs::now();
        let reset_evt = self.reset_evt()?;
        let ctx = BuildContext {
            start,
            instant,
            boot_timer: self.options.boot_timer,
            reset_evt: &reset_evt,
            stop: self.stop.clone(),
            clock_realtime: false,
        };
        match build_microvm(&self.resources, &mut self.events, ctx) {
            Ok(vm) => {
                log::info!("Started the microVM.");
                log::debug!("Guest kernel command line: {}", vm.cmdline);
                self.running = Some(vm);
                self.set_state(VmState::Running);
                self.arm_metrics_timer();
                write_periodic();
                Ok(ApiResponse::NoContent)
            }
            Err(e) => {
                log::error!("Start microvm error: {e}");
                Err(ActionError::invalid(e))
            }
        }
    }

    /// `PATCH /vm {"state": "Paused"}`: every vCPU leaves `KVM_RUN` and waits. When one
    /// vCPU fails to pause, the others are resumed and the VM stays `Running`.
    fn pause(&mut self) -> ActionResult {
        let start_us = monotonic_us();
        let vm = self
            .running
            .as_ref()
            .ok_or_else(|| not_running("pausing"))?;
        pause_all(&vm.vcpus, VCPU_ACK_TIMEOUT).map_err(|e| {
            ActionError::fault(format!("Internal error while pausing the microVM: {e}"))
        })?;
        let us = store_elapsed(&METRICS.latencies_us.vmm_pause_vm, start_us);
        log::info!("'pause vm' VMM action took {us} us.");
        self.set_state(VmState::Paused);
        log::info!("Paused the microVM");
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /vm {"state": "Resumed"}`: every vCPU runs again.
    fn resume(&mut self) -> ActionResult {
        let start_us = monotonic_us();
        if self.running.is_none() {
            return Err(not_running("resuming"));
        }
        self.resume_vcpus().map_err(|e| {
            ActionError::fault(format!("Internal error while resuming the microVM: {e}"))
        })?;
        self.start_working_set_recording();
        let us = store_elapsed(&METRICS.latencies_us.vmm_resume_vm, start_us);
        log::info!("'resume vm' VMM action took {us} us.");
        self.set_state(VmState::Running);
        log::info!("Resumed the microVM");
        Ok(ApiResponse::NoContent)
    }

    /// Let every vCPU run the guest again.
    pub(crate) fn resume_vcpus(&self) -> Result<(), String> {
        let vm = self.running.as_ref().ok_or("the microVM is not running")?;
        resume_all(&vm.vcpus, VCPU_ACK_TIMEOUT).map_err(|e| e.to_string())
    }

    /// A handle on the eventfd the i8042 writes when the guest resets.
    pub(crate) fn reset_evt(&self) -> std::io::Result<vmm_sys_util::eventfd::EventFd> {
        let control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.reset.try_clone()
    }

    /// `SendCtrlAltDel`: the i8042 queues the key presses and interrupts the guest.
    fn send_ctrl_alt_del(&mut self) -> ActionResult {
        let Some(vm) = &self.running else {
            return Err(ActionError::fault(squib_api::NOT_SUPPORTED_BEFORE_START));
        };
        let mut i8042 = vm.legacy.i8042.lock().unwrap_or_else(|e| e.into_inner());
        i8042.trigger_ctrl_alt_del()?;
        Ok(ApiResponse::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_elapsed_keeps_the_last_duration_in_microseconds() {
        let metric = StoreMetric::new();
        let us = store_elapsed(&metric, monotonic_us().saturating_sub(1500));
        assert!((1500..1_000_000).contains(&us), "{us}");
        assert_eq!(metric.fetch(), us);
        let us = store_elapsed(&metric, monotonic_us());
        assert_eq!(metric.fetch(), us);
        assert!(us < 1500);
    }
}
