//! The metric groups squib itself owns, with Firecracker's key and field names.
//!
//! Names and order follow Firecracker `src/vmm/src/logger/metrics.rs` byte for byte, because
//! launchers and dashboards look fields up by name. Device groups (`block`, `net`, `uart`...)
//! live in the device crates and plug in through [`super::register_group`].

use serde::Serialize;

use super::counter::{IncMetric, StoreMetric};

/// Declare a group struct whose fields are all metrics, with a `const fn new()` so the group
/// can sit in a `static`.
macro_rules! metric_group {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Serialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// The group with every metric at zero.
            #[must_use]
            pub const fn new() -> Self {
                Self { $($field: $ty::new(),)* }
            }
        }
    };
}

metric_group! {
    /// `api_server`: start-up times computed when the API server starts.
    ApiServerMetrics {
        /// Wall time from process (or jailer) start to the API socket, in µs.
        process_startup_time_us: StoreMetric,
        /// CPU time from process (or jailer) start to the API socket, in µs.
        process_startup_time_cpu_us: StoreMetric,
    }
}

metric_group! {
    /// `get_api_requests`: GETs per route.
    GetRequestsMetrics {
        /// `GET /`.
        instance_info_count: IncMetric,
        /// `GET /machine-config`.
        machine_cfg_count: IncMetric,
        /// `GET /mmds`.
        mmds_count: IncMetric,
        /// `GET /version`.
        vmm_version_count: IncMetric,
        /// `GET /hotplug/memory`.
        hotplug_memory_count: IncMetric,
    }
}

metric_group! {
    /// `put_api_requests`: PUTs and their failures per route.
    PutRequestsMetrics {
        /// `PUT /actions`.
        actions_count: IncMetric,
        /// Failed `PUT /actions`.
        actions_fails: IncMetric,
        /// `PUT /boot-source`.
        boot_source_count: IncMetric,
        /// Failed `PUT /boot-source`.
        boot_source_fails: IncMetric,
        /// `PUT /drives/{id}`.
        drive_count: IncMetric,
        /// Failed `PUT /drives/{id}`.
        drive_fails: IncMetric,
        /// `PUT /logger`.
        logger_count: IncMetric,
        /// Failed `PUT /logger`.
        logger_fails: IncMetric,
        /// `PUT /machine-config`.
        machine_cfg_count: IncMetric,
        /// Failed `PUT /machine-config`.
        machine_cfg_fails: IncMetric,
        /// `PUT /cpu-config`.
        cpu_cfg_count: IncMetric,
        /// Failed `PUT /cpu-config`.
        cpu_cfg_fails: IncMetric,
        /// `PUT /metrics`.
        metrics_count: IncMetric,
        /// Failed `PUT /metrics`.
        metrics_fails: IncMetric,
        /// `PUT /network-interfaces/{id}`.
        network_count: IncMetric,
        /// Failed `PUT /network-interfaces/{id}`.
        network_fails: IncMetric,
        /// `PUT /mmds` and `PUT /mmds/config`.
        mmds_count: IncMetric,
        /// Failed `PUT /mmds` and `PUT /mmds/config`.
        mmds_fails: IncMetric,
        /// `PUT /vsock`.
        vsock_count: IncMetric,
        /// Failed `PUT /vsock`.
        vsock_fails: IncMetric,
        /// `PUT /pmem/{id}`.
        pmem_count: IncMetric,
        /// Failed `PUT /pmem/{id}`.
        pmem_fails: IncMetric,
        /// `PUT /serial`.
        serial_count: IncMetric,
        /// Failed `PUT /serial`.
        serial_fails: IncMetric,
        /// `PUT /hotplug/memory`.
        hotplug_memory_count: IncMetric,
        /// Failed `PUT /hotplug/memory`.
        hotplug_memory_fails: IncMetric,
    }
}

metric_group! {
    /// `patch_api_requests`: PATCHes and their failures per route.
    PatchRequestsMetrics {
        /// `PATCH /drives/{id}`.
        drive_count: IncMetric,
        /// Failed `PATCH /drives/{id}`.
        drive_fails: IncMetric,
        /// `PATCH /network-interfaces/{id}`.
        network_count: IncMetric,
        /// Failed `PATCH /network-interfaces/{id}`.
        network_fails: IncMetric,
        /// `PATCH /machine-config`.
        machine_cfg_count: IncMetric,
        /// Failed `PATCH /machine-config`.
        machine_cfg_fails: IncMetric,
        /// `PATCH /mmds`.
        mmds_count: IncMetric,
        /// Failed `PATCH /mmds`.
        mmds_fails: IncMetric,
        /// `PATCH /hotplug/memory`.
        hotplug_memory_count: IncMetric,
        /// Failed `PATCH /hotplug/memory`.
        hotplug_memory_fails: IncMetric,
    }
}

