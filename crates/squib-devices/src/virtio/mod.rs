//! virtio-mmio transport and virtio devices (virtio 1.x, split virtqueues).
//!
//! - [`VirtioDevice`]: what a device offers the transport (type, queues, features, config
//!   space, activation). The transport owns register state; the device owns its queues.
//! - [`VirtioInterrupt`]: the device's irqfd plus the interrupt-status register it shares with
//!   the transport (used-ring vs config-change bits, virtio 1.2 §4.2.2).
//! - [`mmio`]: the modern (version 2) virtio-mmio register layout (virtio 1.2 §4.2).
//! - [`balloon`]: virtio-balloon (virtio 1.2 §5.5).
//! - [`block`]: virtio-block (virtio 1.2 §5.2).
//! - [`iovec`]: zero-copy `readv`/`writev` between host fds and guest memory.
//! - [`queue`]: guarded calls into `virtio-queue` for what the guest controls (sizes, ring
//!   addresses, heads), so its own `error!` lines are never triggered.
//! - [`persist`]: snapshot state every device shares (queues, features, activation), the
//!   [`persist::DeviceState`] of each kind and [`persist::RestoreError`].
//! - [`rng`]: virtio-rng, the entropy device (virtio 1.2 §5.4).
//! - [`vsock`]: virtio-vsock with Firecracker's Unix-socket multiplexer (virtio 1.2 §5.10).
//!
//! Lock order: transport, then device. The event loop locks only the device.

pub mod balloon;
pub mod block;
pub mod iovec;
pub mod mmio;
pub mod net;
pub mod persist;
pub mod queue;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory as every device sees it: the VMM's one guest memory type, whose dirty-page
/// bitmap records every byte a device writes into the guest (so Diff snapshots include it).
pub use squib_arch::memory::GuestMemoryMmap;

/// Device type ids (virtio 1.2 §5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Memory balloon.
    pub const BALLOON: u32 = 5;
    /// vsock.
    pub const VSOCK: u32 = 19;
}

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error the driver must reset to clear.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Transport feature bits shared by all devices.
pub mod features {
    /// Indirect descriptors (virtio 1.2 §2.7.5.3).
    pub const RING_INDIRECT_DESC: u32 = 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u32 = 29;
    /// Modern (non-legacy) device.
    pub const VERSION_1: u32 = 32;
}

/// Interrupt-status bit: a used ring was updated.
pub const INTERRUPT_VRING: u32 = 1;
/// Interrupt-status bit: the configuration space changed.
pub const INTERRUPT_CONFIG: u32 = 2;

/// The device's interrupt line: an irqfd and the interrupt-status register behind it.
#[derive(Debug)]
pub struct VirtioInterrupt {
    evt: EventFd,
    status: AtomicU32,
    config_generation: AtomicU32,
}

