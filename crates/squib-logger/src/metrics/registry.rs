//! Metric groups owned by other crates, and the assembly of one metrics line.
//!
//! A device crate keeps its group in an `Arc` it bumps and registers it under Firecracker's
//! key: `uart`, `i8042` for single devices; `block_<drive id>`, `net_<iface id>` per device.
//! The aggregate (`block`, `net`) is computed here by summing the per-device deltas, like
//! Firecracker; registering a zeroed group under the aggregate key itself gives the aggregate
//! its full shape (and field order) even when there are no devices, else it prints `{}`.
//! [`render_line`] walks Firecracker's key order ([`SLOTS`]), so lines look like Firecracker's
//! whatever the registration order.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::aggregate::Node;
use super::SquibMetrics;

/// A metric group of another crate: any `Serialize + Send + Sync` value.
pub trait MetricGroup: Send + Sync {
    /// Append the group's JSON to `out` (this reports and resets its counters' deltas).
    ///
    /// # Errors
    /// The group failed to serialise.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;
}

impl<T: Serialize + Send + Sync> MetricGroup for T {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self)
    }
}

/// One position in Firecracker's key order.
enum Slot {
    /// A group of [`SquibMetrics`].
    Own(&'static str),
    /// Registered groups named `key` or `key_<id>`; `always` = print `key` (as `{}` if
    /// nothing is registered); `aggregate` = `key` also sums the `key_<id>` groups.
    Registered {
        key: &'static str,
        always: bool,
        aggregate: bool,
    },
}

/// Firecracker's key order (`FirecrackerMetrics` in `src/vmm/src/logger/metrics.rs`).
const SLOTS: &[Slot] = &[
    Slot::Own("api_server"),
    devices("balloon"),
    devices("block"),
    Slot::Own("deprecated_api"),
    Slot::Own("get_api_requests"),
    devices("i8042"),
    devices("uart"),
    Slot::Own("latencies_us"),
    Slot::Own("logger"),
    Slot::Own("mmds"),
    devices("net"),
    Slot::Own("patch_api_requests"),
    Slot::Own("put_api_requests"),
    Slot::Own("seccomp"),
    Slot::Own("vcpu"),
    Slot::Own("vmm"),
    Slot::Own("signals"),
    devices("vsock"),
    devices("entropy"),
    devices("pmem"),
    Slot::Registered {
        key: "vhost_user",
        always: false,
        aggregate: false,
    },
    Slot::Own("interrupts"),
    devices("memory_hotplug"),
];

/// A slot Firecracker always prints, aggregating its per-device groups.
const fn devices(key: &'static str) -> Slot {
    Slot::Registered {
        key,
        always: true,
        aggregate: true,
    }
}

type Entry = (String, Arc<dyn MetricGroup>);

/// Registered groups by key, in registration order.
#[derive(Default)]
pub(crate) struct Registry(Mutex<Vec<Entry>>);

impl Registry {
    /// An empty registry.
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add (or replace) the group printed under `key`.
    pub(crate) fn register(&self, key: String, group: Arc<dyn MetricGroup>) {
        let mut entries = self.entries();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = group,
            None => entries.push((key, group)),
        }
    }

    /// Remove the group under `key`; false if there was none.
    pub(crate) fn unregister(&self, key: &str) -> bool {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|(k, _)| k != key);
        entries.len() != before
    }
}

/// The process-wide registry behind [`register_group`].
pub(crate) static REGISTRY: Registry = Registry::new();

/// Add (or replace) the group printed under `key` in every metrics line.
pub fn register_group(key: impl Into<String>, group: Arc<dyn MetricGroup>) {
    REGISTRY.register(key.into(), group);
}

/// Stop printing the group under `key` (e.g. a removed device); false if none was.
pub fn unregister_group(key: &str) -> bool {
    REGISTRY.unregister(key)
}

fn in_slot(key: &str, slot: &str) -> bool {
    key == slot
        || key
            .strip_prefix(slot)
            .is_some_and(|rest| rest.starts_with('_'))
}

fn slot_key(slot: &Slot) -> &'static str {
    match slot {
        Slot::Own(key) | Slot::Registered { key, .. } => key,
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) -> Result<(), serde_json::Error> {
    out.push(b',');
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    Ok(())
}

fn write_own(own: &SquibMetrics, key: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match key {
        "api_server" => own.api_server.write_json(out),
        "deprecated_api" => own.deprecated_api.write_json(out),
        "get_api_requests" => own.get_api_requests.write_json(out),
        "latencies_us" => own.latencies_us.write_json(out),
        "logger" => own.logger.write_json(out),
        "mmds" => own.mmds.write_json(out),
        "patch_api_requests" => own.patch_api_requests.write_json(out),
        "put_api_requests" => own.put_api_requests.write_json(out),
        "seccomp" => own.seccomp.write_json(out),
        "vcpu" => own.vcpu.write_json(out),
        "vmm" => own.vmm.write_json(out),
        "signals" => own.signals.write_json(out),
        _ => own.interrupts.write_json(out),
    }
}

fn write_registered(
    entries: &[Entry],
    slot: &Slot,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let Slot::Registered {
        key,
        always,
        aggregate,
    } = slot
    else {
        return Ok(());
    };
    // Per-device groups (`block_<id>`) in registration order, then the aggregate (`block`):
    // the group registered under `key` itself (zero shape or shared counters) plus the sum of
    // the devices' deltas, as Firecracker's `flush_metrics` does.
    let mut total = match entries.iter().find(|(k, _)| k == key) {
        Some((_, group)) => Some(Node::parse(&group_json(group.as_ref())?)?),
        None => None,
    };
    for (k, group) in entries.iter().filter(|(k, _)| k != key && in_slot(k, key)) {
        let bytes = group_json(group.as_ref())?;
        push_key(out, k)?;
        out.extend_from_slice(&bytes);
        if *aggregate {
            let node = Node::parse(&bytes)?;
            match total.as_mut() {
                Some(sum) => sum.merge(key, &node),
                None => total = Some(node),
            }
        }
    }
    match total {
        Some(sum) => {
            push_key(out, key)?;
            serde_json::to_writer(&mut *out, &sum)?;
        }
        None if *always => {
            push_key(out, key)?;
            out.extend_from_slice(b"{}");
        }
        None => {}
    }
    Ok(())
}

fn group_json(group: &dyn MetricGroup) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = Vec::with_capacity(512);
    group.write_json(&mut bytes)?;
    Ok(bytes)
}

/// Build one metrics line (without the newline) at `utc_ms`.
///
/// # Errors
/// A group failed to serialise.
pub(crate) fn render_line(
    own: &SquibMetrics,
    registry: &Registry,
    utc_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let entries: Vec<Entry> = registry.entries().clone();
    let mut out = Vec::with_capacity(8192);
    out.extend_from_slice(format!("{{\"utc_timestamp_ms\":{utc_ms}").as_bytes());
    for slot in SLOTS {
        match slot {
            Slot::Own(key) => {
                push_key(&mut out, key)?;
                write_own(own, key, &mut out)?;
            }
            Slot::Registered { .. } => write_registered(&entries, slot, &mut out)?,
        }
    }
    let known = |k: &str| {
        SLOTS
            .iter()
            .any(|s| matches!(s, Slot::Registered { .. }) && in_slot(k, slot_key(s)))
    };
    for (k, group) in entries.iter().filter(|(k, _)| !known(k)) {
        push_key(&mut out, k)?;
        group.write_json(&mut out)?;
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
