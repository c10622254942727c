//! Real-guest tests of virtio-block (issue 4, "Done when") and the wire-level `/drives`
//! errors, plus the block benchmark behind `BENCHMARKS.md` (ignored by default).
//!
//! Guest boots cost about a minute of a host core each on `kvm_pvm`, so there are two, each
//! checking several things: an ext4 root on `/dev/vda` with a read-only and a writable data
//! drive (pattern written, synced and found in the host file after the reboot; the read-only
//! file unchanged), and an initramfs guest with eight data drives, one of them rate limited.
//! The guest side is `scripts/guest/init` (`blk-write`, `blk-rate`, `blk-bench` actions).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{boot_args, boot_slot, json, retry_on_pvm_crash, GuestKit, Squib, BOOT_TIMEOUT};
use serde_json::{json, Value};

/// Backstop from the guest's ready marker to squib's exit (I/O runs in between); a run that
/// stops printing fails sooner (`common::SILENCE_LIMIT`).
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);
const MIB: u64 = 1 << 20;

/// A `PUT /drives/{id}` body.
fn drive(id: &str, path: &Path, root: bool, read_only: bool) -> Value {
    json!({
        "drive_id": id,
        "path_on_host": path.display().to_string(),
        "is_root_device": root,
        "is_read_only": read_only,
    })
}

/// PUTs a drive and asserts 204.
fn put_drive(squib: &Squib, body: &Value) {
    let id = body["drive_id"].as_str().unwrap_or_default();
    let (status, reply) = squib.api().put(&format!("/drives/{id}"), body);
    assert_eq!(status, 204, "PUT /drives/{id}: {reply}\n{}", squib.report());
}

