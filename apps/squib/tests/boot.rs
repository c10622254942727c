//! Real-guest boots of the `squib` binary (issue 3, "Done when").
//!
//! `common::boot_slot` bounds the whole run to two guests at once (across test binaries).
//! Boots cost about 45 s of a host core each, so each test checks several things on one boot. The guest kit comes
//! from `scripts/guest/build.sh`; its init prints the `SQUIB ...` facts parsed here.

mod common;

use std::thread;
use std::time::Duration;

use common::{
    assert_memtotal_consistent, boot_args, boot_slot, json, retry_on_pvm_crash, GuestKit, Squib,
    BOOT_TIMEOUT,
};
use serde_json::json;

/// Backstop for 4 GiB of page structures to initialise under an emulated guest kernel
/// (`kvm_pvm`); a boot that stops printing fails sooner (`common::SILENCE_LIMIT`).
const LARGE_BOOT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Time allowed from a guest's `reboot -f` to squib's exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a paused guest is watched for console output that must not come.
const PAUSE_WATCH: Duration = Duration::from_secs(6);
/// Ticks the pause/resume guest prints before it reboots by itself.
const TICKS: u32 = 15;

/// Configures a guest through the API and starts it.
fn start_via_api(squib: &Squib, kernel: &str, initrd: &str, args: &str, vcpus: u8, mem_mib: u64) {
    let machine = json!({ "vcpu_count": vcpus, "mem_size_mib": mem_mib });
    start_with_machine(squib, kernel, initrd, args, &machine);
}

/// [`start_via_api`] with any `PUT /machine-config` body.
fn start_with_machine(
    squib: &Squib,
    kernel: &str,
    initrd: &str,
    args: &str,
    machine: &serde_json::Value,
) {
    let api = squib.api();
    let boot = json!({ "kernel_image_path": kernel, "initrd_path": initrd, "boot_args": args });
    assert_eq!(
        api.put("/boot-source", &boot).0,
        204,
        "PUT /boot-source\n{}",
        squib.report()
    );
    assert_eq!(
        api.put("/machine-config", machine).0,
        204,
        "PUT /machine-config\n{}",
        squib.report()
    );
    let start = api.put("/actions", &json!({ "action_type": "InstanceStart" }));
    assert_eq!(
        start.0,
        204,
        "InstanceStart: {}\n{}",
        start.1,
        squib.report()
    );
}

/// `GET /` → the instance state.
fn instance_state(squib: &Squib) -> String {
    let (status, body) = squib.api().get("/");
    assert_eq!(status, 200, "GET / answered {status}: {body}");
    json(&body)["state"].as_str().unwrap_or_default().to_owned()
}

/// The number in a `SQUIB tick <n>` line.
fn tick_number(line: &str) -> u32 {
    let n = line.rsplit(' ').next().unwrap_or_default();
    n.parse()
        .unwrap_or_else(|e| panic!("tick line {line:?}: {e}"))
}

/// Kernel arguments for SMP guests: keep kvm-clock as the clocksource. On `kvm_pvm` the
/// switch to the TSC clocksource, which runs in `stop_machine`, can leave both emulated
/// vCPUs spinning there for good (seen in CI with the guest alone on the host, and the same
/// way with Firecracker's binary); with the override there is no such switch. Real KVM hosts
/// do not need it.
const SMP_GUEST_ARGS: &str = "clocksource=kvm-clock";

#[test]
fn api_boot_vmlinux_initramfs_two_vcpus_pause_resume_and_reboot() {
    retry_on_pvm_crash(api_boot_two_vcpus_pause_resume_and_reboot);
}

