//! The squib VMM: everything between the API and KVM.
//!
//! - [`resources`]: the store every PUT/PATCH updates and `InstanceStart` builds from.
//! - [`controller`]: the one admission gate (pre-boot / post-boot) and the action dispatch,
//!   both read from squib-api's action table; `handlers` hold what each action does.
//! - [`event_sources`]: the VMM's own eventfds and timer on the event loop (API wake-ups,
//!   vCPU stops, guest reset, periodic metrics).
//! - [`builder`]: resources -> a running microVM, as named steps.
//! - [`cpu_config`]: the CPU template (static or custom) checked and applied to each vCPU.
//! - [`vstate`]: the KVM VM and the vCPU threads.
//! - [`device_manager`]: buses, slots and interrupt routes for the devices.
//! - [`vmm`]: the event loop on the main thread and the exit decision.
//! - [`net`], [`mmds_interceptor`]: network interfaces (TAP at PUT time, device at boot)
//!   and the MMDS endpoint each one can carry.
//! - [`config_file`]: `--config-file` and `--metadata` through the same dispatch as the API.
#![warn(missing_docs)]

pub mod builder;
pub mod config_file;
pub mod controller;
pub mod cpu_config;
pub mod device_manager;
pub mod device_metrics;
pub mod event_sources;
pub mod exit_code;
mod handlers;
pub mod host_file;
mod limiter_config;
pub mod mmds_interceptor;
pub mod net;
pub mod resources;
pub mod snapshot;
pub mod vmm;
pub mod vstate;

pub use squib_devices::legacy::boot_timer::TimestampUs;
