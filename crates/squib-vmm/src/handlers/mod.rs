//! What each admitted action does, grouped by concern. Every handler is a `Vmm` method named
//! in squib-api's action table, taking the action's payload and returning an
//! `ActionResult`.

mod config;
mod devices;
mod lifecycle;
mod logger;
pub(crate) mod metrics;
mod mmds;
