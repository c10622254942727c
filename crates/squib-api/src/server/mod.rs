//! The API server: binds the Unix socket (mode 0600) and serves HTTP/1.1 on thread `fc_api`
//! with a current-thread tokio runtime.
//!
//! [`ApiServer::bind`] is synchronous so the binary can exit with Firecracker's message when
//! the socket path is taken; [`ApiServer::spawn`] starts the thread.
//!
//! No client can stall, crash or flood it: connections are capped at [`MAX_CONNECTIONS`]
//! (idle ones make room for newcomers, the rest get a 503), heads, bodies and response writes
//! are timed ([`HEADER_READ_TIMEOUT`], [`BODY_READ_TIMEOUT`], [`WRITE_TIMEOUT`]), `accept`
//! failures back off, and an action whose requester timed out or disconnected before the
//! VMM started it never runs (see `connection` and [`crate::channel`]).

mod connection;
mod handler;
mod http10;
mod response;

pub use connection::{BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, WRITE_TIMEOUT};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::channel::ApiSender;
use crate::mirror::StateMirror;

/// Firecracker's default `--http-api-max-payload-size`.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 51200;
/// Firecracker's default `--api-sock`.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";

/// Server settings from the command line.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// `--api-sock`.
    pub socket_path: PathBuf,
    /// `--http-api-max-payload-size`.
    pub max_payload_size: usize,
    /// `--mmds-size-limit` (bounds the body of `PUT`/`PATCH /mmds`).
    pub mmds_size_limit: usize,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_API_SOCK),
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            mmds_size_limit: DEFAULT_MAX_PAYLOAD_SIZE,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The socket path exists or cannot be bound.
    #[error("Failed to open the API socket at: {}. Check that it is not already used.", .path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error (`None` when the path already existed).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The socket could not be configured (permissions, non-blocking mode).
    #[error("Failed to configure the API socket at {}: {source}", .path.display())]
    Configure {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, API server.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    config: ApiServerConfig,
    connections: Arc<connection::Connections>,
}

/// Lets the process wait, before it exits, until the API thread has written the responses
/// it owes: a request that ends the process (a failed snapshot load) still gets its reply.
#[derive(Debug, Clone)]
pub struct ApiDrain(Arc<connection::Connections>);

impl ApiDrain {
    /// Wait until no connection has a request without a written response, at most
    /// `timeout`; `false` if some were still pending then.
    #[must_use]
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.0.any_busy() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }
}

impl ApiServer {
    /// Bind the socket, mode 0600. An existing path is refused (never unlinked).
    ///
    /// # Errors
    /// [`ApiServerError::Bind`] with Firecracker's message, or [`ApiServerError::Configure`].
    pub fn bind(config: ApiServerConfig) -> Result<Self, ApiServerError> {
        let path = config.socket_path.clone();
        if path.symlink_metadata().is_ok() {
            return Err(ApiServerError::Bind { path, source: None });
        }
        let listener = UnixListener::bind(&path).map_err(|e| ApiServerError::Bind {
            path: path.clone(),
            source: Some(e),
        })?;
        let configure = |source| ApiServerError::Configure {
            path: path.clone(),
            source,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(configure)?;
        listener.set_nonblocking(true).map_err(configure)?;
        Ok(Self {
            listener,
            config,
            connections: Arc::default(),
        })
    }

    /// The handle that waits for pending responses (see [`ApiDrain`]).
    #[must_use]
    pub fn drain(&self) -> ApiDrain {
        ApiDrain(self.connections.clone())
    }

    /// The socket path.
    #[must_use]
    pub fn socket_path(&self) -> &std::path::Path {
        &self.config.socket_path
    }

    /// Start serving on a new thread named `fc_api`.
    ///
    /// # Errors
    /// The thread could not be created.
    pub fn spawn(
        self,
        sender: ApiSender,
        mirror: Arc<StateMirror>,
    ) -> std::io::Result<JoinHandle<()>> {
        let state = Arc::new(handler::ServerState {
            sender: tokio::sync::Mutex::new(sender),
            mirror,
            max_payload_size: self.config.max_payload_size,
            mmds_size_limit: self.config.mmds_size_limit,
        });
        let listener = self.listener;
        let connections = self.connections;
        std::thread::Builder::new()
            .name("fc_api".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("Failed to start the API server runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(connection::serve(listener, state, connections));
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_refuses_existing_path_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let config = ApiServerConfig {
            socket_path: path.clone(),
            ..ApiServerConfig::default()
        };
        let server = ApiServer::bind(config.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = ApiServer::bind(config).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Failed to open the API socket at: {}. Check that it is not already used.",
                path.display()
            )
        );
        drop(server);
    }
}
