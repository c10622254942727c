//! Benchmark of squib's working-set prefetch on snapshot loads (issue 14), run by hand:
//! `SQUIB_BENCH_WRITE=1 cargo test --release -p squib --test working_set_bench -- --ignored --nocapture`.
//!
//! One guest (1 vCPU, 256 MiB, initramfs, printing `SQUIB tick <n>` without pause) is
//! snapshotted once (Full). A first load with `working_set` records the set. Then rounds
//! alternate a plain File load and a load with the set, each from a cold page cache (`sync`
//! and `drop_caches` before every load, root only): the time to the load's 204, to the
//! restored guest's first tick and to 20 ticks later, and the restored process's major and
//! minor page faults between the 204 and that 20th tick. Every load resumes the same saved
//! point, so the rounds are comparable.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{boot_args, boot_slot, GuestKit, Squib, BOOT_TIMEOUT};
use serde_json::json;

/// Rounds of each kind.
const ROUNDS: usize = 6;
/// Guest memory.
const MEM_MIB: u64 = 256;
/// A restored guest's wait for a tick line.
const TICK_TIMEOUT: Duration = Duration::from_secs(300);

/// One load's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    load_ms: f64,
    first_tick_ms: f64,
    twentieth_tick_ms: f64,
    /// Faults from the 204 to the 20th tick: the guest's (prefetch faults come before).
    major_faults: u64,
    minor_faults: u64,
}

#[test]
#[ignore = "benchmark: boots a guest and drops the host's page cache; run with --ignored as root"]
fn working_set_benchmark() {
    let Some(kit) = GuestKit::locate() else {
        return;
    };
    let _slot = boot_slot();
    let dir = tempfile::tempdir().expect("temporary directory");
    let state = dir.path().join("vm.snap");
    let memory = dir.path().join("vm.mem");
    let working_set = dir.path().join("vm.ws");

    snapshot_a_ticking_guest(&kit, &state, &memory);
    let load_body = |with_set: bool| {
        let mut body = json!({
            "snapshot_path": state.display().to_string(),
            "mem_backend": { "backend_type": "File", "backend_path": memory.display().to_string() },
            "resume_vm": true,
        });
        if with_set {
            body["working_set"] =
                json!({ "path": working_set.display().to_string(), "record_ms": 2000 });
        }
        body
    };

    // Record the set: the first two seconds of a restored guest.
    let recorder = Squib::with_api("ws-record", &[]);
    let (status, reply) = recorder.api().put("/snapshot/load", &load_body(true));
    assert_eq!(status, 204, "{reply}");
    let recorded = recorder.wait_for("saved to", TICK_TIMEOUT);
    drop(recorder);
    eprintln!("{recorded}");

    let mut plain = Vec::new();
    let mut prefetched = Vec::new();
    for _ in 0..ROUNDS {
        plain.push(cold_load(&load_body(false)));
        prefetched.push(cold_load(&load_body(true)));
    }
    let section = markdown(&recorded, &plain, &prefetched);
    eprintln!("{section}");
    if std::env::var("SQUIB_BENCH_WRITE").as_deref() == Ok("1") {
        common::write_bench_section("snapshot-working-set", &section);
    }
}

/// Boots the guest, lets it tick, pauses it and saves a Full snapshot.
fn snapshot_a_ticking_guest(kit: &GuestKit, state: &std::path::Path, memory: &std::path::Path) {
    let squib = Squib::with_api("ws-origin", &[]);
    for (path, body) in [
        (
            "/boot-source",
            json!({
                "kernel_image_path": kit.vmlinux().display().to_string(),
                "initrd_path": kit.initramfs().display().to_string(),
                "boot_args": boot_args("squib.action=tick squib.tick_period=0"),
            }),
        ),
        (
            "/machine-config",
            json!({ "vcpu_count": 1, "mem_size_mib": MEM_MIB }),
        ),
        ("/actions", json!({ "action_type": "InstanceStart" })),
    ] {
        let (status, reply) = squib.api().put(path, &body);
        assert_eq!(status, 204, "PUT {path}: {reply}");
    }
    squib.wait_for("SQUIB tick 20", BOOT_TIMEOUT);
    let (status, reply) = squib.api().patch("/vm", &json!({ "state": "Paused" }));
    assert_eq!(status, 204, "pause: {reply}");
    let (status, reply) = squib.api().put(
        "/snapshot/create",
        &json!({
            "snapshot_type": "Full",
            "snapshot_path": state.display().to_string(),
            "mem_file_path": memory.display().to_string(),
        }),
    );
    assert_eq!(status, 204, "create: {reply}");
}

