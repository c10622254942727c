//! The VMM: owns the resource store, the running microVM (after `InstanceStart`) and the event
//! loop on the main thread, and decides when the process exits.
//!
//! API requests are served one at a time, in order, on this thread. A request whose requester
//! has gone (its API timeout fired, or its client disconnected, while it waited in the queue)
//! is skipped with a warning (`Skipped API request <label>: ...`) and counted
//! ([`Vmm::skipped_api_requests`]), never run late; once the VMM has claimed a request it
//! runs to completion, and a requester that times out meanwhile is told the outcome is
//! unknown. See `squib_api::channel`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use squib_api::channel::ApiReceiver;
use squib_api::mirror::{StateMirror, VmState};

use crate::builder::{RunningVm, Subscriber};
use crate::event_sources::{ControlEvents, ControlFlags};
use crate::exit_code::FcExitCode;
use crate::mmds_interceptor::SharedMmdsStore;
use crate::resources::VmResources;
use crate::vstate::vcpu::{StopNotifier, StopReason};

/// How long vCPUs get to acknowledge a pause or resume.
pub const VCPU_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Options from the command line that shape the VM.
#[derive(Debug, Clone, Default)]
pub struct VmmOptions {
    /// Attach the boot timer device (`--boot-timer`).
    pub boot_timer: bool,
    /// Bytes the MMDS data store may hold (`--mmds-size-limit`).
    pub mmds_size_limit: usize,
}

