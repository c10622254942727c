//! Fuzz targets for every guest- and client-facing parser in squib.
//!
//! Each target is a `pub fn <target>(data: &[u8])` that decodes the bytes into a scenario
//! and runs it against the real code: the hostile guest's virtqueues and MMIO registers, the
//! MMDS guest's HTTP, the API client's requests, the kernel image. A target never panics on
//! any input: a panic (or a hang, or unbounded memory) is a bug in the code it drives.
//! Sizes decoded from the bytes are capped so one run stays small and fast.
//!
//! The same functions run three ways:
//! - `tests/corpus.rs`: every seed of `corpus/<target>/` and a fixed number of pseudo-random
//!   inputs per target, inside `cargo test` (the bounded CI run, about 8 s);
//! - `fuzz/` at the repository root: one libFuzzer target each (`cargo fuzz run <target>`);
//! - [`TARGETS`] by name, for tools.
//!
//! `FUZZING.md` at the repository root has the commands and the executions recorded.

#![warn(missing_docs)]

pub mod api;
pub mod balloon;
pub mod block;
pub mod guest;
pub mod input;
pub mod kernel;
pub mod mmds;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

pub use api::api_request;
pub use balloon::virtio_balloon;
pub use block::virtio_block;
pub use input::Input;
pub use kernel::kernel_loader;
pub use mmds::mmds_http;
pub use mmio::mmio_transport;
pub use net::virtio_net;
pub use rng::virtio_rng;
pub use vsock::virtio_vsock;

/// Most steps (queue operations, kicks, host actions) one device scenario runs.
pub const MAX_STEPS: usize = 64;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `corpus/` and `fuzz/fuzz_targets/`).
pub const TARGETS: [(&str, Target); 9] = [
    ("virtio_block", virtio_block),
    ("virtio_net", virtio_net),
    ("virtio_vsock", virtio_vsock),
    ("virtio_rng", virtio_rng),
    ("virtio_balloon", virtio_balloon),
    ("mmio_transport", mmio_transport),
    ("mmds_http", mmds_http),
    ("api_request", api_request),
    ("kernel_loader", kernel_loader),
];

/// Treat SIGPIPE as squib does (`apps/squib/src/signals.rs` counts it and goes on): a write
/// to a Unix stream whose peer is gone must fail with `EPIPE`, not kill the process. Rust
/// programs ignore SIGPIPE before `main`, but a libFuzzer binary's `main` is libFuzzer's.
pub(crate) fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SIG_IGN for SIGPIPE installs no handler code; it only changes what the
        // kernel does on a write to a closed pipe or socket (return EPIPE).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    });
}

/// Where scratch files go: `/dev/shm` when there is one (no disk I/O per run).
fn scratch_parent() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh temp file in [`scratch_parent`].
pub(crate) fn scratch_file() -> Option<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(scratch_parent())
        .or_else(|_| tempfile::NamedTempFile::new())
        .ok()
}

/// A fresh temp dir in [`scratch_parent`].
pub(crate) fn scratch_dir() -> Option<tempfile::TempDir> {
    tempfile::tempdir_in(scratch_parent())
        .or_else(|_| tempfile::tempdir())
        .ok()
}