/// PUTs a drive and returns the 400 reply's `fault_message`.
fn put_drive_fault(squib: &Squib, body: &Value) -> String {
    let id = body["drive_id"].as_str().unwrap_or_default();
    let (status, reply) = squib.api().put(&format!("/drives/{id}"), body);
    assert_eq!(status, 400, "PUT /drives/{id} should fail: {reply}");
    json(&reply)["fault_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Creates `path` holding `len` copies of `byte`.
fn filled_file(path: &Path, len: u64, byte: u8) -> PathBuf {
    fs::write(path, vec![byte; len as usize]).expect("write a drive file");
    path.to_owned()
}

/// Sets boot source and machine config, then starts the guest.
fn start(squib: &Squib, kit: &GuestKit, initrd: bool, extra_args: &str) {
    let api = squib.api();
    let mut boot = json!({
        "kernel_image_path": kit.vmlinux().display().to_string(),
        "boot_args": boot_args(extra_args),
    });
    if initrd {
        boot["initrd_path"] = json!(kit.initramfs().display().to_string());
    }
    let (status, body) = api.put("/boot-source", &boot);
    assert_eq!(status, 204, "PUT /boot-source: {body}");
    let machine = json!({ "vcpu_count": 1, "mem_size_mib": 128 });
    let (status, body) = api.put("/machine-config", &machine);
    assert_eq!(status, 204, "PUT /machine-config: {body}");
    let (status, body) = api.put("/actions", &json!({ "action_type": "InstanceStart" }));
    assert_eq!(status, 204, "InstanceStart: {body}\n{}", squib.report());
}

/// What the guest printed about one of its disks (`SQUIB blk name=.. sectors=.. ro=..`).
#[derive(Debug, PartialEq)]
struct GuestDisk {
    sectors: u64,
    read_only: bool,
    serial: String,
}

/// The guest's `SQUIB blk` line for `/dev/<name>`.
fn guest_disk(squib: &Squib, name: &str) -> GuestDisk {
    let line = squib.wait_for(&format!("SQUIB blk name={name} "), Duration::from_secs(1));
    let field = |key: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    GuestDisk {
        sectors: field("sectors=")
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}")),
        read_only: field("ro=") == "1",
        serial: field("serial="),
    }
}

/// Asserts the guest sees `/dev/<name>` with `bytes` bytes, the read-only flag and (when
/// the kernel exposes serials) the drive id as serial.
fn assert_disk(squib: &Squib, name: &str, bytes: u64, read_only: bool, id: &str) {
    let disk = guest_disk(squib, name);
    assert_eq!(disk.sectors, bytes / 512, "/dev/{name} size: {disk:?}");
    assert_eq!(disk.read_only, read_only, "/dev/{name} ro flag: {disk:?}");
    if !disk.serial.is_empty() {
        assert_eq!(disk.serial, id, "/dev/{name} serial (virtio-blk get-id)");
    }
}

/// Waits for squib to exit after the guest's reboot and asserts exit code 0.
fn assert_clean_exit(squib: &mut Squib) {
    let status = squib.wait_exit(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "squib exit\n{}", squib.report());
}

/// The `centis=` of the guest line `SQUIB blk-time op=<op> ...`.
fn guest_centis(squib: &Squib, op: &str) -> u64 {
    let line = squib.wait_for(&format!("SQUIB blk-time op={op} "), RUN_TIMEOUT);
    let value = line.rsplit("centis=").next().unwrap_or_default().trim();
    value
        .parse()
        .unwrap_or_else(|e| panic!("guest timing {line:?}: {e}\n{}", squib.report()))
}

#[test]
fn ext4_root_with_read_only_and_writable_data_drives_keeps_the_write() {
    retry_on_pvm_crash(ext4_root_with_data_drives);
}

fn ext4_root_with_data_drives() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let root = dir.path().join("rootfs.ext4");
    fs::copy(kit.rootfs(), &root).expect("copy the root filesystem");
    let root_len = fs::metadata(&root).expect("stat the rootfs copy").len();
    let ro_file = filled_file(&dir.path().join("ro.img"), 2 * MIB, 0x5a);
    let rw_file = filled_file(&dir.path().join("rw.img"), 4 * MIB, 0);
    let ro_before = fs::read(&ro_file).expect("read the read-only drive file");
    let tag = format!("t{}", std::process::id());

    let _slot = boot_slot();
    let mut squib = Squib::with_api("blk-ext4-root", &[]);
    // Data drives first: the root drive must still become /dev/vda.
    put_drive(&squib, &drive("data_ro", &ro_file, false, true));
    put_drive(&squib, &drive("rootfs", &root, true, false));
    put_drive(&squib, &drive("data_rw", &rw_file, false, false));
    let (status, config) = squib.api().get("/vm/config");
    assert_eq!(status, 200, "GET /vm/config: {config}");
    let ids: Vec<String> = json(&config)["drives"]
        .as_array()
        .map(|d| d.iter().map(|d| d["drive_id"].to_string()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 3, "drives in /vm/config: {config}");

    let action =
        format!("squib.action=blk-write squib.blk_dev=vdc squib.blk_ro=vdb squib.blk_tag={tag}");
    start(&squib, &kit, false, &action);
    squib.wait_for(common::READY_MARKER, BOOT_TIMEOUT);
    // No initrd: the init that printed the marker ran from the ext4 root on /dev/vda.
    assert_disk(&squib, "vda", root_len, false, "rootfs");
    assert_disk(&squib, "vdb", 2 * MIB, true, "data_ro");
    assert_disk(&squib, "vdc", 4 * MIB, false, "data_rw");
    squib.wait_for("SQUIB blk-ro-write failed", RUN_TIMEOUT);
    squib.wait_for("SQUIB blk-write done", RUN_TIMEOUT);
    assert_clean_exit(&mut squib);

    let written = fs::read(&rw_file).expect("read the writable drive file");
    let pattern = format!("SQUIB-BLK-PATTERN {tag}\n");
    assert!(
        written.starts_with(pattern.as_bytes()),
        "the host file lacks the guest's synced pattern: {:?}",
        String::from_utf8_lossy(&written[..64])
    );
    assert!(
        written[pattern.len()..].iter().all(|&b| b == 0),
        "the guest write changed bytes past its pattern"
    );
    assert_eq!(
        written.len() as u64,
        4 * MIB,
        "the writable file changed size"
    );
    let ro_after = fs::read(&ro_file).expect("read the read-only drive file again");
    assert!(
        ro_after == ro_before,
        "the read-only drive's host file changed"
    );
}

#[test]
fn initramfs_with_eight_data_drives_and_a_bandwidth_limit() {
    retry_on_pvm_crash(eight_drives_and_rate_limit);
}

/// Bytes of the eight data drives: all distinct, the limited one (`d3`) 4 MiB.
fn eight_sizes() -> [u64; 8] {
    std::array::from_fn(|i| (i as u64 + 1) * MIB + if i == 3 { 0 } else { 512 * i as u64 })
}

fn eight_drives_and_rate_limit() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let _slot = boot_slot();
    let mut squib = Squib::with_api("blk-eight", &[]);
    for (i, size) in eight_sizes().into_iter().enumerate() {
        let path = filled_file(&dir.path().join(format!("d{i}.img")), size, i as u8);
        let mut body = drive(&format!("d{i}"), &path, false, i % 2 == 1);
        if i == 3 {
            // 1 MiB/s: a 4 MiB read needs at least 3 s (the bucket starts full).
            body["rate_limiter"] = json!({ "bandwidth": { "size": MIB, "refill_time": 1000 } });
        }
        put_drive(&squib, &body);
    }
    start(
        &squib,
        &kit,
        true,
        "squib.action=blk-rate squib.blk_dev=vdd squib.blk_mib=4",
    );
    squib.wait_for(common::READY_MARKER, BOOT_TIMEOUT);
    for (i, size) in eight_sizes().into_iter().enumerate() {
        let name = format!("vd{}", char::from(b'a' + i as u8));
        assert_disk(&squib, &name, size, i % 2 == 1, &format!("d{i}"));
    }
    let centis = guest_centis(&squib, "read");
    assert!(
        centis >= 250,
        "a 4 MiB read through a 1 MiB/s bandwidth limit took only {centis} cs"
    );
    assert_clean_exit(&mut squib);
}

