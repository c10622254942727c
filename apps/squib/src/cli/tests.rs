use super::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

fn run(list: &[&str]) -> Cli {
    match parse(args(list)) {
        Ok(CliOutcome::Run(cli)) => *cli,
        other => panic!("{list:?} gave {other:?}"),
    }
}

fn fail(list: &[&str]) -> CliError {
    parse(args(list)).expect_err("must fail")
}

#[test]
fn no_arguments_gives_firecracker_defaults() {
    let cli = run(&[]);
    assert_eq!(cli, Cli::default());
    assert_eq!(cli.api_sock, PathBuf::from("/run/firecracker.socket"));
    assert_eq!(cli.id, "anonymous-instance");
    assert_eq!(cli.http_api_max_payload_size, 51_200);
}

#[test]
fn every_value_flag_is_parsed() {
    let cli = run(&[
        "--api-sock",
        "/tmp/a.sock",
        "--id",
        "vm-01",
        "--config-file",
        "/c.json",
        "--metadata",
        "/m.json",
        "--log-path",
        "/l",
        "--level",
        "Debug",
        "--module",
        "squib_api",
        "--metrics-path",
        "/mx",
        "--start-time-us",
        "10",
        "--start-time-cpu-us",
        "20",
        "--parent-cpu-time-us",
        "30",
        "--http-api-max-payload-size",
        "1024",
        "--mmds-size-limit",
        "2048",
    ]);
    assert_eq!(cli.api_sock, PathBuf::from("/tmp/a.sock"));
    assert_eq!(cli.id, "vm-01");
    assert_eq!(cli.config_file, Some(PathBuf::from("/c.json")));
    assert_eq!(cli.metadata, Some(PathBuf::from("/m.json")));
    assert_eq!(cli.log_path, Some(PathBuf::from("/l")));
    assert_eq!(cli.level, Some(Level::Debug));
    assert_eq!(cli.module.as_deref(), Some("squib_api"));
    assert_eq!(cli.metrics_path, Some(PathBuf::from("/mx")));
    assert_eq!(
        (
            cli.start_time_us,
            cli.start_time_cpu_us,
            cli.parent_cpu_time_us
        ),
        (Some(10), Some(20), Some(30))
    );
    assert_eq!(cli.http_api_max_payload_size, 1024);
    assert_eq!(cli.mmds_size_limit, Some(2048));
}

#[test]
fn every_switch_is_parsed() {
    let cli = run(&[
        "--config-file",
        "/c.json",
        "--no-api",
        "--show-level",
        "--show-log-origin",
        "--boot-timer",
        "--no-seccomp",
    ]);
    assert!(
        cli.no_api && cli.show_level && cli.show_log_origin && cli.boot_timer && cli.no_seccomp
    );
}

#[test]
fn logger_settings_follow_the_flags() {
    let cli = run(&[
        "--log-path",
        "/l",
        "--level",
        "warning",
        "--show-level",
        "--module",
        "m",
    ]);
    let s = cli.logger_settings();
    assert_eq!(s.log_path, Some(PathBuf::from("/l")));
    assert_eq!(s.level, Some(Level::Warn));
    assert_eq!((s.show_level, s.show_log_origin), (Some(true), Some(false)));
    assert_eq!(s.module.as_deref(), Some("m"));
}

#[test]
fn version_prints_firecracker_line_first_and_exits_zero() {
    let Ok(CliOutcome::PrintAndExit { text, code }) = parse(args(&["--version"])) else {
        panic!("--version must print");
    };
    assert_eq!(code, 0);
    assert!(text.starts_with("Firecracker v1.17.0\n\n"), "{text}");
    assert!(text.contains("squib v"));
}

#[test]
fn help_lists_every_flag_and_wins_over_other_flags() {
    let Ok(CliOutcome::PrintAndExit { text, code }) = parse(args(&["--id", "x", "--help"])) else {
        panic!("--help must print");
    };
    assert_eq!(code, 0);
    for f in FLAGS {
        assert!(text.contains(&format!("--{}", f.name)), "{}", f.name);
    }
}

#[test]
fn snapshot_version_prints_the_format_version() {
    assert_eq!(
        parse(args(&["--snapshot-version"])),
        Ok(CliOutcome::PrintAndExit {
            text: "v1.0.0\n".into(),
            code: 0
        })
    );
}

