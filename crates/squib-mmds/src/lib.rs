//! MMDS: the microVM metadata service.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
