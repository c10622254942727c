use super::*;
use crate::schemas::{InstanceAction, VmStateChange};
use crate::table::ROUTES;

fn ok(method: &str, path: &str, body: &str) -> ApiAction {
    match parse_request(method, path, body.as_bytes()) {
        Ok(Parsed::Action { action, .. }) => action,
        other => panic!("{method} {path}: {other:?}"),
    }
}

fn err(method: &str, path: &str, body: &str) -> String {
    match parse_request(method, path, body.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(p) => panic!("{method} {path} unexpectedly parsed: {p:?}"),
    }
}

#[test]
fn local_routes() {
    assert!(matches!(
        parse_request("GET", "/", b""),
        Ok(Parsed::InstanceInfo)
    ));
    assert!(matches!(
        parse_request("GET", "/version", b""),
        Ok(Parsed::Version)
    ));
}

#[test]
fn unknown_path_or_method_names_first_segment() {
    assert_eq!(
        err("GET", "/foo/bar", ""),
        "Invalid request method and/or path: GET foo."
    );
    assert_eq!(
        err("POST", "/actions", "{}"),
        "Invalid request method and/or path: POST actions."
    );
    assert_eq!(
        err("DELETE", "/machine-config", ""),
        "Invalid request method and/or path: DELETE machine-config."
    );
    assert_eq!(
        err("PATCH", "/boot-source", "{}"),
        "Invalid request method and/or path: PATCH boot-source."
    );
}

#[test]
fn body_presence_rules() {
    assert_eq!(
        err("GET", "/machine-config", "{}"),
        "GET request cannot have a body."
    );
    assert_eq!(err("PUT", "/machine-config", ""), "Empty PUT request.");
    assert_eq!(err("PATCH", "/machine-config", ""), "Empty PATCH request.");
    assert_eq!(
        err("PATCH", "/machine-config", "{}"),
        "Empty PATCH request."
    );
    assert!(matches!(
        ok("PATCH", "/balloon/hinting/start", ""),
        ApiAction::StartBalloonHinting(_)
    ));
    assert!(matches!(
        ok("PATCH", "/balloon/hinting/stop", ""),
        ApiAction::StopBalloonHinting
    ));
}

#[test]
fn ids_are_checked_and_matched() {
    assert_eq!(
        err("PUT", "/drives/a-b", "{}"),
        "API Resource IDs can only contain alphanumeric characters and underscores."
    );
    assert_eq!(err("PUT", "/drives/", "{}"), "The ID cannot be empty.");
    let body = r#"{"drive_id":"b","path_on_host":"/p","is_root_device":false}"#;
    assert_eq!(
        err("PUT", "/drives/a", body),
        "The id from the path does not match the id from the body!"
    );
    let body = r#"{"iface_id":"b","host_dev_name":"tap0"}"#;
    assert_eq!(
        err("PUT", "/network-interfaces/a", body),
        "The id from the path [a] does not match the id from the body [b]!"
    );
    assert!(matches!(
        ok("DELETE", "/pmem/p0", ""),
        ApiAction::DeletePmem(_)
    ));
}

#[test]
fn json_errors_name_the_problem() {
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128,"foo":1}"#,
    );
    assert!(
        e.starts_with(
            "An error occurred when deserializing the json body of a request: unknown field `foo`"
        ),
        "{e}"
    );
    let e = err("PUT", "/machine-config", r#"{"vcpu_count":1}"#);
    assert!(e.contains("missing field `mem_size_mib`"), "{e}");
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":"1","mem_size_mib":128}"#,
    );
    assert!(e.contains("invalid type"), "{e}");
    let e = err("PUT", "/actions", "{not json");
    assert!(
        e.starts_with("An error occurred when deserializing the json body of a request: "),
        "{e}"
    );
}

