//! Boot: `InstanceStart` to the guest's init writing the boot timer, measured by the VMM's
//! own `--boot-timer` device and read from its log line
//! `Guest-boot-time = {us} us {ms} ms, {cpu_us} CPU us {cpu_ms} CPU ms` (Firecracker's
//! `test_boottime.py` method, serial console off). In the same run, once the guest is up:
//! - the VMM's memory overhead (RSS outside guest memory, [`crate::smaps`]);
//! - `InstanceStart to first KVM_RUN: <N> us` when the VMM logs it (squib does);
//! - the start-up time the VMM reports in its first metrics line after `FlushMetrics`
//!   (`api_server.process_startup_time_us` / `_cpu_us`).
//!
//! The guest kit's init writes the boot timer when the command line has
//! `squib.boot_timer=1`; `squib.action=tick` keeps it alive until it is killed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Samples;
use crate::http::ApiClient;
use crate::report::FigureDef;
use crate::smaps;
use crate::vmm::{VmmProcess, REQUEST_TIMEOUT};

/// Time the API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two looks at the log while the guest boots.
const LOG_POLL: Duration = Duration::from_millis(10);
/// Firecracker's `test_boottime.py` arguments, but for the serial console switch.
const BASE_ARGS: &str =
    "reboot=k panic=1 nomodule i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";
/// Turns the serial console off, as Firecracker's boot-time test does.
const SERIAL_OFF: &str = "8250.nr_uarts=0";
/// What a guest needs on `kvm_pvm` hosts unless the VMM hides these CPU features.
const PVM_ARGS: &str = "noxsave clearcpuid=popcnt,smap nofsgsbase";
/// Asks the guest kit's init for the boot timer and to stay up.
const GUEST_ARGS: &str = "squib.boot_timer=1 squib.action=tick";
/// The boot timer's log line.
const BOOT_TIME_MARKER: &str = "Guest-boot-time = ";
/// squib's `InstanceStart` → first `KVM_RUN` log line.
const FIRST_KVM_RUN_MARKER: &str = "InstanceStart to first KVM_RUN: ";

/// A measured machine size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootConfig {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub mem_mib: u64,
    /// This configuration's figures.
    pub figures: [FigureDef; 6],
}

/// The two sizes the issue asks for.
pub const CONFIGS: [BootConfig; 2] = [
    BootConfig {
        vcpus: 1,
        mem_mib: 128,
        figures: figures("boot 1 vCPU/128 MiB"),
    },
    BootConfig {
        vcpus: 2,
        mem_mib: 1024,
        figures: figures("boot 2 vCPU/1024 MiB"),
    },
];

const fn def(
    scenario: &'static str,
    key: &'static str,
    label: &'static str,
    unit: &'static str,
) -> FigureDef {
    FigureDef {
        scenario,
        key,
        label,
        unit,
    }
}

const fn figures(scenario: &'static str) -> [FigureDef; 6] {
    let s = scenario;
    [
        def(
            s,
            "boot_wall_ms",
            "InstanceStart to guest init (boot timer)",
            "ms",
        ),
        def(
            s,
            "boot_cpu_ms",
            "VMM CPU time during boot (boot timer)",
            "ms",
        ),
        def(
            s,
            "first_kvm_run_us",
            "InstanceStart to first KVM_RUN (VMM log)",
            "us",
        ),
        def(
            s,
            "memory_overhead_kib",
            "VMM memory overhead after boot (smaps RSS)",
            "KiB",
        ),
        def(
            s,
            "reported_startup_us",
            "start-up reported in metrics (wall)",
            "us",
        ),
        def(
            s,
            "reported_startup_cpu_us",
            "start-up reported in metrics (CPU)",
            "us",
        ),
    ]
}

/// The guest: kernel, root and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs, used when there is no root drive.
    pub initrd: PathBuf,
    /// Root drive instead of the initramfs.
    pub rootfs: Option<PathBuf>,
    /// Kernel command line.
    pub boot_args: String,
    /// Time a boot may take.
    pub timeout: Duration,
}

/// The default command line: Firecracker's, serial off, plus what this host needs.
pub fn default_boot_args(kvm_pvm: bool) -> String {
    format!("{SERIAL_OFF} {} {GUEST_ARGS}", host_args(kvm_pvm))
}

