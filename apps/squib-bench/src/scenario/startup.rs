//! Start-up: from the exec of the VMM to its API socket answering `GET /` with 200, as wall
//! time, plus the child's CPU time (user + system from `wait4`, taken when it is killed
//! right after that first answer, so it includes serving that request).
//!
//! The socket is polled with a 200 µs pause between connection attempts, as a launcher
//! would. Firecracker's own figure (`api_server.process_startup_time_us` in its metrics) is
//! collected by the boot scenario, the first moment Firecracker lets metrics be flushed.

use std::path::Path;
use std::time::Duration;

use super::{ms, Samples};
use crate::report::FigureDef;
use crate::vmm::VmmProcess;

/// Time the API gets to come up.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// The figures of this scenario.
pub const FIGURES: [FigureDef; 2] = [
    FigureDef {
        scenario: "startup",
        key: "startup_wall_ms",
        label: "exec to first API reply (wall)",
        unit: "ms",
    },
    FigureDef {
        scenario: "startup",
        key: "startup_cpu_ms",
        label: "exec to first API reply (CPU)",
        unit: "ms",
    },
];

/// One start-up of `binary`.
pub fn run(binary: &Path, id: &str) -> Result<Samples, String> {
    let mut vmm = VmmProcess::spawn(binary, id, false).map_err(|e| e.to_string())?;
    vmm.wait_api(API_TIMEOUT).map_err(|e| e.to_string())?;
    let wall = vmm.started.elapsed();
    let cpu = vmm.kill().map_err(|e| e.to_string())?;
    let cpu = cpu
        .map(ms)
        .ok_or_else(|| "the VMM exited by itself before it was measured".to_owned());
    Ok(vec![(FIGURES[0].key, Ok(ms(wall))), (FIGURES[1].key, cpu)])
}
