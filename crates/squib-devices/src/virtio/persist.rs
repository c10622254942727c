//! Snapshot state shared by every virtio device: queues, negotiated features, activation.
//!
//! The VMM rebuilds each device from its configuration exactly as at boot, then applies the
//! saved runtime state to it. Everything here is plain serde data, and restoring refuses a
//! state that does not fit the device it is applied to (queue count or maximum size,
//! features the device does not offer, queues `virtio-queue` would not accept or that lie
//! outside guest memory) with a [`RestoreError`] naming what is wrong: a snapshot file is
//! input like any other and may be corrupt or hostile.
//!
//! Restoring an activated device activates it as the guest's DRIVER_OK would, without touching
//! the restored ring positions, then kicks its queues once so buffers the guest published
//! before the snapshot are served.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::queue::{self, QueueError};
use super::{features, has_feature, ActivateError, GuestMemoryMmap, VirtioDevice};
use super::{VirtioInterrupt, VirtioState};
use crate::virtio::balloon::BalloonState;
use crate::virtio::block::BlockState;
use crate::virtio::net::NetState;
use crate::virtio::rng::EntropyState;
use crate::virtio::vsock::VsockState;

/// One split virtqueue as the driver configured it and as far as the device got: the serde
/// mirror of `virtio_queue::QueueState`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtqueueState {
    /// QueueNumMax: fixed by the device.
    pub max_size: u16,
    /// QueueNum: the size the driver chose.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available (driver) ring.
    pub avail_ring: u64,
    /// Guest address of the used (device) ring.
    pub used_ring: u64,
    /// The next available-ring entry the device will read.
    pub next_avail: u16,
    /// The next used-ring entry the device will write (`used.idx`).
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX was negotiated for this queue.
    pub event_idx_enabled: bool,
}

impl From<QueueState> for VirtqueueState {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl From<VirtqueueState> for QueueState {
    fn from(q: VirtqueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<&Queue> for VirtqueueState {
    fn from(queue: &Queue) -> Self {
        queue.state().into()
    }
}

impl TryFrom<VirtqueueState> for Queue {
    type Error = virtio_queue::Error;

    /// Through `Queue::try_from(QueueState)`, which refuses a maximum size or size that is
    /// not a power of two (or a size above the maximum) and misaligned ring addresses.
    fn try_from(state: VirtqueueState) -> Result<Self, Self::Error> {
        Queue::try_from(QueueState::from(state))
    }
}

/// The part of a snapshot every virtio device has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VirtioDeviceState {
    /// Feature bits the driver accepted.
    pub acked_features: u64,
    /// Every queue, in the device's queue order.
    pub queues: Vec<VirtqueueState>,
    /// Whether the device was activated (DRIVER_OK succeeded).
    pub activated: bool,
}

/// Writes a device's `VirtioDevice::save_state` and `restore_state` (inside its
/// `impl VirtioDevice`) from its own `save` and `restore`: its state travels as
/// `DeviceState::<variant>`, and any other kind is refused.
macro_rules! persist_as_device_state {
    ($variant:ident, $kind:literal) => {
        fn save_state(&self) -> $crate::virtio::persist::DeviceState {
            $crate::virtio::persist::DeviceState::$variant(self.save())
        }

        fn restore_state(
            &mut self,
            state: &$crate::virtio::persist::DeviceState,
            mem: &$crate::virtio::GuestMemoryMmap,
            interrupt: &std::sync::Arc<$crate::virtio::VirtioInterrupt>,
        ) -> Result<(), $crate::virtio::persist::RestoreError> {
            match state {
                $crate::virtio::persist::DeviceState::$variant(state) => {
                    self.restore(state, mem, interrupt)
                }
                other => Err($crate::virtio::persist::RestoreError::WrongDevice {
                    expected: $kind,
                    found: other.kind(),
                }),
            }
        }
    };
}
pub(crate) use persist_as_device_state;

/// The saved state of one virtio device, by kind: what the virtio-mmio transport keeps of
/// the device behind it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// virtio-block.
    Block(BlockState),
    /// virtio-net.
    Net(NetState),
    /// virtio-vsock.
    Vsock(VsockState),
    /// virtio-rng.
    Entropy(EntropyState),
    /// virtio-balloon.
    Balloon(BalloonState),
}

impl DeviceState {
    /// The kind's name, for error messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Block(_) => "block",
            Self::Net(_) => "net",
            Self::Vsock(_) => "vsock",
            Self::Entropy(_) => "entropy",
            Self::Balloon(_) => "balloon",
        }
    }

    /// The virtio part every kind has.
    #[must_use]
    pub fn virtio(&self) -> &VirtioDeviceState {
        match self {
            Self::Block(s) => &s.virtio,
            Self::Net(s) => &s.virtio,
            Self::Vsock(s) => &s.virtio,
            Self::Entropy(s) => &s.virtio,
            Self::Balloon(s) => &s.virtio,
        }
    }
}