impl VirtioInterrupt {
    /// A new line with nothing pending.
    ///
    /// # Errors
    /// The eventfd cannot be created.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(EFD_NONBLOCK)?,
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
        })
    }

    /// Raise the interrupt for used-ring updates.
    ///
    /// # Errors
    /// Writing the eventfd failed.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.status.fetch_or(INTERRUPT_VRING, Ordering::SeqCst);
        self.trigger()
    }

    /// Bump the config generation and raise the config-change interrupt.
    ///
    /// # Errors
    /// Writing the eventfd failed.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.status.fetch_or(INTERRUPT_CONFIG, Ordering::SeqCst);
        self.trigger()
    }

    /// Write the irqfd, counted in Firecracker's `interrupts.triggers`.
    fn trigger(&self) -> std::io::Result<()> {
        squib_logger::metrics::METRICS.interrupts.triggers.inc();
        self.evt.write(1)
    }

    /// The InterruptStatus register.
    #[must_use]
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clear the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clear everything (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The ConfigGeneration register.
    #[must_use]
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Put back the InterruptStatus and ConfigGeneration registers of a snapshot (nothing is
    /// signalled). The status bits are added to those already pending: the restored device
    /// may have signalled already (a vsock transport reset, a kicked queue) and its bit must
    /// not be lost.
    pub fn restore(&self, status: u32, config_generation: u32) {
        self.status.fetch_or(status, Ordering::SeqCst);
        self.config_generation
            .store(config_generation, Ordering::SeqCst);
    }

    /// Write the irqfd again for the pending status bits, if any: after a restore, so an
    /// interrupt raised just before the snapshot is not lost (a spurious one is harmless:
    /// the driver reads InterruptStatus).
    ///
    /// # Errors
    /// Writing the eventfd failed.
    pub fn retrigger_pending(&self) -> std::io::Result<()> {
        if self.status() == 0 {
            return Ok(());
        }
        self.trigger()
    }

    /// The eventfd to register as irqfd.
    #[must_use]
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a queue the device cannot use.
    #[error("virtio queue {index} is not valid")]
    InvalidQueue {
        /// Queue index.
        index: usize,
    },
    /// The driver did not accept a feature the device requires.
    #[error("driver did not accept required features {missing:#x}")]
    MissingFeatures {
        /// Required bits the driver left out.
        missing: u64,
    },
    /// The device is already active.
    #[error("device is already activated")]
    AlreadyActive,
}

/// A virtio device as the transport sees it.
pub trait VirtioDevice: Send {
    /// Device type id (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// The device's queues, queue eventfds and feature bits.
    fn state(&self) -> &VirtioState;
    /// The same, mutable.
    fn state_mut(&mut self) -> &mut VirtioState;
    /// The device's queues (their sizes bounded by `Queue::max_size`).
    fn queues(&self) -> &[Queue] {
        &self.state().queues
    }
    /// The device's queues, for the transport to configure.
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.state_mut().queues
    }
    /// One eventfd per queue, written on a queue notification (registered as ioeventfds).
    fn queue_events(&self) -> &[EventFd] {
        &self.state().queue_evts
    }
    /// Feature bits the device offers.
    fn avail_features(&self) -> u64 {
        self.state().avail_features
    }
    /// Feature bits the driver accepted.
    fn acked_features(&self) -> u64 {
        self.state().acked_features
    }
    /// Store the driver's accepted features, masked to the offered ones.
    fn set_acked_features(&mut self, features: u64) {
        let state = self.state_mut();
        state.acked_features = features & state.avail_features;
    }
    /// Read device config space at `offset` (out-of-range bytes read as 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write device config space at `offset` (ignored where read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Start serving the configured queues.
    ///
    /// # Errors
    /// [`ActivateError`] when the configuration cannot be used.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError>;
    /// Whether [`VirtioDevice::activate`] succeeded since the last reset.
    fn is_activated(&self) -> bool;
    /// Return to the pre-activation state: stop serving, reset queues and features.
    fn reset(&mut self);
    /// Finish what the device has in flight (its used entries written) so that
    /// [`VirtioDevice::save_state`] sees a quiet device; called on the paused VM before any
    /// state is read. Devices that serve requests synchronously have nothing to do.
    fn prepare_save(&mut self) {}
    /// The device's runtime state for a snapshot (see [`persist`]).
    fn save_state(&self) -> persist::DeviceState;
    /// Apply `state` to this freshly built device (same configuration as when it was saved)
    /// and, if it was activated, activate it with `mem` and `interrupt` and kick its queues.
    ///
    /// # Errors
    /// [`persist::RestoreError`] when `state` is of another kind or does not fit the device;
    /// the device is then left as built.
    fn restore_state(
        &mut self,
        state: &persist::DeviceState,
        mem: &GuestMemoryMmap,
        interrupt: &Arc<VirtioInterrupt>,
    ) -> Result<(), persist::RestoreError>;
}

/// What every virtio device keeps for the transport: its queues, one notification eventfd
/// per queue, and the feature bits offered and accepted. Devices hold one and hand it out
/// through [`VirtioDevice::state`], so the trait's accessors are written once.
#[derive(Debug)]
pub struct VirtioState {
    /// The queues, in the device's queue order.
    pub queues: Vec<Queue>,
    /// One non-blocking eventfd per queue.
    pub queue_evts: Vec<EventFd>,
    /// Feature bits the device offers.
    pub avail_features: u64,
    /// Feature bits the driver accepted (a subset of `avail_features`).
    pub acked_features: u64,
}