/// Firecracker's boot-time arguments without the serial switch or any guest action, plus
/// what this host needs (for scenarios that want their own console and guest action).
pub fn host_args(kvm_pvm: bool) -> String {
    if kvm_pvm {
        format!("{BASE_ARGS} {PVM_ARGS}")
    } else {
        BASE_ARGS.to_owned()
    }
}

/// One boot of `binary` with `config`.
pub fn run(binary: &Path, id: &str, guest: &Guest, config: &BootConfig) -> Result<Samples, String> {
    let mut vmm = VmmProcess::spawn(binary, id, true).map_err(|e| e.to_string())?;
    let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
    configure(&mut api, guest, config)?;
    let start = json!({ "action_type": "InstanceStart" }).to_string();
    expect(&mut api, "PUT", "/actions", Some(&start), 204)?;
    let log = wait_for_boot_timer(&mut vmm, guest.timeout)?;
    // The server may close a connection left idle through a long boot: open a fresh one.
    let mut api = ApiClient::connect(&vmm.socket, REQUEST_TIMEOUT)
        .map_err(|e| format!("cannot reconnect to the API after boot: {e}"))?;
    let regions = smaps::guest_regions_kib(config.mem_mib);
    let memory = smaps::measure(vmm.pid(), &regions)
        .map(|o| o.overhead_kib as f64)
        .map_err(|e| e.to_string());
    let (wall, cpu) = parse_boot_time(&log)
        .ok_or_else(|| format!("unparsable boot timer line in the log: {}", vmm.tail()))?;
    let keys = config.figures.map(|f| f.key);
    let first_run = parse_first_kvm_run(&log)
        .ok_or_else(|| format!("the VMM logs no `{FIRST_KVM_RUN_MARKER}<N> us` line"));
    let mut samples = vec![
        (keys[0], Ok(wall)),
        (keys[1], Ok(cpu)),
        (keys[2], first_run),
        (keys[3], memory),
    ];
    match reported_startup(&mut api, &vmm) {
        Ok((us, cpu_us)) => samples.extend([(keys[4], Ok(us)), (keys[5], Ok(cpu_us))]),
        Err(e) => samples.extend([(keys[4], Err(e.clone())), (keys[5], Err(e))]),
    }
    vmm.kill().map_err(|e| e.to_string())?;
    Ok(samples)
}

fn configure(api: &mut ApiClient, guest: &Guest, config: &BootConfig) -> Result<(), String> {
    configure_boot_source(api, guest)?;
    let machine = json!({ "vcpu_count": config.vcpus, "mem_size_mib": config.mem_mib });
    expect(
        api,
        "PUT",
        "/machine-config",
        Some(&machine.to_string()),
        204,
    )
}

/// `PUT /boot-source` for `guest`, and its root drive when it boots from one.
pub fn configure_boot_source(api: &mut ApiClient, guest: &Guest) -> Result<(), String> {
    let mut boot = json!({
        "kernel_image_path": guest.kernel,
        "boot_args": guest.boot_args,
    });
    if let Some(rootfs) = &guest.rootfs {
        let drive = json!({
            "drive_id": "rootfs",
            "path_on_host": rootfs,
            "is_root_device": true,
            "is_read_only": true,
        });
        expect(api, "PUT", "/drives/rootfs", Some(&drive.to_string()), 204)?;
    } else {
        boot["initrd_path"] = json!(guest.initrd);
    }
    expect(api, "PUT", "/boot-source", Some(&boot.to_string()), 204)
}

/// Sends a request and fails unless it answers `status`.
pub fn expect(
    api: &mut ApiClient,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
) -> Result<(), String> {
    let reply = api
        .request(method, path, body)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    if reply.status == status {
        Ok(())
    } else {
        Err(format!(
            "{method} {path} answered {}: {}",
            reply.status,
            reply.body.trim()
        ))
    }
}

/// Waits for the boot timer's log line; returns the log.
fn wait_for_boot_timer(vmm: &mut VmmProcess, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = vmm.log_text();
        if log.contains(BOOT_TIME_MARKER) {
            return Ok(log);
        }
        vmm.check_running()
            .map_err(|e| format!("the guest did not boot: {e}"))?;
        if Instant::now() > deadline {
            return Err(format!(
                "the guest did not write the boot timer within {} s; last output: {}",
                timeout.as_secs(),
                vmm.tail()
            ));
        }
        std::thread::sleep(LOG_POLL);
    }
}

