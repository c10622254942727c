//! Snapshot latency on a booted guest: `PUT /snapshot/create` (full snapshot of the paused
//! VM) and, in a fresh VMM process, `PUT /snapshot/load` with `resume_vm`. Each is timed
//! from request to reply. A VMM that refuses (no snapshot support yet) makes both figures
//! "not run" with its `fault_message`, never a number.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::boot::expect;
use super::{ms, Samples};
use crate::http::ApiClient;
use crate::report::FigureDef;
use crate::vmm::VmmProcess;

/// Time the restoring VMM's API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// The figures of this scenario.
pub const FIGURES: [FigureDef; 2] = [
    FigureDef {
        scenario: "snapshot",
        key: "snapshot_create_ms",
        label: "create, full, 1 vCPU/128 MiB (paused guest)",
        unit: "ms",
    },
    FigureDef {
        scenario: "snapshot",
        key: "snapshot_restore_ms",
        label: "restore in a new process (load + resume)",
        unit: "ms",
    },
];

/// Pauses the booted VM behind `api`, snapshots it into `dir` and restores it with `binary`.
pub fn measure(api: &mut ApiClient, binary: &Path, id: &str, dir: &Path) -> Samples {
    let snapshot = dir.join("vm.snap");
    let memory = dir.join("vm.mem");
    let create = create(api, &snapshot, &memory);
    let restore = match &create {
        Ok(_) => restore(binary, &format!("{id}-restore"), &snapshot, &memory),
        Err(e) => Err(format!("no snapshot to restore: {e}")),
    };
    vec![(FIGURES[0].key, create), (FIGURES[1].key, restore)]
}

fn create(api: &mut ApiClient, snapshot: &Path, memory: &Path) -> Result<f64, String> {
    let pause = json!({ "state": "Paused" }).to_string();
    expect(api, "PATCH", "/vm", Some(&pause), 204)?;
    let body = json!({
        "snapshot_type": "Full",
        "snapshot_path": snapshot,
        "mem_file_path": memory,
    })
    .to_string();
    let start = Instant::now();
    expect(api, "PUT", "/snapshot/create", Some(&body), 204)?;
    Ok(ms(start.elapsed()))
}

fn restore(binary: &Path, id: &str, snapshot: &Path, memory: &Path) -> Result<f64, String> {
    let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
    let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
    let body = json!({
        "snapshot_path": snapshot,
        "mem_backend": { "backend_type": "File", "backend_path": memory },
        "resume_vm": true,
    })
    .to_string();
    let start = Instant::now();
    expect(&mut api, "PUT", "/snapshot/load", Some(&body), 204)?;
    let elapsed = start.elapsed();
    vmm.kill().map_err(|e| e.to_string())?;
    Ok(ms(elapsed))
}
