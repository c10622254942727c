//! The `squib-rebase-snap` binary end to end: exit codes, output, and a real merge.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

fn rebase_snap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squib-rebase-snap"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn help_and_version_exit_zero() {
    let out = rebase_snap(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("Rebase_snap v1.17.0\nTool that copies"));
    assert!(
        text(&out.stdout).contains("--diff-file <diff-file>   File path of the diff mem snapshot.")
    );

    let out = rebase_snap(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("Rebase_snap v1.17.0\n"));
}

#[test]
fn bad_command_line_exits_one() {
    let out = rebase_snap(&["--diff-file", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Arguments parsing error: Argument 'base-file' required, but not found. \n\nFor more information try --help.\n"
    );
}

#[test]
fn missing_files_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let missing = dir.path().join("missing");
    let out = rebase_snap(&[
        "--base-file",
        path_str(&missing),
        "--diff-file",
        path_str(&base),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error parsing the cmd line args: Invalid base file: No such file or directory (os error 2)\n"
    );
    assert!(!missing.exists(), "the base must not be created");

    fs::write(&base, b"base").unwrap();
    let out = rebase_snap(&[
        "--base-file",
        path_str(&base),
        "--diff-file",
        path_str(&missing),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error parsing the cmd line args: Invalid diff file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn merges_the_diff_data_onto_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let diff = dir.path().join("diff");
    fs::write(&base, vec![0x11u8; 4 * 4096]).unwrap();
    let diff_file = fs::File::create(&diff).unwrap();
    diff_file.set_len(4 * 4096).unwrap();
    diff_file.write_all_at(&[0x22u8; 4096], 2 * 4096).unwrap();
    drop(diff_file);

    let out = rebase_snap(&[
        "--base-file",
        path_str(&base),
        "--diff-file",
        path_str(&diff),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let mut expected = vec![0x11u8; 4 * 4096];
    expected[2 * 4096..3 * 4096].fill(0x22);
    assert_eq!(fs::read(&base).unwrap(), expected);
}
