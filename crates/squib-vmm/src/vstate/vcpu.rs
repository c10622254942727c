//! vCPU threads: each runs `KVM_RUN` in a loop, dispatches port-I/O and MMIO exits to the
//! shared buses, and obeys pause/resume/save commands from the VMM thread.
//!
//! Commands reach a vCPU that is inside `KVM_RUN` by a signal ([`kick_signal`]) whose handler
//! sets `kvm_run.immediate_exit`, so the pending or next `KVM_RUN` returns `EINTR` at once —
//! there is no window in which a command sent just before `KVM_RUN` is missed.
//!
//! A vCPU never ends the process itself: when the guest resets or the vCPU fails, it records
//! a [`StopReason`], writes the VMM's stop eventfd and parks; the VMM thread exits.
//!
//! A thread starts parked: it enters `KVM_RUN` only after [`VcpuHandle::start`] (or the first
//! resume), so a build that fails after spawning some vCPUs drops them
//! ([`VcpuHandle::abandon`]) before any ran, and a VM restored from a snapshot stays paused
//! until it is resumed.
//!
//! The vCPU fd lives on its thread, so the thread saves its own KVM state
//! ([`VcpuHandle::save_state`], [`save_all`]), and only while paused or parked: a running vCPU
//! refuses. Entering a pause tells the guest through kvmclock that it is stopped.
//!
//! Every command carries a sequence number that its acknowledgement repeats: the VMM thread
//! skips acknowledgements of older commands, so a vCPU that answered too late once does not
//! make every later pause or resume fail. [`pause_all`] resumes the vCPUs it already paused
//! when one of them fails.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_run, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use squib_devices::bus::Bus;
use squib_logger::metrics::METRICS;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vcpu_state::{
    notify_guest_stopped, save_vcpu, VcpuState, VcpuStateCaps, VcpuStateError,
};

/// Why the VM must stop, as reported by a vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for a reset or power-off through KVM (a clean stop, exit code 0).
    GuestReset,
    /// The vCPU cannot go on (triple fault, emulation failure, unhandled exit): exit code 1.
    Fault(String),
}

/// What a vCPU reports when it must stop: the first reason wins.
#[derive(Debug, Clone)]
pub struct StopNotifier {
    evt: Arc<EventFd>,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl StopNotifier {
    /// A notifier that writes `evt` when a vCPU stops.
    #[must_use]
    pub fn new(evt: Arc<EventFd>) -> Self {
        Self {
            evt,
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Record `reason` (unless one is already recorded) and wake the VMM.
    pub fn notify(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
        if let Err(e) = self.evt.write(1) {
            log::error!("Failed to signal the VMM that a vCPU stopped: {e}");
        }
    }

    /// The recorded reason, if any.
    #[must_use]
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A command from the VMM thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuCommand {
    /// Leave `KVM_RUN` and wait for [`VcpuCommand::Resume`].
    Pause,
    /// Run the guest again.
    Resume,
    /// Save the vCPU's KVM state and send it back (refused unless paused).
    SaveState,
}

/// A vCPU's acknowledgement of a command. Pause and resume acknowledgements carry no data, so
/// they never allocate; a saved state travels boxed.
#[derive(Debug)]
pub enum VcpuAck {
    /// The vCPU is out of `KVM_RUN` and waiting.
    Paused,
    /// The vCPU is running the guest again.
    Resumed,
    /// The paused vCPU's state, or why it could not be saved.
    Saved(Box<Result<VcpuState, VcpuStateError>>),
    /// The vCPU is running the guest, so it did not save its state.
    NotPaused,
}

impl VcpuAck {
    /// The acknowledgement's name, for errors.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Paused => "Paused",
            Self::Resumed => "Resumed",
            Self::Saved(_) => "Saved",
            Self::NotPaused => "NotPaused",
        }
    }
}

/// A command with its sequence number, as it travels to the vCPU thread.
type SeqCommand = (u64, VcpuCommand);
/// An acknowledgement with the sequence number of the command it answers.
type SeqAck = (u64, VcpuAck);

thread_local! {
    /// This thread's `kvm_run` mapping, for the kick signal handler.
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
#[must_use]
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let ptr = KVM_RUN_PTR.with(Cell::get);
    if !ptr.is_null() {
        // SAFETY: the pointer was set by this thread's `VcpuRunner::run` to its own vCPU's
        // `kvm_run` mmap, which stays mapped while the runner (and so the thread) lives. A
        // volatile byte store is async-signal-safe and the kernel reads this field only on
        // entry to KVM_RUN.
        unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
    }
}

/// Install the kick signal handler (once per process, before vCPUs start).
///
/// # Errors
/// The OS error when the handler cannot be installed.
pub fn register_kick_signal_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), handle_kick)
}

