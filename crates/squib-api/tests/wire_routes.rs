//! Every route over a real Unix socket with raw HTTP bytes: happy paths, validation,
//! malformed requests, admission before and after boot, headers, keep-alive, limits.

mod common;

use common::{Conn, TestServer};
use squib_api::action::ApiResponse;
use squib_api::server::ApiServerConfig;
use squib_api::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};

const PRE_BOOT_OK: &[(&str, &str, &str)] = &[
    (
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,"huge_pages":"2M"}"#,
    ),
    ("PATCH", "/machine-config", r#"{"mem_size_mib":512}"#),
    (
        "PUT",
        "/cpu-config",
        r#"{"kvm_capabilities":["!56"],"cpuid_modifiers":[],"msr_modifiers":[]}"#,
    ),
    (
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path":"/vmlinux","initrd_path":"/initrd","boot_args":"console=ttyS0"}"#,
    ),
    (
        "PUT",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","path_on_host":"/r.ext4","is_root_device":true,"is_read_only":false,"cache_type":"Writeback","io_engine":"Sync","rate_limiter":{"bandwidth":{"size":1000,"refill_time":100},"ops":{"size":10,"one_time_burst":5,"refill_time":100}}}"#,
    ),
    (
        "PUT",
        "/drives/vhost",
        r#"{"drive_id":"vhost","socket":"/vhost.sock","is_root_device":false}"#,
    ),
    (
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:AC:10:00:02","mtu":1500}"#,
    ),
    (
        "PUT",
        "/pmem/pmem0",
        r#"{"id":"pmem0","path_on_host":"/pmem.img","root_device":false,"read_only":true}"#,
    ),
    (
        "PUT",
        "/vsock",
        r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#,
    ),
    ("PUT", "/entropy", "{}"),
    (
        "PUT",
        "/balloon",
        r#"{"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":1,"free_page_hinting":true}"#,
    ),
    (
        "PUT",
        "/logger",
        r#"{"log_path":"/tmp/log","level":"warning","show_level":true,"show_log_origin":false,"module":"squib"}"#,
    ),
    (
        "PUT",
        "/metrics",
        r#"{"metrics_path":"/tmp/metrics","emit_id":true,"properties":{"a":"b"}}"#,
    ),
    (
        "PUT",
        "/serial",
        r#"{"serial_out_path":"/tmp/serial","rate_limiter":{"size":100,"refill_time":10}}"#,
    ),
    (
        "PUT",
        "/mmds",
        r#"{"latest":{"meta-data":{"ami-id":"ami-1"}}}"#,
    ),
    (
        "PATCH",
        "/mmds",
        r#"{"latest":{"meta-data":{"ami-id":"ami-2"}}}"#,
    ),
    (
        "PUT",
        "/mmds/config",
        r#"{"network_interfaces":["eth0"],"version":"V2","ipv4_address":"169.254.170.2","imds_compat":true}"#,
    ),
    (
        "PUT",
        "/hotplug/memory",
        r#"{"total_size_mib":1024,"block_size_mib":2,"slot_size_mib":128}"#,
    ),
    (
        "PUT",
        "/snapshot/load",
        r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"vsock_override":{"uds_path":"/v2.sock"},"clock_realtime":true}"#,
    ),
];

