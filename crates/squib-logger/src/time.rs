//! Clocks for logs and metrics: UTC wall time, the monotonic clock and process CPU time.
//!
//! Firecracker stamps log lines with `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` and metrics lines with
//! `utc_timestamp_ms`; `--start-time-us` / `--start-time-cpu-us` are monotonic and
//! process-CPU microseconds. We read the clocks with `clock_gettime` and convert to a civil
//! date ourselves (days-from-civil inverse, proleptic Gregorian) to avoid a date crate.
//!
//! [`clock_us`] / the private `read_clock` are the process's only `clock_gettime` wrapper:
//! the boot timer (`squib-devices`) and everything else read time through this module.

/// Read `clock` as (seconds, nanoseconds); a failing clock reads as zero.
fn read_clock(clock: libc::clockid_t) -> (u64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime only
    // writes into it and has no other memory effects.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return (0, 0);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    (secs, nanos)
}

/// The time on `clock` in microseconds, saturating; a clock that cannot be read (Linux never
/// fails for `CLOCK_MONOTONIC`, `CLOCK_REALTIME` or `CLOCK_PROCESS_CPUTIME_ID`) reads as 0.
#[must_use]
pub fn clock_us(clock: libc::clockid_t) -> u64 {
    let (secs, nanos) = read_clock(clock);
    secs.saturating_mul(1_000_000)
        .saturating_add(u64::from(nanos / 1_000))
}

/// Microseconds on `CLOCK_MONOTONIC` (the clock of `--start-time-us`).
#[must_use]
pub fn monotonic_us() -> u64 {
    clock_us(libc::CLOCK_MONOTONIC)
}

/// Microseconds of CPU time used by this process (the clock of `--start-time-cpu-us`).
#[must_use]
pub fn process_cpu_us() -> u64 {
    clock_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Milliseconds since the Unix epoch (`utc_timestamp_ms` of a metrics line).
#[must_use]
pub fn utc_ms() -> u64 {
    let (secs, nanos) = read_clock(libc::CLOCK_REALTIME);
    secs.saturating_mul(1_000)
        .saturating_add(u64::from(nanos / 1_000_000))
}

/// The current UTC time as Firecracker's log timestamp `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
#[must_use]
pub fn log_timestamp() -> String {
    let (secs, nanos) = read_clock(libc::CLOCK_REALTIME);
    format_timestamp(secs, nanos)
}

/// Format `secs` since the epoch plus `nanos` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
#[must_use]
pub fn format_timestamp(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}",
        rem / 3_600,
        (rem % 3_600) / 60,
        rem % 60
    )
}

/// Convert days since 1970-01-01 into (year, month, day) of the proleptic Gregorian calendar.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year; eras are 400 years.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Wall-clock (monotonic) and CPU time at one instant, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessTimestamp {
    /// `CLOCK_MONOTONIC` microseconds.
    pub wall_us: u64,
    /// `CLOCK_PROCESS_CPUTIME_ID` microseconds.
    pub cpu_us: u64,
}

impl ProcessTimestamp {
    /// Read both clocks now.
    #[must_use]
    pub fn now() -> Self {
        Self {
            wall_us: monotonic_us(),
            cpu_us: process_cpu_us(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_formats_as_1970() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000000000");
    }

    #[test]
    fn known_dates_format_correctly() {
        // 2000-02-29T12:34:56 (a leap day in a century leap year).
        assert_eq!(
            format_timestamp(951_827_696, 7),
            "2000-02-29T12:34:56.000000007"
        );
        // 2024-12-31T23:59:59.999999999
        assert_eq!(
            format_timestamp(1_735_689_599, 999_999_999),
            "2024-12-31T23:59:59.999999999"
        );
        // 2100-03-01T00:00:00 (2100 is not a leap year).
        assert_eq!(
            format_timestamp(4_107_542_400, 0),
            "2100-03-01T00:00:00.000000000"
        );
    }

    #[test]
    fn clocks_move_forward() {
        let a = ProcessTimestamp::now();
        let b = ProcessTimestamp::now();
        assert!(b.wall_us >= a.wall_us);
        assert!(a.wall_us > 0);
        assert!(utc_ms() > 1_600_000_000_000);
        assert_eq!(log_timestamp().len(), "1970-01-01T00:00:00.000000000".len());
    }

    #[test]
    fn clock_us_reads_zero_for_an_invalid_clock() {
        assert_eq!(clock_us(-1), 0);
        assert!(clock_us(libc::CLOCK_MONOTONIC) > 0);
    }
}
