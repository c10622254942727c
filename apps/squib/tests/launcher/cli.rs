//! The command line as a launcher meets it: `--version`, and the exit codes and messages of
//! bad arguments (153), a bad `--level` (152), `--no-api` without `--config-file` (153) and
//! an API socket path already in use.

use crate::support::{arg_path, run_to_exit, workdir};

#[test]
fn version_names_firecracker_then_squib_and_exits_0() {
    let run = run_to_exit(&["--version"]);
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    // fctools' `VmmInstallation::verify` wants stdout to start with "Firecracker" and hold
    // the expected version; the Go SDK and Firecracker's own tests parse `Firecracker v`.
    let first = run.stdout.lines().next().unwrap_or_default();
    let version = first
        .strip_prefix("Firecracker v")
        .unwrap_or_else(|| panic!("--version printed {:?}", run.stdout));
    let parts: Vec<&str> = version.split(['.', '-']).collect();
    assert!(
        parts.len() >= 3 && parts[..3].iter().all(|p| p.parse::<u32>().is_ok()),
        "{version:?} is not a semantic version"
    );
    assert!(
        run.stdout.contains("squib v"),
        "--version does not name squib's own version: {:?}",
        run.stdout
    );
}

#[test]
fn unknown_flag_exits_153_naming_it() {
    let run = run_to_exit(&["--no-such-flag"]);
    assert_eq!(run.status.code(), Some(153), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("Arguments parsing error") && run.stderr.contains("no-such-flag"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn flag_missing_its_value_exits_153() {
    let run = run_to_exit(&["--api-sock"]);
    assert_eq!(run.status.code(), Some(153), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("api-sock"), "stderr: {}", run.stderr);
}

#[test]
fn bad_level_exits_152() {
    let run = run_to_exit(&["--level", "Bogus"]);
    assert_eq!(run.status.code(), Some(152), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("Bogus"), "stderr: {}", run.stderr);
}

#[test]
fn no_api_without_config_file_exits_153() {
    let run = run_to_exit(&["--no-api"]);
    assert_eq!(run.status.code(), Some(153), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("config-file"), "stderr: {}", run.stderr);
}

#[test]
fn socket_path_in_use_fails_with_firecrackers_message() {
    let dir = workdir();
    let sock = arg_path(dir.path(), "busy.sock");
    std::fs::write(&sock, b"").expect("create the busy path");
    let run = run_to_exit(&["--api-sock", &sock]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "GenericError expected; stdout: {}; stderr: {}",
        run.stdout,
        run.stderr
    );
    let expected =
        format!("Failed to open the API socket at: {sock}. Check that it is not already used.");
    assert!(
        run.stdout.contains(&expected) || run.stderr.contains(&expected),
        "no {expected:?}; stdout: {}; stderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout
            .contains("Firecracker exiting with error. exit_code=1"),
        "stdout: {}",
        run.stdout
    );
}
