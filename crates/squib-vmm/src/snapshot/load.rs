//! `PUT /snapshot/load`: rebuild a microVM from a state file and a memory file (mapped
//! copy-on-write) or a userfaultfd page-fault handler, in a process that has configured
//! nothing for booting. With `track_dirty_pages` the restored memory slots log dirty pages,
//! so a Diff of the restored VM holds what changed since the load and, written onto the loaded
//! memory file, gives a snapshot that loads again.
//!
//! A failed load is fatal, as in Firecracker: the client gets its 400, then the process exits
//! with code 1, because a half-restored VM (devices bound, memory mapped) cannot be cleaned up
//! into a usable pre-boot state.

use std::fs::File;

use squib_api::action::ApiResponse;
use squib_api::mirror::VmState;
use squib_api::schemas::snapshot::{MemBackendType, WorkingSetConfig};
use squib_api::schemas::SnapshotLoadConfig;
use squib_arch::memory::{
    create_guest_memory_for_uffd, create_guest_memory_from_file, GuestMemoryMmap, HugePageMode,
};
use squib_devices::legacy::boot_timer::TimestampUs;
use squib_logger::metrics::METRICS;
use squib_logger::time::monotonic_us;
use squib_snapshot::SnapshotError;
use vm_memory::GuestAddress;

use super::working_set::{mapped_regions, prefetch, WorkingSetRecorder};
use super::MicrovmState;
use crate::builder::restore::restore_microvm;
use crate::builder::{huge_page_mode, BuildContext};
use crate::controller::{ActionError, ActionResult};
use crate::exit_code::FcExitCode;
use crate::vmm::Vmm;

/// Firecracker's refusal once the boot path has begun.
const LOAD_NOT_ALLOWED: &str =
    "Loading a microVM snapshot not allowed after configuring boot-specific resources.";

/// Guest memory for a restore, and what must live as long as it.
struct RestoredMemory {
    mem: GuestMemoryMmap,
    uffd: Option<squib_uffd::UffdHandoff>,
    /// The working set to record after the resume, when one was asked for and not found.
    recorder: Option<WorkingSetRecorder>,
}

impl Vmm {
    /// `PUT /snapshot/load`.
    pub(crate) fn load_snapshot(&mut self, load: SnapshotLoadConfig) -> ActionResult {
        if self.boot_resources_configured {
            return Err(ActionError::fault(LOAD_NOT_ALLOWED));
        }
        let start_us = monotonic_us();
        match self.restore_snapshot(&load) {
            Ok(()) => {
                let us = monotonic_us().saturating_sub(start_us);
                METRICS.latencies_us.vmm_load_snapshot.store(us);
                log::info!("'load snapshot' VMM action took {us} us.");
                Ok(ApiResponse::NoContent)
            }
            Err(message) => {
                log::error!("Failed to build MicroVM: Loading snapshot failed.. {message}");
                self.exit = Some(FcExitCode::GenericError);
                Err(ActionError::invalid(message))
            }
        }
    }

    /// Every step of a load; the message says which failed, in Firecracker's words.
    fn restore_snapshot(&mut self, load: &SnapshotLoadConfig) -> Result<(), String> {
        let state: MicrovmState = squib_snapshot::load_state(&load.snapshot_path)
            .map_err(|e| format!("Failed to restore from snapshot: {}", state_file_error(&e)))?;
        self.restore_resources(&state.config_json, load)
            .map_err(|e| format!("Failed to restore from snapshot: {e}"))?;
        // The snapshot's backing, or the load's `huge_pages` override (already applied).
        let huge = huge_page_mode(self.resources.machine_config().huge_pages);
        let memory = restored_memory(&state, load, huge)?;
        let reset_evt = self.reset_evt().map_err(|e| e.to_string())?;
        let ctx = BuildContext {
            start: TimestampUs::now(),
            instant: std::time::Instant::now(),
            boot_timer: self.options.boot_timer,
            reset_evt: &reset_evt,
            stop: self.stop.clone(),
            clock_realtime: load.clock_realtime,
        };
        let mut vm = restore_microvm(&self.resources, &mut self.events, &ctx, &state, memory.mem)
            .map_err(|e| format!("Failed to build microVM from snapshot: {e}"))?;
        vm.uffd = memory.uffd;
        self.running = Some(vm);
        self.working_set_recorder = memory.recorder;
        self.set_state(VmState::Paused);
        self.arm_metrics_timer();
        if load.resume_vm {
            self.resume_vcpus()
                .map_err(|e| format!("Failed to resume microVM: {e}"))?;
            self.start_working_set_recording();
            self.set_state(VmState::Running);
        }
        Ok(())
    }