#[test]
fn put_drives_errors_on_the_wire() {
    let squib = Squib::with_api("blk-errors", &[]);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let missing = dir.path().join("missing.img");
    let fault = put_drive_fault(&squib, &drive("gone", &missing, false, false));
    assert!(
        fault.contains("No such file or directory") && fault.contains("missing.img"),
        "missing path_on_host: {fault}"
    );

    let a = filled_file(&dir.path().join("a.img"), MIB, 0);
    let b = filled_file(&dir.path().join("b.img"), MIB, 0);
    put_drive(&squib, &drive("root_a", &a, true, false));
    // Replacing the root drive under its own id is allowed; a second root is not.
    put_drive(&squib, &drive("root_a", &a, true, true));
    let fault = put_drive_fault(&squib, &drive("root_b", &b, true, false));
    assert!(
        fault.contains("A root block device already exists!"),
        "second root: {fault}"
    );

    // io_uring is available on the project's hosts: the Async engine is accepted.
    let mut async_drive = drive("data", &b, false, false);
    async_drive["io_engine"] = json!("Async");
    put_drive(&squib, &async_drive);

    let (status, reply) = squib.api().patch(
        "/drives/root_a",
        &json!({ "drive_id": "root_a", "path_on_host": b.display().to_string() }),
    );
    assert_eq!(status, 400, "PATCH /drives before boot: {reply}");
    let fault = json(&reply)["fault_message"].to_string();
    assert!(
        fault.contains("not supported before starting the microVM"),
        "PATCH before boot: {fault}"
    );

    let (status, config) = squib.api().get("/vm/config");
    assert_eq!(status, 200, "GET /vm/config: {config}");
    let drives = json(&config)["drives"].clone();
    assert_eq!(drives.as_array().map(Vec::len), Some(2), "drives: {drives}");
    assert_eq!(drives[1]["io_engine"], "Async", "the Async drive: {drives}");
    assert_eq!(
        drives[0]["is_read_only"], true,
        "the replaced root: {drives}"
    );
}

