//! The log file and metrics as a launcher reads them before any boot: Firecracker's line
//! format and the lines launchers wait for, in order; `PUT /metrics` set once; the
//! `FlushMetrics` action refused before boot.

use std::time::Duration;

use serde_json::json;

use crate::common::{json, Squib};
use crate::support::{
    arg_path, assert_in_order, assert_timestamp, split_log_line, wait_for_log, workdir,
};

const LOG_TIMEOUT: Duration = Duration::from_secs(20);
const NOT_BEFORE_BOOT: &str =
    "The requested operation is not supported before starting the microVM.";
const METRICS_TWICE: &str = "Reinitialization of metrics not allowed.";

#[test]
fn debug_log_has_firecrackers_format_and_lines_in_order() {
    let dir = workdir();
    let log = dir.path().join("squib.log");
    let log_arg = arg_path(dir.path(), "squib.log");
    let extra = [
        "--log-path",
        &log_arg,
        "--level",
        "Debug",
        "--show-level",
        "--show-log-origin",
    ];
    let squib = Squib::with_api("log-order", &extra);
    let machine = json!({ "vcpu_count": 1, "mem_size_mib": 128 });
    assert_eq!(squib.api().put("/machine-config", &machine).0, 204);
    assert_eq!(squib.api().get("/machine-config").0, 200);
    let lines = wait_for_log(&log, "Total previous API call duration", LOG_TIMEOUT);
    let lines = wait_for_log(&log, "on \"/machine-config\".", LOG_TIMEOUT).max(lines);
    assert_in_order(
        &lines,
        &[
            "Running Firecracker v",
            "API server started.",
            &format!(
                "The API server received a Put request on \"/machine-config\" with body \"{machine}\"."
            ),
            "Total previous API call duration: ",
            "The API server received a Get request on \"/machine-config\".",
        ],
    );
    for line in &lines {
        assert_prefix(line, "log-order");
    }
}

#[test]
fn api_server_started_is_logged_once_by_fc_api() {
    let dir = workdir();
    let log = dir.path().join("squib.log");
    let log_arg = arg_path(dir.path(), "squib.log");
    let squib = Squib::with_api("started-once", &["--log-path", &log_arg]);
    assert_eq!(squib.api().get("/version").0, 200);
    let lines = wait_for_log(&log, "API server started.", LOG_TIMEOUT);
    let started: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with("API server started."))
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(started[0].contains(":fc_api]"), "{started:?}");
}

/// `<timestamp> [<id>:<thread>:<LEVEL>:<file>:<line>] <msg>` with show_level and origin.
fn assert_prefix(line: &str, id: &str) {
    let (timestamp, fields, message) =
        split_log_line(line).unwrap_or_else(|| panic!("{line:?} is not a Firecracker log line"));
    assert_timestamp(timestamp);
    assert!(!message.is_empty(), "empty message in {line:?}");
    assert_eq!(
        fields.len(),
        5,
        "id:thread:LEVEL:file:line expected in {line:?}"
    );
    assert_eq!(fields[0], id, "{line:?}");
    assert!(
        ["main", "fc_api"].contains(&fields[1]) || fields[1].starts_with("fc_vcpu"),
        "thread {:?} in {line:?}",
        fields[1]
    );
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&fields[2]),
        "level {:?} in {line:?}",
        fields[2]
    );
    assert!(
        fields[3].ends_with(".rs"),
        "file {:?} in {line:?}",
        fields[3]
    );
    assert!(
        fields[4].parse::<u32>().is_ok(),
        "line {:?} in {line:?}",
        fields[4]
    );
}

#[test]
fn metrics_set_once_and_flush_refused_before_boot() {
    let dir = workdir();
    let first = arg_path(dir.path(), "metrics.ndjson");
    let squib = Squib::with_api("metrics-once", &[]);
    let (status, body) = squib
        .api()
        .put("/metrics", &json!({ "metrics_path": first }));
    assert_eq!(status, 204, "first PUT /metrics: {body}");
    let second = arg_path(dir.path(), "again.ndjson");
    let (status, body) = squib
        .api()
        .put("/metrics", &json!({ "metrics_path": second }));
    assert_eq!(status, 400, "second PUT /metrics: {body}");
    assert_fault_contains(&body, METRICS_TWICE);
    let (status, body) = squib
        .api()
        .put("/actions", &json!({ "action_type": "FlushMetrics" }));
    assert_eq!(status, 400, "FlushMetrics before boot: {body}");
    assert_eq!(json(&body)["fault_message"], NOT_BEFORE_BOOT);
    assert!(
        std::path::Path::new(&first).exists(),
        "PUT /metrics creates the file"
    );
}

#[test]
fn metrics_path_flag_then_put_metrics_is_refused() {
    let dir = workdir();
    let path = arg_path(dir.path(), "metrics.ndjson");
    let squib = Squib::with_api("metrics-flag", &["--metrics-path", &path]);
    let (status, body) = squib
        .api()
        .put("/metrics", &json!({ "metrics_path": path }));
    assert_eq!(status, 400, "PUT /metrics after --metrics-path: {body}");
    assert_fault_contains(&body, METRICS_TWICE);
}

/// Firecracker wraps this error's text in its own prefixes: clients match the text itself.
fn assert_fault_contains(body: &str, text: &str) {
    let fault = json(body)["fault_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        fault.contains(text),
        "fault_message {fault:?} lacks {text:?}"
    );
}
