//! Accept loop and per-connection HTTP/1.1 serving (hyper, keep-alive, Title-Case headers).
//!
//! Each connection is its own task, so idle or slow clients never block others. Every kind
//! of client state is bounded, so no API client can stall squib or exhaust its memory or
//! file descriptors:
//! - **At most [`MAX_CONNECTIONS`] connections** are open at once. A new connection past the
//!   cap takes the slot of the oldest *idle* connection (one with no request in progress:
//!   nothing read since its last response was written), which is closed, as nginx reuses
//!   idle keep-alive connections when it runs out. When every slot holds a request in
//!   progress, the newcomer gets Firecracker's `503 {"error": "Too many open connections"}`
//!   and is closed at once (one non-blocking write, no state kept).
//! - **Heads** must arrive within [`HEADER_READ_TIMEOUT`] (from the first byte of a request
//!   head), **bodies** within [`BODY_READ_TIMEOUT`] (`408`), and a response write that makes
//!   no progress for [`WRITE_TIMEOUT`] (a client that never reads) fails; each closes the
//!   connection. A client sending a byte a second is cut off after those limits, and only
//!   its own task waits.
//! - **`accept` failures** (out of file descriptors: `EMFILE`, `ENFILE`) back off
//!   exponentially from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`] instead of spinning
//!   on the pending connection, and log once per streak; out of descriptors, the oldest idle
//!   connection is also closed, so a fresh client gets in even when the process's limit is
//!   low. With the cap, the API holds at most `MAX_CONNECTIONS + 1` descriptors, so it cannot
//!   starve the VMM's own.

use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::handler::{handle, ServerState};
use super::http10::KeepAlive10;

/// Most connections open at once (Firecracker's `micro_http` serves 10).
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send a request's headers, from their first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client has this long to send a request's body, once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A response write may make no progress for this long (the client does not read).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// First back-off after a failed `accept` (e.g. out of file descriptors).
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest back-off after repeated `accept` failures.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a newcomer waits for an evicted idle connection to let go of its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// Firecracker's answer past its connection limit (`micro_http`), byte for byte in the body.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 \r\nServer: Firecracker API\r\n\
Connection: close\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n\
{\"error\": \"Too many open connections\"}";

/// One open connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes were read since the last response bytes were written: a request is in progress.
    busy: AtomicBool,
    /// Told to close because a newcomer needs its slot.
    evict: Notify,
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Connections(Mutex<VecDeque<Arc<Activity>>>);

impl Connections {
    /// Whether some connection has read a request whose response is not written yet.
    pub(crate) fn any_busy(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|a| a.busy.load(Ordering::Acquire))
    }

    fn add(&self, activity: Arc<Activity>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(activity);
    }

    fn remove(&self, activity: &Arc<Activity>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|a| !Arc::ptr_eq(a, activity));
    }

    /// Tell the oldest idle connection to close; `false` if every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = list.iter().position(|a| !a.busy.load(Ordering::Acquire)) else {
            return false;
        };
        if let Some(victim) = list.remove(index) {
            victim.evict.notify_one();
        }
        true
    }
}

/// A connection's stream: records whether a request is in progress and bounds writes that
/// make no progress.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.busy.store(true, Ordering::Release);
        }
        result
    }
}

impl<S> Tracked<S> {
    /// Bound a write that is not ready: an error once it stalled for [`WRITE_TIMEOUT`].
    fn stalled(&mut self, cx: &mut Context<'_>, ready: bool) -> Option<std::io::Error> {
        if ready {
            self.write_deadline = None;
            return None;
        }
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        deadline.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read the response",
            )
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.busy.store(false, Ordering::Release);
        }
        match self.stalled(cx, result.is_ready()) {
            Some(e) => Poll::Ready(Err(e)),
            None => result,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        match self.stalled(cx, result.is_ready()) {
            Some(e) => Poll::Ready(Err(e)),
            None => result,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve until the runtime stops.
pub(crate) async fn serve(
    listener: StdUnixListener,
    state: Arc<ServerState>,
    connections: Arc<Connections>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("Failed to register the API socket with the runtime: {e}");
            return;
        }
    };
    log::info!("API server started.");
    let router = axum::Router::new().fallback(handle).with_state(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .title_case_headers(true)
        .auto_date_header(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                if out_of_fds(&e) {
                    // Our own idle connections may be what fills the table: free one.
                    connections.evict_oldest_idle();
                }
                backoff.wait(&e).await;
                continue;
            }
        };
        let Some(slot) = take_slot(&slots, &connections).await else {
            refuse(&stream);
            continue;
        };
        let activity = Arc::new(Activity::default());
        connections.add(activity.clone());
        let io = Tracked {
            inner: KeepAlive10(stream),
            activity: activity.clone(),
            write_deadline: None,
        };
        let conn =
            builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
        let connections = connections.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = conn => if let Err(e) = result {
                    log::debug!("API connection closed with an error: {e}");
                },
                () = activity.evict.notified() => {
                    log::debug!("API connection closed: idle, and its slot was needed");
                }
            }
            connections.remove(&activity);
            drop(slot);
        });
    }
}

/// `accept` failed for want of a file descriptor (`EMFILE` process-wide, `ENFILE`
/// system-wide).
fn out_of_fds(error: &std::io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// A connection slot: a free one, or the slot of the oldest idle connection, which is told
/// to close; `None` when every open connection has a request in progress.
async fn take_slot(
    slots: &Arc<Semaphore>,
    connections: &Connections,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    if !connections.evict_oldest_idle() {
        return None;
    }
    tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Answer a connection past the limit and close it, keeping nothing.
fn refuse(stream: &UnixStream) {
    // Clients can trigger this as fast as they connect: rate-limited.
    squib_logger::warn_rate_limited!(
        "API server connection limit ({MAX_CONNECTIONS}) reached with every connection busy; \
         refusing a new connection"
    );
    // A fresh socket's send buffer takes the whole answer; a short write is fine to lose.
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
}

/// Exponential back-off for a failing `accept`, logging once per streak of failures.
#[derive(Debug, Default)]
struct AcceptBackoff {
    next: Option<Duration>,
    failures: u64,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        if self.failures > 0 {
            log::info!(
                "API server accepts connections again after {} failed attempts",
                self.failures
            );
        }
        *self = Self::default();
    }

    /// Count a failure and give the delay before the next attempt.
    fn next_delay(&mut self, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            log::warn!("API server failed to accept a connection: {error}; backing off");
        }
        self.failures += 1;
        let delay = self.next.unwrap_or(ACCEPT_BACKOFF_MIN);
        self.next = Some((delay * 2).min(ACCEPT_BACKOFF_MAX));
        delay
    }

    async fn wait(&mut self, error: &std::io::Error) {
        tokio::time::sleep(self.next_delay(error)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let delays: Vec<u128> = (0..10)
            .map(|_| backoff.next_delay(&e).as_millis())
            .collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000],
            "EMFILE must back off, not spin"
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(&e), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn eviction_picks_the_oldest_idle_connection() {
        let connections = Connections::default();
        let busy = Arc::new(Activity::default());
        busy.busy.store(true, Ordering::Release);
        let idle = Arc::new(Activity::default());
        connections.add(busy.clone());
        connections.add(idle.clone());
        assert!(connections.evict_oldest_idle());
        assert_eq!(connections.0.lock().unwrap().len(), 1);
        assert!(
            !connections.evict_oldest_idle(),
            "a busy connection is kept"
        );
        connections.remove(&busy);
        assert!(connections.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_refusal_is_firecrackers_503() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 \r\n"));
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"error": "Too many open connections"})
        );
    }
}