impl VirtioState {
    /// `count` queues of at most `size` entries with their eventfds, offering `avail_features`.
    ///
    /// # Errors
    /// When an eventfd cannot be created or `size` is not a valid queue size.
    pub fn new(count: usize, size: u16, avail_features: u64) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(count);
        let mut queue_evts = Vec::with_capacity(count);
        for _ in 0..count {
            queues.push(
                <Queue as virtio_queue::QueueT>::new(size)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            );
            queue_evts.push(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?);
        }
        Ok(Self {
            queues,
            queue_evts,
            avail_features,
            acked_features: 0,
        })
    }
}

impl VirtioState {
    /// The checks every device makes on activation: not already active, every queue set up
    /// by the driver.
    ///
    /// # Errors
    /// [`ActivateError::AlreadyActive`] or [`ActivateError::InvalidQueue`] naming the first
    /// queue that is not ready.
    pub fn check_activation(&self, already_active: bool) -> Result<(), ActivateError> {
        use virtio_queue::QueueT;
        if already_active {
            return Err(ActivateError::AlreadyActive);
        }
        match self.queues.iter().position(|q| !q.ready()) {
            Some(index) => Err(ActivateError::InvalidQueue { index }),
            None => Ok(()),
        }
    }

    /// Device reset, the part every device shares: no accepted features, queues at their
    /// power-on state.
    pub fn reset(&mut self) {
        self.acked_features = 0;
        reset_queues(&mut self.queues);
    }
}

/// Whether feature `bit` is set in `features`.
#[must_use]
pub const fn has_feature(features: u64, bit: u32) -> bool {
    bit < 64 && features & (1 << bit) != 0
}

/// Copy the guest's read of `data.len()` bytes at `offset` out of a device's config space,
/// zero-filling what lies past its end. Returns `false` when `offset` is outside the space
/// (the device counts that as a config failure).
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) -> bool {
    data.fill(0);
    let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) else {
        return false;
    };
    let n = src.len().min(data.len());
    data[..n].copy_from_slice(&src[..n]);
    true
}

/// Reset every queue to its power-on state (size = max, not ready, addresses 0).
pub fn reset_queues(queues: &mut [Queue]) {
    use virtio_queue::QueueT;
    for q in queues {
        q.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_status_bits_set_and_ack() {
        let irq = VirtioInterrupt::new().unwrap();
        irq.signal_used_queue().unwrap();
        irq.signal_config_change().unwrap();
        assert_eq!(irq.status(), INTERRUPT_VRING | INTERRUPT_CONFIG);
        assert_eq!(irq.config_generation(), 1);
        assert_eq!(irq.eventfd().read().unwrap(), 2);
        irq.ack(INTERRUPT_VRING);
        assert_eq!(irq.status(), INTERRUPT_CONFIG);
        irq.reset();
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn restore_adds_saved_bits_to_pending_ones_and_sets_the_generation() {
        let irq = VirtioInterrupt::new().unwrap();
        irq.retrigger_pending().unwrap();
        assert!(
            irq.eventfd().read().is_err(),
            "nothing pending, nothing raised"
        );
        irq.signal_used_queue().unwrap();
        irq.restore(INTERRUPT_CONFIG, 7);
        assert_eq!(irq.status(), INTERRUPT_VRING | INTERRUPT_CONFIG);
        assert_eq!(irq.config_generation(), 7);
        irq.retrigger_pending().unwrap();
        assert_eq!(irq.eventfd().read().unwrap(), 2);
    }

    #[test]
    fn has_feature_checks_bit() {
        assert!(has_feature(1 << 32, features::VERSION_1));
        assert!(!has_feature(1 << 32, 29));
        assert!(!has_feature(u64::MAX, 64));
    }
}
