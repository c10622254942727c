//! MMDS: the microVM metadata service.
//!
//! - [`data_store`]: the JSON document the host manages with `PUT`/`PATCH`/`GET /mmds`,
//!   bounded by `--mmds-size-limit`.
//! - [`token`]: V2 session tokens (OS randomness, bounded map, constant-time comparison).
//! - [`http`]: the guest-facing HTTP/1.x request parser and response writer.
//! - [`responder`]: Firecracker's MMDS rules (V1/V2, token minting, value rendering).
//! - [`stack`]: the minimal Ethernet/ARP/IPv4/TCP endpoint at 169.254.169.254 that a net
//!   device hands guest frames to, so MMDS traffic never reaches the TAP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod data_store;
pub mod http;
pub mod responder;
pub mod stack;
pub mod token;

pub use data_store::{MmdsStore, MmdsStoreError};
pub use responder::{GuestAccess, MmdsVersion};
pub use stack::{MmdsStack, SharedTokenAuthority, DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR};
pub use token::{TokenAuthority, TokenError};