    /// The guest runs from now: a pending working-set recording starts its window.
    pub(crate) fn start_working_set_recording(&mut self) {
        if let Some(recorder) = self.working_set_recorder.take() {
            recorder.start();
        }
    }
}

/// Firecracker's nesting for state-file errors.
fn state_file_error(e: &SnapshotError) -> String {
    match e {
        SnapshotError::Open(_) => format!("Failed to get snapshot state from file: {e}"),
        _ => format!(
            "Failed to get snapshot state from file: Failed to load snapshot state from file: {e}"
        ),
    }
}

/// The saved regions as the memory constructors take them; sizes that do not fit this
/// host's address space are refused.
fn saved_regions(state: &MicrovmState) -> Result<Vec<(GuestAddress, usize)>, String> {
    if state.memory.is_empty() {
        return Err(
            "Failed to restore from snapshot: Invalid snapshot state: No memory region defined."
                .into(),
        );
    }
    state
        .memory
        .iter()
        .map(|r| {
            usize::try_from(r.size)
                .map(|size| (GuestAddress(r.guest_addr), size))
                .map_err(|_| format!("Invalid snapshot state: region of {} bytes", r.size))
        })
        .collect()
}

/// Guest memory from the memory file (private mapping) or handed to a userfaultfd handler.
fn restored_memory(
    state: &MicrovmState,
    load: &SnapshotLoadConfig,
    huge: HugePageMode,
) -> Result<RestoredMemory, String> {
    let regions = saved_regions(state)?;
    let path = &load.mem_backend.backend_path;
    match load.mem_backend.backend_type {
        MemBackendType::File => {
            let file = File::open(path).map_err(|e| {
                format!(
                    "Failed to restore from snapshot: Failed to load guest memory: Error creating \
                     guest memory from file: Failed to load guest memory: {e}"
                )
            })?;
            let mem = create_guest_memory_from_file(&regions, &file, huge).map_err(|e| {
                format!(
                    "Failed to restore from snapshot: Failed to load guest memory: Error \
                         creating guest memory from file: {e}"
                )
            })?;
            let recorder = match &load.working_set {
                Some(config) => working_set(&file, &mem, config)?,
                None => None,
            };
            Ok(RestoredMemory {
                mem,
                uffd: None,
                recorder,
            })
        }
        MemBackendType::Uffd => {
            let uffd_error = |e: &dyn std::fmt::Display| {
                format!(
                    "Failed to restore from snapshot: Failed to load guest memory: Error \
                     creating guest memory from uffd: {e}"
                )
            };
            let mem = create_guest_memory_for_uffd(&regions, huge).map_err(|e| uffd_error(&e))?;
            let handoff = squib_uffd::hand_off(&mem, path).map_err(|e| uffd_error(&e))?;
            Ok(RestoredMemory {
                mem,
                uffd: Some(handoff),
                recorder: None,
            })
        }
    }
}

/// squib's `working_set` option: prefetch the recorded set into `mem` now, or (no file yet)
/// the recorder that writes one after the resume.
fn working_set(
    file: &File,
    mem: &GuestMemoryMmap,
    config: &WorkingSetConfig,
) -> Result<Option<WorkingSetRecorder>, String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "Failed to restore from snapshot: Failed to load guest memory: working set {}: {e}",
            config.path.display()
        )
    };
    let regions = mapped_regions(mem);
    let memory_len = regions.iter().map(|r| r.len() as u64).sum();
    match squib_snapshot::load_working_set(&config.path, memory_len).map_err(|e| fail(&e))? {
        Some(set) => {
            let start_us = monotonic_us();
            let done = prefetch(file, &regions, &set).map_err(|e| fail(&e))?;
            log::info!(
                "Working set: prefetched {} pages in {} runs from {} in {} us.",
                done.pages,
                done.runs,
                config.path.display(),
                monotonic_us().saturating_sub(start_us)
            );
            Ok(None)
        }
        None => Ok(Some(WorkingSetRecorder::new(config, regions))),
    }
}
