//! Signals a launcher sends or the host raises, and the exit status it then sees:
//! SIGTERM and SIGINT kill the process (Firecracker installs no handler for them), SIGHUP
//! exits 156 after logging it and writing a last metrics line, SIGPIPE is only counted.

use std::time::Duration;

use crate::support::{
    arg_path, assert_firecracker_keys, assert_in_order, killed_by, metric_sum, metrics_lines,
    wait_for_log, workdir, Launched,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn sigterm_kills_the_process_by_the_signal() {
    let mut squib = Launched::start(workdir(), "sigterm", &[]);
    squib.signal(libc::SIGTERM);
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(killed_by(status), Some(libc::SIGTERM), "status {status}");
}

#[test]
fn sigint_kills_the_process_by_the_signal() {
    let mut squib = Launched::start(workdir(), "sigint", &[]);
    squib.signal(libc::SIGINT);
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(killed_by(status), Some(libc::SIGINT), "status {status}");
}

#[test]
fn sighup_exits_156_with_log_lines_and_a_last_metrics_line() {
    let dir = workdir();
    let log = dir.path().join("squib.log");
    let metrics = dir.path().join("metrics.ndjson");
    let args = [
        "--log-path".to_owned(),
        arg_path(dir.path(), "squib.log"),
        "--metrics-path".to_owned(),
        arg_path(dir.path(), "metrics.ndjson"),
    ];
    let mut squib = Launched::start(dir, "sighup", &args);
    wait_for_log(&log, "API server started.", EXIT_TIMEOUT);
    // SIGPIPE first: counted, not fatal.
    squib.signal(libc::SIGPIPE);
    wait_for_log(&log, "Received signal 13", EXIT_TIMEOUT);
    squib.signal(libc::SIGHUP);
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(156), "status {status}");

    let lines = wait_for_log(&log, "exit_code=156", EXIT_TIMEOUT);
    assert_in_order(
        &lines,
        &[
            "Running Firecracker v",
            "Shutting down VM after intercepting signal 1, code 0.",
            "Firecracker exiting with error. exit_code=156",
        ],
    );
    let written = metrics_lines(&metrics);
    let last = written
        .last()
        .expect("a metrics line written at the signal");
    assert_firecracker_keys(last);
    assert_eq!(last["signals"]["sighup"], 1, "{last}");
    let pipes: u64 = written
        .iter()
        .filter_map(|l| l["signals"]["sigpipe"].as_u64())
        .sum();
    assert_eq!(pipes, 1, "signals.sigpipe over {written:?}");
}

#[test]
fn api_requests_are_counted_by_route_in_the_metrics() {
    let dir = workdir();
    let metrics = dir.path().join("metrics.ndjson");
    let args = [
        "--metrics-path".to_owned(),
        arg_path(dir.path(), "metrics.ndjson"),
    ];
    let mut squib = Launched::start(dir, "api-counters", &args);
    let machine = serde_json::json!({ "vcpu_count": 1, "mem_size_mib": 128 });
    assert_eq!(squib.request("PUT", "/machine-config", Some(&machine)), 204);
    assert_eq!(squib.request("GET", "/version", None), 200);
    assert_eq!(squib.request("GET", "/", None), 200);
    squib.signal(libc::SIGHUP);
    assert_eq!(squib.wait_exit(EXIT_TIMEOUT).code(), Some(156));
    let lines = metrics_lines(&metrics);
    for (group, key) in [
        ("put_api_requests", "machine_cfg_count"),
        ("get_api_requests", "vmm_version_count"),
        ("get_api_requests", "instance_info_count"),
    ] {
        assert_eq!(
            metric_sum(&lines, group, key),
            1,
            "{group}.{key}: {lines:?}"
        );
    }
}
