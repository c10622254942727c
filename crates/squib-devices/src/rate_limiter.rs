//! Token-bucket rate limiter shared by I/O devices.
