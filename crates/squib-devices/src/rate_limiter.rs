//! Token-bucket rate limiter shared by I/O devices, with Firecracker's semantics.
//!
//! A [`RateLimiter`] holds up to two [`TokenBucket`]s: `bandwidth` (bytes) and `ops`
//! (requests). A bucket starts full, refills continuously at `size / refill_time` tokens per
//! millisecond and may carry a `one_time_burst`: extra tokens spent first and never refilled.
//! A bucket with `size == 0` or `refill_time == 0` is disabled (no limit).
//!
//! When a [`RateLimiter::consume`] fails, the limiter arms its timerfd for the time the missing
//! tokens need to refill and reports itself blocked until the event loop calls
//! [`RateLimiter::event_handler`] on that fd. A request larger than the whole bucket is let
//! through (the bucket is emptied) and the timer is armed for the over-consumed part, so a big
//! request throttles the ones after it instead of blocking forever.
//!
//! `size`, `one_time_burst` and `refill_time` are any u64 the API accepts, so the arithmetic
//! is integer, checked or saturating throughout (no floats, no unchecked `u128` products):
//! nothing here can panic, which with `panic = "abort"` would kill the VMM. Timers are
//! clamped to [1 ms, ~136 years].

use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

const NANOS_PER_MILLI: u128 = 1_000_000;
/// Shortest timer the limiter arms, so a nearly-refilled bucket does not spin the event loop.
const MIN_TIMER: Duration = Duration::from_millis(1);
/// Longest timer the limiter arms (~136 years): any `size`/`refill_time` pair from the API
/// gives a wait that fits a timerfd.
const MAX_TIMER: Duration = Duration::from_secs(u32::MAX as u64);

/// `ceil(tokens * refill_ns / size)` as a timer, clamped to [`MIN_TIMER`, `MAX_TIMER`].
///
/// With `tokens <= u64::MAX` and `refill_ns < 2^84` the product can exceed `u128`; it then
/// does only when the true wait is over 2^64 ns (584 years), so saturating to [`MAX_TIMER`]
/// is exact after the clamp.
fn refill_wait(tokens: u64, refill_ns: u128, size: u64) -> Duration {
    let ns = u128::from(tokens)
        .checked_mul(refill_ns)
        .map_or(u128::MAX, |p| p.div_ceil(u128::from(size.max(1))));
    u64::try_from(ns)
        .map_or(MAX_TIMER, Duration::from_nanos)
        .clamp(MIN_TIMER, MAX_TIMER)
}

/// Which bucket a consumption draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Bytes transferred (the `bandwidth` bucket).
    Bytes,
    /// Operations (the `ops` bucket).
    Ops,
}

/// Result of taking tokens from one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketReduction {
    /// Not enough tokens: nothing was taken.
    Failure,
    /// The tokens were taken.
    Success,
    /// More than the bucket size was asked: the bucket was emptied and the request let
    /// through; the value is the excess over what the bucket held, in tokens.
    OverConsumption(u64),
}

