//! Per-call-site rate limiting for log lines a guest can trigger.
//!
//! A misbehaving guest must not be able to flood the log (Firecracker
//! `src/vmm/src/logger/rate_limited.rs`). Each [`warn_rate_limited!`] / [`error_rate_limited!`]
//! call site owns a static [`RateLimit`]: at most [`LINES_PER_WINDOW`] lines per
//! [`WINDOW_MS`]; lines beyond that are counted, and the first line of a later window says
//! how many were suppressed. Lock-free, so it is usable on vCPU threads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Length of one rate-limiting window, in milliseconds.
pub const WINDOW_MS: u64 = 1_000;
/// Lines one call site may log per window.
pub const LINES_PER_WINDOW: u64 = 10;

/// The state of one call site.
#[derive(Debug, Default)]
pub struct RateLimit {
    window_start_ms: AtomicU64,
    logged: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limit that has logged nothing yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            window_start_ms: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now_ms`: `Some(n)` with the number of lines
    /// suppressed since the last logged one, or `None` if this line must be dropped.
    pub fn check(&self, now_ms: u64) -> Option<u64> {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let new_window =
            self.logged.load(Ordering::Relaxed) == 0 || now_ms.saturating_sub(start) >= WINDOW_MS;
        if new_window
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
        }
        if self.logged.fetch_add(1, Ordering::Relaxed) < LINES_PER_WINDOW {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// [`check`](Self::check) against the monotonic clock.
    pub fn check_now(&self) -> Option<u64> {
        self.check(crate::time::monotonic_us() / 1_000)
    }
}

/// Log at `$level` through a per-call-site [`RateLimit`] (used by the level macros).
#[macro_export]
macro_rules! log_rate_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::rate_limited::RateLimit = $crate::rate_limited::RateLimit::new();
        if $crate::__log::log_enabled!($level) {
            match LIMIT.check_now() {
                Some(0) => $crate::__log::log!($level, $($arg)+),
                Some(suppressed) => $crate::__log::log!(
                    $level,
                    "{} ({} similar messages suppressed)",
                    format_args!($($arg)+),
                    suppressed
                ),
                None => {}
            }
        }
    }};
}

/// `log::warn!` limited to [`LINES_PER_WINDOW`] lines per second for this call site.
#[macro_export]
macro_rules! warn_rate_limited {
    ($($arg:tt)+) => { $crate::log_rate_limited!($crate::__log::Level::Warn, $($arg)+) };
}

/// `log::error!` limited to [`LINES_PER_WINDOW`] lines per second for this call site.
#[macro_export]
macro_rules! error_rate_limited {
    ($($arg:tt)+) => { $crate::log_rate_limited!($crate::__log::Level::Error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_drops_and_counts() {
        let limit = RateLimit::new();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(limit.check(5_000), Some(0));
        }
        assert_eq!(limit.check(5_100), None);
        assert_eq!(limit.check(5_999), None);
        // A new window reports the two suppressed lines once.
        assert_eq!(limit.check(6_000), Some(2));
        assert_eq!(limit.check(6_001), Some(0));
    }

    #[test]
    fn first_call_at_time_zero_is_allowed() {
        let limit = RateLimit::new();
        assert_eq!(limit.check(0), Some(0));
    }

    #[test]
    fn macro_compiles_and_runs_without_a_logger() {
        for i in 0..20 {
            crate::warn_rate_limited!("guest wrote {i:#x}");
            crate::error_rate_limited!("guest failed {}", i);
        }
    }
}
