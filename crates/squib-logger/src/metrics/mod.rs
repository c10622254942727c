//! Firecracker-format metrics: counters, the process-wide [`METRICS`] and the NDJSON writer.
//!
//! [`METRICS`] holds the groups squib owns ([`groups`]); device crates own theirs (`uart`,
//! `i8042`, `block`, `block_<id>`, `net`, `net_<id>`, `vsock`, `balloon`, `entropy`...) and
//! plug them in with [`register_group`]. A line is one JSON object, keys in Firecracker's
//! order: `utc_timestamp_ms` first, then the groups as Firecracker's `FirecrackerMetrics`
//! declares them, each registered group in its slot (`block_<id>` groups, then the `block`
//! aggregate summed from them). Keys Firecracker always prints appear even if nothing
//! registered them, as `{}` until the owning crate registers its zeroed group under that key.
//! Unknown keys go at the end.
//!
//! Writing is explicit ([`write_metrics`]): the VMM calls it after boot, every
//! [`METRICS_PERIOD`], on `FlushMetrics` and on exit. No thread is spawned here.

mod aggregate;
pub mod counter;
pub mod groups;
mod registry;
mod writer;

use std::time::Duration;

use serde::Serialize;

pub use counter::{IncMetric, StoreMetric};
pub use groups::*;
pub use registry::{register_group, unregister_group, MetricGroup};
pub use writer::{init_metrics, write_metrics, MetricsError, MetricsWriter};

/// How often the event loop writes a metrics line (Firecracker's 60 s).
pub const METRICS_PERIOD: Duration = Duration::from_secs(60);

/// The metric groups squib itself owns; field names are the JSON keys.
#[derive(Debug, Default, Serialize)]
pub struct SquibMetrics {
    /// `api_server`.
    pub api_server: ApiServerMetrics,
    /// `deprecated_api`.
    pub deprecated_api: DeprecatedApiMetrics,
    /// `get_api_requests`.
    pub get_api_requests: GetRequestsMetrics,
    /// `latencies_us`.
    pub latencies_us: PerformanceMetrics,
    /// `logger`.
    pub logger: LoggerSystemMetrics,
    /// `mmds`.
    pub mmds: MmdsMetrics,
    /// `patch_api_requests`.
    pub patch_api_requests: PatchRequestsMetrics,
    /// `put_api_requests`.
    pub put_api_requests: PutRequestsMetrics,
    /// `seccomp`.
    pub seccomp: SeccompMetrics,
    /// `vcpu`.
    pub vcpu: VcpuMetrics,
    /// `vmm`.
    pub vmm: VmmMetrics,
    /// `signals`.
    pub signals: SignalMetrics,
    /// `interrupts`.
    pub interrupts: InterruptMetrics,
}

impl SquibMetrics {
    /// Every metric at zero.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            api_server: ApiServerMetrics::new(),
            deprecated_api: DeprecatedApiMetrics::new(),
            get_api_requests: GetRequestsMetrics::new(),
            latencies_us: PerformanceMetrics::new(),
            logger: LoggerSystemMetrics::new(),
            mmds: MmdsMetrics::new(),
            patch_api_requests: PatchRequestsMetrics::new(),
            put_api_requests: PutRequestsMetrics::new(),
            seccomp: SeccompMetrics::new(),
            vcpu: VcpuMetrics::new(),
            vmm: VmmMetrics::new(),
            signals: SignalMetrics::new(),
            interrupts: InterruptMetrics::new(),
        }
    }
}

/// The process-wide metrics every crate bumps.
pub static METRICS: SquibMetrics = SquibMetrics::new();
