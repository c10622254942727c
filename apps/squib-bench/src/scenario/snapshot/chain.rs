//! One binary's chain of snapshots for one guest size: the boot that starts it, then rounds
//! that each restore the latest snapshot in a new process, measure it, and save it again.
//!
//! The chain owns the snapshot files, so they outlive the processes that wrote them. A
//! round writes its Full snapshot under a new name (the running process still maps the
//! memory file it was restored from, and overwriting that in place would change its guest
//! memory) and only then drops the previous one; a round whose Full save fails leaves the
//! previous snapshot for the next round.

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
/// Time a restored guest gets to print its first tick line.
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

/// One binary's chain for one guest size.
pub struct Chain {
    size: SnapshotSize,
    /// Where the snapshots live (deleted with the chain).
    dir: Option<tempfile::TempDir>,
    /// The snapshot the next round loads, or why there is none.
    latest: Result<SnapshotFiles, String>,
    /// Snapshots saved so far, to name the next one.
    saves: usize,
    /// Whether the VMM accepted dirty-page tracking at boot (then it is asked for at loads).
    tracking: bool,
    /// Why the first-output figure would mean nothing, when the guest does not tick fast.
    slow_ticks: Option<String>,
}

impl Chain {
    /// A chain not started yet.
    pub fn new(size: SnapshotSize) -> Chain {
        Chain {
            size,
            dir: None,
            latest: Err("the guest has not booted".to_owned()),
            saves: 0,
            tracking: false,
            slow_ticks: None,
        }
    }

    /// Boots the guest with `binary`, waits for its first tick, saves the chain's first
    /// snapshot (Full) and stops it.
    pub fn start(&mut self, binary: &Path, id: &str, guest: &Guest) -> Result<(), String> {
        let started = self.boot_and_save(binary, id, guest);
        if let Err(e) = &started {
            self.latest = Err(format!("the first snapshot failed: {e}"));
        }
        started
    }

    fn boot_and_save(&mut self, binary: &Path, id: &str, guest: &Guest) -> Result<(), String> {
        let dir = tempfile::Builder::new()
            .prefix("squib-bench-snap-")
            .tempdir()
            .map_err(|e| format!("cannot create the snapshot directory: {e}"))?;
        self.dir = Some(dir);
        let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
        let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
        configure_boot_source(&mut api, guest)?;
        self.tracking = configure_machine(&mut api, self.size.mem_mib)?;
        let start = json!({ "action_type": "InstanceStart" }).to_string();
        expect(&mut api, "PUT", "/actions", Some(&start), 204)?;
        let mut console = Console::open(&vmm.console)?;
        let (_, boot_text) = console.wait_for_tick(&mut vmm, guest.timeout)?;
        self.slow_ticks = slow_ticks(announced_tick_period(&boot_text).as_deref());
        // The server may close a connection left idle through a long boot: open a new one.
        let mut api = ApiClient::connect(&vmm.socket, REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot reconnect to the API after boot: {e}"))?;
        set_vm_state(&mut api, "Paused")?;
        let files = self.next_files()?;
        timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Full", &files),
        )?;
        vmm.kill().map_err(|e| e.to_string())?;
        self.latest = Ok(files);
        Ok(())
    }

