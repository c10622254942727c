//! The VMM's own event sources on the event loop: the API wake eventfd, the stop eventfd that
//! vCPUs and the i8042 write, and the periodic metrics timer.
//!
//! The subscriber only records which source fired; the VMM acts on that after the event loop
//! returns, with `&mut` access to its state (no device callbacks reach into the VMM).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

/// Which control sources fired since the last [`ControlEvents::take`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The API thread queued a request.
    pub api: bool,
    /// A vCPU stopped (see its `StopNotifier`).
    pub vcpu_stop: bool,
    /// The guest reset itself through the i8042.
    pub reset: bool,
    /// The periodic metrics timer expired.
    pub metrics: bool,
}

const API: u32 = 0;
const VCPU_STOP: u32 = 1;
const RESET: u32 = 2;
const METRICS_TIMER: u32 = 3;

#[derive(Debug, Default)]
struct Flags {
    api: AtomicBool,
    vcpu_stop: AtomicBool,
    reset: AtomicBool,
    metrics: AtomicBool,
}

/// The event-loop subscriber for the VMM's control sources.
#[derive(Debug)]
pub struct ControlEvents {
    /// Written by the API thread after each queued request.
    pub api_wake: EventFd,
    /// Written by a vCPU that stops.
    pub vcpu_stop: Arc<EventFd>,
    /// Written by the i8042 when the guest resets.
    pub reset: EventFd,
    metrics_timer: TimerFd,
    flags: Arc<Flags>,
}

/// The VMM's handle to read what fired.
#[derive(Debug, Clone)]
pub struct ControlFlags(Arc<Flags>);

impl ControlFlags {
    /// What fired since the last call, clearing it.
    pub fn take(&self) -> Fired {
        Fired {
            api: self.0.api.swap(false, Ordering::AcqRel),
            vcpu_stop: self.0.vcpu_stop.swap(false, Ordering::AcqRel),
            reset: self.0.reset.swap(false, Ordering::AcqRel),
            metrics: self.0.metrics.swap(false, Ordering::AcqRel),
        }
    }
}

impl ControlEvents {
    /// Create the eventfds and the metrics timer (disarmed).
    ///
    /// # Errors
    /// The OS error when an eventfd or timerfd cannot be created.
    pub fn new() -> std::io::Result<(Self, ControlFlags)> {
        let flags = Arc::new(Flags::default());
        let events = Self {
            api_wake: EventFd::new(libc::EFD_NONBLOCK)?,
            vcpu_stop: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            reset: EventFd::new(libc::EFD_NONBLOCK)?,
            metrics_timer: TimerFd::new()
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?,
            flags: flags.clone(),
        };
        Ok((events, ControlFlags(flags)))
    }

    /// Arm the metrics timer to fire every `period`.
    ///
    /// # Errors
    /// The OS error from `timerfd_settime`.
    pub fn arm_metrics_timer(&mut self, period: Duration) -> std::io::Result<()> {
        self.metrics_timer
            .reset(period, Some(period))
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

impl MutEventSubscriber for ControlEvents {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        // Draining the counters keeps level-triggered epoll from firing again.
        let flag = match events.data() {
            API => {
                let _ = self.api_wake.read();
                &self.flags.api
            }
            VCPU_STOP => {
                let _ = self.vcpu_stop.read();
                &self.flags.vcpu_stop
            }
            RESET => {
                let _ = self.reset.read();
                &self.flags.reset
            }
            METRICS_TIMER => {
                let _ = self.metrics_timer.wait();
                &self.flags.metrics
            }
            other => {
                log::warn!("Unexpected control event {other}");
                return;
            }
        };
        flag.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let sources: [(&dyn AsRawFd, u32); 4] = [
            (&self.api_wake, API),
            (&*self.vcpu_stop, VCPU_STOP),
            (&self.reset, RESET),
            (&self.metrics_timer, METRICS_TIMER),
        ];
        for (fd, data) in sources {
            if let Err(e) = ops.add(Events::with_data_raw(fd.as_raw_fd(), data, EventSet::IN)) {
                log::error!("Failed to watch control event {data}: {e}");
            }
        }
    }
}
