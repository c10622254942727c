//! virtio-net (virtio 1.2 §5.1): a guest NIC backed by a host TAP device.
//!
//! - [`tap`]: [`Tap`] opens `/dev/net/tun` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12-byte
//!   `virtio_net_hdr_v1`, non-blocking) and the [`TapIo`] trait the device talks to, so tests
//!   can stand a datagram socket in for the TAP.
//! - [`device`]: [`Net`], its features, config space (mac, status, mtu) and the rx/tx paths.
//! - [`event_handler`]: the `event_manager` subscription (tap, queues, rate-limiter timers).
//! - [`metrics`]: [`NetMetrics`], Firecracker's per-interface `net_<iface_id>` counters.
//! - [`device::persist`]: [`NetState`], what a snapshot keeps of the device (in-flight rx
//!   included).
//! - `tap_tests` (tests only): a real TAP in a fresh network namespace, frames both ways.
//!
//! Copies: tx frames go to the TAP with one `writev` from guest memory; with MRG_RXBUF and
//! enough rx buffers posted, rx frames come from the TAP with one `readv` into guest memory.
//! Only frames that must wait for buffers, and injected frames, pass through a device buffer.
//!
//! Frames keep their virtio-net header end to end: the TAP speaks the same 12-byte header as
//! a VERSION_1 driver, so checksum and segmentation offloads pass through untouched and only
//! `num_buffers` (mergeable rx buffers) is written by the device.
//!
//! Back-pressure, never loss: a frame read from the TAP waits in the device until the guest
//! posts enough rx buffers (the rx queue notification resumes it) and the TAP is not read
//! meanwhile; a tx chain the TAP cannot take yet (`EAGAIN`) goes back to the ring and is retried
//! when the TAP turns writable. Rate-limited frames wait for the limiter's timer.

pub mod device;
pub mod event_handler;
pub mod metrics;
pub mod tap;
#[cfg(test)]
mod tap_tests;

pub use device::persist::NetState;
pub use device::Net;
pub use metrics::NetMetrics;
pub use tap::{Tap, TapIo};

use crate::rate_limiter::{BucketUpdate, RateLimiter};

/// Queue size of the rx and tx queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_INDEX: usize = 0;
/// Index of the transmit queue.
pub const TX_INDEX: usize = 1;
/// Length of `virtio_net_hdr_v1` (with `num_buffers`), used on the TAP and in the rings.
pub const VNET_HDR_LEN: usize = 12;
/// Largest Ethernet frame with TSO/UFO (64 KiB IP packet plus link header).
pub const MAX_FRAME_LEN: usize = 65_550;
/// Largest buffer a frame with its header occupies.
pub const MAX_BUFFER_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Smallest MTU accepted (RFC 791 minimum), as Firecracker.
pub const MIN_MTU: u16 = 68;

/// virtio-net feature bits (virtio 1.2 §5.1.3).
pub mod features {
    /// The device handles packets with partial checksum (guest → host offload).
    pub const CSUM: u32 = 0;
    /// The driver handles packets with partial checksum (host → guest).
    pub const GUEST_CSUM: u32 = 1;
    /// `mtu` in config space is valid.
    pub const MTU: u32 = 3;
    /// `mac` in config space is valid.
    pub const MAC: u32 = 5;
    /// The driver can receive TSOv4.
    pub const GUEST_TSO4: u32 = 7;
    /// The driver can receive TSOv6.
    pub const GUEST_TSO6: u32 = 8;
    /// The driver can receive UFO.
    pub const GUEST_UFO: u32 = 10;
    /// The device can receive TSOv4.
    pub const HOST_TSO4: u32 = 11;
    /// The device can receive TSOv6.
    pub const HOST_TSO6: u32 = 12;
    /// The device can receive UFO.
    pub const HOST_UFO: u32 = 14;
    /// The driver can merge receive buffers.
    pub const MRG_RXBUF: u32 = 15;
}

/// Hook for frames the VMM answers itself (MMDS): offered every tx frame before the TAP.
///
/// Frames include the 12-byte virtio-net header. A frame the interceptor consumes never
/// reaches the TAP; frames it produces are delivered to the guest before TAP traffic.
pub trait FrameInterceptor: Send {
    /// Look at one guest frame; `true` when it was consumed.
    fn intercept(&mut self, frame: &[u8]) -> bool;
    /// Write the next frame to inject into `buf` (header included); its length, if any.
    fn next_rx_frame(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Whether [`FrameInterceptor::next_rx_frame`] has something to deliver.
    fn has_rx_frame(&self) -> bool;
}

impl std::fmt::Debug for dyn FrameInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameInterceptor")
    }
}

/// Everything needed to build a [`Net`].
#[derive(Debug)]
pub struct NetConfig {
    /// Interface id (names the metrics group `net_<iface_id>`).
    pub iface_id: String,
    /// Host TAP device name.
    pub tap_name: String,
    /// MAC address offered to the guest (VIRTIO_NET_F_MAC), if any.
    pub guest_mac: Option<[u8; 6]>,
    /// MTU offered to the guest (VIRTIO_NET_F_MTU), if any.
    pub mtu: Option<u16>,
    /// Throttling of frames to the guest.
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Throttling of frames from the guest.
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// A PATCH of one direction's rate limiter: each bucket kept, removed or replaced.
#[derive(Clone, Debug)]
pub struct RateLimiterUpdate {
    /// Bytes bucket.
    pub bandwidth: BucketUpdate,
    /// Operations (frames) bucket.
    pub ops: BucketUpdate,
}

impl RateLimiterUpdate {
    /// Leave both buckets as they are (the direction was omitted from the PATCH).
    #[must_use]
    pub const fn unchanged() -> Self {
        Self {
            bandwidth: BucketUpdate::None,
            ops: BucketUpdate::None,
        }
    }
}

/// Why a network device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP name is empty or longer than IFNAMSIZ - 1.
    #[error("Invalid TAP name {name:?}: must be 1 to 15 bytes")]
    InvalidTapName {
        /// Requested name.
        name: String,
    },
    /// `/dev/net/tun` cannot be opened or the TAP cannot be attached or configured.
    #[error("Open tap device failed: {name}: {source}")]
    TapOpen {
        /// TAP name.
        name: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The MTU is outside 68..=65535.
    #[error("Invalid MTU {mtu}: must be between 68 and 65535")]
    InvalidMtu {
        /// Requested MTU.
        mtu: u16,
    },
    /// An eventfd or timerfd cannot be created.
    #[error("Unable to create net device event fd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// `aa:bb:cc:dd:ee:ff` form of a MAC address (Firecracker's error messages use it).
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_open_error_names_tap_and_os_error() {
        let err = NetError::TapOpen {
            name: "tap0".to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            err.to_string(),
            "Open tap device failed: tap0: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn mac_formats_lowercase_hex() {
        assert_eq!(
            format_mac(&[0x06, 0, 0xAC, 0x10, 0, 0x2]),
            "06:00:ac:10:00:02"
        );
    }
}
