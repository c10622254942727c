//! `PUT /snapshot/create`: save a paused microVM into a state file and a memory file.
//!
//! The VM is paused, so no vCPU touches a device or memory, and devices are served on this
//! thread, so none is in the middle of a request: what is saved is consistent. The state file
//! is written first, crash-safely (a temporary file renamed into place once complete); the
//! memory file is then written from guest memory with large writes and synced: all of it for
//! a Full snapshot, the pages changed since the previous snapshot for a Diff (see
//! [`super::memory`]).

use std::sync::PoisonError;

use squib_api::action::ApiResponse;
use squib_api::schemas::snapshot::SnapshotType;
use squib_api::schemas::SnapshotCreateConfig;
use squib_logger::metrics::METRICS;
use squib_logger::time::monotonic_us;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use super::memory::{check_snapshot_type, write_memory};
use super::state::{MemoryRegionState, MicrovmState};
use crate::builder::RunningVm;
use crate::controller::{ActionError, ActionResult};
use crate::vmm::{Vmm, VCPU_ACK_TIMEOUT};
use crate::vstate::vcpu::save_all;

impl Vmm {
    /// `PUT /snapshot/create`.
    pub(crate) fn create_snapshot(&mut self, config: SnapshotCreateConfig) -> ActionResult {
        let start_us = monotonic_us();
        let Some(vm) = self.running.as_ref().filter(|_| self.paused) else {
            return Err(ActionError::invalid(
                "Cannot save the microVM state: Operation not allowed: save/restore unavailable \
                 while running",
            ));
        };
        // Refused before any file is touched.
        check_snapshot_type(&vm.vm, config.snapshot_type)?;
        let state = microvm_state(vm, self.snapshot_config_json())?;
        squib_snapshot::save_state(&config.snapshot_path, &state)?;
        let file = squib_snapshot::open_for_write(&config.mem_file_path)?;
        write_memory(&vm.vm, &vm.mem, &file, config.snapshot_type)?;
        let us = monotonic_us().saturating_sub(start_us);
        let (metric, kind) = match config.snapshot_type {
            SnapshotType::Full => (&METRICS.latencies_us.vmm_full_create_snapshot, "full"),
            SnapshotType::Diff => (&METRICS.latencies_us.vmm_diff_create_snapshot, "diff"),
        };
        metric.store(us);
        log::info!("'create {kind} snapshot' VMM action took {us} us.");
        Ok(ApiResponse::NoContent)
    }
}

/// Everything but memory, read from the paused VM.
fn microvm_state(vm: &RunningVm, config_json: String) -> Result<MicrovmState, ActionError> {
    // First, so that the used entries and interrupts of requests still in flight (Async
    // block engine) are part of the memory, irqchip and device state saved below.
    for transport in &vm.transports {
        transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .prepare_save();
    }
    let vcpus = save_all(&vm.vcpus, VCPU_ACK_TIMEOUT)
        .map_err(|e| ActionError::invalid(format!("Cannot save the microVM state: {e}")))?;
    let vm_state = vm
        .vm
        .save_state()
        .map_err(|e| ActionError::invalid(format!("Cannot save the microVM state: {e}")))?;
    let memory = vm
        .mem
        .iter()
        .map(|r| MemoryRegionState {
            guest_addr: r.start_addr().raw_value(),
            size: r.len(),
        })
        .collect();
    let serial = vm
        .legacy
        .serial
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .save();
    let i8042 = vm
        .legacy
        .i8042
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .save();
    let virtio = vm
        .transports
        .iter()
        .map(|t| t.lock().unwrap_or_else(PoisonError::into_inner).save())
        .collect();
    Ok(MicrovmState {
        config_json,
        memory,
        vm: vm_state,
        vcpus,
        serial,
        i8042,
        virtio,
        clone_devices: vm.clone_devices.state(),
    })
}

#[cfg(test)]
#[path = "create_tests.rs"]
mod tests;
