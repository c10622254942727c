//! One binary's series of snapshot rounds for one guest size: the boot that takes the base
//! snapshot, then rounds that each restore it in a new process, measure, and save the
//! restored guest again.
//!
//! Every round loads the same base snapshot rather than the previous round's: the figures
//! then compare like with like (same guest state, same point in its print loop), and a VMM
//! whose snapshots of restored guests cannot be loaded still gets its load figures (it then
//! fails the load-after-restore check instead, see [`Series::round`]). The series owns its
//! files, so they outlive the processes that wrote them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::console::{announced_tick_period, Console};
use super::replies::{refusal, reported_latency_us, set_vm_state, timed_204};
use super::{keys, SnapshotSize, TICK_PERIOD};
use crate::http::ApiClient;
use crate::scenario::boot::{configure_boot_source, expect, Guest};
use crate::scenario::{ms, Samples};
use crate::smaps;
use crate::vmm::{VmmProcess, REQUEST_TIMEOUT};

/// Time a VMM's API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the guest runs where a step wants it to have run "a little": before the memory
/// is measured, and between the Full and the Diff snapshot.
const RUN: Duration = Duration::from_secs(1);
/// Time a restored guest gets to print.
const RESUME_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a VMM reports its own load time, in order of preference: the VMM's handling
/// (squib fills it in; Firecracker only when it logs at debug level, as it updates it
/// inside the debug log call), else the API request as a whole (Firecracker).
const LOAD_METRICS: [&str; 2] = ["vmm_load_snapshot", "load_snapshot"];

/// A snapshot's two files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotFiles {
    state: PathBuf,
    memory: PathBuf,
}

impl SnapshotFiles {
    fn in_dir(dir: &Path, stem: &str) -> SnapshotFiles {
        SnapshotFiles {
            state: dir.join(format!("{stem}.snap")),
            memory: dir.join(format!("{stem}.mem")),
        }
    }

