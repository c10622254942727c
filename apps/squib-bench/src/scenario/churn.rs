//! Churn: microVMs started and torn down per second on this machine. One cycle execs the
//! VMM, waits for its API, configures the guest kit's kernel (1 vCPU, 128 MiB), sends
//! `InstanceStart` and, once it has answered 204 (vCPUs running), kills and reaps the
//! process. Two workers cycle in parallel (the hosts this was written for allow two guests
//! at once) for a fixed window; the figure is completed cycles per second of the window.
//! The guest does not get to finish booting: on a software hypervisor a boot takes tens of
//! seconds, and the figure is about the VMM's cost of creating and destroying a VM.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::boot::{expect, Guest};
use super::Samples;
use crate::report::FigureDef;
use crate::vmm::VmmProcess;

/// Cycles in flight at once.
pub const WORKERS: usize = 2;
/// Time the API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// The figure of this scenario.
pub const FIGURES: [FigureDef; 1] = [FigureDef {
    scenario: "churn",
    key: "churn_vms_per_s",
    label: "start (InstanceStart 204) + kill, 2 in parallel",
    unit: "VM/s",
}];

/// One window of `window` on `binary`.
pub fn run(binary: &Path, id: &str, guest: &Guest, window: Duration) -> Result<Samples, String> {
    let done = AtomicUsize::new(0);
    let first_error = Mutex::new(None::<String>);
    let start = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..WORKERS {
            let (done, first_error) = (&done, &first_error);
            s.spawn(move || {
                let mut n = 0;
                while start.elapsed() < window {
                    n += 1;
                    match cycle(binary, &format!("{id}-{worker}-{n}"), guest) {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    let error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    match (done, error) {
        (0, Some(e)) => Err(e),
        (0, None) => Err("no cycle completed within the window".to_owned()),
        (n, _) => Ok(vec![(FIGURES[0].key, Ok(n as f64 / elapsed))]),
    }
}

fn cycle(binary: &Path, id: &str, guest: &Guest) -> Result<(), String> {
    let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
    let mut api = vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
    let boot = json!({
        "kernel_image_path": guest.kernel,
        "initrd_path": guest.initrd,
        "boot_args": guest.boot_args,
    });
    expect(
        &mut api,
        "PUT",
        "/boot-source",
        Some(&boot.to_string()),
        204,
    )?;
    let machine = json!({ "vcpu_count": 1, "mem_size_mib": 128 }).to_string();
    expect(&mut api, "PUT", "/machine-config", Some(&machine), 204)?;
    let start = json!({ "action_type": "InstanceStart" }).to_string();
    expect(&mut api, "PUT", "/actions", Some(&start), 204)?;
    vmm.kill().map_err(|e| e.to_string())?;
    Ok(())
}