fn api_boot_two_vcpus_pause_resume_and_reboot() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = common::exclusive_boot_slot();
    let mut squib = Squib::with_api("boot-api-2cpu", &[]);
    let args = boot_args(&format!(
        "{SMP_GUEST_ARGS} squib.action=tick squib.ticks={TICKS}"
    ));
    let kernel = kit.vmlinux().display().to_string();
    let initrd = kit.initramfs().display().to_string();
    start_via_api(&squib, &kernel, &initrd, &args, 2, 128);
    assert_eq!(instance_state(&squib), "Running");

    squib.wait_for(common::READY_MARKER, BOOT_TIMEOUT);
    assert_eq!(squib.guest_fact("nproc"), 2, "guest vCPUs");
    assert_memtotal_consistent(squib.guest_fact("memtotal_kib"), 128);
    squib.wait_for("SQUIB tick 2", BOOT_TIMEOUT);

    let (status, body) = squib.api().patch("/vm", &json!({ "state": "Paused" }));
    assert_eq!(status, 204, "pause: {body}");
    assert_eq!(instance_state(&squib), "Paused");
    // A tick already on its way to stdout may still arrive: count after it settles.
    thread::sleep(Duration::from_millis(1500));
    let paused_at = squib.line_count();
    thread::sleep(PAUSE_WATCH);
    let while_paused: Vec<String> = squib.lines()[paused_at..].to_vec();
    assert!(
        !while_paused.iter().any(|l| l.contains("SQUIB tick")),
        "the guest kept ticking while paused: {while_paused:?}"
    );
    let ticks = squib.lines();
    let last_tick = ticks
        .iter()
        .filter(|l| l.starts_with("SQUIB tick "))
        .map(|l| tick_number(l))
        .max();
    let last_tick = last_tick.unwrap_or(2);
    assert!(
        last_tick < TICKS,
        "the guest finished its ticks before the pause took effect"
    );

    let (status, body) = squib.api().patch("/vm", &json!({ "state": "Resumed" }));
    assert_eq!(status, 204, "resume: {body}");
    assert_eq!(instance_state(&squib), "Running");
    let next = format!("SQUIB tick {}", last_tick + 1);
    squib.wait_for_from(paused_at, &next, Duration::from_secs(60));

    squib.wait_for("SQUIB ticks done", BOOT_TIMEOUT);
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "squib exit after the guest rebooted\n{}",
        squib.report()
    );
}

#[test]
fn config_file_boot_memory_above_the_mmio_hole() {
    retry_on_pvm_crash(config_file_boot_above_the_hole);
}

fn config_file_boot_above_the_hole() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let config = json!({
        "boot-source": {
            "kernel_image_path": kit.vmlinux(),
            "initrd_path": kit.initramfs(),
            "boot_args": boot_args("squib.action=reboot squib.boot_timer=1"),
        },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 4096 },
    });
    let mut squib = Squib::with_config_file(&config, &["--boot-timer"]);

    squib.wait_for(common::READY_MARKER, LARGE_BOOT_TIMEOUT);
    assert_eq!(squib.guest_fact("nproc"), 1, "guest vCPUs");
    // Above 3 GiB only if the RAM past the MMIO hole (from 4 GiB) reached the guest.
    let memtotal = squib.guest_fact("memtotal_kib");
    assert_memtotal_consistent(memtotal, 4096);
    assert!(
        memtotal > 3 * 1024 * 1024,
        "MemTotal {memtotal} KiB: RAM above the hole is missing"
    );
    // The guest init wrote the boot-timer byte before its marker; Firecracker logs it (Info).
    squib.wait_for("Guest-boot-time =", Duration::from_secs(10));

    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "squib exit after the guest rebooted\n{}",
        squib.report()
    );
}

/// A compressed bzImage (what distributions ship) boots as well as the ELF `vmlinux`. Its
/// in-guest decompression runs emulated on `kvm_pvm` (minutes), hence one small vCPU. Its
/// memory is 2 MiB hugetlbfs pages (`huge_pages: "2M"`), taken from the host's pool at
/// InstanceStart.
#[test]
fn api_boot_bzimage_one_vcpu_on_huge_pages() {
    retry_on_pvm_crash(api_boot_bzimage);
}

