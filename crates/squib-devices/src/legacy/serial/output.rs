//! Where the guest's console bytes go, without ever blocking the vCPU that writes them.
//!
//! - [`RateLimitedOutput`]: Firecracker's serial `rate_limiter`, one token per byte; bytes
//!   past the budget are dropped and counted in `uart.rate_limiter_dropped_bytes`.
//! - [`StdoutPump`]: the output when no `serial_out_path` is set. Standard output may be a
//!   pipe whose reader stalls, and a blocking `write` there would stop the vCPU thread (and
//!   with it the guest). The vCPU only hands bytes to a bounded queue; the thread
//!   `serial_stdout` writes them out. When the queue is full the byte is dropped and counted
//!   in `uart.missed_write_count`, as the UART does for any output that cannot take more.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use super::metrics::UART_METRICS;
use crate::rate_limiter::{BucketReduction, TokenBucket};

/// Console bytes that may wait for a slow standard output reader (a few screens of text).
pub const STDOUT_QUEUE_BYTES: usize = 64 * 1024;

/// An output that lets through at most what its token bucket allows (one token per byte).
#[derive(Debug)]
pub struct RateLimitedOutput<W> {
    inner: W,
    bucket: TokenBucket,
}

impl<W: Write> RateLimitedOutput<W> {
    /// `inner`, limited by `bucket`.
    pub fn new(inner: W, bucket: TokenBucket) -> Self {
        Self { inner, bucket }
    }
}

impl<W: Write> Write for RateLimitedOutput<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        match self.bucket.reduce(len) {
            BucketReduction::Success => self.inner.write(buf),
            BucketReduction::Failure | BucketReduction::OverConsumption(_) => {
                // Dropping is the limit's point: the guest is told the byte went out.
                UART_METRICS.rate_limiter_dropped_bytes.add(len);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Standard output behind a bounded queue drained by its own thread (see the module docs).
#[derive(Debug)]
pub struct StdoutPump {
    queue: Arc<ByteQueue>,
}

/// The bytes waiting for the `serial_stdout` thread. A plain byte buffer: a channel of `u8`
/// would spend a 16-byte slot per byte and touch all of them up front (1 MiB resident for
/// 64 KiB of console text).
#[derive(Debug, Default)]
struct ByteQueue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    bytes: VecDeque<u8>,
    /// The pump was dropped: the thread writes what is left and ends.
    closed: bool,
}

impl ByteQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until bytes are queued, then moves up to `chunk`'s capacity of them into
    /// `chunk`; `false` once the pump is closed and everything was written.
    fn take(&self, chunk: &mut Vec<u8>) -> bool {
        let mut state = self.lock();
        while state.bytes.is_empty() && !state.closed {
            state = self
                .not_empty
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let n = state.bytes.len().min(chunk.capacity());
        chunk.extend(state.bytes.drain(..n));
        n > 0
    }
}

impl StdoutPump {
    /// Start the `serial_stdout` thread writing to `out` (standard output in squib).
    ///
    /// # Errors
    /// The OS error when the thread cannot be started.
    pub fn spawn(mut out: impl Write + Send + 'static) -> io::Result<Self> {
        let queue = Arc::new(ByteQueue {
            state: Mutex::new(QueueState {
                bytes: VecDeque::with_capacity(STDOUT_QUEUE_BYTES),
                closed: false,
            }),
            not_empty: Condvar::new(),
        });
        let pending = Arc::clone(&queue);
        thread::Builder::new()
            .name("serial_stdout".to_owned())
            .spawn(move || {
                // One write per burst of console output rather than one per byte.
                let mut chunk = Vec::with_capacity(4096);
                while pending.take(&mut chunk) {
                    if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                        UART_METRICS.error_count.inc();
                    }
                    chunk.clear();
                }
            })?;
        Ok(Self { queue })
    }
}

impl Write for StdoutPump {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.queue.lock();
        let was_empty = state.bytes.is_empty();
        let room = STDOUT_QUEUE_BYTES.saturating_sub(state.bytes.len());
        let taken = buf.len().min(room);
        state.bytes.extend(&buf[..taken]);
        drop(state);
        if taken < buf.len() {
            UART_METRICS
                .missed_write_count
                .add((buf.len() - taken) as u64);
        }
        // The thread only waits on an empty queue.
        if was_empty && taken > 0 {
            self.queue.not_empty.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StdoutPump {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.not_empty.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_limit_lets_the_budget_through_and_counts_the_rest() {
        let bucket = TokenBucket::new(10, 0, 1_000_000).unwrap();
        let mut out = RateLimitedOutput::new(Vec::new(), bucket);
        let dropped = UART_METRICS.rate_limiter_dropped_bytes.count();
        for byte in b"0123456789abcdef" {
            assert_eq!(out.write(&[*byte]).unwrap(), 1);
        }
        assert_eq!(out.inner, b"0123456789");
        assert!(UART_METRICS.rate_limiter_dropped_bytes.count() >= dropped + 6);
    }

    /// Whether the reader reads again, and what it received.
    type ReaderState = Mutex<(bool, Vec<u8>)>;

    /// A writer that blocks until released, like a pipe whose reader stopped reading.
    #[derive(Clone, Default)]
    struct StalledReader(Arc<(ReaderState, Condvar)>);

    impl Write for StalledReader {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (state, released) = &*self.0;
            let mut state = state.lock().unwrap();
            while !state.0 {
                state = released.wait(state).unwrap();
            }
            state.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_never_blocks_the_writer_and_gets_what_fit_in_order() {
        let reader = StalledReader::default();
        let mut pump = StdoutPump::spawn(reader.clone()).unwrap();
        let missed = UART_METRICS.missed_write_count.count();
        let started = Instant::now();
        let total = 2 * STDOUT_QUEUE_BYTES;
        for i in 0..total {
            pump.write_all(&[(i % 251) as u8]).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "writes waited for the stalled reader"
        );
        assert!(UART_METRICS.missed_write_count.count() > missed);
        let (state, released) = &*reader.0;
        state.lock().unwrap().0 = true;
        released.notify_all();
        drop(pump);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = state.lock().unwrap().1.clone();
            // At least the queue's worth arrives, a prefix of what was written, in order.
            if got.len() >= STDOUT_QUEUE_BYTES {
                assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {} bytes arrived",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
