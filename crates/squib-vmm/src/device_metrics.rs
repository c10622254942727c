//! Zeroed metric groups for every device key Firecracker always prints.
//!
//! Firecracker prints `block`, `net`, `vsock`, `balloon`, `entropy`, `pmem` and
//! `memory_hotplug` in every metrics line with all their fields, at zero when no such device
//! exists. squib's registry prints a key nobody registered as `{}`; registering a zeroed
//! group under each key at start-up gives launchers and dashboards the fields they look up.
//! Devices register their own groups at boot: `block_<id>` / `net_<id>` add into the
//! `block` / `net` aggregates, and a device registering the bare key (`entropy`) replaces
//! the zeroed group.

use std::sync::Arc;

use squib_devices::virtio::block::BlockMetrics;
use squib_devices::virtio::net::NetMetrics;
use squib_devices::virtio::rng::{self, EntropyMetrics};
use squib_logger::metrics::{
    register_group, BalloonDeviceMetrics, MemoryHotplugMetrics, PmemDeviceMetrics,
    VsockDeviceMetrics,
};

/// Register the zeroed groups (once, at start-up, before any device is built).
pub fn register_zeroed_device_groups() {
    register_group("balloon", Arc::new(BalloonDeviceMetrics::new()));
    register_group("block", Arc::new(BlockMetrics::default()));
    register_group("net", Arc::new(NetMetrics::default()));
    register_group("vsock", Arc::new(VsockDeviceMetrics::new()));
    register_group(rng::METRICS_GROUP, Arc::new(EntropyMetrics::default()));
    register_group("pmem", Arc::new(PmemDeviceMetrics::new()));
    register_group("memory_hotplug", Arc::new(MemoryHotplugMetrics::new()));
}