fn api_boot_bzimage() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let pool = HugePagePool::grow_by(64);
    let mut squib = Squib::with_api("boot-bzimage", &["--boot-timer"]);
    let kernel = kit.bz_image().display().to_string();
    let initrd = kit.initramfs().display().to_string();
    let args = boot_args("squib.action=reboot squib.boot_timer=1");
    let before = pool.available();
    let machine = json!({ "vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M" });
    start_with_machine(&squib, &kernel, &initrd, &args, &machine);
    assert!(
        pool.available() + 64 <= before,
        "128 MiB of guest memory took 64 huge pages from the pool ({before} before, {} after)",
        pool.available()
    );
    squib.wait_for(common::READY_MARKER, 2 * BOOT_TIMEOUT);
    assert_eq!(squib.guest_fact("nproc"), 1, "guest vCPUs");
    assert_memtotal_consistent(squib.guest_fact("memtotal_kib"), 128);
    squib.wait_for("Guest-boot-time =", Duration::from_secs(10));
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "squib exit after the bzImage guest rebooted\n{}",
        squib.report()
    );
}

/// Two vCPUs, as many as this host's cores: on `kvm_pvm` a 4-vCPU guest on 2 cores was seen
/// spinning for many minutes with no console output this session (earlier sessions booted
/// it), so the 4-vCPU boot is left to hosts with the cores for it until that is understood.
#[test]
fn send_ctrl_alt_del_reboots_an_smp_guest() {
    retry_on_pvm_crash(send_ctrl_alt_del_reboots);
}

fn send_ctrl_alt_del_reboots() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    // As many vCPUs as this host has cores: no other guest at the same time.
    let _slot = common::exclusive_boot_slot();
    let mut squib = Squib::with_api("boot-ctrl-alt-del", &[]);
    let kernel = kit.vmlinux().display().to_string();
    let initrd = kit.initramfs().display().to_string();
    start_via_api(
        &squib,
        &kernel,
        &initrd,
        &boot_args(&format!("{SMP_GUEST_ARGS} squib.action=wait-ctrlaltdel")),
        2,
        128,
    );

    squib.wait_for(common::READY_MARKER, BOOT_TIMEOUT);
    assert_eq!(squib.guest_fact("nproc"), 2, "guest vCPUs");
    squib.wait_for("SQUIB waiting ctrl-alt-del", BOOT_TIMEOUT);
    assert!(
        squib.is_running(),
        "squib exited before Ctrl-Alt-Del\n{}",
        squib.report()
    );

    let (status, body) = squib
        .api()
        .put("/actions", &json!({ "action_type": "SendCtrlAltDel" }));
    assert_eq!(status, 204, "SendCtrlAltDel: {body}");
    squib.wait_for("SQUIB ctrl-alt-del", Duration::from_secs(60));
    let status = squib.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "squib exit after Ctrl-Alt-Del\n{}",
        squib.report()
    );
}

/// The host's 2 MiB huge page pool, grown for one test and set back on drop.
struct HugePagePool {
    original: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

impl HugePagePool {
    /// Adds `pages` pages to the pool (root only); fails the test when the host cannot.
    fn grow_by(pages: u64) -> HugePagePool {
        let original = read_number(NR_HUGEPAGES);
        std::fs::write(NR_HUGEPAGES, (original + pages).to_string())
            .unwrap_or_else(|e| panic!("grow {NR_HUGEPAGES} (run as root): {e}"));
        let pool = HugePagePool { original };
        assert!(
            pool.available() >= pages,
            "the host could not add {pages} huge pages to its pool ({} free)",
            pool.available()
        );
        pool
    }

    /// Free pages nobody has reserved.
    fn available(&self) -> u64 {
        read_number(&format!("{HUGEPAGES_2M}/free_hugepages"))
            .saturating_sub(read_number(&format!("{HUGEPAGES_2M}/resv_hugepages")))
    }
}

impl Drop for HugePagePool {
    fn drop(&mut self) {
        // Pages still in use become surplus and go back when their owner exits.
        let _ = std::fs::write(NR_HUGEPAGES, self.original.to_string());
    }
}

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}
