//! Accept loop and per-connection HTTP/1.1 serving (hyper, keep-alive, Title-Case headers).
//!
//! Each connection is its own task, so idle or slow clients never block others; a header
//! read timeout drops clients that never finish a request, and a connection cap bounds
//! memory.

use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::handler::{handle, ServerState};
use super::http10::KeepAlive10;

/// Most connections served at once; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// A client has this long to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serve until the runtime stops.
pub(crate) async fn serve(listener: StdUnixListener, state: Arc<ServerState>) {
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
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("API server failed to accept a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::warn!(
                "API server connection limit ({MAX_CONNECTIONS}) reached; closing a new connection"
            );
            continue;
        };
        let conn = builder.serve_connection(
            TokioIo::new(KeepAlive10(stream)),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("API connection closed with an error: {e}");
            }
            drop(slot);
        });
    }
}