/// Flushes metrics and reads the start-up figures from the first metrics line.
fn reported_startup(api: &mut ApiClient, vmm: &VmmProcess) -> Result<(f64, f64), String> {
    let flush = json!({ "action_type": "FlushMetrics" }).to_string();
    expect(api, "PUT", "/actions", Some(&flush), 204)?;
    let text = std::fs::read_to_string(&vmm.metrics)
        .map_err(|e| format!("cannot read the metrics file: {e}"))?;
    parse_startup_metrics(&text)
}

/// `(wall ms, CPU ms)` from the boot timer's line.
pub fn parse_boot_time(log: &str) -> Option<(f64, f64)> {
    let line = log.lines().find(|l| l.contains(BOOT_TIME_MARKER))?;
    let (_, rest) = line.split_once(BOOT_TIME_MARKER)?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    match tokens.as_slice() {
        [us, "us", _, "ms,", cpu_us, "CPU", "us", ..] => {
            let us: f64 = us.parse().ok()?;
            let cpu_us: f64 = cpu_us.parse().ok()?;
            Some((us / 1e3, cpu_us / 1e3))
        }
        _ => None,
    }
}

/// Microseconds from squib's `InstanceStart to first KVM_RUN: <N> us` line.
pub fn parse_first_kvm_run(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(FIRST_KVM_RUN_MARKER))?;
    let (_, rest) = line.split_once(FIRST_KVM_RUN_MARKER)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `api_server.process_startup_time_us` and `_cpu_us` from the first metrics line.
pub fn parse_startup_metrics(ndjson: &str) -> Result<(f64, f64), String> {
    let line = ndjson
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("the metrics file is empty after FlushMetrics")?;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad metrics line: {e}"))?;
    let field = |name: &str| {
        value["api_server"][name]
            .as_f64()
            .ok_or_else(|| format!("the metrics line has no api_server.{name}"))
    };
    Ok((
        field("process_startup_time_us")?,
        field("process_startup_time_cpu_us")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_boot_time_reads_firecracker_line() {
        let log = "2026-11-26T18:00:00.1 [x:main] Running Firecracker v1.17.0-dev\n\
                   2026-11-26T18:00:45.2 [x:fc_vcpu 0] Guest-boot-time =  45123 us 45 ms,   \
                   44210 CPU us 44 CPU ms\n";
        assert_eq!(parse_boot_time(log), Some((45.123, 44.21)));
    }

    #[test]
    fn parse_boot_time_rejects_other_shapes() {
        assert_eq!(parse_boot_time("nothing here\n"), None);
        assert_eq!(parse_boot_time("Guest-boot-time = fast\n"), None);
        assert_eq!(parse_boot_time("Guest-boot-time = 1 us 0 ms\n"), None);
    }

    #[test]
    fn parse_first_kvm_run_reads_squib_line() {
        let log = "[a:fc_vcpu 0] InstanceStart to first KVM_RUN: 2345 us\n";
        assert_eq!(parse_first_kvm_run(log), Some(2345.0));
        assert_eq!(
            parse_first_kvm_run("InstanceStart to first KVM_RUN: soon\n"),
            None
        );
        assert_eq!(parse_first_kvm_run(""), None);
    }

    #[test]
    fn parse_startup_metrics_reads_first_line() {
        let text = "\n{\"utc_timestamp_ms\":1,\"api_server\":{\"process_startup_time_us\":9000,\
                    \"process_startup_time_cpu_us\":4000}}\n{\"api_server\":{}}\n";
        assert_eq!(parse_startup_metrics(text), Ok((9000.0, 4000.0)));
        assert!(parse_startup_metrics("").unwrap_err().contains("empty"));
        assert!(parse_startup_metrics("{\"api_server\":{}}")
            .unwrap_err()
            .contains("process_startup_time_us"));
        assert!(parse_startup_metrics("not json").is_err());
    }

    #[test]
    fn default_boot_args_turn_serial_off_and_add_pvm_workarounds() {
        let pvm = default_boot_args(true);
        assert!(pvm.contains("8250.nr_uarts=0") && pvm.contains("noxsave"));
        assert!(pvm.contains("squib.boot_timer=1"));
        assert!(!default_boot_args(false).contains("noxsave"));
    }

    #[test]
    fn configs_have_distinct_scenarios_and_keys() {
        assert_ne!(
            CONFIGS[0].figures[0].scenario,
            CONFIGS[1].figures[0].scenario
        );
        let keys: std::collections::HashSet<_> = CONFIGS[0].figures.iter().map(|f| f.key).collect();
        assert_eq!(keys.len(), 6);
    }
}
