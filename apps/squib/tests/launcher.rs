//! squib as a drop-in `firecracker` for launchers (issue 5, "Done when").
//!
//! Each test starts the binary the way a launcher does: Firecracker's flags, a log file and
//! a metrics file it reads afterwards, the exit status it acts on. The tests that need no
//! guest (`cli`, `signals`, `logs_and_metrics`) run in seconds. The guest boots (`boot`: one
//! API boot whose `GET /vm/config` then boots a second squib from `--config-file`;
//! `fctools`: a third-party launcher crate spawning squib as its firecracker binary) share
//! `common::boot_slot`, so at most two guests run at once in this binary.

mod common;

#[path = "launcher/boot.rs"]
mod boot;
#[path = "launcher/cli.rs"]
mod cli;
#[path = "launcher/fctools.rs"]
mod fctools;
#[path = "launcher/logs_and_metrics.rs"]
mod logs_and_metrics;
#[path = "launcher/signals.rs"]
mod signals;
#[path = "launcher/support.rs"]
mod support;
