//! virtio-vsock (virtio 1.2 §5.10) with Firecracker's Unix-socket multiplexer.
//!
//! The guest talks to the host (CID 2) over stream sockets; the host side of every
//! connection is a Unix stream:
//! - **host-initiated**: a client connects to `uds_path` and writes `CONNECT <port>\n`; the
//!   guest gets `OP_REQUEST` from a local port allocated round-robin in [2³⁰, 2³¹); on the
//!   guest's `OP_RESPONSE` the client reads `OK <local_port>\n`, then raw bytes flow.
//! - **guest-initiated**: a guest connecting to CID 2 port `P` reaches the host listener at
//!   `<uds_path>_P`; no text header.
//!
//! Modules:
//! - [`packet`]: the 44-byte `virtio_vsock_hdr`, ops and flags, and descriptor-chain checks.
//! - [`connect`]: the `CONNECT <port>\n` line of host-initiated connections.
//! - [`connection`]: one connection's protocol state ([`ConnState`], plain data) and its host
//!   stream with the bounded buffer of guest bytes the host has not read yet.
//! - [`muxer`]: all connections, the listener, port allocation, the 2000 ms deadlines
//!   (one timerfd) and what the event loop watches.
//! - [`device`]: [`Vsock`], the virtio device (config space, queues, rx/tx/event paths);
//!   [`device::persist`]: [`VsockState`], what a snapshot keeps of it.
//! - [`event_handler`]: the `event_manager` subscription.
//! - [`metrics`]: [`VsockMetrics`], Firecracker's `vsock` group.
//!
//! Use from the VMM:
//! 1. `PUT /vsock`: [`Vsock::new`]`(guest_cid, uds_path)` binds the socket at once; its error
//!    text follows `Vsock config error: `. To replace a device, drop the old one first (that
//!    unlinks its socket), after removing it from the event manager if it was added.
//! 2. Boot: [`Vsock::register_metrics`] (`vsock` group), attach it to a virtio-mmio transport
//!    like any [`VirtioDevice`](crate::virtio::VirtioDevice) (its three queue eventfds become
//!    ioeventfds) and add it (`Arc<Mutex<Vsock>>`) to the event manager: `init` registers the
//!    queue eventfds, the listener and the deadline timer; connection streams follow by
//!    themselves. Activation comes from the transport; nothing else is needed.
//! 3. Snapshots: [`Vsock::save`] and [`Vsock::restore`] (or through the transport); the
//!    restore sends the guest a transport reset itself (connections are not saved).
//!
//! Flow control is credit based both ways (§5.10.6.3): data goes to the guest only within
//! the credit the guest advertised, and the guest may send at most [`CONN_BUF_ALLOC`] bytes the
//! host has not read; what the host socket cannot take yet waits in a per-connection buffer
//! of that size (a guest overrunning its credit gets `RST`). No path buffers without bound
//! and none drops stream bytes. Every event does a bounded amount of work and re-arms itself
//! (queue eventfd self-kick, level-triggered sockets) for the rest.

pub mod connect;
pub mod connection;
pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod muxer;
pub mod packet;

pub use connection::{ConnPhase, ConnState};
pub use device::persist::VsockState;
pub use device::Vsock;
pub use metrics::VsockMetrics;

/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive (device → driver) queue.
pub const RX_INDEX: usize = 0;
/// Index of the transmit (driver → device) queue.
pub const TX_INDEX: usize = 1;
/// Index of the event queue.
pub const EVQ_INDEX: usize = 2;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_F_IN_ORDER` (virtio 1.2 §6): buffers are used in the order they were made available.
pub const VIRTIO_F_IN_ORDER: u32 = 35;
/// Most connections at once (Firecracker's `MAX_CONNECTIONS`).
pub const MAX_CONNECTIONS: usize = 1023;
/// The receive buffer each connection advertises to the guest (`buf_alloc`).
pub const CONN_BUF_ALLOC: u32 = 64 * 1024;
/// A `CREDIT_UPDATE` goes out once the guest's view of our free space drops below this.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 4 * 1024;
/// Largest data payload of one packet, either way.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// How long a host-initiated request waits for the guest's answer, and a host-closed
/// connection for the guest's `RST`, before it is killed.
pub const CONN_TIMEOUT_MS: u64 = 2000;
/// First local port of host-initiated connections (2³⁰); they are allocated round-robin below 2³¹.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Packets (chains) one queue event serves before it re-kicks itself.
pub const PACKET_BUDGET: usize = 64;

/// Why a vsock device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// `uds_path` cannot be bound (it exists, or its directory does not).
    #[error(
        "Cannot create backend for vsock device: Error binding to the host-side Unix socket: {0}"
    )]
    Bind(#[source] std::io::Error),
    /// The listener cannot be made non-blocking.
    #[error("Cannot create backend for vsock device: Error setting the host-side Unix socket non-blocking: {0}")]
    NonBlocking(#[source] std::io::Error),
    /// An eventfd or the timerfd cannot be created.
    #[error("Cannot create backend for vsock device: Error creating an event fd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn bind_error_reads_as_firecracker() {
        let err = VsockError::Bind(std::io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert_eq!(
            err.to_string(),
            "Cannot create backend for vsock device: Error binding to the host-side Unix \
             socket: Address already in use (os error 98)"
        );
    }
}
