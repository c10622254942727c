//! The squib VMM: resource store, event loop, builder and vCPU threads.
#![warn(missing_docs)]
