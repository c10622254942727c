//! The boot timer: an MMIO page (`0xC000_0000`, 4 KiB) a guest init writes to say boot is done.
//!
//! The VMM takes a [`TimestampUs`] when `InstanceStart` begins building the microVM. When the
//! guest writes the single byte 123 at offset 0 (`devmem 0xc0000000 8 123`), the device logs
//! Firecracker's line at Info, byte for byte (benchmarks grep it):
//! `Guest-boot-time = {us:>6} us {ms} ms, {cpu_us:>6} CPU us {cpu_ms} CPU ms`,
//! and keeps the measurement for [`BootTimer::last_boot_time`]. The line goes through a
//! rate-limited call site: a guest repeating the write cannot flood the log. Other writes are
//! ignored and reads return zeros. There is no interrupt.
//!
//! Snapshots keep nothing of it: the guest cannot read anything back and it raises no
//! interrupt. A restored VM gets a new timer from the VMM.

use std::fmt;

use crate::bus::BusDevice;

/// The byte a guest writes at offset 0 when it has booted.
const MAGIC_BOOT_COMPLETE: u8 = 123;

/// A point in time: monotonic wall clock and this process's CPU time, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimestampUs {
    /// `CLOCK_MONOTONIC`, in microseconds.
    pub wall_us: u64,
    /// `CLOCK_PROCESS_CPUTIME_ID` (CPU time of all threads of the process), in microseconds.
    pub cpu_us: u64,
}

impl TimestampUs {
    /// Now (both clocks read through `squib_logger::time`, squib's one `clock_gettime`).
    #[must_use]
    pub fn now() -> Self {
        let now = squib_logger::time::ProcessTimestamp::now();
        Self {
            wall_us: now.wall_us,
            cpu_us: now.cpu_us,
        }
    }
}

/// Firecracker's boot-time log line.
struct BootTimeLine {
    wall_us: u64,
    cpu_us: u64,
}

impl fmt::Display for BootTimeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms",
            self.wall_us,
            self.wall_us / 1000,
            self.cpu_us,
            self.cpu_us / 1000
        )
    }
}

/// The boot-timer device.
#[derive(Debug)]
pub struct BootTimer {
    start: TimestampUs,
    last: Option<(u64, u64)>,
}

impl BootTimer {
    /// A timer measuring from `start`.
    #[must_use]
    pub fn new(start: TimestampUs) -> Self {
        Self { start, last: None }
    }

    /// The last boot time the guest reported: `(wall_us, cpu_us)` since `start`.
    #[must_use]
    pub fn last_boot_time(&self) -> Option<(u64, u64)> {
        self.last
    }

    fn record(&mut self, now: TimestampUs) {
        let line = BootTimeLine {
            wall_us: now.wall_us.saturating_sub(self.start.wall_us),
            cpu_us: now.cpu_us.saturating_sub(self.start.cpu_us),
        };
        // A guest may write the magic byte in a loop: rate limited like every guest-triggered
        // line (the first ones keep Firecracker's exact text).
        squib_logger::log_rate_limited!(log::Level::Info, "{line}");
        self.last = Some((line.wall_us, line.cpu_us));
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data == [MAGIC_BOOT_COMPLETE] {
            self.record(TimestampUs::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_matches_firecracker_format() {
        let line = BootTimeLine {
            wall_us: 1234,
            cpu_us: 56_789,
        };
        assert_eq!(
            line.to_string(),
            "Guest-boot-time =   1234 us 1 ms,  56789 CPU us 56 CPU ms"
        );
        let wide = BootTimeLine {
            wall_us: 12_345_678,
            cpu_us: 7,
        };
        assert_eq!(
            wide.to_string(),
            "Guest-boot-time = 12345678 us 12345 ms,      7 CPU us 0 CPU ms"
        );
    }

    #[test]
    fn timestamps_advance() {
        let a = TimestampUs::now();
        let mut spin = 0u64;
        for i in 0..200_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        std::hint::black_box(spin);
        let b = TimestampUs::now();
        assert!(a.wall_us > 0);
        assert!(b.wall_us >= a.wall_us);
        assert!(b.cpu_us >= a.cpu_us);
    }

    #[test]
    fn magic_byte_records_the_boot_time() {
        let start = TimestampUs::now();
        let mut timer = BootTimer::new(start);
        assert_eq!(timer.last_boot_time(), None);
        timer.write(0, &[MAGIC_BOOT_COMPLETE]);
        let (wall, _cpu) = timer.last_boot_time().expect("recorded");
        let elapsed = TimestampUs::now().wall_us - start.wall_us;
        assert!(wall <= elapsed);
    }

    #[test]
    fn record_measures_from_start() {
        let mut timer = BootTimer::new(TimestampUs {
            wall_us: 1_000,
            cpu_us: 500,
        });
        timer.record(TimestampUs {
            wall_us: 126_000,
            cpu_us: 8_500,
        });
        assert_eq!(timer.last_boot_time(), Some((125_000, 8_000)));
        // A clock before start (impossible in practice) saturates instead of panicking.
        timer.record(TimestampUs {
            wall_us: 10,
            cpu_us: 10,
        });
        assert_eq!(timer.last_boot_time(), Some((0, 0)));
    }

    #[test]
    fn other_values_offsets_and_sizes_are_ignored() {
        let mut timer = BootTimer::new(TimestampUs::now());
        timer.write(0, &[122]);
        timer.write(1, &[MAGIC_BOOT_COMPLETE]);
        timer.write(0, &[MAGIC_BOOT_COMPLETE, 0]);
        timer.write(0, &[MAGIC_BOOT_COMPLETE, 0, 0, 0]);
        timer.write(0, &[]);
        assert_eq!(timer.last_boot_time(), None);
    }

    #[test]
    fn repeated_boot_complete_writes_do_not_flood_the_log() {
        let mut timer = BootTimer::new(TimestampUs::now());
        let lines = crate::log_capture::lines_logged_by(|| {
            for _ in 0..100 {
                timer.write(0, &[MAGIC_BOOT_COMPLETE]);
            }
        });
        assert!(!lines.is_empty());
        assert!(
            lines.len() <= crate::log_capture::PER_SITE,
            "{} lines: {lines:?}",
            lines.len()
        );
        assert!(lines[0].contains("Guest-boot-time = "), "{lines:?}");
        assert!(timer.last_boot_time().is_some());
    }

    #[test]
    fn reads_return_zero() {
        let mut timer = BootTimer::new(TimestampUs::now());
        let mut data = [0xffu8; 8];
        timer.read(0, &mut data);
        assert_eq!(data, [0; 8]);
        timer.read(0xfff, &mut data[..1]);
        assert_eq!(data[0], 0);
    }
}