const POST_BOOT_OK: &[(&str, &str, &str)] = &[
    (
        "PATCH",
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","path_on_host":"/r2.ext4"}"#,
    ),
    (
        "PATCH",
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","rx_rate_limiter":{"ops":{"size":0,"refill_time":0}}}"#,
    ),
    (
        "PATCH",
        "/pmem/pmem0",
        r#"{"id":"pmem0","rate_limiter":{}}"#,
    ),
    ("DELETE", "/drives/rootfs", ""),
    ("DELETE", "/network-interfaces/eth0", ""),
    ("DELETE", "/pmem/pmem0", ""),
    ("PATCH", "/balloon", r#"{"amount_mib":32}"#),
    (
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s":5}"#,
    ),
    (
        "PATCH",
        "/balloon/hinting/start",
        r#"{"acknowledge_on_stop":true}"#,
    ),
    ("PATCH", "/balloon/hinting/start", ""),
    ("PATCH", "/balloon/hinting/stop", ""),
    ("PATCH", "/hotplug/memory", r#"{"requested_size_mib":256}"#),
    ("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#),
    ("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#),
    ("PATCH", "/vm", r#"{"state":"Paused"}"#),
    (
        "PUT",
        "/snapshot/create",
        r#"{"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"Diff"}"#,
    ),
    ("PATCH", "/vm", r#"{"state":"Resumed"}"#),
    ("PUT", "/mmds", r#"{"a":1}"#),
    (
        "PUT",
        "/drives/hot",
        r#"{"drive_id":"hot","path_on_host":"/h","is_root_device":false}"#,
    ),
];

fn boot(server: &TestServer) {
    let r = server.put("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn every_pre_boot_route_is_forwarded_with_204() {
    let server = TestServer::start();
    for (method, path, body) in PRE_BOOT_OK {
        let r = server.conn().request(method, path, body);
        assert_eq!(r.status, 204, "{method} {path}: {}", r.body);
        assert!(r.body.is_empty());
    }
    assert_eq!(server.actions().len(), PRE_BOOT_OK.len());
}

#[test]
fn every_post_boot_route_is_forwarded_with_204() {
    let server = TestServer::start();
    boot(&server);
    for (method, path, body) in POST_BOOT_OK {
        let r = server.conn().request(method, path, body);
        assert_eq!(r.status, 204, "{method} {path}: {}", r.body);
    }
}

#[test]
fn admission_before_and_after_boot_uses_firecrackers_messages() {
    let server = TestServer::start();
    for (method, path, body) in POST_BOOT_OK
        .iter()
        .filter(|(_, p, _)| *p != "/mmds" && *p != "/drives/hot")
    {
        let r = server.conn().request(method, path, body);
        assert_eq!(
            (r.status, r.fault()),
            (400, NOT_SUPPORTED_BEFORE_START.to_owned()),
            "{method} {path}"
        );
    }
    boot(&server);
    let pre_only = PRE_BOOT_OK
        .iter()
        .filter(|(_, p, _)| !p.starts_with("/mmds") || *p == "/mmds/config");
    for (method, path, body) in pre_only.filter(|(_, p, _)| {
        !["/drives/", "/network-", "/pmem/"]
            .iter()
            .any(|x| p.starts_with(x))
    }) {
        let r = server.conn().request(method, path, body);
        assert_eq!(
            (r.status, r.fault()),
            (400, NOT_SUPPORTED_AFTER_START.to_owned()),
            "{method} {path}"
        );
    }
}

#[test]
fn get_routes_return_vmm_state() {
    let server = TestServer::start();
    assert_eq!(
        server
            .put("/machine-config", r#"{"vcpu_count":4,"mem_size_mib":1024}"#)
            .status,
        204
    );
    let r = server.get("/machine-config");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"vcpu_count":4,"mem_size_mib":1024,"smt":false,"track_dirty_pages":false,"huge_pages":"None"})
    );
    assert_eq!(server.get("/mmds").json(), serde_json::json!({}));
    for path in ["/vm/config", "/balloon"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    for path in [
        "/balloon/statistics",
        "/balloon/hinting/status",
        "/hotplug/memory",
    ] {
        assert_eq!(
            server.get(path).fault(),
            NOT_SUPPORTED_BEFORE_START,
            "{path}"
        );
    }
    boot(&server);
    assert_eq!(
        server.get("/hotplug/memory").json()["route"],
        "GET /hotplug/memory"
    );
}

#[test]
fn root_and_version_are_answered_by_the_api_thread() {
    let server = TestServer::start();
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"id":"test_vm","state":"Not started","vmm_version":"1.17.0","app_name":"Firecracker"})
    );
    assert_eq!(
        server.get("/version").json(),
        serde_json::json!({"firecracker_version":"1.17.0"})
    );
    boot(&server);
    assert_eq!(server.get("/").json()["state"], "Running");
    assert_eq!(server.patch("/vm", r#"{"state":"Paused"}"#).status, 204);
    assert_eq!(server.get("/").json()["state"], "Paused");
    assert!(server.actions().iter().all(|a| a != "GET /"));
}

#[test]
fn headers_are_title_case_with_server_and_keep_alive() {
    let server = TestServer::start();
    for r in [
        server.get("/"),
        server.put("/entropy", "{}"),
        server.get("/nope"),
    ] {
        assert_eq!(
            r.header("Server"),
            Some("Firecracker API"),
            "{}",
            r.raw_head
        );
        assert_eq!(r.header("Connection"), Some("keep-alive"), "{}", r.raw_head);
    }
    let r = server.put("/entropy", "{}");
    assert!(r.raw_head.starts_with("HTTP/1.1 204"), "{}", r.raw_head);
    assert!(r.header("Content-Length").is_none() && r.header("Content-Type").is_none());
    let r = server.put("/mmds/config", r#"{"network_interfaces":["eth0"]}"#);
    assert_eq!(r.header("Deprecation"), Some("true"));
    let r = server
        .conn()
        .request("PATCH", "/machine-config", r#"{"cpu_template":"T2"}"#);
    assert_eq!(r.header("Deprecation"), Some("true"), "{}", r.raw_head);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start();
    let mut conn = server.conn();
    assert_eq!(conn.request("GET", "/", "").status, 200);
    assert_eq!(
        conn.request(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":64}"#
        )
        .status,
        204
    );
    assert_eq!(conn.request("GET", "/bad", "").status, 400);
    assert_eq!(
        conn.request("GET", "/machine-config", "").json()["mem_size_mib"],
        64
    );
}

#[test]
fn malformed_requests_get_400_with_a_fault_message() {
    let server = TestServer::start();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "GET",
            "/foo",
            "",
            "Invalid request method and/or path: GET foo.",
        ),
        (
            "POST",
            "/actions",
            "{}",
            "Invalid request method and/or path: POST actions.",
        ),
        (
            "DELETE",
            "/vsock",
            "",
            "Invalid request method and/or path: DELETE vsock.",
        ),
        (
            "PATCH",
            "/boot-source",
            "{}",
            "Invalid request method and/or path: PATCH boot-source.",
        ),
        (
            "PUT",
            "/machine-config/extra",
            "{}",
            "Invalid request method and/or path: PUT machine-config.",
        ),
        (
            "GET",
            "/machine-config",
            "{}",
            "GET request cannot have a body.",
        ),
        ("PUT", "/boot-source", "", "Empty PUT request."),
        ("PATCH", "/machine-config", "", "Empty PATCH request."),
        ("PATCH", "/machine-config", "{}", "Empty PATCH request."),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id":"b","path_on_host":"/p","is_root_device":false}"#,
            "The id from the path does not match the id from the body!",
        ),
        (
            "PUT",
            "/network-interfaces/a",
            r#"{"iface_id":"b","host_dev_name":"t"}"#,
            "The id from the path [a] does not match the id from the body [b]!",
        ),
        (
            "PUT",
            "/drives/bad-id",
            "{}",
            "API Resource IDs can only contain alphanumeric characters and underscores.",
        ),
        ("DELETE", "/pmem/", "", "The ID cannot be empty."),
    ];
    for (method, path, body, fault) in cases {
        let r = server.conn().request(method, path, body);
        assert_eq!(
            (r.status, r.fault()),
            (400, (*fault).to_owned()),
            "{method} {path}"
        );
    }
    assert!(server.actions().is_empty());
}

#[test]
fn json_problems_are_named() {
    let server = TestServer::start();
    let prefix = "An error occurred when deserializing the json body of a request: ";
    let cases: &[(&str, &str, &str)] = &[
        (
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":128,"foo":1}"#,
            "unknown field `foo`",
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":1}"#,
            "missing field `mem_size_mib`",
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":true,"mem_size_mib":1}"#,
            "invalid type: boolean `true`",
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":300,"mem_size_mib":1}"#,
            "invalid value",
        ),
        (
            "/actions",
            r#"{"action_type":"Reboot"}"#,
            "unknown variant `Reboot`",
        ),
        ("/boot-source", "{not json", "key must be a string"),
        ("/mmds", "[1,", "EOF while parsing"),
        (
            "/drives/a",
            r#"{"drive_id":"a","is_root_device":false,"cache_type":"None","path_on_host":"/p"}"#,
            "unknown variant `None`",
        ),
        (
            "/entropy",
            r#"{"rate_limiter":{"bandwidth":{"size":1}}}"#,
            "missing field `refill_time`",
        ),
        (
            "/snapshot/load",
            r#"{"snapshot_path":"/s"}"#,
            "missing field: either `mem_backend` or `mem_file_path` is required",
        ),
    ];
    for (path, body, needle) in cases {
        let f = server.put(path, body).fault();
        assert!(f.starts_with(prefix) && f.contains(needle), "{path}: {f}");
    }
}

#[test]
fn validation_rules_are_enforced_at_the_api() {
    let server = TestServer::start();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("PUT", "/machine-config", r#"{"vcpu_count":0,"mem_size_mib":128}"#, "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."),
        ("PUT", "/machine-config", r#"{"vcpu_count":33,"mem_size_mib":128}"#, "Machine config error: The number of vCPUs"),
        ("PUT", "/machine-config", r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#, "Machine config error: The number of vCPUs"),
        ("PUT", "/machine-config", r#"{"vcpu_count":1,"mem_size_mib":0}"#, "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."),
        ("PUT", "/machine-config", r#"{"vcpu_count":1,"mem_size_mib":127,"huge_pages":"2M"}"#, "Machine config error: The memory size"),
        ("PATCH", "/machine-config", r#"{"vcpu_count":0}"#, "Machine config error: The number of vCPUs"),
        ("PUT", "/drives/a", r#"{"drive_id":"a","socket":"/s","path_on_host":"/p","is_root_device":false}"#, "Drive config error: Invalid block config."),
        ("PUT", &format!("/drives/{}", "d".repeat(65)), "{}", "API Resource IDs can be at most 64 characters long."),
        ("PUT", "/network-interfaces/e", r#"{"iface_id":"e","host_dev_name":"tap0","guest_mac":"01:02:03"}"#, "Network interface error: Invalid MAC address: 01:02:03"),
        ("PUT", "/network-interfaces/e", r#"{"iface_id":"e","host_dev_name":"tap0","mtu":10}"#, "Network interface error: The MTU 10 is invalid"),
        ("PUT", "/mmds/config", r#"{"network_interfaces":[]}"#, "MMMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty."),
        ("PUT", "/mmds/config", r#"{"network_interfaces":["e"],"ipv4_address":"169.254.255.1"}"#, "MMMDS config error: The MMDS IPv4 address is not link local."),
        ("PUT", "/boot-source", r#"{"kernel_image_path":""}"#, "Boot source error: The kernel_image_path is invalid"),
        ("PUT", "/vsock", &format!(r#"{{"guest_cid":3,"uds_path":"/{}"}}"#, "v".repeat(120)), "Vsock config error: The uds_path is too long"),
        ("PUT", "/logger", r#"{"level":"Loud"}"#, "Logger error: Invalid log level: Loud."),
        ("PUT", "/hotplug/memory", r#"{"total_size_mib":1024,"block_size_mib":3}"#, "Memory hotplug config error: The block size (MiB) must be a power of 2"),
        ("PUT", "/cpu-config", r#"{"kvm_capabilities":["x"]}"#, "An error occurred when deserializing the json body of a request: Failed to parse string [x] as a kvm capability - can not convert to numeric: invalid digit found in string at line 1 column 25."),
        ("PUT", "/snapshot/load", r#"{"snapshot_path":"/s","mem_file_path":"/m","mem_backend":{"backend_type":"File","backend_path":"/m"}}"#, "too many fields: either `mem_backend` or `mem_file_path` exclusively is required."),
    ];
    for (method, path, body, fault) in cases {
        let r = server.conn().request(method, path, body);
        assert_eq!(r.status, 400, "{method} {path}");
        assert!(r.fault().contains(fault), "{method} {path}: {}", r.fault());
    }
    assert!(
        server.actions().is_empty(),
        "invalid requests must not reach the VMM"
    );
}

#[test]
fn oversized_body_is_refused_and_server_keeps_serving() {
    let config = ApiServerConfig {
        max_payload_size: 1000,
        mmds_size_limit: 500,
        ..ApiServerConfig::default()
    };
    let server = TestServer::with(config, Box::new(common::store_vmm));
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    let r = server.put("/mmds", &big);
    assert_eq!(r.status, 400);
    assert!(
        r.fault().contains("is larger than the limit of 1000"),
        "{}",
        r.fault()
    );
    let r = server.put("/mmds", &format!(r#"{{"x":"{}"}}"#, "a".repeat(600)));
    assert_eq!(
        (r.status, r.fault()),
        (
            413,
            "MMDS limit exceeded error: The MMDS patch request doesn't fit.".to_owned()
        )
    );
    // Chunked bodies are bounded too.
    let mut conn = server.conn();
    conn.send_raw(b"PUT /mmds HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        conn.send_raw(format!("190\r\n{}\r\n", "a".repeat(400)).as_bytes());
    }
    conn.send_raw(b"0\r\n\r\n");
    assert_eq!(conn.read_reply().unwrap().status, 400);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_slow_vmm_times_out_and_the_api_keeps_answering() {
    let vmm = |action: &squib_api::action::ApiAction, _: &mut common::Store| {
        if action.label() == "PUT /entropy" {
            std::thread::sleep(std::time::Duration::from_secs(6));
        }
        ApiResponse::NoContent
    };
    let server = TestServer::with(ApiServerConfig::default(), Box::new(vmm));
    let path = server.path.clone();
    let slow = std::thread::spawn(move || Conn::open(&path).request("PUT", "/entropy", "{}"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(server.get("/").status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "GET / must not wait for the VMM"
    );
    let r = slow.join().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.fault(),
        "Timed out after 5 s waiting for the VMM to complete PUT /entropy."
    );
    assert_eq!(
        server
            .put("/vsock", r#"{"guest_cid":3,"uds_path":"/v"}"#)
            .status,
        204
    );
}

#[test]
fn http_1_0_connections_stay_open_like_micro_http() {
    let server = TestServer::start();
    let mut conn = server.conn();
    conn.send_raw(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(conn.read_reply().unwrap().status, 200);
    conn.send_raw(b"PUT /entropy HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(conn.read_reply().unwrap().status, 204);
}