    /// Deletes both files; a file already gone is fine.
    fn remove(&self) {
        for path in [&self.state, &self.memory] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One binary's rounds for one guest size.
pub struct Series {
    size: SnapshotSize,
    /// Where the snapshots live (deleted with the series).
    dir: Option<tempfile::TempDir>,
    /// The base snapshot every round loads, or why there is none.
    base: Result<SnapshotFiles, String>,
    /// Whether the VMM accepted dirty-page tracking at boot (then it is asked for at loads).
    tracking: bool,
    /// Why the first-output figure would mean something else, when the guest does not
    /// print continuously.
    not_continuous: Option<String>,
}

impl Series {
    /// A series whose guest has not booted yet.
    pub fn new(size: SnapshotSize) -> Series {
        Series {
            size,
            dir: None,
            base: Err("the guest has not booted".to_owned()),
            tracking: false,
            not_continuous: None,
        }
    }

    /// Boots the guest with `binary`, waits for its first tick, saves the base snapshot
    /// (Full) and stops it.
    pub fn start(&mut self, binary: &Path, id: &str, guest: &Guest) -> Result<(), String> {
        let started = self.boot_and_save(binary, id, guest);
        if let Err(e) = &started {
            self.base = Err(format!("the base snapshot failed: {e}"));
        }
        started
    }

    fn boot_and_save(&mut self, binary: &Path, id: &str, guest: &Guest) -> Result<(), String> {
        let dir = tempfile::Builder::new()
            .prefix("squib-bench-snap-")
            .tempdir()
            .map_err(|e| format!("cannot create the snapshot directory: {e}"))?;
        let base = SnapshotFiles::in_dir(dir.path(), "base");
        self.dir = Some(dir);
        let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
        let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
        configure_boot_source(&mut api, guest)?;
        self.tracking = configure_machine(&mut api, self.size.mem_mib)?;
        let start = json!({ "action_type": "InstanceStart" }).to_string();
        expect(&mut api, "PUT", "/actions", Some(&start), 204)?;
        let mut console = Console::open(&vmm.console)?;
        let (_, boot_text) = console.wait_for_tick(&mut vmm, guest.timeout)?;
        self.not_continuous = not_continuous(announced_tick_period(&boot_text).as_deref());
        // The server may close a connection left idle through a long boot: open a new one.
        let mut api = ApiClient::connect(&vmm.socket, REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot reconnect to the API after boot: {e}"))?;
        set_vm_state(&mut api, "Paused")?;
        timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Full", &base),
        )?;
        vmm.kill().map_err(|e| e.to_string())?;
        self.base = Ok(base);
        Ok(())
    }

    /// One measured round in a new process of `binary`: see the steps in [`super`]. Figures
    /// the round did not get to carry the reason it stopped.
    pub fn round(&mut self, binary: &Path, id: &str) -> Result<Samples, String> {
        let base = match &self.base {
            Ok(files) => files.clone(),
            Err(e) => return Err(format!("no snapshot to load: {e}")),
        };
        let mut samples = Samples::new();
        if let Err(e) = self.measure(binary, id, &base, &mut samples) {
            for key in keys::ALL {
                if !samples.iter().any(|(k, _)| *k == key) {
                    samples.push((key, Err(e.clone())));
                }
            }
        }
        Ok(samples)
    }

    fn measure(
        &mut self,
        binary: &Path,
        id: &str,
        base: &SnapshotFiles,
        samples: &mut Samples,
    ) -> Result<(), String> {
        let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
        let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
        let mut console = Console::open(&vmm.console)?;
        let start = Instant::now();
        let body = load_body(base, self.tracking);
        let load = timed_204(&mut api, "PUT", "/snapshot/load", &body)?;
        samples.push((keys::LOAD, Ok(ms(load))));
        let first_byte = console.wait_for_output(&mut vmm, RESUME_TIMEOUT)?;
        let first_output = match &self.not_continuous {
            None => Ok(ms(first_byte.duration_since(start))),
            Some(why) => Err(why.clone()),
        };
        samples.push((keys::FIRST_OUTPUT, first_output));
        // A whole tick line shows the guest runs on, not just that a byte came out.
        console.wait_for_tick(&mut vmm, RESUME_TIMEOUT)?;
        std::thread::sleep(RUN);
        let regions = smaps::guest_regions_kib(self.size.mem_mib);
        let overhead = smaps::measure(vmm.pid(), &regions)
            .map(|o| o.overhead_kib as f64)
            .map_err(|e| e.to_string());
        samples.push((keys::OVERHEAD, overhead));
        let reported = reported_latency_us(&mut api, &vmm, &LOAD_METRICS);
        samples.push((keys::LOAD_REPORTED, reported));

        set_vm_state(&mut api, "Paused")?;
        let dir = self.dir()?;
        let full = SnapshotFiles::in_dir(dir, "full");
        let diff = SnapshotFiles::in_dir(dir, "diff");
        // Fresh files each time: an existing memory file of the right size would be
        // written in place, as a layer over an older snapshot.
        full.remove();
        diff.remove();
        let created = timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Full", &full),
        );
        samples.push((keys::CREATE_FULL, created.map(ms)));
        set_vm_state(&mut api, "Resumed")?;
        std::thread::sleep(RUN);
        set_vm_state(&mut api, "Paused")?;
        let created = timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Diff", &diff),
        );
        samples.push((keys::CREATE_DIFF, created.map(ms)));
        vmm.kill().map_err(|e| e.to_string())?;
        samples.push((keys::RELOAD, self.reload(binary, id, &full)));
        full.remove();
        diff.remove();
        Ok(())
    }

    /// Whether the Full snapshot of a restored guest (`full`, when it was written) loads and
    /// runs in yet another process: its load time, or why not.
    fn reload(&self, binary: &Path, id: &str, full: &SnapshotFiles) -> Result<f64, String> {
        if !full.state.exists() {
            return Err("no Full snapshot of the restored guest to load".to_owned());
        }
        let mut vmm =
            VmmProcess::spawn(binary, &format!("{id}-re"), false).map_err(|e| e.to_string())?;
        let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
        let mut console = Console::open(&vmm.console)?;
        let body = load_body(full, self.tracking);
        let load = timed_204(&mut api, "PUT", "/snapshot/load", &body)?;
        console.wait_for_tick(&mut vmm, RESUME_TIMEOUT)?;
        vmm.kill().map_err(|e| e.to_string())?;
        Ok(ms(load))
    }

    fn dir(&self) -> Result<&Path, String> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .ok_or_else(|| "the series has no snapshot directory".to_owned())
    }
}

/// `PUT /machine-config` with one vCPU, `mem_mib` and dirty-page tracking; a VMM that
/// refuses tracking gets the same without it. Returns whether tracking is on.
fn configure_machine(api: &mut ApiClient, mem_mib: u64) -> Result<bool, String> {
    let path = "/machine-config";
    let mut machine =
        json!({ "vcpu_count": 1, "mem_size_mib": mem_mib, "track_dirty_pages": true });
    let reply = api
        .request("PUT", path, Some(&machine.to_string()))
        .map_err(|e| format!("PUT {path}: {e}"))?;
    if reply.status == 204 {
        return Ok(true);
    }
    eprintln!(
        "squib-bench: snapshot: dirty-page tracking refused ({}); going on without it",
        refusal(&reply)
    );
    machine["track_dirty_pages"] = json!(false);
    expect(api, "PUT", path, Some(&machine.to_string()), 204)?;
    Ok(false)
}

