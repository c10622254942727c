//! Start-up and shutdown in Firecracker's order, with the log lines launchers wait for:
//! `Running Firecracker v<version>`, `API server started.`, and the final
//! `Firecracker exiting successfully. exit_code=0` / `Firecracker exiting with error. exit_code=N`.

use std::path::Path;
use std::sync::Arc;

use squib_api::channel::api_channel;
use squib_api::mirror::StateMirror;
use squib_api::server::{ApiDrain, ApiServer, ApiServerConfig};
use squib_logger::metrics::METRICS;
use squib_vmm::event_sources::ControlEvents;
use squib_vmm::exit_code::FcExitCode;
use squib_vmm::vmm::{Vmm, VmmOptions};

use crate::cli::{self, Cli, CliOutcome};

/// Requests the API thread may queue before it waits for the VMM.
const API_CHANNEL_CAPACITY: usize = 16;

/// Run squib with `args` (without the program name); returns the process exit code.
pub fn run(args: impl IntoIterator<Item = String>) -> i32 {
    let start = squib_vmm::TimestampUs::now();
    let cli = match cli::parse(args) {
        Ok(CliOutcome::Run(cli)) => cli,
        Ok(CliOutcome::PrintAndExit { text, code }) => {
            print!("{text}");
            return code;
        }
        Err(e) => {
            eprintln!("Arguments parsing error: {e}\n\nFor more information try --help.");
            return e.exit_code();
        }
    };
    if let Err(code) = init_logging(&cli) {
        return code.code();
    }
    crate::panic_hook::install();
    squib_vmm::device_metrics::register_zeroed_device_groups();
    let reporter = match crate::signals::install() {
        Ok(reporter) => reporter,
        Err(e) => {
            log::error!("{e}");
            return FcExitCode::GenericError.code();
        }
    };
    log::info!(
        "Running Firecracker v{}",
        squib_api::version::FIRECRACKER_VERSION
    );
    let code = run_vmm(&cli, start, reporter);
    if let Err(e) = squib_logger::metrics::write_metrics() {
        log::warn!("Failed to write metrics at exit: {e}");
    }
    if code == FcExitCode::Ok {
        log::info!("Firecracker exiting successfully. exit_code=0");
    } else {
        log::error!("Firecracker exiting with error. exit_code={}", code.code());
    }
    log::logger().flush();
    code.code()
}

fn init_logging(cli: &Cli) -> Result<(), FcExitCode> {
    if let Err(e) = squib_logger::logger::init(&cli.id) {
        eprintln!("Failed to initialise the logger: {e}");
        return Err(FcExitCode::GenericError);
    }
    if let Err(e) = squib_logger::logger::configure(cli.logger_settings()) {
        eprintln!("Logger error: {e}");
        return Err(FcExitCode::BadConfiguration);
    }
    if let Some(path) = &cli.metrics_path {
        if let Err(e) = squib_logger::metrics::init_metrics(path) {
            log::error!("Metrics error: {e}");
            return Err(FcExitCode::GenericError);
        }
    }
    Ok(())
}

fn run_vmm(
    cli: &Cli,
    start: squib_vmm::TimestampUs,
    reporter: crate::signals::Reporter,
) -> FcExitCode {
    let (control, flags) = match ControlEvents::new() {
        Ok(pair) => pair,
        Err(e) => {
            log::error!("Cannot create the VMM's control events: {e}");
            return FcExitCode::GenericError;
        }
    };
    let mirror = Arc::new(StateMirror::new(cli.id.clone()));
    let (api, drain) = if cli.no_api {
        (None, None)
    } else {
        match start_api_server(cli, &control, &mirror) {
            Ok((receiver, drain)) => (Some(receiver), Some(drain)),
            Err(code) => return code,
        }
    };
    record_startup_time(cli, start);
    // Only now: the socket already accepts while this thread is spawned (see signals::install).
    if let Err(e) = reporter.start() {
        log::error!("{e}");
        return FcExitCode::GenericError;
    }
    let options = VmmOptions {
        boot_timer: cli.boot_timer,
        mmds_size_limit: cli.mmds_size_limit.unwrap_or(cli.http_api_max_payload_size),
    };
    let mut vmm = match Vmm::new(options, mirror, control, flags, api) {
        Ok(vmm) => vmm,
        Err(e) => {
            log::error!("{e}");
            return FcExitCode::GenericError;
        }
    };
    if let Some(path) = &cli.metadata {
        if let Err(e) = vmm.load_metadata(path) {
            log::error!("{e}");
            return FcExitCode::GenericError;
        }
    }
    if let Some(path) = &cli.config_file {
        if let Err(e) = boot_from_config_file(&mut vmm, path) {
            log::error!("{e}");
            return FcExitCode::GenericError;
        }
    }
    let code = vmm.run();
    // A request can end the process (a failed snapshot load): its client still gets the
    // response the VMM gave it before the process goes.
    if let Some(drain) = drain {
        if !drain.wait_idle(API_DRAIN_TIMEOUT) {
            log::warn!("Exiting with API responses still unwritten");
        }
    }
    code
}