#[test]
fn describe_snapshot_prints_the_files_version_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    squib_snapshot::save_state(&path, &42u32).unwrap();
    let path_arg = path.display().to_string();
    assert_eq!(
        parse(args(&["--describe-snapshot", &path_arg])),
        Ok(CliOutcome::PrintAndExit {
            text: "v1.0.0\n".into(),
            code: 0
        })
    );
    let missing = dir.path().join("missing").display().to_string();
    let Ok(CliOutcome::PrintAndExit { text, code }) =
        parse(args(&["--describe-snapshot", &missing]))
    else {
        panic!("--describe-snapshot of a missing file must print why");
    };
    assert_eq!(code, 1);
    assert!(text.contains("Failed to open snapshot file"), "{text}");
}

#[test]
fn unknown_flags_and_clap_forms_are_rejected_with_153() {
    for bad in [&["--bogus"][..], &["-h"], &["--id=vm"], &["stray"], &["--"]] {
        let err = fail(bad);
        assert!(
            matches!(err, CliError::UnexpectedArgument(_)),
            "{bad:?}: {err:?}"
        );
        assert_eq!(err.exit_code(), 153);
    }
    assert_eq!(
        fail(&["--bogus"]).to_string(),
        "Found argument '--bogus' which wasn't expected, or isn't valid in this context."
    );
}

#[test]
fn missing_value_is_rejected() {
    assert_eq!(
        fail(&["--api-sock"]),
        CliError::MissingValue("api-sock".into())
    );
    assert_eq!(
        fail(&["--log-path", "--show-level"]),
        CliError::MissingValue("log-path".into())
    );
    assert_eq!(
        fail(&["--id"]).to_string(),
        "The argument 'id' requires a value, but none was supplied."
    );
}

#[test]
fn duplicate_flag_is_rejected() {
    let err = fail(&["--boot-timer", "--boot-timer"]);
    assert_eq!(err, CliError::DuplicateArgument("boot-timer".into()));
    assert_eq!(
        err.to_string(),
        "The argument 'boot-timer' was provided more than once."
    );
    assert_eq!(err.exit_code(), 153);
}

#[test]
fn no_api_requires_config_file() {
    let err = fail(&["--no-api"]);
    assert_eq!(err, CliError::MissingArgument("config-file".into()));
    assert_eq!(
        err.to_string(),
        "Argument 'config-file' required, but not found."
    );
    assert_eq!(err.exit_code(), 153);
}

#[test]
fn seccomp_filter_conflicts_with_no_seccomp() {
    let err = fail(&["--no-seccomp", "--seccomp-filter", "/f.bpf"]);
    assert!(matches!(err, CliError::ForbiddenArgument(..)));
    assert_eq!(err.exit_code(), 153);
}

#[test]
fn missing_features_are_rejected_by_name() {
    for (list, flag) in [
        (&["--enable-pci"][..], "enable-pci"),
        (&["--seccomp-filter", "/f.bpf"], "seccomp-filter"),
    ] {
        let err = fail(list);
        assert!(
            matches!(err, CliError::Unsupported { flag: f, .. } if f == flag),
            "{err:?}"
        );
        assert!(err.to_string().contains("not supported by squib"));
        assert_eq!(err.exit_code(), 153);
    }
}

#[test]
fn bad_level_exits_152() {
    let err = fail(&["--level", "loud"]);
    assert_eq!(err, CliError::BadLevel("loud".into()));
    assert_eq!(err.exit_code(), 152);
    for ok in ["off", "TRACE", "debug", "Info", "warn", "Warning", "error"] {
        assert!(run(&["--level", ok]).level.is_some(), "{ok}");
    }
}

#[test]
fn instance_id_is_validated() {
    assert_eq!(run(&["--id", &"a".repeat(64)]).id.len(), 64);
    for bad in ["", "has space", "under_score", &"a".repeat(65)] {
        let err = fail(&["--id", bad]);
        assert_eq!(err, CliError::InvalidId(bad.to_string()));
        assert_eq!(err.exit_code(), 153);
    }
}

#[test]
fn numeric_flags_reject_non_numbers() {
    for name in [
        "--start-time-us",
        "--start-time-cpu-us",
        "--parent-cpu-time-us",
        "--http-api-max-payload-size",
        "--mmds-size-limit",
    ] {
        for bad in ["abc", "-1", "1.5"] {
            let err = parse(args(&[name, bad]));
            // "-1" is taken as a value (it does not start with "--"), so it fails as a number.
            assert!(
                matches!(err, Err(CliError::InvalidNumber { .. })),
                "{name} {bad}: {err:?}"
            );
        }
    }
}