metric_group! {
    /// `deprecated_api`: calls to deprecated endpoints or fields.
    DeprecatedApiMetrics {
        /// Deprecated HTTP API calls.
        deprecated_http_api_calls: IncMetric,
    }
}

metric_group! {
    /// `logger`: failures of the logger and the metrics writer.
    LoggerSystemMetrics {
        /// Metrics lines that could not be written.
        missed_metrics_count: IncMetric,
        /// Errors while building a metrics line.
        metrics_fails: IncMetric,
        /// Log lines that could not be written.
        missed_log_count: IncMetric,
    }
}

metric_group! {
    /// `mmds`: the guest-facing metadata service.
    MmdsMetrics {
        /// Frames rerouted to MMDS.
        rx_accepted: IncMetric,
        /// Errors while handling a frame.
        rx_accepted_err: IncMetric,
        /// Unusual events while handling frames.
        rx_accepted_unusual: IncMetric,
        /// Buffers that were not valid Ethernet frames.
        rx_bad_eth: IncMetric,
        /// GETs with an invalid token.
        rx_invalid_token: IncMetric,
        /// GETs without a token.
        rx_no_token: IncMetric,
        /// Successful receives.
        rx_count: IncMetric,
        /// Bytes sent.
        tx_bytes: IncMetric,
        /// Successful sends.
        tx_count: IncMetric,
        /// Send errors.
        tx_errors: IncMetric,
        /// Frames sent.
        tx_frames: IncMetric,
        /// TCP connections accepted.
        connections_created: IncMetric,
        /// TCP connections cleaned up.
        connections_destroyed: IncMetric,
    }
}

metric_group! {
    /// `latencies_us`: durations of snapshot and pause/resume operations, in µs.
    PerformanceMetrics {
        /// Full snapshot creation, API level.
        full_create_snapshot: StoreMetric,
        /// Diff snapshot creation, API level.
        diff_create_snapshot: StoreMetric,
        /// Snapshot load, API level.
        load_snapshot: StoreMetric,
        /// Pause, API level.
        pause_vm: StoreMetric,
        /// Resume, API level.
        resume_vm: StoreMetric,
        /// Full snapshot creation, VMM level.
        vmm_full_create_snapshot: StoreMetric,
        /// Diff snapshot creation, VMM level.
        vmm_diff_create_snapshot: StoreMetric,
        /// Snapshot load, VMM level.
        vmm_load_snapshot: StoreMetric,
        /// Pause, VMM level.
        vmm_pause_vm: StoreMetric,
        /// Resume, VMM level.
        vmm_resume_vm: StoreMetric,
    }
}

metric_group! {
    /// `seccomp`: seccomp filter faults.
    SeccompMetrics {
        /// Faults inside the seccomp filter.
        num_faults: StoreMetric,
    }
}

metric_group! {
    /// `signals`: handled signals. Deadly ones are gauges (0 or 1), as in Firecracker.
    SignalMetrics {
        /// SIGBUS handled.
        sigbus: StoreMetric,
        /// SIGSEGV handled.
        sigsegv: StoreMetric,
        /// SIGXFSZ handled.
        sigxfsz: StoreMetric,
        /// SIGXCPU handled.
        sigxcpu: StoreMetric,
        /// SIGPIPE handled (not deadly: a counter).
        sigpipe: IncMetric,
        /// SIGHUP handled.
        sighup: StoreMetric,
        /// SIGILL handled.
        sigill: StoreMetric,
    }
}

metric_group! {
    /// `vmm`: the monitor as a whole.
    VmmMetrics {
        /// Set when a panic happened.
        panic_count: StoreMetric,
    }
}

metric_group! {
    /// `interrupts`: interrupt delivery.
    InterruptMetrics {
        /// Interrupts triggered.
        triggers: IncMetric,
        /// Interrupt routing updates.
        config_updates: IncMetric,
    }
}