/// Why the first-output figure would mean something else with the guest's announced tick
/// period (a guest that sleeps between lines adds part of its sleep to the figure).
fn not_continuous(announced: Option<&str>) -> Option<String> {
    match announced {
        Some(TICK_PERIOD) => None,
        Some(other) => Some(format!(
            "the guest sleeps {other} s between lines instead of printing continuously"
        )),
        None => Some(
            "the guest kit's init ignores squib.tick_period (it prints once a second): \
             rebuild the kit with scripts/guest/build.sh"
                .to_owned(),
        ),
    }
}

/// `PUT /snapshot/create` body.
fn create_body(kind: &str, files: &SnapshotFiles) -> String {
    json!({
        "snapshot_type": kind,
        "snapshot_path": files.state,
        "mem_file_path": files.memory,
    })
    .to_string()
}

/// `PUT /snapshot/load` body: memory file mapped, resumed at once; dirty-page tracking only
/// when the boot had it (a VMM without it may refuse the field's `true`).
fn load_body(files: &SnapshotFiles, tracking: bool) -> String {
    let mut body = json!({
        "snapshot_path": files.state,
        "mem_backend": { "backend_type": "File", "backend_path": files.memory },
        "resume_vm": true,
    });
    if tracking {
        body["track_dirty_pages"] = json!(true);
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> SnapshotFiles {
        SnapshotFiles::in_dir(Path::new("/s"), "base")
    }

    #[test]
    fn bodies_follow_firecracker_schema() {
        let create: serde_json::Value =
            serde_json::from_str(&create_body("Diff", &files())).unwrap();
        assert_eq!(create["snapshot_type"], "Diff");
        assert_eq!(create["snapshot_path"], "/s/base.snap");
        assert_eq!(create["mem_file_path"], "/s/base.mem");
        let load: serde_json::Value = serde_json::from_str(&load_body(&files(), false)).unwrap();
        assert_eq!(load["mem_backend"]["backend_type"], "File");
        assert_eq!(load["mem_backend"]["backend_path"], "/s/base.mem");
        assert_eq!(load["resume_vm"], true);
        assert!(load.get("track_dirty_pages").is_none());
        let load: serde_json::Value = serde_json::from_str(&load_body(&files(), true)).unwrap();
        assert_eq!(load["track_dirty_pages"], true);
    }

    #[test]
    fn not_continuous_explains_an_old_kit_or_a_sleeping_guest() {
        assert_eq!(not_continuous(Some(TICK_PERIOD)), None);
        assert!(not_continuous(Some("1")).unwrap().contains("sleeps 1 s"));
        assert!(not_continuous(None).unwrap().contains("rebuild the kit"));
    }

    #[test]
    fn a_round_without_a_snapshot_says_why() {
        let mut series = Series::new(super::super::SIZES[0]);
        let err = series.round(Path::new("/bin/true"), "t").unwrap_err();
        assert!(
            err.contains("no snapshot to load: the guest has not booted"),
            "{err}"
        );
    }

    #[test]
    fn a_round_that_cannot_load_marks_every_figure_with_the_reason() {
        let mut series = Series::new(super::super::SIZES[0]);
        series.base = Ok(files());
        // `sh` rejects the VMM flags and exits: the load never happens.
        let samples = series.round(Path::new("/bin/sh"), "t").unwrap();
        assert_eq!(samples.len(), keys::ALL.len());
        assert!(samples
            .iter()
            .all(|(_, v)| v.as_ref().is_err_and(|e| e.contains("exited"))));
    }

    #[test]
    fn reload_without_a_full_snapshot_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let series = Series::new(super::super::SIZES[0]);
        let missing = SnapshotFiles::in_dir(dir.path(), "full");
        let err = series
            .reload(Path::new("/bin/sh"), "t", &missing)
            .unwrap_err();
        assert!(err.contains("no Full snapshot"), "{err}");
    }

    #[test]
    fn snapshot_files_are_removed_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFiles::in_dir(dir.path(), "x");
        std::fs::write(&f.state, "s").unwrap();
        f.remove();
        f.remove();
        assert!(!f.state.exists() && !f.memory.exists());
    }
}