/// One load from a cold page cache, measured.
fn cold_load(body: &serde_json::Value) -> Round {
    drop_page_cache();
    let squib = Squib::with_api("ws-load", &[]);
    let from = squib.line_count();
    let started = Instant::now();
    let (status, reply) = squib.api().put("/snapshot/load", body);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 204, "load: {reply}\n{}", squib.report());
    let (major_at_204, minor_at_204) = faults(squib.pid());
    let (first, line) = squib.wait_for_from(from, "SQUIB tick ", TICK_TIMEOUT);
    let first_tick_ms = started.elapsed().as_secs_f64() * 1e3;
    let n: u64 = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    squib.wait_for_from(first, &format!("SQUIB tick {}", n + 20), TICK_TIMEOUT);
    let twentieth_tick_ms = started.elapsed().as_secs_f64() * 1e3;
    let (major, minor) = faults(squib.pid());
    Round {
        load_ms,
        first_tick_ms,
        twentieth_tick_ms,
        major_faults: major.saturating_sub(major_at_204),
        minor_faults: minor.saturating_sub(minor_at_204),
    }
}

/// Writes dirty pages back and empties the host's page cache (root only).
fn drop_page_cache() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3")
        .expect("drop the page cache (the benchmark needs root)");
}

/// Major and minor page faults of process `pid` so far (`/proc/<pid>/stat` fields 12 and 10).
fn faults(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let field = |n: usize| -> u64 {
        rest.split(' ')
            .nth(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    };
    (field(12), field(10))
}

/// One figure of a round.
type Figure = fn(&Round) -> f64;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn markdown(recorded: &str, plain: &[Round], prefetched: &[Round]) -> String {
    let figure = |rounds: &[Round], f: Figure| median(rounds.iter().map(f).collect());
    let rows: [(&str, Figure); 5] = [
        ("load request to its 204 (ms)", |r| r.load_ms),
        ("load request to the first guest tick (ms)", |r| {
            r.first_tick_ms
        }),
        ("load request to 20 ticks later (ms)", |r| {
            r.twentieth_tick_ms
        }),
        ("major page faults, 204 to 20 ticks later", |r| {
            r.major_faults as f64
        }),
        ("minor page faults, 204 to 20 ticks later", |r| {
            r.minor_faults as f64
        }),
    ];
    let mut table = String::from(
        "| figure (median) | plain File load | with working set | ratio |\n|---|---:|---:|---:|\n",
    );
    for (name, f) in rows {
        let (a, b) = (figure(plain, f), figure(prefetched, f));
        let ratio = if a > 0.0 {
            format!("{:.2}", b / a)
        } else {
            "–".to_owned()
        };
        table.push_str(&format!("| {name} | {a:.1} | {b:.1} | {ratio} |\n"));
    }
    let recorded = recorded
        .split("Working set: ")
        .nth(1)
        .unwrap_or(recorded)
        .trim();
    format!(
        "<!-- snapshot-working-set:begin -->\n\
         ## Snapshot working-set prefetch (squib only)\n\n\
         Command: `SQUIB_BENCH_WRITE=1 cargo test --release -p squib --test working_set_bench -- --ignored --nocapture` \
         (root). One guest (1 vCPU, {MEM_MIB} MiB, initramfs, printing ticks without pause) is \
         snapshotted once; a load with `working_set` records the set ({recorded}); then {ROUNDS} \
         rounds alternate a plain File load and a load with the set, each after `sync` and \
         `drop_caches` (cold page cache). Faults are the restored process's (its vCPU \
         thread takes the guest's memory faults), read from `/proc/<pid>/stat` at the 204 and \
         once the guest has printed 20 more ticks: the difference is what the running guest \
         faulted in (a prefetch's own faults come before the 204). On `kvm_pvm` guest code is \
         emulated: compare the columns as ratios.\n\n\
         - Date: {}\n\n{table}<!-- snapshot-working-set:end -->\n",
        common::utc_date()
    )
}
