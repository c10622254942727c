//! Restoring guest memory through userfaultfd, in Firecracker's protocol.
//!
//! The VMM creates empty guest memory, registers it with a userfaultfd and hands the
//! userfaultfd to a separate page-fault handler process over a Unix socket, together with a
//! JSON description of the regions ([`hand_off`]). From then on each first touch of a guest
//! page stops the toucher until the handler fills the page, typically from a snapshot's
//! memory file.
//!
//! - [`sys`]: the kernel's userfaultfd ABI (ioctl numbers, flags, structures).
//! - [`uffd`]: a userfaultfd: create, handshake, register, fill pages, read events.
//! - [`mapping`]: the JSON region description, with Firecracker's field names.
//! - [`vmm`]: the VMM side, [`hand_off`].
//! - [`receive`] and [`server`]: the handler side, receiving the hand-off and serving faults
//!   ([`PageServer`]); the `squib-uffd-handler` binary is a thin shell around them.
#![warn(missing_docs)]

pub mod error;
pub mod mapping;
pub mod receive;
mod removed;
pub mod server;
pub mod sys;
pub mod uffd;
pub mod vmm;

pub use error::{HandlerError, UffdError};
pub use mapping::GuestRegionUffdMapping;
pub use receive::{receive_handoff, Handoff, MAX_MESSAGE_BYTES};
pub use server::{FaultMode, PageServer, ServeStats};
pub use uffd::{Fill, Uffd, UffdEvent};
pub use vmm::{hand_off, UffdHandoff};
