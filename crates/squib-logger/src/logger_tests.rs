use log::Log;

use super::*;

fn record_to(logger: &Logger, level: log::Level, module: &str, msg: &str) {
    logger.log(
        &log::Record::builder()
            .args(format_args!("{msg}"))
            .level(level)
            .file(Some("src/dev.rs"))
            .line(Some(42))
            .module_path(Some(module))
            .build(),
    );
}

fn logger_to_file() -> (Logger, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.fifo-or-file");
    let logger = Logger::new();
    logger.set_instance_id("vm-1");
    logger
        .apply(LoggerSettings {
            log_path: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
    (logger, dir, path)
}

fn prefixes(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

#[test]
fn line_without_level_or_origin() {
    let line = format_line("T", "id", "main", None, None, &format_args!("hello {}", 1));
    assert_eq!(line, "T [id:main] hello 1\n");
}

#[test]
fn line_with_level_and_origin() {
    let args = format_args!("boom");
    let line = format_line(
        "T",
        "id",
        "fc_api",
        Some(log::Level::Warn),
        Some(("a.rs", Some(7))),
        &args,
    );
    assert_eq!(line, "T [id:fc_api:WARN:a.rs:7] boom\n");
    let line = format_line("T", "id", "-", None, Some(("?", None)), &args);
    assert_eq!(line, "T [id:-:?:?] boom\n");
}

#[test]
fn writes_to_a_created_file_with_timestamp() {
    let (logger, _dir, path) = logger_to_file();
    std::thread::Builder::new()
        .name("fc_vcpu 0".into())
        .spawn(move || record_to(&logger, log::Level::Info, "squib_vmm", "started"))
        .unwrap()
        .join()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let (stamp, rest) = text.split_once(' ').unwrap();
    assert_eq!(stamp.len(), 29, "{stamp}");
    assert_eq!(&stamp[10..11], "T");
    assert_eq!(rest, "[vm-1:fc_vcpu 0] started\n");
}

#[test]
fn show_level_and_origin_are_applied() {
    let (logger, _dir, path) = logger_to_file();
    let settings = LoggerSettings {
        show_level: Some(true),
        show_log_origin: Some(true),
        ..Default::default()
    };
    logger.apply(settings).unwrap();
    record_to(&logger, log::Level::Error, "m", "bad");
    let thread = std::thread::current().name().unwrap_or("-").to_string();
    assert_eq!(
        prefixes(&path),
        [format!("[vm-1:{thread}:ERROR:src/dev.rs:42] bad")]
    );
}

#[test]
fn level_filter_drops_lower_levels() {
    let (logger, _dir, path) = logger_to_file();
    logger
        .apply(LoggerSettings {
            level: Some(Level::Warn),
            ..Default::default()
        })
        .unwrap();
    record_to(&logger, log::Level::Info, "m", "info");
    record_to(&logger, log::Level::Warn, "m", "warn");
    record_to(&logger, log::Level::Error, "m", "error");
    let lines = prefixes(&path);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("] warn") && lines[1].ends_with("] error"));
    assert!(!logger.enabled(&log::Metadata::builder().level(log::Level::Debug).build()));
}

#[test]
fn module_filter_is_a_prefix_match() {
    let (logger, _dir, path) = logger_to_file();
    let settings = LoggerSettings {
        module: Some("squib_api".into()),
        ..Default::default()
    };
    logger.apply(settings).unwrap();
    record_to(&logger, log::Level::Info, "squib_api::server", "kept");
    record_to(&logger, log::Level::Info, "squib_vmm", "dropped");
    let lines = prefixes(&path);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with("] kept"));
}

#[test]
fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, "old\n").unwrap();
    let logger = Logger::new();
    logger
        .apply(LoggerSettings {
            log_path: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
    record_to(&logger, log::Level::Info, "m", "new");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("old\n"));
    assert!(text.ends_with(&format!(
        "[{DEFAULT_INSTANCE_ID}:{}] new\n",
        std::thread::current().name().unwrap_or("-")
    )));
}

#[test]
fn unopenable_path_is_an_error_and_changes_nothing() {
    let logger = Logger::new();
    let settings = LoggerSettings {
        log_path: Some("/nonexistent-dir/x/log".into()),
        level: Some(Level::Off),
        ..Default::default()
    };
    let err = logger.apply(settings).unwrap_err();
    assert!(
        err.to_string().starts_with("Failed to open target file: "),
        "{err}"
    );
    assert!(logger.enabled(&log::Metadata::builder().level(log::Level::Info).build()));
}

#[test]
fn levels_parse_case_insensitively() {
    for (text, level) in [
        ("off", Level::Off),
        ("TRACE", Level::Trace),
        ("Debug", Level::Debug),
        ("info", Level::Info),
        ("Warning", Level::Warn),
        ("WARN", Level::Warn),
        ("error", Level::Error),
    ] {
        assert_eq!(text.parse::<Level>(), Ok(level));
        let json = format!("\"{text}\"");
        assert_eq!(serde_json::from_str::<Level>(&json).unwrap(), level);
    }
    assert_eq!("loud".parse::<Level>(), Err(LevelParseError("loud".into())));
    assert!(serde_json::from_str::<Level>("\"loud\"").is_err());
    assert_eq!(log::LevelFilter::from(Level::Off), log::LevelFilter::Off);
}

#[test]
fn writes_to_a_fifo_without_a_reader_attached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let logger = Logger::new();
    logger.set_instance_id("fifo-vm");
    logger
        .apply(LoggerSettings {
            log_path: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
    record_to(&logger, log::Level::Info, "m", "through the pipe");
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let mut buf = [0_u8; 256];
    let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.ends_with("] through the pipe\n"), "{text}");
    assert!(text.contains("[fifo-vm:"));
}
