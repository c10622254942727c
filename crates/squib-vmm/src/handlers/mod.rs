//! What each admitted action does, grouped by concern.

mod config;
mod lifecycle;
mod mmds;
