//! The panic hook, as Firecracker's `main` installs it: a panic anywhere (a vCPU, the API
//! thread, the event loop) logs `Firecracker <panic info>` at error level, sets
//! `vmm.panic_count`, writes a last metrics line, and then the process aborts (release
//! builds use `panic = "abort"`; the hook aborts itself so a debug build does not live on
//! with a dead thread). Without it an abort leaves no log line and no final metrics.

use std::fmt::Display;

use squib_logger::metrics::METRICS;

/// Install the hook. Call once, right after the logger and metrics are set up.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        report(info);
        std::process::abort();
    }));
}

/// Everything the hook does before the abort, with Firecracker's texts.
fn report(info: &dyn Display) {
    log::error!("Firecracker {info}");
    METRICS.vmm.panic_count.store(1);
    if let Err(e) = squib_logger::metrics::write_metrics() {
        log::error!("Failed to write metrics while panicking: {e}");
    }
    log::logger().flush();
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use squib_logger::logger::LoggerSettings;

    use super::*;

    const CHILD_ENV: &str = "SQUIB_PANIC_HOOK_CHILD_DIR";

    /// Runs only in the child process the test below starts: sets up a log file and a
    /// metrics file as `main` does, installs the hook and panics on another thread.
    #[test]
    fn panic_hook_child() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        squib_logger::logger::init("panic-test").unwrap();
        squib_logger::logger::configure(LoggerSettings {
            log_path: Some(dir.join("log")),
            ..LoggerSettings::default()
        })
        .unwrap();
        squib_logger::metrics::init_metrics(dir.join("metrics")).unwrap();
        install();
        let _ = std::thread::Builder::new()
            .name("fc_vcpu 0".into())
            .spawn(|| panic!("boom from a vCPU"))
            .unwrap()
            .join();
        // Only reached when the panic did not end the process.
        std::process::exit(0);
    }

    #[test]
    fn a_panic_logs_counts_writes_metrics_and_aborts() {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic_hook::tests::panic_hook_child",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(
            log.contains("[panic-test:fc_vcpu 0] Firecracker panicked at ")
                && log.contains("boom from a vCPU"),
            "{log}"
        );
        let metrics = std::fs::read_to_string(dir.path().join("metrics")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(metrics.lines().last().expect("no metrics line")).unwrap();
        assert_eq!(last["vmm"]["panic_count"], 1, "{last}");
    }
}
