//! MMDS: the microVM metadata service.
//!
//! - [`data_store`]: the JSON document the host manages with `PUT`/`PATCH`/`GET /mmds`,
//!   bounded by `--mmds-size-limit`.
//!
//! The guest-facing side (ARP, TCP and HTTP at 169.254.169.254, V2 tokens) builds on this
//! store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod data_store;