    /// One measured round in a new process of `binary`; see the module doc of
    /// [`super`]. Figures the round did not get to carry the reason it stopped.
    pub fn round(&mut self, binary: &Path, id: &str) -> Result<Samples, String> {
        let files = match &self.latest {
            Ok(files) => files.clone(),
            Err(e) => return Err(format!("no snapshot to load: {e}")),
        };
        let mut samples = Samples::new();
        if let Err(e) = self.measure(binary, id, &files, &mut samples) {
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
        files: &SnapshotFiles,
        samples: &mut Samples,
    ) -> Result<(), String> {
        let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
        let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
        let mut console = Console::open(&vmm.console)?;
        let start = Instant::now();
        let load = timed_204(
            &mut api,
            "PUT",
            "/snapshot/load",
            &load_body(files, self.tracking),
        )?;
        samples.push((keys::LOAD, Ok(ms(load))));
        let (first_line, _) = console.wait_for_tick(&mut vmm, RESUME_TIMEOUT)?;
        let first_output = match &self.slow_ticks {
            None => Ok(ms(first_line.duration_since(start))),
            Some(why) => Err(why.clone()),
        };
        samples.push((keys::FIRST_OUTPUT, first_output));
        std::thread::sleep(RUN);
        let regions = smaps::guest_regions_kib(self.size.mem_mib);
        let overhead = smaps::measure(vmm.pid(), &regions)
            .map(|o| o.overhead_kib as f64)
            .map_err(|e| e.to_string());
        samples.push((keys::OVERHEAD, overhead));
        let reported = reported_latency_us(&mut api, &vmm, &LOAD_METRICS);
        samples.push((keys::LOAD_REPORTED, reported));

        set_vm_state(&mut api, "Paused")?;
        let next = self.next_files()?;
        let full = timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Full", &next),
        );
        if full.is_ok() {
            // This process keeps the old memory file mapped: unlinking it is safe.
            if let Ok(old) = std::mem::replace(&mut self.latest, Ok(next)) {
                old.remove();
            }
        } else {
            next.remove();
        }
        samples.push((keys::CREATE_FULL, full.map(ms)));
        set_vm_state(&mut api, "Resumed")?;
        std::thread::sleep(RUN);
        set_vm_state(&mut api, "Paused")?;
        let diff = SnapshotFiles::in_dir(self.dir()?, "diff");
        // A fresh file each time: an existing one of the right size would be written in
        // place, as a layer over an older snapshot.
        diff.remove();
        let created = timed_204(
            &mut api,
            "PUT",
            "/snapshot/create",
            &create_body("Diff", &diff),
        );
        diff.remove();
        samples.push((keys::CREATE_DIFF, created.map(ms)));
        vmm.kill().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn dir(&self) -> Result<&Path, String> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .ok_or_else(|| "the chain has no snapshot directory".to_owned())
    }

    /// Names for the next Full snapshot.
    fn next_files(&mut self) -> Result<SnapshotFiles, String> {
        self.saves += 1;
        let stem = format!("full-{}", self.saves);
        Ok(SnapshotFiles::in_dir(self.dir()?, &stem))
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

/// Why the first-output figure means nothing with the guest's announced tick period.
fn slow_ticks(announced: Option<&str>) -> Option<String> {
    match announced {
        Some(TICK_PERIOD) => None,
        Some(other) => Some(format!(
            "the guest ticks every {other} s, not {TICK_PERIOD} s"
        )),
        None => Some(
            "the guest kit's init ignores squib.tick_period (it ticks once a second): \
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
        SnapshotFiles::in_dir(Path::new("/s"), "full-1")
    }

    #[test]
    fn bodies_follow_firecracker_schema() {
        let create: serde_json::Value =
            serde_json::from_str(&create_body("Diff", &files())).unwrap();
        assert_eq!(create["snapshot_type"], "Diff");
        assert_eq!(create["snapshot_path"], "/s/full-1.snap");
        assert_eq!(create["mem_file_path"], "/s/full-1.mem");
        let load: serde_json::Value = serde_json::from_str(&load_body(&files(), false)).unwrap();
        assert_eq!(load["mem_backend"]["backend_type"], "File");
        assert_eq!(load["mem_backend"]["backend_path"], "/s/full-1.mem");
        assert_eq!(load["resume_vm"], true);
        assert!(load.get("track_dirty_pages").is_none());
        let load: serde_json::Value = serde_json::from_str(&load_body(&files(), true)).unwrap();
        assert_eq!(load["track_dirty_pages"], true);
    }

    #[test]
    fn slow_ticks_explains_an_old_kit_or_another_period() {
        assert_eq!(slow_ticks(Some(TICK_PERIOD)), None);
        assert!(slow_ticks(Some("1")).unwrap().contains("every 1 s"));
        assert!(slow_ticks(None).unwrap().contains("rebuild the kit"));
    }

    #[test]
    fn a_round_without_a_snapshot_says_why() {
        let mut chain = Chain::new(super::super::SIZES[0]);
        let err = chain.round(Path::new("/bin/true"), "t").unwrap_err();
        assert!(
            err.contains("no snapshot to load: the guest has not booted"),
            "{err}"
        );
    }

    #[test]
    fn a_round_that_cannot_load_marks_every_figure_with_the_reason() {
        let mut chain = Chain::new(super::super::SIZES[0]);
        chain.latest = Ok(files());
        // `sh` rejects the VMM flags and exits: the load never happens.
        let samples = chain.round(Path::new("/bin/sh"), "t").unwrap();
        assert_eq!(samples.len(), keys::ALL.len());
        assert!(samples
            .iter()
            .all(|(_, v)| v.as_ref().is_err_and(|e| e.contains("exited"))));
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