/// Guest figures of one benchmark run, in hundredths of a second, and the host's.
struct BenchRun {
    noop: u64,
    guest: [(&'static str, u64); 3],
    host: [(&'static str, Duration); 3],
}

/// Benchmark size of the sequential operations (MiB).
const BENCH_MIB: u64 = 32;
/// Number of 4 KiB direct reads (each costs the emulated guest tens of milliseconds).
const BENCH_OPS: u64 = 1024;

/// Runs host `dd` with `args` and returns its wall time.
fn host_dd(args: &[String]) -> Duration {
    let start = Instant::now();
    let status = Command::new("dd")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run dd on the host");
    assert!(status.success(), "host dd {args:?}: {status}");
    start.elapsed()
}

/// The same three operations as the guest's `blk-bench`, on the host file.
fn host_bench(file: &Path) -> [(&'static str, Duration); 3] {
    let f = file.display();
    let n = BENCH_MIB;
    let args = |s: String| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    [
        (
            "seq-write",
            host_dd(&args(format!(
                "if=/dev/zero of={f} bs=1M count={n} oflag=direct conv=notrunc"
            ))),
        ),
        (
            "seq-read",
            host_dd(&args(format!(
                "if={f} of=/dev/null bs=1M count={n} iflag=direct"
            ))),
        ),
        (
            "read-4k",
            host_dd(&args(format!(
                "if={f} of=/dev/null bs=4k count={BENCH_OPS} iflag=direct"
            ))),
        ),
    ]
}

/// The markdown section for `BENCHMARKS.md`.
fn bench_markdown(run: &BenchRun) -> String {
    let mut out = String::from(
        "<!-- block:begin -->\n## Block I/O\n\n\
         Command: `SQUIB_GUEST_DIR=<guest kit> cargo test -p squib --test block -- --ignored \
         block_benchmark --nocapture` (also `scripts/bench/block.sh`). \
         One guest (1 vCPU, 128 MiB, initramfs) runs busybox `dd` with O_DIRECT on a \
         file-backed data drive (`Sync` engine, `Unsafe` cache); the host runs the same `dd` \
         on the same file. Guest times come from `/proc/uptime` (10 ms steps) minus the \
         time of an empty `dd` (process start, about a second on `kvm_pvm`). **The host is \
         `kvm_pvm`: guest kernel code is emulated, so only the ratio column means anything.** \
         The 4 KiB line is direct 4 KiB reads at sequential offsets: random offsets would \
         need one guest process per read in busybox. During the guest's I/O the VMM's event \
         loop (the block device) used under 1% of a core and the vCPU thread the rest: the \
         gap is the emulated guest kernel, not the device, and Firecracker's 1 GiB/s \
         target can only be judged on hardware KVM.\n\n",
    );
    out.push_str(&format!(
        "- Date: {}\n- Sequential: {BENCH_MIB} MiB in 1 MiB blocks; 4 KiB: {BENCH_OPS} reads; \
         empty guest dd: {} ms\n\n",
        common::utc_date(),
        run.noop * 10
    ));
    out.push_str(
        "| operation | guest | host | guest/host | host is ×N faster |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for ((op, centis), (_, host)) in run.guest.iter().zip(run.host.iter()) {
        let guest_s = (centis.saturating_sub(run.noop)).max(1) as f64 / 100.0;
        let host_s = host.as_secs_f64().max(1e-6);
        let (unit, bytes, scale) = if *op == "read-4k" {
            ("IOPS", (BENCH_OPS * 4096) as f64, 1.0 / 4096.0)
        } else {
            ("MiB/s", (BENCH_MIB * MIB) as f64, 1.0 / MIB as f64)
        };
        let guest_rate = bytes * scale / guest_s;
        let host_rate = bytes * scale / host_s;
        out.push_str(&format!(
            "| {op} | {guest_rate:.2} {unit} | {host_rate:.1} {unit} | {:.5} | {:.0} |\n",
            guest_rate / host_rate,
            host_rate / guest_rate
        ));
    }
    out.push_str("<!-- block:end -->\n");
    out
}

/// Guest vs host block throughput; `SQUIB_BENCH_WRITE=1` writes the `BENCHMARKS.md` section.
#[test]
#[ignore = "benchmark: boots a guest and moves about 68 MiB; run with --ignored"]
fn block_benchmark() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create a temp dir");
    let file = filled_file(&dir.path().join("bench.img"), BENCH_MIB * MIB, 1);
    let _slot = boot_slot();
    let mut squib = Squib::with_api("blk-bench", &[]);
    put_drive(&squib, &drive("bench", &file, false, false));
    let action = format!(
        "squib.action=blk-bench squib.blk_dev=vda squib.blk_mib={BENCH_MIB} squib.blk_ops={BENCH_OPS}"
    );
    start(&squib, &kit, true, &action);
    squib.wait_for(common::READY_MARKER, BOOT_TIMEOUT);
    let noop = guest_centis(&squib, "noop");
    let guest = ["seq-write", "seq-read", "read-4k"].map(|op| (op, guest_centis(&squib, op)));
    squib.wait_for("SQUIB blk-bench done", RUN_TIMEOUT);
    assert_clean_exit(&mut squib);
    let run = BenchRun {
        noop,
        guest,
        host: host_bench(&file),
    };
    let section = bench_markdown(&run);
    eprintln!("{section}");
    if std::env::var("SQUIB_BENCH_WRITE").as_deref() == Ok("1") {
        common::write_bench_section("block", &section);
    }
}
