//! The I/O bus: maps port-I/O or MMIO address ranges to devices.
//!
//! A vCPU exit names an address; [`Bus::read`] / [`Bus::write`] find the device whose range
//! holds it (a `BTreeMap` range lookup, no allocation) and hand it the offset inside that
//! range. The bus is built before the vCPUs start and is read-only afterwards, so vCPU
//! threads share it through an `Arc` without a global lock; each device has its own `Mutex`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes on a bus range.
///
/// `offset` is relative to the start of the device's range. Implementations must accept any
/// `data` length (a guest chooses it) and never panic on odd sizes or offsets.
pub trait BusDevice: Send {
    /// Fill `data` with the device's answer to a read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Apply a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and the VMM (which may also need to reach it).
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a range could not be added to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("invalid bus range at {base:#x} with length {len:#x}")]
    InvalidRange {
        /// First address of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range overlaps one already on the bus.
    #[error("bus range at {base:#x} with length {len:#x} overlaps an existing device")]
    Overlap {
        /// First address of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
}

#[derive(Clone)]
struct BusEntry {
    len: u64,
    device: SharedBusDevice,
}

/// Address ranges mapped to devices.
#[derive(Clone, Default)]
pub struct Bus {
    devices: BTreeMap<u64, BusEntry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(base, e)| (*base, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `[base, base + len)` to `device`.
    ///
    /// # Errors
    /// [`BusError`] when the range is empty, wraps, or overlaps another device.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let overlaps_previous = self
            .devices
            .range(..=base)
            .next_back()
            .is_some_and(|(prev_base, e)| prev_base + e.len > base);
        let overlaps_next = self.devices.range(base..end).next().is_some();
        if overlaps_previous || overlaps_next {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, BusEntry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64) -> Option<(u64, &BusEntry)> {
        let (base, entry) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((offset, entry))
    }

    /// Read from the device at `addr`. Returns `false` when no device is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, entry)) = self.resolve(addr) else {
            return false;
        };
        // A poisoned lock means a device panicked earlier; keep serving with its state.
        let mut device = entry.device.lock().unwrap_or_else(|e| e.into_inner());
        device.read(offset, data);
        true
    }

    /// Write to the device at `addr`. Returns `false` when no device is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((offset, entry)) = self.resolve(addr) else {
            return false;
        };
        let mut device = entry.device.lock().unwrap_or_else(|e| e.into_inner());
        device.write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_inside_range() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fa, &mut buf));
        assert_eq!(buf, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert_eq!(dev.lock().unwrap().last_write, Some((7, vec![7])));
        assert!(!bus.read(0x400, &mut buf));
        assert!(!bus.write(0x3f7, &[1]));
    }

    #[test]
    fn rejects_overlapping_and_empty_ranges() {
        let mut bus = Bus::new();
        let dev = || -> SharedBusDevice { Arc::new(Mutex::new(Recorder::default())) };
        bus.insert(dev(), 0x1000, 0x1000).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0x1fff, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x800, 0x801),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x5000, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(dev(), 0x2000, 0x1000).unwrap();
        bus.insert(dev(), 0x800, 0x800).unwrap();
    }
}
