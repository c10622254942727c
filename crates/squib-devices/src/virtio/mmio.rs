//! The modern (version 2) virtio-mmio transport (virtio 1.2 §4.2.2).
//!
//! One [`MmioTransport`] sits in each 4 KiB MMIO slot and turns the driver's register accesses
//! into queue setup, feature negotiation and device status changes. Registers below 0x100 are
//! 32-bit and accessed with 4-byte reads/writes only; other sizes are ignored (reads return 0).
//! Device config space starts at 0x100.
//!
//! Status rules: bits are only ever added (except writing 0, which resets); features are
//! writable between DRIVER and FEATURES_OK; FEATURES_OK sticks only if the driver accepted
//! VERSION_1 and nothing the device did not offer; queues are configurable between
//! FEATURES_OK and DRIVER_OK; DRIVER_OK activates the device, or sets DEVICE_NEEDS_RESET.
//! Invalid queue sizes and misaligned ring addresses are ignored. Everything a guest can
//! make this file log goes through a rate-limited call site (the vCPU thread must not be a
//! log pump), and virtio-queue's own `error!` paths are avoided (see [`super::queue`]).
//!
//! Queue notifications normally never reach here (an ioeventfd at [`reg::QUEUE_NOTIFY`] catches them); a
//! notify that does is forwarded to the queue's eventfd.
//!
//! Locking: the event loop holds the device lock for a whole queue drain, which may be many
//! synchronous disk requests. A vCPU must not wait behind that to read InterruptStatus in its
//! interrupt handler, so the transport serves its own registers from its own state: what the
//! device cannot change after construction (type, offered features, queue count and maximum
//! sizes, queue eventfds) is copied at [`MmioTransport::new`], and what only the driver changes
//! (status, selectors, driver features, each queue's ready bit) lives here; the interrupt
//! status and config generation are atomics in [`VirtioInterrupt`]. The device lock is taken
//! only to ask the device something: config space, queue setup writes, feature acceptance,
//! activation and reset. Lock order: transport, then device.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::queue::{self, Ring};
use super::{features, status, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
use crate::bus::BusDevice;

pub use persist::MmioTransportState;

/// "virt" in little endian.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// Modern virtio-mmio.
pub const MMIO_VERSION: u32 = 2;
/// Size of one virtio-mmio slot.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// Offset of device config space.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;

/// Register offsets (virtio 1.2 §4.2.2, table 4.1).
pub mod reg {
    /// MagicValue (read-only, "virt").
    pub const MAGIC: u64 = 0x00;
    /// Version (read-only, 2).
    pub const VERSION: u64 = 0x04;
    /// DeviceID (read-only).
    pub const DEVICE_ID: u64 = 0x08;
    /// VendorID (read-only).
    pub const VENDOR_ID: u64 = 0x0c;
    /// DeviceFeatures: the 32 feature bits selected by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x10;
    /// DeviceFeaturesSel.
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    /// DriverFeatures: the 32 feature bits selected by DriverFeaturesSel.
    pub const DRIVER_FEATURES: u64 = 0x20;
    /// DriverFeaturesSel.
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    /// QueueSel: the queue the Queue* registers address.
    pub const QUEUE_SEL: u64 = 0x30;
    /// QueueNumMax (read-only).
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    /// QueueNum: the queue size the driver chose.
    pub const QUEUE_NUM: u64 = 0x38;
    /// QueueReady.
    pub const QUEUE_READY: u64 = 0x44;
    /// QueueNotify: where the VMM places the queue ioeventfds (datamatch = queue index).
    pub const QUEUE_NOTIFY: u64 = 0x50;
    /// InterruptStatus (read-only).
    pub const INTERRUPT_STATUS: u64 = 0x60;
    /// InterruptACK.
    pub const INTERRUPT_ACK: u64 = 0x64;
    /// Status.
    pub const STATUS: u64 = 0x70;
    /// QueueDescLow.
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    /// QueueDescHigh.
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    /// QueueDriverLow (avail ring).
    pub const QUEUE_AVAIL_LOW: u64 = 0x90;
    /// QueueDriverHigh (avail ring).
    pub const QUEUE_AVAIL_HIGH: u64 = 0x94;
    /// QueueDeviceLow (used ring).
    pub const QUEUE_USED_LOW: u64 = 0xa0;
    /// QueueDeviceHigh (used ring).
    pub const QUEUE_USED_HIGH: u64 = 0xa4;
    /// ConfigGeneration (read-only).
    pub const CONFIG_GENERATION: u64 = 0xfc;
}

/// What the transport keeps of one queue, so reading its registers needs no device lock.
#[derive(Clone, Copy, Debug)]
struct QueueRegs {
    /// QueueNumMax (fixed by the device at construction).
    max_size: u16,
    /// QueueReady as the driver last set it (cleared by reset).
    ready: bool,
}

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    device_type: u32,
    avail_features: u64,
    queues: Vec<QueueRegs>,
    queue_evts: Vec<EventFd>,
    device_status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_status", &self.device_status)
            .field("queue_sel", &self.queue_sel)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A transport for `device`, with a fresh interrupt line.
    ///
    /// Reads what the device fixes at construction (type, offered features, queue sizes and
    /// eventfds) once, so that register reads never wait for the device lock.
    ///
    /// # Errors
    /// The interrupt eventfd cannot be created or a queue eventfd cannot be duplicated.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> std::io::Result<Self> {
        let (device_type, avail_features, queues, queue_evts) = {
            let dev = device.lock().unwrap_or_else(|e| e.into_inner());
            let queues = dev
                .queues()
                .iter()
                .map(|q| QueueRegs {
                    max_size: q.max_size(),
                    ready: q.ready(),
                })
                .collect();
            let evts = dev
                .queue_events()
                .iter()
                .map(EventFd::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            (dev.device_type(), dev.avail_features(), queues, evts)
        };
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(VirtioInterrupt::new()?),
            device_type,
            avail_features,
            queues,
            queue_evts,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
        })
    }

    /// The eventfd to register as irqfd for this slot's GSI.
    #[must_use]
    pub fn interrupt_evt(&self) -> &EventFd {
        self.interrupt.eventfd()
    }

    /// The shared interrupt line (status register + irqfd).
    #[must_use]
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device behind this transport.
    #[must_use]
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// Clones of the queue eventfds, in queue order, for ioeventfd registration at
    /// `base + reg::QUEUE_NOTIFY` with datamatch = index.
    ///
    /// # Errors
    /// An eventfd cannot be duplicated.
    pub fn queue_evts(&self) -> std::io::Result<Vec<EventFd>> {
        self.queue_evts.iter().map(EventFd::try_clone).collect()
    }

    /// The Status register.
    #[must_use]
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    fn locked_device(&self) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
        // A poisoned device keeps its state; the transport keeps answering.
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status_has(&self, set: u32, clear: u32) -> bool {
        self.device_status & set == set && self.device_status & clear == 0
    }

    /// A register of the transport's own: never takes the device lock (see the module docs).
    fn read_reg(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => 0,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.device_status,
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => self.write_queue_reg(offset, value),
            _ => squib_logger::log_rate_limited!(
                log::Level::Debug,
                "virtio-mmio: write to read-only or unknown register {offset:#x}"
            ),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.status_has(status::DRIVER, status::FEATURES_OK | status::FAILED) {
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            _ => {}
        }
    }

    fn write_queue_reg(&mut self, offset: u64, value: u32) {
        if !self.status_has(status::FEATURES_OK, status::DRIVER_OK | status::FAILED) {
            return;
        }
        let queue_sel = self.queue_sel;
        let Some(regs) = self.queues.get_mut(queue_sel as usize) else {
            return;
        };
        let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = dev.queues_mut().get_mut(queue_sel as usize) else {
            return;
        };
        // The `queue` helpers refuse what virtio-queue's setters would log an error for.
        let result = match offset {
            reg::QUEUE_NUM => queue::set_size(q, value),
            reg::QUEUE_READY => {
                q.set_ready(value == 1);
                regs.ready = q.ready();
                Ok(())
            }
            reg::QUEUE_DESC_LOW => queue::set_ring_half(q, Ring::Descriptors, false, value),
            reg::QUEUE_DESC_HIGH => queue::set_ring_half(q, Ring::Descriptors, true, value),
            reg::QUEUE_AVAIL_LOW => queue::set_ring_half(q, Ring::Available, false, value),
            reg::QUEUE_AVAIL_HIGH => queue::set_ring_half(q, Ring::Available, true, value),
            reg::QUEUE_USED_LOW => queue::set_ring_half(q, Ring::Used, false, value),
            reg::QUEUE_USED_HIGH => queue::set_ring_half(q, Ring::Used, true, value),
            _ => Ok(()),
        };
        if let Err(e) = result {
            squib_logger::warn_rate_limited!("virtio-mmio: queue {queue_sel}: {e}, ignored");
        }
    }

    fn notify(&self, index: u32) {
        if let Some(evt) = self.queue_evts.get(index as usize) {
            if let Err(e) = evt.write(1) {
                squib_logger::warn_rate_limited!("virtio-mmio: cannot signal queue {index}: {e}");
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits (virtio 1.2 §2.1.2).
        if value & self.device_status != self.device_status {
            squib_logger::log_rate_limited!(
                log::Level::Debug,
                "virtio-mmio: status {value:#x} clears bits of {:#x}",
                self.device_status
            );
            return;
        }
        let added = value & !self.device_status;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            self.device_status = value & !status::FEATURES_OK;
            return;
        }
        self.device_status = value;
        if added & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 {
            self.activate();
        }
    }

    /// Accept the driver's features if they include VERSION_1 and only offered bits.
    fn features_acceptable(&mut self) -> bool {
        let offered = self.avail_features;
        let mut dev = self.locked_device();
        let ok = self.driver_features & !offered == 0
            && super::has_feature(self.driver_features, features::VERSION_1);
        if ok {
            dev.set_acked_features(self.driver_features);
        }
        ok
    }

    fn activate(&mut self) {
        let mut dev = self.locked_device();
        let event_idx = super::has_feature(dev.acked_features(), features::RING_EVENT_IDX);
        let mut valid = true;
        for (index, q) in dev.queues_mut().iter_mut().enumerate() {
            q.set_event_idx(event_idx);
            // Not `Queue::is_valid`, which logs an error of its own for each attempt.
            if let Err(e) = queue::check_layout(q, &self.mem) {
                squib_logger::warn_rate_limited!("virtio-mmio: queue {index}: {e}");
                valid = false;
            }
        }
        let result = if valid {
            dev.activate(self.mem.clone(), self.interrupt.clone())
                .map_err(|e| e.to_string())
        } else {
            Err("invalid queue".to_owned())
        };
        drop(dev);
        if let Err(e) = result {
            squib_logger::warn_rate_limited!("virtio-mmio: device activation failed: {e}");
            self.device_status |= status::DEVICE_NEEDS_RESET;
            if let Err(e) = self.interrupt.signal_config_change() {
                squib_logger::warn_rate_limited!("virtio-mmio: cannot signal needs-reset: {e}");
            }
        }
    }

    fn reset(&mut self) {
        self.locked_device().reset();
        for q in &mut self.queues {
            q.ready = false;
        }
        self.interrupt.reset();
        self.device_status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.locked_device()
                .read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() == 4 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            // Config writes after FEATURES_OK are allowed; before DRIVER they make no sense.
            if self.status_has(status::DRIVER, status::FAILED) {
                self.locked_device()
                    .write_config(offset - CONFIG_SPACE_OFFSET, data);
            }
            return;
        }
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset, u32::from_le_bytes(bytes));
        }
    }
}

pub mod persist;

#[cfg(test)]
mod tests;
