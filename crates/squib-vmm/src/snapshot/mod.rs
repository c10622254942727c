//! Snapshots: `PUT /snapshot/create` saves a paused microVM — its configuration, every vCPU,
//! the VM's in-kernel devices, every emulated device and guest memory — and
//! `PUT /snapshot/load` rebuilds it in a fresh process, where it resumes exactly where it
//! stopped. The file formats are `squib-snapshot`'s.

mod config;
mod create;
mod load;
mod memory;
mod state;
mod working_set;

pub use config::RestoreConfigError;
pub use state::{MemoryRegionState, MicrovmState};
pub(crate) use working_set::WorkingSetRecorder;
