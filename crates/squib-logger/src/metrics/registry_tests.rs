use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::super::{init_metrics, write_metrics, MetricsError, MetricsWriter, SquibMetrics};
use super::*;
use crate::metrics::IncMetric;

#[derive(Debug, Default, Serialize)]
struct DeviceMetrics {
    read_bytes: IncMetric,
    write_count: IncMetric,
}

const FIRECRACKER_KEYS: &[&str] = &[
    "utc_timestamp_ms",
    "api_server",
    "balloon",
    "block",
    "deprecated_api",
    "get_api_requests",
    "i8042",
    "uart",
    "latencies_us",
    "logger",
    "mmds",
    "net",
    "patch_api_requests",
    "put_api_requests",
    "seccomp",
    "vcpu",
    "vmm",
    "signals",
    "vsock",
    "entropy",
    "pmem",
    "interrupts",
    "memory_hotplug",
];

fn keys_in_order(line: &[u8]) -> Vec<String> {
    // serde_json::Value sorts keys, so find each key's position in the raw text instead.
    let text = std::str::from_utf8(line).unwrap();
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut keys: Vec<(usize, String)> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn line_has_firecracker_keys_in_order() {
    let reg = Registry::new();
    let own = SquibMetrics::new();
    let line = render_line(&own, &reg, 1_700_000_000_123).unwrap();
    let keys = keys_in_order(&line);
    let expected: Vec<&str> = FIRECRACKER_KEYS.to_vec();
    let fc_keys: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| expected.contains(k))
        .collect();
    assert_eq!(fc_keys, expected);
    assert_eq!(keys[0], "utc_timestamp_ms");
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["utc_timestamp_ms"], 1_700_000_000_123_u64);
    assert_eq!(value["vcpu"]["exit_io_in"], 0);
    assert_eq!(value["put_api_requests"]["actions_count"], 0);
    assert_eq!(value["api_server"]["process_startup_time_us"], 0);
}

#[test]
fn counters_report_deltas_between_lines() {
    let reg = Registry::new();
    let own = SquibMetrics::new();
    own.vcpu.exit_mmio_write.add(3);
    own.get_api_requests.instance_info_count.inc();
    let first: serde_json::Value =
        serde_json::from_slice(&render_line(&own, &reg, 1).unwrap()).unwrap();
    assert_eq!(first["vcpu"]["exit_mmio_write"], 3);
    assert_eq!(first["get_api_requests"]["instance_info_count"], 1);
    own.vcpu.exit_mmio_write.inc();
    let second: serde_json::Value =
        serde_json::from_slice(&render_line(&own, &reg, 2).unwrap()).unwrap();
    assert_eq!(second["vcpu"]["exit_mmio_write"], 1);
    assert_eq!(second["get_api_requests"]["instance_info_count"], 0);
}

#[test]
fn registered_device_groups_sit_in_their_slot() {
    let reg = Registry::new();
    let shape = Arc::new(DeviceMetrics::default());
    let eth0 = Arc::new(DeviceMetrics::default());
    reg.register("net_tst_eth0".into(), eth0.clone());
    reg.register("net".into(), shape.clone());
    reg.register("zz_tst_unknown".into(), Arc::new(DeviceMetrics::default()));
    eth0.read_bytes.add(512);
    let line = render_line(&SquibMetrics::new(), &reg, 5).unwrap();
    let keys = keys_in_order(&line);
    let pos = |k: &str| keys.iter().position(|x| x == k).unwrap();
    assert!(pos("mmds") < pos("net_tst_eth0"));
    assert!(pos("net_tst_eth0") < pos("net"));
    assert!(pos("net") < pos("patch_api_requests"));
    assert_eq!(keys.last().map(String::as_str), Some("zz_tst_unknown"));
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["net_tst_eth0"]["read_bytes"], 512);
    assert!(
        value["net"]["read_bytes"].as_u64().unwrap() >= 512,
        "aggregate sums devices"
    );
    assert_eq!(value["net"]["write_count"], 0);
    assert!(reg.unregister("net_tst_eth0"));
    assert!(reg.unregister("zz_tst_unknown"));
    assert!(!reg.unregister("zz_tst_unknown"));
    let line = render_line(&SquibMetrics::new(), &reg, 6).unwrap();
    assert!(!keys_in_order(&line).contains(&"net_tst_eth0".to_string()));
}