/// Why saved state cannot be applied to a device.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state is of another device kind.
    #[error("the snapshot holds {found} device state for a {expected} device")]
    WrongDevice {
        /// The device's kind.
        expected: &'static str,
        /// The state's kind.
        found: &'static str,
    },
    /// The device to restore into is already running.
    #[error("the device is already activated; state applies to a freshly built device")]
    NotFresh,
    /// The number of queues differs from the device's.
    #[error("the device has {expected} queues, the snapshot {found}")]
    QueueCount {
        /// The device's queue count.
        expected: usize,
        /// The snapshot's.
        found: usize,
    },
    /// A queue's maximum size differs from the device's.
    #[error("queue {index}: the device's maximum size is {expected}, the snapshot's {found}")]
    QueueMaxSize {
        /// Queue index.
        index: usize,
        /// The device's QueueNumMax.
        expected: u16,
        /// The snapshot's.
        found: u16,
    },
    /// `virtio-queue` refuses the queue (size, alignment).
    #[error("queue {index}: {source}")]
    InvalidQueue {
        /// Queue index.
        index: usize,
        /// What it refused.
        #[source]
        source: virtio_queue::Error,
    },
    /// An activated device's queue is not ready.
    #[error("queue {index} is not ready on an activated device")]
    QueueNotReady {
        /// Queue index.
        index: usize,
    },
    /// An activated device's queue lies outside guest memory.
    #[error("queue {index}: {source}")]
    QueueLayout {
        /// Queue index.
        index: usize,
        /// Which ring, where.
        #[source]
        source: QueueError,
    },
    /// A queue's EVENT_IDX setting contradicts the negotiated features.
    #[error("queue {index}: event index is {enabled}, the negotiated features say otherwise")]
    EventIdx {
        /// Queue index.
        index: usize,
        /// The snapshot's setting.
        enabled: bool,
    },
    /// The driver's accepted features include bits the device does not offer.
    #[error("acked features {acked:#x} include bits the device does not offer ({offered:#x})")]
    UnofferedFeatures {
        /// The snapshot's acked features.
        acked: u64,
        /// What the device offers.
        offered: u64,
    },
    /// Activation failed.
    #[error("cannot activate the device: {0}")]
    Activate(#[from] ActivateError),
    /// Kicking a queue or raising the interrupt failed.
    #[error("cannot signal the restored device: {0}")]
    Signal(#[source] std::io::Error),
    /// The transport's device status contradicts the device's state.
    #[error("device status {status:#x} does not fit the device's state (activated: {activated})")]
    DeviceStatus {
        /// The saved Status register.
        status: u32,
        /// Whether the saved device was activated.
        activated: bool,
    },
    /// The driver's feature bits in the transport do not match the device's acked bits.
    #[error("driver features {driver:#x} do not match the device's acked features {acked:#x}")]
    DriverFeatures {
        /// The transport's DriverFeatures.
        driver: u64,
        /// The device's acked features.
        acked: u64,
    },
    /// The interrupt status has bits virtio-mmio does not define.
    #[error("interrupt status {0:#x} has bits other than used-ring (1) and config-change (2)")]
    InterruptStatus(u32),
    /// A block device's disk is not the size the guest saw.
    #[error(
        "block {drive_id}: {} has {actual} sectors, the guest saw {saved} when the snapshot was taken",
        path.display()
    )]
    DiskSize {
        /// Drive id.
        drive_id: String,
        /// The backing file now.
        path: PathBuf,
        /// Capacity in sectors in the snapshot.
        saved: u64,
        /// Capacity in sectors now.
        actual: u64,
    },
    /// A device's identity differs from the configuration it is applied to.
    #[error("{device}: the snapshot's {what} is {saved}, the configuration's {configured}")]
    Identity {
        /// The device (`block rootfs`, `net eth0`, `vsock`).
        device: String,
        /// What differs.
        what: &'static str,
        /// The snapshot's value.
        saved: String,
        /// The configuration's value.
        configured: String,
    },
    /// Device-specific in-flight state is unusable.
    #[error("{device}: {reason}")]
    InFlight {
        /// The device (`net eth0`).
        device: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl VirtioState {
    /// The queues and features for a snapshot; `activated` is the device's.
    #[must_use]
    pub fn save(&self, activated: bool) -> VirtioDeviceState {
        VirtioDeviceState {
            acked_features: self.acked_features,
            queues: self.queues.iter().map(VirtqueueState::from).collect(),
            activated,
        }
    }

    /// Check `saved` against this device and guest memory and build its queues, without
    /// changing anything: what [`VirtioState::install`] then installs.
    ///
    /// For an activated device also what DRIVER_OK checks: every queue ready, its rings in
    /// `mem`, and EVENT_IDX as negotiated.
    ///
    /// # Errors
    /// [`RestoreError`] naming the first mismatch.
    pub fn check_restore(
        &self,
        saved: &VirtioDeviceState,
        mem: &GuestMemoryMmap,
    ) -> Result<Vec<Queue>, RestoreError> {
        if saved.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                expected: self.queues.len(),
                found: saved.queues.len(),
            });
        }
        if saved.acked_features & !self.avail_features != 0 {
            return Err(RestoreError::UnofferedFeatures {
                acked: saved.acked_features,
                offered: self.avail_features,
            });
        }
        let event_idx = has_feature(saved.acked_features, features::RING_EVENT_IDX);
        let mut queues = Vec::with_capacity(saved.queues.len());
        for (index, (state, current)) in saved.queues.iter().zip(&self.queues).enumerate() {
            if state.max_size != current.max_size() {
                return Err(RestoreError::QueueMaxSize {
                    index,
                    expected: current.max_size(),
                    found: state.max_size,
                });
            }
            let queue = Queue::try_from(*state)
                .map_err(|source| RestoreError::InvalidQueue { index, source })?;
            if saved.activated {
                if !queue.ready() {
                    return Err(RestoreError::QueueNotReady { index });
                }
                queue::check_layout(&queue, mem)
                    .map_err(|source| RestoreError::QueueLayout { index, source })?;
                if state.event_idx_enabled != event_idx {
                    return Err(RestoreError::EventIdx {
                        index,
                        enabled: state.event_idx_enabled,
                    });
                }
            }
            queues.push(queue);
        }
        Ok(queues)
    }

    /// Install the queues [`VirtioState::check_restore`] built from `saved`, and its
    /// features; the queue eventfds stay the device's own.
    pub fn install(&mut self, queues: Vec<Queue>, saved: &VirtioDeviceState) {
        self.queues = queues;
        self.acked_features = saved.acked_features;
    }

    /// Write the eventfds of the queues at `indices` once, so the device serves what the
    /// guest published before the snapshot (a drain over an empty ring costs nothing).
    /// Indices the device does not have are skipped.
    ///
    /// # Errors
    /// [`RestoreError::Signal`] when an eventfd cannot be written.
    pub fn kick_queues(&self, indices: &[usize]) -> Result<(), RestoreError> {
        for &index in indices {
            if let Some(evt) = self.queue_evts.get(index) {
                evt.write(1).map_err(RestoreError::Signal)?;
            }
        }
        Ok(())
    }
}

/// The common restore of a freshly built `device`: check `saved` against it, install queues
/// and features, and activate it with `mem` and `interrupt` if it was activated. `extra`
/// runs after the checks and before activation: the device's own checks and state, so that
/// nothing is changed when anything is refused.
///
/// # Errors
/// [`RestoreError`] from the checks, `extra` or activation.
pub fn restore_device<D, F>(
    device: &mut D,
    saved: &VirtioDeviceState,
    mem: &GuestMemoryMmap,
    interrupt: &Arc<VirtioInterrupt>,
    extra: F,
) -> Result<(), RestoreError>
where
    D: VirtioDevice + ?Sized,
    F: FnOnce(&mut D) -> Result<(), RestoreError>,
{
    if device.is_activated() {
        return Err(RestoreError::NotFresh);
    }
    let queues = device.state().check_restore(saved, mem)?;
    extra(device)?;
    device.state_mut().install(queues, saved);
    if saved.activated {
        device.activate(mem.clone(), interrupt.clone())?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