/// How long an exiting process waits for the API thread to write the responses it owes.
const API_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn start_api_server(
    cli: &Cli,
    control: &ControlEvents,
    mirror: &Arc<StateMirror>,
) -> Result<(squib_api::channel::ApiReceiver, ApiDrain), FcExitCode> {
    let config = ApiServerConfig {
        socket_path: cli.api_sock.clone(),
        max_payload_size: cli.http_api_max_payload_size,
        mmds_size_limit: cli.mmds_size_limit.unwrap_or(cli.http_api_max_payload_size),
    };
    // The socket is created by bind(2) with 0777 & ~umask: bind with a umask that leaves
    // only the owner's read and write, so there is no window before the server's chmod in
    // which another user could connect.
    let server = with_umask(API_SOCKET_UMASK, || ApiServer::bind(config)).map_err(|e| {
        log::error!("{e}");
        FcExitCode::GenericError
    })?;
    let wake = control.api_wake.try_clone().map_err(|e| {
        log::error!("Cannot create the API wake eventfd: {e}");
        FcExitCode::GenericError
    })?;
    let (sender, receiver) = api_channel(API_CHANNEL_CAPACITY, wake);
    let drain = server.drain();
    server.spawn(sender, mirror.clone()).map_err(|e| {
        log::error!("Cannot start the API thread: {e}");
        FcExitCode::GenericError
    })?;
    Ok((receiver, drain))
}

/// The umask the API socket is created under: mode 0600.
const API_SOCKET_UMASK: libc::mode_t = 0o177;

/// Run `f` with the process umask set to `mask`, then restore the previous one. The umask
/// is process-wide: call this only while no other thread creates files (at start-up).
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) only swaps an integer in the process; it cannot fail.
    let previous = unsafe { libc::umask(mask) };
    let result = f();
    // SAFETY: as above, restoring the value umask(2) returned.
    unsafe { libc::umask(previous) };
    result
}

/// `api_server.process_startup_time_us` / `_cpu_us`, from `--start-time-us` when a jailer
/// passed it, else from this process's own start.
fn record_startup_time(cli: &Cli, start: squib_vmm::TimestampUs) {
    let now = squib_vmm::TimestampUs::now();
    let wall_start = cli.start_time_us.unwrap_or(start.wall_us);
    let cpu_start = cli.start_time_cpu_us.unwrap_or(0);
    METRICS
        .api_server
        .process_startup_time_us
        .store(now.wall_us.saturating_sub(wall_start));
    let cpu = now.cpu_us.saturating_sub(cpu_start) + cli.parent_cpu_time_us.unwrap_or(0);
    METRICS.api_server.process_startup_time_cpu_us.store(cpu);
}

fn boot_from_config_file(vmm: &mut Vmm, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("Cannot read the configuration file {}: {e}", path.display()))?;
    vmm.boot_from_config(&bytes)
        .map_err(|e| format!("Building VMM configured from cmdline json failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn device_groups_print_firecrackers_zeroed_fields_not_empty_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics");
        squib_logger::metrics::init_metrics(&path).unwrap();
        squib_vmm::device_metrics::register_zeroed_device_groups();
        squib_logger::metrics::write_metrics().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let fields = |key: &str| line[key].as_object().map_or(0, serde_json::Map::len);
        for (key, min_fields) in [
            ("balloon", 13),
            ("block", 10),
            ("net", 10),
            ("vsock", 20),
            ("entropy", 5),
            ("pmem", 4),
            ("memory_hotplug", 18),
        ] {
            assert!(fields(key) >= min_fields, "{key}: {}", line[key]);
        }
        assert_eq!(line["vsock"]["conns_added"], 0);
        assert_eq!(line["block"]["activate_fails"], 0);
    }

    #[test]
    fn the_api_socket_is_created_owner_only_and_the_umask_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // SAFETY: umask(2) only swaps an integer in the process.
        let outer = unsafe { libc::umask(0o022) };
        let listener = with_umask(API_SOCKET_UMASK, || {
            std::os::unix::net::UnixListener::bind(&path)
        })
        .unwrap();
        // SAFETY: as above; reads back (and restores) the umask `with_umask` left.
        let after = unsafe { libc::umask(outer) };
        assert_eq!(after, 0o022);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        drop(listener);
    }
}