/// Why the VMM could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The event loop could not be created.
    #[error("Cannot create the event loop: {0}")]
    EventManager(#[from] event_manager::Error),
    /// An eventfd or timerfd could not be created.
    #[error("Cannot create the VMM's control events: {0}")]
    Control(#[source] std::io::Error),
    /// The vCPU kick signal handler could not be installed.
    #[error("Cannot install the vCPU signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// The serial and i8042 counters live in `squib-devices`; the metrics line shows them as
/// Firecracker's `uart` and `i8042` groups.
fn register_legacy_metrics() {
    use squib_devices::legacy::{i8042::I8042_METRICS, serial::UART_METRICS};
    squib_logger::metrics::register_group("uart", Arc::new(&UART_METRICS));
    squib_logger::metrics::register_group("i8042", Arc::new(&I8042_METRICS));
}

/// The VMM state machine and its event loop.
pub struct Vmm {
    pub(crate) options: VmmOptions,
    pub(crate) resources: VmResources,
    /// The MMDS document; the resource store holds the same one for the net devices.
    pub(crate) mmds: SharedMmdsStore,
    pub(crate) mirror: Arc<StateMirror>,
    pub(crate) events: EventManager<Subscriber>,
    pub(crate) control: Arc<Mutex<ControlEvents>>,
    pub(crate) flags: ControlFlags,
    pub(crate) stop: StopNotifier,
    pub(crate) running: Option<RunningVm>,
    pub(crate) paused: bool,
    /// A boot-path resource was configured: `PUT /snapshot/load` is refused from then on.
    pub(crate) boot_resources_configured: bool,
    /// Set when a request (or a failure) ends the process.
    pub(crate) exit: Option<FcExitCode>,
    /// A restored VM's working set to record once the guest resumes (squib's `working_set`
    /// load option, when its file did not exist yet).
    pub(crate) working_set_recorder: Option<crate::snapshot::WorkingSetRecorder>,
    api: Option<ApiReceiver>,
}

impl Vmm {
    /// A VMM with an empty resource store, serving requests from `api` (if any).
    ///
    /// # Errors
    /// [`VmmError`] when the event loop or its eventfds cannot be created.
    pub fn new(
        options: VmmOptions,
        mirror: Arc<StateMirror>,
        control: ControlEvents,
        flags: ControlFlags,
        api: Option<ApiReceiver>,
    ) -> Result<Self, VmmError> {
        crate::vstate::vcpu::register_kick_signal_handler().map_err(VmmError::Signal)?;
        register_legacy_metrics();
        let mut events = EventManager::new()?;
        let stop = StopNotifier::new(control.vcpu_stop.clone());
        let control = Arc::new(Mutex::new(control));
        events.add_subscriber(control.clone() as Subscriber);
        let mmds = SharedMmdsStore::new(options.mmds_size_limit);
        let mut resources = VmResources::default();
        resources.set_mmds_store(mmds.clone());
        Ok(Self {
            mmds,
            options,
            resources,
            mirror,
            events,
            control,
            flags,
            stop,
            running: None,
            paused: false,
            boot_resources_configured: false,
            exit: None,
            working_set_recorder: None,
            api,
        })
    }

    /// The resource store (for `--config-file`, which fills it before the loop runs).
    pub fn resources_mut(&mut self) -> &mut VmResources {
        &mut self.resources
    }

    /// Run the event loop until the guest or a request ends the VMM; returns the exit code.
    pub fn run(&mut self) -> FcExitCode {
        let code = self.run_until_exit();
        self.sync_drives();
        code
    }

    /// Writeback drives get their `fdatasync` before the process exits: the vCPU threads
    /// still hold the devices, so dropping them is not enough.
    fn sync_drives(&self) {
        for (_, block) in self.running.iter().flat_map(|vm| &vm.blocks) {
            block
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sync_at_exit();
        }
    }

    fn run_until_exit(&mut self) -> FcExitCode {
        loop {
            if let Some(code) = self.exit {
                return code;
            }
            if let Err(e) = self.events.run() {
                log::error!("Event loop failed: {e}");
                return FcExitCode::UnexpectedError;
            }
            let fired = self.flags.take();
            if fired.reset {
                log::info!("Vmm is stopping.");
                return FcExitCode::Ok;
            }
            if fired.vcpu_stop {
                return self.vcpu_stopped();
            }
            if fired.metrics {
                crate::handlers::metrics::write_periodic();
            }
            if fired.api {
                self.serve_api();
            }
        }
    }

    fn vcpu_stopped(&mut self) -> FcExitCode {
        log::info!("Vmm is stopping.");
        match self.stop.reason() {
            Some(StopReason::GuestReset) | None => FcExitCode::Ok,
            Some(StopReason::Fault(reason)) => {
                log::error!("The microVM stopped: {reason}");
                FcExitCode::GenericError
            }
        }
    }

    /// Answer every queued API request, one at a time.
    ///
    /// A request whose requester has gone (its API timeout fired or its client disconnected
    /// while it waited in the queue) is skipped, logged and counted, never run: the API
    /// thread has already told the client it timed out, and a late `InstanceStart` must not
    /// boot a VM nobody waits for. A request is claimed right before it runs; from then on
    /// the requester cannot cancel it, and a timeout reports an unknown outcome
    /// (`squib_api::channel`'s module docs).
    pub(crate) fn serve_api(&mut self) {
        while let Some((action, reply)) = self.api.as_mut().and_then(ApiReceiver::next_claimed) {
            let spec = action.spec();
            let response = self.handle_action(action);
            spec.count(&response);
            reply.respond(response);
            if self.exit.is_some() {
                return;
            }
        }
    }

    /// How many abandoned API requests were skipped (never run).
    pub fn skipped_api_requests(&self) -> u64 {
        self.api.as_ref().map_or(0, ApiReceiver::skipped)
    }

    /// Mark the VM as running and let `GET /` see it.
    pub(crate) fn set_state(&mut self, state: VmState) {
        self.paused = state == VmState::Paused;
        self.mirror.set_state(state);
    }

    /// Arm the periodic metrics flush.
    pub(crate) fn arm_metrics_timer(&self) {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = control.arm_metrics_timer(squib_logger::metrics::METRICS_PERIOD) {
            log::warn!("Cannot arm the periodic metrics timer: {e}");
        }
    }
}