#[test]
fn aggregate_sums_device_deltas_without_a_registered_shape() {
    let reg = Registry::new();
    let a = Arc::new(DeviceMetrics::default());
    let b = Arc::new(DeviceMetrics::default());
    reg.register("entropy_tst_a".into(), a.clone());
    reg.register("entropy_tst_b".into(), b.clone());
    a.write_count.add(2);
    b.write_count.add(3);
    b.read_bytes.add(7);
    let value: serde_json::Value =
        serde_json::from_slice(&render_line(&SquibMetrics::new(), &reg, 1).unwrap()).unwrap();
    assert_eq!(
        value["entropy"],
        serde_json::json!({"read_bytes": 7, "write_count": 5})
    );
    assert_eq!(value["entropy_tst_a"]["write_count"], 2);
    // The next line reports only what happened since.
    a.write_count.inc();
    let value: serde_json::Value =
        serde_json::from_slice(&render_line(&SquibMetrics::new(), &reg, 2).unwrap()).unwrap();
    assert_eq!(
        value["entropy"],
        serde_json::json!({"read_bytes": 0, "write_count": 1})
    );
    reg.unregister("entropy_tst_a");
    reg.unregister("entropy_tst_b");
}

#[test]
fn unregistered_always_printed_group_is_an_empty_object() {
    let reg = Registry::new();
    let value: serde_json::Value =
        serde_json::from_slice(&render_line(&SquibMetrics::new(), &reg, 1).unwrap()).unwrap();
    assert_eq!(value["memory_hotplug"], serde_json::json!({}));
    assert!(
        value.get("vhost_user").is_none(),
        "vhost_user has no aggregate"
    );
}

#[test]
fn slot_matching_needs_an_underscore() {
    assert!(in_slot("block", "block"));
    assert!(in_slot("block_rootfs", "block"));
    assert!(!in_slot("blocked", "block"));
    assert!(!in_slot("vhost_user_block_x", "block"));
}

#[test]
fn writer_appends_one_json_line_per_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.ndjson");
    let writer = MetricsWriter::new();
    let own = SquibMetrics::new();
    assert!(
        !writer.write(&own).unwrap(),
        "uninitialised writer writes nothing"
    );
    writer.init(&path).unwrap();
    own.signals.sigpipe.inc();
    assert!(writer.write(&own).unwrap());
    assert!(writer.write(&own).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["signals"]["sigpipe"], 1);
    assert_eq!(lines[1]["signals"]["sigpipe"], 0);
    assert!(lines[1]["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

#[test]
fn second_init_is_rejected_with_firecracker_text() {
    let dir = tempfile::tempdir().unwrap();
    let writer = MetricsWriter::new();
    writer.init(&dir.path().join("a")).unwrap();
    let err = writer.init(&dir.path().join("b")).unwrap_err();
    assert!(matches!(err, MetricsError::AlreadyInitialized));
    assert_eq!(err.to_string(), "Reinitialization of metrics not allowed.");
}

#[test]
fn global_metrics_init_once_then_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("global.fifo");
    init_metrics(&path).unwrap();
    assert!(matches!(
        init_metrics(&path),
        Err(MetricsError::AlreadyInitialized)
    ));
    assert!(write_metrics().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn unopenable_path_leaves_writer_uninitialised() {
    let writer = MetricsWriter::new();
    let err = writer.init(Path::new("/nonexistent-dir/m")).unwrap_err();
    assert!(matches!(err, MetricsError::Open(_)));
    assert!(!writer.is_initialized());
}

#[test]
fn public_registration_replaces_and_removes_by_key() {
    register_group("zz_tst_public", Arc::new(DeviceMetrics::default()));
    register_group("zz_tst_public", Arc::new(DeviceMetrics::default()));
    assert!(unregister_group("zz_tst_public"));
    assert!(!unregister_group("zz_tst_public"));
}