#[test]
fn every_put_route_parses_a_valid_body() {
    let cases = [
        ("/actions", r#"{"action_type":"InstanceStart"}"#),
        ("/machine-config", r#"{"vcpu_count":2,"mem_size_mib":256}"#),
        ("/cpu-config", r#"{"kvm_capabilities":["121"]}"#),
        ("/boot-source", r#"{"kernel_image_path":"/k"}"#),
        ("/vsock", r#"{"guest_cid":3,"uds_path":"/v.sock"}"#),
        ("/entropy", "{}"),
        ("/balloon", r#"{"amount_mib":0,"deflate_on_oom":true}"#),
        ("/logger", r#"{"level":"Debug"}"#),
        ("/metrics", r#"{"metrics_path":"/m"}"#),
        ("/serial", r#"{"serial_out_path":"/s"}"#),
        ("/mmds", r#"{"a":1}"#),
        (
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true}"#,
        ),
        (
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#,
        ),
        ("/pmem/p0", r#"{"id":"p0","path_on_host":"/p"}"#),
        (
            "/mmds/config",
            r#"{"network_interfaces":["eth0"],"version":"V2"}"#,
        ),
        ("/hotplug/memory", r#"{"total_size_mib":1024}"#),
        (
            "/snapshot/create",
            r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#,
        ),
        (
            "/snapshot/load",
            r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u"}}"#,
        ),
    ];
    for (path, body) in cases {
        ok("PUT", path, body);
    }
    assert!(matches!(
        ok("PATCH", "/vm", r#"{"state":"Paused"}"#),
        ApiAction::PatchVm(VmStateChange::Paused)
    ));
    assert!(matches!(
        ok("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#),
        ApiAction::Action(InstanceAction::FlushMetrics)
    ));
}

#[test]
fn deprecated_fields_are_flagged() {
    let flagged = |path: &str, body: &str| match parse_request("PUT", path, body.as_bytes()) {
        Ok(Parsed::Action { deprecation, .. }) => deprecation.is_some(),
        other => panic!("{other:?}"),
    };
    let patch = |body: &str| match parse_request("PATCH", "/machine-config", body.as_bytes()) {
        Ok(Parsed::Action { deprecation, .. }) => deprecation,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        patch(r#"{"cpu_template":"None"}"#),
        Some("PATCH /machine-config: cpu_template field is deprecated.")
    );
    assert_eq!(patch(r#"{"vcpu_count":2}"#), None);
    assert!(flagged(
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"None"}"#
    ));
    assert!(!flagged(
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128}"#
    ));
    assert!(flagged(
        "/mmds/config",
        r#"{"network_interfaces":["eth0"]}"#
    ));
    assert!(!flagged(
        "/mmds/config",
        r#"{"network_interfaces":["eth0"],"version":"V2"}"#
    ));
    assert!(flagged(
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2"}"#
    ));
    assert!(flagged(
        "/snapshot/load",
        r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#
    ));
}

#[test]
fn snapshot_load_backend_rule_reads_like_firecracker() {
    assert_eq!(
        err("PUT", "/snapshot/load", r#"{"snapshot_path":"/s"}"#),
        "An error occurred when deserializing the json body of a request: missing field: either `mem_backend` or `mem_file_path` is required."
    );
}

#[test]
fn validation_errors_carry_the_resource_prefix() {
    assert!(err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":0,"mem_size_mib":128}"#
    )
    .starts_with("Machine config error: The number of vCPUs"));
    assert_eq!(err("PUT", "/mmds/config", r#"{"network_interfaces":[]}"#), "MMMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty.");
}

#[test]
fn every_row_has_its_own_route() {
    for (i, a) in ROUTES.iter().enumerate() {
        for b in &ROUTES[i + 1..] {
            assert!(
                !(a.method == b.method && a.path == b.path && a.with_id == b.with_id),
                "{:?} {} is in the table twice",
                a.method,
                a.path
            );
        }
    }
}

#[test]
fn the_router_hands_the_row_its_fault_prefix() {
    assert_eq!(
        err("PUT", "/machine-config", r#"{"vcpu_count":0,"mem_size_mib":128}"#),
        "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."
    );
    assert!(err("PUT", "/boot-source", r#"{"kernel_image_path":""}"#)
        .starts_with("Boot source error: "));
}

#[test]
fn cpu_config_errors_read_like_firecrackers() {
    assert_eq!(
        err(
            "PUT",
            "/cpu-config",
            r#"{"msr_modifiers":[{"addr":"16","bitmap":"0b1"}]}"#
        ),
        "An error occurred when deserializing the json body of a request: No supported number \
         system prefix found in value [16]. Make sure to prefix the number with '0x' for \
         hexadecimal numbers or '0b' for binary numbers. at line 1 column 30."
    );
    assert_eq!(err("PUT", "/cpu-config", ""), "Empty PUT request.");
    assert!(matches!(
        ok("PUT", "/cpu-config", r#"{"kvm_capabilities":["!56"]}"#),
        ApiAction::PutCpuConfig(_)
    ));
}
