//! Random bytes and random JSON at every route: never a panic, never a silent hang, and
//! `GET /` still answers after each case.

mod common;

use std::sync::OnceLock;

use common::TestServer;
use proptest::prelude::*;

const ROUTES: &[&str] = &[
    "/",
    "/version",
    "/vm/config",
    "/actions",
    "/machine-config",
    "/cpu-config",
    "/boot-source",
    "/drives/d0",
    "/network-interfaces/eth0",
    "/pmem/p0",
    "/vsock",
    "/entropy",
    "/balloon",
    "/balloon/statistics",
    "/balloon/hinting/start",
    "/balloon/hinting/status",
    "/balloon/hinting/stop",
    "/logger",
    "/metrics",
    "/serial",
    "/mmds",
    "/mmds/config",
    "/hotplug/memory",
    "/snapshot/create",
    "/snapshot/load",
    "/vm",
    "/drives/",
    "/x/y/z",
];
const METHODS: &[&str] = &["GET", "PUT", "PATCH", "DELETE", "POST"];

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::start)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u8>().prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "rootfs",
            "eth0",
            "InstanceStart",
            "Paused",
            "2M",
            "V2",
            "/tmp/x",
            "169.254.169.254"
        ])
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop::sample::select(vec![
        "vcpu_count",
        "mem_size_mib",
        "smt",
        "drive_id",
        "iface_id",
        "id",
        "path_on_host",
        "is_root_device",
        "host_dev_name",
        "guest_mac",
        "action_type",
        "state",
        "kernel_image_path",
        "amount_mib",
        "deflate_on_oom",
        "network_interfaces",
        "rate_limiter",
        "size",
        "refill_time",
        "snapshot_path",
        "mem_backend",
        "level",
        "x",
    ]);
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn check(method: &str, path: &str, body: &str) {
    let server = server();
    let r = server.conn().request(method, path, body);
    assert!(
        matches!(r.status, 200 | 204 | 400 | 413),
        "{method} {path} {body:?} -> {}",
        r.status
    );
    if r.status >= 400 {
        assert!(!r.fault().is_empty());
    }
    assert_eq!(server.get("/").status, 200);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_json_at_every_route(method in prop::sample::select(METHODS), path in prop::sample::select(ROUTES), body in json_value()) {
        check(method, path, &body.to_string());
    }

    #[test]
    fn random_text_at_every_route(method in prop::sample::select(METHODS), path in prop::sample::select(ROUTES), body in "\\PC{0,64}") {
        check(method, path, &body);
    }

    #[test]
    fn random_raw_bytes_do_not_break_the_server(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let server = server();
        let mut conn = server.conn();
        conn.send_raw(&bytes);
        drop(conn);
        prop_assert_eq!(server.get("/").status, 200);
    }
}