metric_group! {
    /// Minimum, maximum and sum of a latency, in µs (Firecracker's `LatencyAggregateMetrics`).
    LatencyAggregateMetrics {
        /// Smallest sample since start (0 = none yet).
        min_us: StoreMetric,
        /// Largest sample since start.
        max_us: StoreMetric,
        /// Sum of the samples since the previous line.
        sum_us: IncMetric,
    }
}

impl LatencyAggregateMetrics {
    /// Record one sample of `us` microseconds.
    pub fn record(&self, us: u64) {
        self.sum_us.add(us);
        let min = self.min_us.fetch();
        if min == 0 || us < min {
            self.min_us.store(us);
        }
        if us > self.max_us.fetch() {
            self.max_us.store(us);
        }
    }

    /// A guard that records the time until it is dropped.
    #[must_use]
    pub fn record_latency_metrics(&self) -> LatencyRecorder<'_> {
        LatencyRecorder {
            start_us: crate::time::monotonic_us(),
            metric: self,
        }
    }
}

/// Records the time from its creation to its drop into a [`LatencyAggregateMetrics`].
#[derive(Debug)]
pub struct LatencyRecorder<'a> {
    start_us: u64,
    metric: &'a LatencyAggregateMetrics,
}

impl Drop for LatencyRecorder<'_> {
    fn drop(&mut self) {
        self.metric
            .record(crate::time::monotonic_us().saturating_sub(self.start_us));
    }
}

metric_group! {
    /// `vcpu`: KVM exits handled by the vCPU threads.
    VcpuMetrics {
        /// `KVM_EXIT_IO` reads.
        exit_io_in: IncMetric,
        /// `KVM_EXIT_IO` writes.
        exit_io_out: IncMetric,
        /// `KVM_EXIT_MMIO` reads.
        exit_mmio_read: IncMetric,
        /// `KVM_EXIT_MMIO` writes.
        exit_mmio_write: IncMetric,
        /// Errors and unexpected exits.
        failures: IncMetric,
        /// Failed `KVM_KVMCLOCK_CTRL` calls.
        kvmclock_ctrl_fails: IncMetric,
        /// Handling time of IO reads.
        exit_io_in_agg: LatencyAggregateMetrics,
        /// Handling time of IO writes.
        exit_io_out_agg: LatencyAggregateMetrics,
        /// Handling time of MMIO reads.
        exit_mmio_read_agg: LatencyAggregateMetrics,
        /// Handling time of MMIO writes.
        exit_mmio_write_agg: LatencyAggregateMetrics,
    }
}

// Device groups Firecracker always prints, for devices squib does not build yet: registered
// zeroed (`register_group`) so a metrics line shows Firecracker's fields, not `{}`. A device
// that registers its own group under the same key replaces them.

metric_group! {
    /// `vsock` (Firecracker `devices/virtio/vsock/metrics.rs`).
    VsockDeviceMetrics {
        /// Activation failures.
        activate_fails: IncMetric,
        /// Config space failures.
        cfg_fails: IncMetric,
        /// RX queue event failures.
        rx_queue_event_fails: IncMetric,
        /// TX queue event failures.
        tx_queue_event_fails: IncMetric,
        /// Event queue event failures.
        ev_queue_event_fails: IncMetric,
        /// Muxer event failures.
        muxer_event_fails: IncMetric,
        /// Connection event failures.
        conn_event_fails: IncMetric,
        /// RX queue events.
        rx_queue_event_count: IncMetric,
        /// TX queue events.
        tx_queue_event_count: IncMetric,
        /// Bytes received.
        rx_bytes_count: IncMetric,
        /// Bytes sent.
        tx_bytes_count: IncMetric,
        /// Packets received.
        rx_packets_count: IncMetric,
        /// Packets sent.
        tx_packets_count: IncMetric,
        /// Connections added.
        conns_added: IncMetric,
        /// Connections killed.
        conns_killed: IncMetric,
        /// Connections removed.
        conns_removed: IncMetric,
        /// Kill queue resyncs.
        killq_resync: IncMetric,
        /// Flush failures.
        tx_flush_fails: IncMetric,
        /// Write failures.
        tx_write_fails: IncMetric,
        /// Read failures.
        rx_read_fails: IncMetric,
    }
}