/// The VMM thread's handle on one vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u8,
    thread: JoinHandle<()>,
    commands: Sender<SeqCommand>,
    acks: Receiver<SeqAck>,
    /// The sequence number of the last command sent.
    seq: AtomicU64,
}

/// Why a vCPU did not acknowledge a command.
#[derive(Debug, thiserror::Error)]
pub enum VcpuControlError {
    /// The vCPU thread is gone.
    #[error("vCPU {0} is not running")]
    Gone(u8),
    /// The vCPU did not answer in time.
    #[error("vCPU {0} did not acknowledge {1:?} in time")]
    Timeout(u8, VcpuCommand),
    /// The kick signal could not be delivered.
    #[error("Cannot signal vCPU {0}: {1}")]
    Kick(u8, vmm_sys_util::errno::Error),
    /// The vCPU answered something else.
    #[error("vCPU {0} answered {1} to {2:?}")]
    UnexpectedAck(u8, &'static str, VcpuCommand),
    /// The vCPU runs the guest: its state can only be saved while paused.
    #[error("vCPU {0} cannot save its state: save/restore unavailable while running")]
    NotPaused(u8),
    /// The paused vCPU could not save its state.
    #[error("vCPU {0} could not save its state: {1}")]
    SaveState(u8, #[source] VcpuStateError),
}

impl VcpuHandle {
    /// Send `command` ([`VcpuCommand::Pause`] or [`VcpuCommand::Resume`]), kick the thread
    /// out of `KVM_RUN`, and wait for its acknowledgement.
    ///
    /// # Errors
    /// [`VcpuControlError`] when the vCPU is gone, does not answer within `timeout`, or answers
    /// something else.
    pub fn command(&self, command: VcpuCommand, timeout: Duration) -> Result<(), VcpuControlError> {
        match (command, self.request(command, timeout)?) {
            (VcpuCommand::Pause, VcpuAck::Paused) | (VcpuCommand::Resume, VcpuAck::Resumed) => {
                Ok(())
            }
            (_, ack) => Err(VcpuControlError::UnexpectedAck(
                self.index,
                ack.name(),
                command,
            )),
        }
    }

    /// Have the paused vCPU save its KVM state and return it.
    ///
    /// # Errors
    /// [`VcpuControlError::NotPaused`] when the vCPU runs the guest,
    /// [`VcpuControlError::SaveState`] when a KVM call failed, and the errors of
    /// [`VcpuHandle::command`].
    pub fn save_state(&self, timeout: Duration) -> Result<VcpuState, VcpuControlError> {
        match self.request(VcpuCommand::SaveState, timeout)? {
            VcpuAck::Saved(result) => {
                (*result).map_err(|e| VcpuControlError::SaveState(self.index, e))
            }
            VcpuAck::NotPaused => Err(VcpuControlError::NotPaused(self.index)),
            ack => Err(VcpuControlError::UnexpectedAck(
                self.index,
                ack.name(),
                VcpuCommand::SaveState,
            )),
        }
    }

    /// Send `command`, kick the thread, and return the acknowledgement that carries the
    /// command's sequence number.
    fn request(
        &self,
        command: VcpuCommand,
        timeout: Duration,
    ) -> Result<VcpuAck, VcpuControlError> {
        let seq = self.send(command)?;
        self.thread
            .kill(kick_signal())
            .map_err(|e| VcpuControlError::Kick(self.index, e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.recv_timeout(left) {
                Ok((ack_seq, ack)) if ack_seq == seq => return Ok(ack),
                // The late answer to an older command (one that timed out): skip it.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(VcpuControlError::Timeout(self.index, command))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(VcpuControlError::Gone(self.index))
                }
            }
        }
    }

    /// Let the parked thread enter `KVM_RUN` for the first time. Its acknowledgement is left
    /// unread (the next [`VcpuHandle::command`] skips it).
    ///
    /// # Errors
    /// [`VcpuControlError::Gone`] when the thread has ended.
    pub fn start(&self) -> Result<(), VcpuControlError> {
        self.send(VcpuCommand::Resume).map(drop)
    }

    /// End a thread that was never started, and wait for it: it returns without running the
    /// guest once its command channel closes.
    pub fn abandon(self) {
        let Self {
            index,
            thread,
            commands,
            ..
        } = self;
        drop(commands);
        if thread.join().is_err() {
            log::error!("vCPU {index} panicked before it started");
        }
    }

    fn send(&self, command: VcpuCommand) -> Result<u64, VcpuControlError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.commands
            .send((seq, command))
            .map_err(|_| VcpuControlError::Gone(self.index))?;
        Ok(seq)
    }
}

/// Pause every vCPU. When one fails, the ones already paused (and the failing one, whose
/// pause may still land) are resumed, so the VM is not left half-paused.
///
/// # Errors
/// The first vCPU's [`VcpuControlError`]; resume failures during the roll-back are logged.
pub fn pause_all(vcpus: &[VcpuHandle], timeout: Duration) -> Result<(), VcpuControlError> {
    for (k, vcpu) in vcpus.iter().enumerate() {
        if let Err(e) = vcpu.command(VcpuCommand::Pause, timeout) {
            for paused in &vcpus[..=k] {
                if let Err(undo) = paused.command(VcpuCommand::Resume, timeout) {
                    log::error!(
                        "Cannot resume vCPU {} after a failed pause: {undo}",
                        paused.index
                    );
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Save the state of every (paused) vCPU, in vCPU order.
///
/// # Errors
/// The first vCPU's [`VcpuControlError`].
pub fn save_all(
    vcpus: &[VcpuHandle],
    timeout: Duration,
) -> Result<Vec<VcpuState>, VcpuControlError> {
    vcpus.iter().map(|vcpu| vcpu.save_state(timeout)).collect()
}

/// Resume every vCPU.
///
/// # Errors
/// The first vCPU's [`VcpuControlError`] (the others are still resumed).
pub fn resume_all(vcpus: &[VcpuHandle], timeout: Duration) -> Result<(), VcpuControlError> {
    let mut first = Ok(());
    for vcpu in vcpus {
        if let Err(e) = vcpu.command(VcpuCommand::Resume, timeout) {
            log::error!("Cannot resume vCPU {}: {e}", vcpu.index);
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Everything a vCPU thread owns.
pub struct VcpuRunner {
    /// Index of the vCPU (also its APIC ID).
    pub index: u8,
    /// The configured KVM vCPU.
    pub fd: VcpuFd,
    /// Port-I/O devices.
    pub pio_bus: Arc<Bus>,
    /// MMIO devices.
    pub mmio_bus: Arc<Bus>,
    /// Where to report that the VM must stop.
    pub stop: StopNotifier,
    /// When `InstanceStart` arrived: the boot vCPU logs the time to its first `KVM_RUN`.
    pub instance_start: Option<Instant>,
    /// What saving this vCPU's state needs (the VM's, shared by its vCPUs).
    pub state_caps: Arc<VcpuStateCaps>,
}

/// What a vCPU thread does for the VMM besides running the guest: the runner does it with
/// KVM, the protocol tests with a fake.
trait VcpuControl {
    /// The guest was just paused.
    fn paused(&self);
    /// Save the vCPU's state; it is out of `KVM_RUN`.
    fn save(&self) -> Result<VcpuState, VcpuStateError>;
}

impl VcpuControl for VcpuRunner {
    fn paused(&self) {
        notify_guest_stopped(&self.fd);
    }

    fn save(&self) -> Result<VcpuState, VcpuStateError> {
        save_vcpu(&self.fd, &self.state_caps)
    }
}

/// What the run loop does after one `KVM_RUN`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Interrupted,
    Stop(StopReason),
}

impl VcpuRunner {
    /// Start the thread `fc_vcpu <index>` running this vCPU.
    ///
    /// # Errors
    /// The OS error when the thread cannot be spawned.
    pub fn spawn(self) -> std::io::Result<VcpuHandle> {
        let index = self.index;
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fc_vcpu {index}"))
            .spawn(move || self.run(&cmd_rx, &ack_tx))?;
        Ok(VcpuHandle {
            index,
            thread,
            commands: cmd_tx,
            acks: ack_rx,
            seq: AtomicU64::new(0),
        })
    }

    fn run(mut self, commands: &Receiver<SeqCommand>, acks: &Sender<SeqAck>) {
        KVM_RUN_PTR.with(|p| p.set(std::ptr::from_mut(self.fd.get_kvm_run())));
        if !wait_for_start(commands, acks, &self) {
            return;
        }
        // A command queued with the start (a pause right after InstanceStart) may have been
        // kicked before this thread registered its kvm_run: serve it before the first
        // KVM_RUN, which would otherwise run the guest without looking at the queue.
        if !serve_commands(commands, acks, &self) {
            return;
        }
        if let Some(start) = self.instance_start.take() {
            // squib-bench greps this line: keep its text.
            log::info!(
                "InstanceStart to first KVM_RUN: {} us",
                start.elapsed().as_micros()
            );
        }
        loop {
            match self.run_once() {
                Step::Continue => {}
                Step::Interrupted => {
                    self.fd.set_kvm_immediate_exit(0);
                    // The VMM dropped its handle: nobody supervises this guest any more.
                    if !serve_commands(commands, acks, &self) {
                        return;
                    }
                }
                Step::Stop(reason) => {
                    if let StopReason::Fault(msg) = &reason {
                        log::error!("vCPU {} stopped: {msg}", self.index);
                        METRICS.vcpu.failures.inc();
                    }
                    self.stop.notify(reason);
                    park(commands, acks, &self);
                    return;
                }
            }
        }
    }

    fn run_once(&mut self) -> Step {
        let index = self.index;
        match self.fd.run() {
            Ok(exit) => handle_exit(index, exit, &self.pio_bus, &self.mmio_bus),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
            Err(e) => Step::Stop(StopReason::Fault(format!("KVM_RUN failed: {e}"))),
        }
    }
}

/// Out of `KVM_RUN`, block until a resume (the start, or the end of a pause), answering
/// commands meanwhile; `false` when the handle was dropped first.
fn wait_for_start(
    commands: &Receiver<SeqCommand>,
    acks: &Sender<SeqAck>,
    vcpu: &impl VcpuControl,
) -> bool {
    while let Ok((seq, command)) = commands.recv() {
        let _ = acks.send((seq, answer_while_paused(command, vcpu)));
        if command == VcpuCommand::Resume {
            return true;
        }
    }
    false
}

/// The answer of a vCPU that is out of `KVM_RUN`: it can save its state.
fn answer_while_paused(command: VcpuCommand, vcpu: &impl VcpuControl) -> VcpuAck {
    match command {
        VcpuCommand::Pause => VcpuAck::Paused,
        VcpuCommand::Resume => VcpuAck::Resumed,
        VcpuCommand::SaveState => VcpuAck::Saved(Box::new(vcpu.save())),
    }
}

/// Serve every pending command of a running vCPU, each acknowledged with its sequence
/// number; a pause blocks here until the resume. Returns `false` once the VMM's handle is
/// gone.
fn serve_commands(
    commands: &Receiver<SeqCommand>,
    acks: &Sender<SeqAck>,
    vcpu: &impl VcpuControl,
) -> bool {
    loop {
        match commands.try_recv() {
            Ok((seq, VcpuCommand::Pause)) => {
                vcpu.paused();
                let _ = acks.send((seq, VcpuAck::Paused));
                if !wait_for_start(commands, acks, vcpu) {
                    return false;
                }
            }
            Ok((seq, VcpuCommand::Resume)) => {
                let _ = acks.send((seq, VcpuAck::Resumed));
            }
            Ok((seq, VcpuCommand::SaveState)) => {
                let _ = acks.send((seq, VcpuAck::NotPaused));
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
        }
    }
}

/// After a stop, answer commands (as paused: the vCPU is out of `KVM_RUN` for good) until the
/// VMM exits the process.
fn park(commands: &Receiver<SeqCommand>, acks: &Sender<SeqAck>, vcpu: &impl VcpuControl) {
    while let Ok((seq, command)) = commands.recv() {
        let _ = acks.send((seq, answer_while_paused(command, vcpu)));
    }
}

/// Dispatch one exit. Nothing here allocates on the I/O paths, which are the hot ones.
fn handle_exit(index: u8, exit: VcpuExit<'_>, pio: &Bus, mmio: &Bus) -> Step {
    let vcpu_metrics = &METRICS.vcpu;
    match exit {
        VcpuExit::IoIn(port, data) => {
            vcpu_metrics.exit_io_in.inc();
            if !pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            Step::Continue
        }
        VcpuExit::IoOut(port, data) => {
            vcpu_metrics.exit_io_out.inc();
            pio.write(u64::from(port), data);
            Step::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            vcpu_metrics.exit_mmio_read.inc();
            if !mmio.read(addr, data) {
                data.fill(0);
            }
            Step::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            vcpu_metrics.exit_mmio_write.inc();
            mmio.write(addr, data);
            Step::Continue
        }
        VcpuExit::Intr => Step::Interrupted,
        VcpuExit::SystemEvent(kind, _)
            if kind == KVM_SYSTEM_EVENT_RESET || kind == KVM_SYSTEM_EVENT_SHUTDOWN =>
        {
            log::info!("vCPU {index} received a system event {kind}: stopping the VM");
            Step::Stop(StopReason::GuestReset)
        }
        VcpuExit::Shutdown => Step::Stop(StopReason::Fault(
            "the guest triple-faulted (KVM_EXIT_SHUTDOWN)".to_owned(),
        )),
        VcpuExit::Hlt => Step::Stop(StopReason::Fault("unexpected KVM_EXIT_HLT".to_owned())),
        VcpuExit::FailEntry(reason, cpu) => Step::Stop(StopReason::Fault(format!(
            "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on cpu {cpu}"
        ))),
        VcpuExit::InternalError => Step::Stop(StopReason::Fault(
            "KVM_EXIT_INTERNAL_ERROR: KVM could not emulate an instruction".to_owned(),
        )),
        other => Step::Stop(StopReason::Fault(format!("unhandled vCPU exit {other:?}"))),
    }
}

#[cfg(test)]
#[path = "vcpu_alloc_tests.rs"]
mod alloc_tests;

#[cfg(test)]
#[path = "vcpu_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "vcpu_save_tests.rs"]
mod save_tests;