/// One token bucket (Firecracker `TokenBucket`).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    size: u64,
    one_time_burst: u64,
    refill_time_ms: u64,
    budget: u64,
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` when `size` or `refill_time_ms` is zero (disabled).
    #[must_use]
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Option<Self> {
        (size != 0 && refill_time_ms != 0).then(|| Self {
            size,
            one_time_burst,
            refill_time_ms,
            budget: size,
            last_update: Instant::now(),
        })
    }

    /// Bucket capacity.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Remaining one-time burst.
    #[must_use]
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// Milliseconds to refill the whole bucket.
    #[must_use]
    pub fn refill_time_ms(&self) -> u64 {
        self.refill_time_ms
    }

    /// Tokens available now (excluding the one-time burst), after refilling.
    pub fn budget(&mut self) -> u64 {
        self.refill();
        self.budget
    }

    fn refill_ns(&self) -> u128 {
        u128::from(self.refill_time_ms) * NANOS_PER_MILLI
    }

    /// Add the tokens earned since the last update; keep the sub-token remainder of time.
    fn refill(&mut self) {
        self.refill_at(Instant::now());
    }

    /// [`refill`](Self::refill) as of `now`. Integer arithmetic only, none of which can
    /// overflow or panic for any `size` and `refill_time` (both are any u64 from the API).
    fn refill_at(&mut self, now: Instant) {
        // Instants a process sees are less than 2^64 ns apart; clamping makes
        // `elapsed * size` (< 2^128) exact.
        let elapsed = u64::try_from(now.saturating_duration_since(self.last_update).as_nanos())
            .unwrap_or(u64::MAX);
        let size = u128::from(self.size);
        let tokens = u128::from(elapsed)
            .checked_mul(size)
            .map_or(u128::MAX, |p| p / self.refill_ns());
        if tokens == 0 {
            return;
        }
        if tokens >= size {
            self.budget = self.size;
            self.last_update = now;
            return;
        }
        // tokens < size fits in u64; the time the tokens cost is at most `elapsed` (so the
        // clock never moves past `now`; an overflowing product means exactly `elapsed`).
        let tokens = u64::try_from(tokens).unwrap_or(self.size);
        let spent_ns = u128::from(tokens)
            .checked_mul(self.refill_ns())
            .map_or(u128::from(elapsed), |p| p / size)
            .min(u128::from(elapsed));
        let spent = Duration::from_nanos(u64::try_from(spent_ns).unwrap_or(elapsed));
        self.last_update = self.last_update.checked_add(spent).unwrap_or(now);
        self.budget = self.size.min(self.budget.saturating_add(tokens));
    }

    /// Take `tokens`: the one-time burst first, then the refilling budget.
    pub fn reduce(&mut self, mut tokens: u64) -> BucketReduction {
        if self.one_time_burst > 0 {
            if self.one_time_burst >= tokens {
                self.one_time_burst -= tokens;
                return BucketReduction::Success;
            }
            tokens -= self.one_time_burst;
            self.one_time_burst = 0;
        }
        self.refill();
        if tokens > self.size {
            let excess = tokens.saturating_sub(self.budget);
            self.budget = 0;
            return BucketReduction::OverConsumption(excess);
        }
        if tokens > self.budget {
            return BucketReduction::Failure;
        }
        self.budget -= tokens;
        BucketReduction::Success
    }

    /// Give back `tokens` (up to the bucket size), e.g. when a request is put back.
    pub fn force_replenish(&mut self, tokens: u64) {
        self.budget = self.size.min(self.budget.saturating_add(tokens));
    }

    /// How long until `tokens` (≤ size) are available.
    fn time_until(&mut self, tokens: u64) -> Duration {
        self.refill();
        let missing = tokens.min(self.size).saturating_sub(self.budget);
        refill_wait(missing, self.refill_ns(), self.size)
    }

    /// How long the bucket needs to earn back `excess` over-consumed tokens.
    fn time_to_repay(&self, excess: u64) -> Duration {
        refill_wait(excess, self.refill_ns(), self.size)
    }
}

/// How [`RateLimiter::update_buckets`] changes one bucket (PATCH semantics).
#[derive(Clone, Debug)]
pub enum BucketUpdate {
    /// Leave the bucket as it is (field omitted).
    None,
    /// Remove the limit (`size` or `refill_time` is 0).
    Disabled,
    /// Replace the bucket.
    Update(TokenBucket),
}

impl BucketUpdate {
    /// The update a PATCH body `{size, refill_time, one_time_burst}` asks for.
    #[must_use]
    pub fn from_config(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Self {
        TokenBucket::new(size, one_time_burst, refill_time_ms).map_or(Self::Disabled, Self::Update)
    }
}

/// Bandwidth and ops buckets with the timer that wakes the device when tokens return.
#[derive(Debug)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    timer_active: bool,
}

impl RateLimiter {
    /// A limiter with the given buckets (`None` = unlimited).
    ///
    /// # Errors
    /// The timerfd cannot be created.
    pub fn new(bandwidth: Option<TokenBucket>, ops: Option<TokenBucket>) -> std::io::Result<Self> {
        let timer = TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self {
            bandwidth,
            ops,
            timer,
            timer_active: false,
        })
    }

    /// An unlimited limiter (both buckets disabled).
    ///
    /// # Errors
    /// The timerfd cannot be created.
    pub fn unlimited() -> std::io::Result<Self> {
        Self::new(None, None)
    }

    fn bucket(&mut self, kind: TokenType) -> Option<&mut TokenBucket> {
        match kind {
            TokenType::Bytes => self.bandwidth.as_mut(),
            TokenType::Ops => self.ops.as_mut(),
        }
    }

    fn arm(&mut self, after: Duration) -> bool {
        match self.timer.reset(after, None) {
            Ok(()) => {
                self.timer_active = true;
                true
            }
            // Without a timer nothing would wake the device: let the request through.
            Err(_) => false,
        }
    }

    /// Try to take `tokens` of `kind`. `false` means the caller must wait for the timer event.
    pub fn consume(&mut self, tokens: u64, kind: TokenType) -> bool {
        if self.timer_active {
            return false;
        }
        let Some(bucket) = self.bucket(kind) else {
            return true;
        };
        match bucket.reduce(tokens) {
            BucketReduction::Success => true,
            BucketReduction::Failure => {
                let wait = bucket.time_until(tokens);
                !self.arm(wait)
            }
            BucketReduction::OverConsumption(excess) => {
                let wait = bucket.time_to_repay(excess);
                self.arm(wait);
                true
            }
        }
    }

    /// Give `tokens` of `kind` back (a consumed request was not served after all).
    pub fn manual_replenish(&mut self, tokens: u64, kind: TokenType) {
        if let Some(bucket) = self.bucket(kind) {
            bucket.force_replenish(tokens);
        }
    }

    /// Whether the limiter waits for its timer.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.timer_active
    }

    /// Handle the timer firing: unblock. Call when the fd from [`AsRawFd`] is readable.
    ///
    /// # Errors
    /// Reading the timerfd failed.
    pub fn event_handler(&mut self) -> std::io::Result<()> {
        self.timer
            .wait()
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        self.timer_active = false;
        Ok(())
    }

    /// Apply a PATCH: each bucket is kept, removed or replaced. The timer fd stays the same.
    pub fn update_buckets(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        for (slot, update) in [(&mut self.bandwidth, bandwidth), (&mut self.ops, ops)] {
            match update {
                BucketUpdate::None => {}
                BucketUpdate::Disabled => *slot = None,
                BucketUpdate::Update(bucket) => *slot = Some(bucket),
            }
        }
    }

    /// The bandwidth bucket, if limited.
    #[must_use]
    pub fn bandwidth(&self) -> Option<&TokenBucket> {
        self.bandwidth.as_ref()
    }

    /// The ops bucket, if limited.
    #[must_use]
    pub fn ops(&self) -> Option<&TokenBucket> {
        self.ops.as_ref()
    }
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_size_or_refill_disables_bucket() {
        assert!(TokenBucket::new(0, 10, 100).is_none());
        assert!(TokenBucket::new(10, 10, 0).is_none());
        let mut rl = RateLimiter::new(TokenBucket::new(0, 0, 100), None).unwrap();
        assert!(rl.consume(u64::MAX, TokenType::Bytes));
        assert!(rl.consume(u64::MAX, TokenType::Ops));
    }

    #[test]
    fn bucket_starts_full_and_burst_is_spent_first() {
        let mut b = TokenBucket::new(100, 50, 1000).unwrap();
        assert_eq!(b.reduce(50), BucketReduction::Success);
        assert_eq!(b.one_time_burst(), 0);
        assert_eq!(b.budget(), 100);
        assert_eq!(b.reduce(100), BucketReduction::Success);
        assert_eq!(b.reduce(10), BucketReduction::Failure);
    }

    #[test]
    fn bucket_refills_at_size_per_refill_time() {
        let mut b = TokenBucket::new(1000, 0, 100).unwrap();
        assert_eq!(b.reduce(1000), BucketReduction::Success);
        std::thread::sleep(Duration::from_millis(50));
        let budget = b.budget();
        assert!((400..=1000).contains(&budget), "budget {budget}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.budget(), 1000);
    }

    #[test]
    fn oversize_request_passes_and_empties_bucket() {
        let mut b = TokenBucket::new(100, 0, 1000).unwrap();
        assert_eq!(b.reduce(300), BucketReduction::OverConsumption(200));
        assert_eq!(b.budget(), 0);
    }

    #[test]
    fn limiter_throttles_then_resumes_on_timer() {
        let mut rl = RateLimiter::new(None, TokenBucket::new(2, 0, 20)).unwrap();
        assert!(rl.consume(1, TokenType::Ops));
        assert!(rl.consume(1, TokenType::Ops));
        let start = Instant::now();
        assert!(!rl.consume(1, TokenType::Ops));
        assert!(rl.is_blocked());
        // Blocked: even the unlimited bucket waits for the timer.
        assert!(!rl.consume(1, TokenType::Bytes));
        rl.event_handler().unwrap(); // blocks until the timer fires
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert!(!rl.is_blocked());
        assert!(rl.consume(1, TokenType::Ops));
    }

    #[test]
    fn manual_replenish_returns_tokens() {
        let mut rl = RateLimiter::new(TokenBucket::new(10, 0, 1000), None).unwrap();
        assert!(rl.consume(10, TokenType::Bytes));
        rl.manual_replenish(10, TokenType::Bytes);
        assert!(rl.consume(10, TokenType::Bytes));
        assert!(!rl.is_blocked());
    }

    #[test]
    fn update_buckets_keeps_removes_or_replaces() {
        let mut rl =
            RateLimiter::new(TokenBucket::new(10, 0, 1000), TokenBucket::new(5, 0, 1000)).unwrap();
        let fd = rl.as_raw_fd();
        rl.update_buckets(BucketUpdate::from_config(0, 0, 0), BucketUpdate::None);
        assert!(rl.bandwidth().is_none());
        assert_eq!(rl.ops().map(TokenBucket::size), Some(5));
        rl.update_buckets(BucketUpdate::None, BucketUpdate::from_config(7, 1, 10));
        assert_eq!(rl.ops().map(TokenBucket::size), Some(7));
        assert_eq!(rl.as_raw_fd(), fd);
    }

    /// Any u64 can come from the API; none may panic the process (`panic = "abort"`).
    mod hostile_config {
        use proptest::prelude::*;

        use super::*;

        fn any_u64() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0u64),
                Just(1u64),
                Just(u64::MAX),
                Just(u64::MAX - 1),
                Just(u64::MAX / 2),
                any::<u64>(),
            ]
        }

        #[test]
        fn huge_sizes_and_refill_times_do_not_panic() {
            for (size, refill) in [(1, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 1)] {
                let mut rl = RateLimiter::new(
                    TokenBucket::new(size, u64::MAX, refill),
                    TokenBucket::new(size, 0, refill),
                )
                .unwrap();
                // Over-consumption (unless the bucket holds u64::MAX): the timer for the
                // excess would be ~1e35 seconds; it is capped, armed, and the limiter blocks.
                assert!(rl.consume(u64::MAX, TokenType::Ops));
                assert_eq!(rl.is_blocked(), size < u64::MAX);
                let mut rl = RateLimiter::new(TokenBucket::new(size, 0, refill), None).unwrap();
                // Drain, then ask for more than is left: the wait needs missing * refill_ns.
                let _ = rl.consume(size, TokenType::Bytes);
                let _ = rl.consume(size, TokenType::Bytes);
                let _ = rl.consume(u64::MAX, TokenType::Bytes);
                rl.manual_replenish(u64::MAX, TokenType::Bytes);
            }
        }

        #[test]
        fn refill_after_any_time_stays_within_the_bucket() {
            let mut b = TokenBucket::new(u64::MAX, 0, u64::MAX).unwrap();
            assert_eq!(b.reduce(u64::MAX), BucketReduction::Success);
            let start = b.last_update;
            for secs in [1, 3_600, 86_400 * 365, 86_400 * 365 * 500] {
                if let Some(now) = start.checked_add(Duration::from_secs(secs)) {
                    b.refill_at(now);
                    assert!(b.budget <= b.size());
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_config_and_requests_never_panic_or_overfill(
                size in any_u64(),
                burst in any_u64(),
                refill in any_u64(),
                requests in prop::collection::vec((any_u64(), any::<bool>()), 1..8),
                elapsed_ns in any_u64(),
            ) {
                let mut rl = RateLimiter::new(
                    TokenBucket::new(size, burst, refill),
                    TokenBucket::new(size, burst, refill),
                )
                .unwrap();
                for &(tokens, replenish) in &requests {
                    let _ = rl.consume(tokens, TokenType::Bytes);
                    let _ = rl.consume(tokens, TokenType::Ops);
                    if replenish {
                        rl.manual_replenish(tokens, TokenType::Bytes);
                    }
                    // Unblock without waiting for the timer: the next request runs the
                    // bucket arithmetic again instead of returning early.
                    rl.timer_active = false;
                }
                if let Some(b) = rl.bandwidth.as_mut() {
                    prop_assert!(b.budget <= b.size());
                    if let Some(now) =
                        b.last_update.checked_add(Duration::from_nanos(elapsed_ns))
                    {
                        b.refill_at(now);
                    }
                    prop_assert!(b.budget <= b.size());
                    prop_assert!(b.budget() <= b.size());
                }
            }
        }
    }
}
