//! Where the guest's console bytes go, without ever blocking the vCPU that writes them.
//!
//! - [`RateLimitedOutput`]: Firecracker's serial `rate_limiter`, one token per byte; bytes
//!   past the budget are dropped and counted in `uart.rate_limiter_dropped_bytes`.
//! - [`StdoutPump`]: the output when no `serial_out_path` is set. Standard output may be a
//!   pipe whose reader stalls, and a blocking `write` there would stop the vCPU thread (and
//!   with it the guest). The vCPU only hands bytes to a bounded queue; the thread
//!   `serial_stdout` writes them out. When the queue is full the byte is dropped and counted
//!   in `uart.missed_write_count`, as the UART does for any output that cannot take more.

use std::io::{self, Write};
use std::sync::mpsc::{self, SyncSender, TrySendError};
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
    queue: SyncSender<u8>,
}

impl StdoutPump {
    /// Start the `serial_stdout` thread writing to `out` (standard output in squib).
    ///
    /// # Errors
    /// The OS error when the thread cannot be started.
    pub fn spawn(mut out: impl Write + Send + 'static) -> io::Result<Self> {
        let (queue, bytes) = mpsc::sync_channel::<u8>(STDOUT_QUEUE_BYTES);
        thread::Builder::new()
            .name("serial_stdout".to_owned())
            .spawn(move || {
                let mut chunk = Vec::with_capacity(4096);
                // Block for the first byte, then take whatever else is queued: one write per
                // burst of console output rather than one per byte.
                while let Ok(first) = bytes.recv() {
                    chunk.push(first);
                    chunk.extend(bytes.try_iter().take(4095));
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
        for &byte in buf {
            match self.queue.try_send(byte) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => UART_METRICS.missed_write_count.inc(),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(io::Error::from(io::ErrorKind::BrokenPipe))
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};
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