metric_group! {
    /// `balloon` (Firecracker `devices/virtio/balloon/metrics.rs`).
    BalloonDeviceMetrics {
        /// Activation failures.
        activate_fails: IncMetric,
        /// Config space write failures.
        cfg_fails: IncMetric,
        /// Inflations.
        inflate_count: IncMetric,
        /// Statistics updates.
        stats_updates_count: IncMetric,
        /// Statistics update failures.
        stats_update_fails: IncMetric,
        /// Deflations.
        deflate_count: IncMetric,
        /// Event failures.
        event_fails: IncMetric,
        /// Free page reports.
        free_page_report_count: IncMetric,
        /// Memory freed by reporting.
        free_page_report_freed: IncMetric,
        /// Reporting failures.
        free_page_report_fails: IncMetric,
        /// Free page hints.
        free_page_hint_count: IncMetric,
        /// Memory freed by hinting.
        free_page_hint_freed: IncMetric,
        /// Hinting failures.
        free_page_hint_fails: IncMetric,
    }
}

metric_group! {
    /// `pmem` (Firecracker `devices/virtio/pmem/metrics.rs`).
    PmemDeviceMetrics {
        /// Activation failures.
        activate_fails: IncMetric,
        /// Config space failures.
        cfg_fails: IncMetric,
        /// Event failures.
        event_fails: IncMetric,
        /// Queue events.
        queue_event_count: IncMetric,
    }
}

metric_group! {
    /// `memory_hotplug` (Firecracker `devices/virtio/mem/metrics.rs`).
    MemoryHotplugMetrics {
        /// Activation failures.
        activate_fails: IncMetric,
        /// Queue event failures.
        queue_event_fails: IncMetric,
        /// Queue events.
        queue_event_count: IncMetric,
        /// Plug latency.
        plug_agg: LatencyAggregateMetrics,
        /// Plugs.
        plug_count: IncMetric,
        /// Plugged bytes.
        plug_bytes: IncMetric,
        /// Plug failures.
        plug_fails: IncMetric,
        /// Unplug latency.
        unplug_agg: LatencyAggregateMetrics,
        /// Unplugs.
        unplug_count: IncMetric,
        /// Unplugged bytes.
        unplug_bytes: IncMetric,
        /// Unplug failures.
        unplug_fails: IncMetric,
        /// Discard failures during unplugs.
        unplug_discard_fails: IncMetric,
        /// UnplugAll latency.
        unplug_all_agg: LatencyAggregateMetrics,
        /// UnplugAlls.
        unplug_all_count: IncMetric,
        /// UnplugAll failures.
        unplug_all_fails: IncMetric,
        /// State latency.
        state_agg: LatencyAggregateMetrics,
        /// States.
        state_count: IncMetric,
        /// State failures.
        state_fails: IncMetric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_aggregate_tracks_min_max_and_sum() {
        let m = LatencyAggregateMetrics::new();
        m.record(5);
        m.record(2);
        m.record(9);
        let json: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"min_us": 2, "max_us": 9, "sum_us": 16})
        );
        drop(m.record_latency_metrics());
        assert!(m.max_us.fetch() >= 9);
    }

    #[test]
    fn vcpu_group_serialises_firecracker_field_names() {
        let text = serde_json::to_string(&VcpuMetrics::new()).unwrap();
        for key in [
            "exit_io_in",
            "exit_io_out",
            "exit_mmio_read",
            "exit_mmio_write",
            "failures",
        ] {
            assert!(text.contains(&format!("\"{key}\":0")), "{key} in {text}");
        }
    }

    #[test]
    fn zeroed_device_groups_have_firecrackers_field_counts() {
        let count = |v: serde_json::Value| v.as_object().unwrap().len();
        assert_eq!(
            count(serde_json::to_value(VsockDeviceMetrics::new()).unwrap()),
            20
        );
        assert_eq!(
            count(serde_json::to_value(BalloonDeviceMetrics::new()).unwrap()),
            13
        );
        assert_eq!(
            count(serde_json::to_value(PmemDeviceMetrics::new()).unwrap()),
            4
        );
        let mem = serde_json::to_value(MemoryHotplugMetrics::new()).unwrap();
        assert_eq!(
            mem["plug_agg"],
            serde_json::json!({"min_us": 0, "max_us": 0, "sum_us": 0})
        );
        assert_eq!(count(mem), 18);
    }
}
