//! The `squib-uffd-handler` binary serving this test process, which plays the VMM: it hands
//! guest memory over and reads it back through the handler's page faults.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use squib_arch::memory::{create_guest_memory_for_uffd, HugePageMode};
use squib_uffd::hand_off;
use vm_memory::{Bytes, GuestAddress};

const PAGE: usize = 4096;
const PAGES: usize = 16;
/// Long enough for a loaded host; a stuck fault fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Byte `i` of the memory file.
fn file_byte(i: usize) -> u8 {
    (i / PAGE * 7 + i % 251) as u8
}

struct Setup {
    dir: tempfile::TempDir,
    socket: PathBuf,
    memory_file: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let memory_file = dir.path().join("memory");
    let bytes: Vec<u8> = (0..PAGES * PAGE).map(file_byte).collect();
    File::create(&memory_file)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    Setup {
        socket: dir.path().join("uffd.sock"),
        memory_file,
        dir,
    }
}

fn handler(args: &[&Path]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_squib-uffd-handler"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for the handler to bind its socket.
fn wait_for_socket(child: &mut Child, socket: &Path) {
    let started = Instant::now();
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the handler exited ({status}) before listening: {stderr}");
        }
        assert!(started.elapsed() < PATIENCE, "the handler never listened");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Hands guest memory to the handler at `socket` and reads the guest `pages` given, in a
/// thread so that a handler that stops serving fails the test rather than hanging it.
/// Returns what was read, page by page.
fn read_through_handler(child: &mut Child, socket: &Path, pages: Vec<usize>) -> Vec<Vec<u8>> {
    let socket = socket.to_owned();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mem =
            create_guest_memory_for_uffd(&[(GuestAddress(0), PAGES * PAGE)], HugePageMode::None)
                .unwrap();
        let handoff = hand_off(&mem, &socket).unwrap();
        let read: Vec<Vec<u8>> = pages
            .iter()
            .map(|&page| {
                let mut bytes = vec![0u8; PAGE];
                mem.read_slice(&mut bytes, GuestAddress((page * PAGE) as u64))
                    .unwrap();
                bytes
            })
            .collect();
        drop(handoff);
        sender.send(read).unwrap();
    });
    match receiver.recv_timeout(PATIENCE) {
        Ok(read) => read,
        Err(err) => {
            child.kill().unwrap();
            let output = child_output(child);
            panic!("guest memory reads never finished ({err}): {output:?}");
        }
    }
}

fn child_output(child: &mut Child) -> Output {
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

fn expected(page: usize) -> Vec<u8> {
    (page * PAGE..(page + 1) * PAGE).map(file_byte).collect()
}

#[test]
fn on_demand_serves_the_touched_pages_and_exits_when_the_vmm_goes() {
    let setup = setup();
    let mut child = handler(&[&setup.socket, &setup.memory_file])
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, &setup.socket);
    let read = read_through_handler(&mut child, &setup.socket, vec![2, 9]);
    assert_eq!(read, vec![expected(2), expected(9)]);
    let output = child_output(&mut child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("The VMM has gone: 2 faults, 2 pages copied, 0 pages zeroed, 0 discards"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    assert!(!setup.socket.exists(), "the socket file is removed on exit");
}

#[test]
fn fault_all_copies_everything_and_says_how_long_it_took() {
    let setup = setup();
    let mode = Path::new("--mode=fault-all");
    let mut child = handler(&[&setup.socket, &setup.memory_file, mode])
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, &setup.socket);
    let read = read_through_handler(&mut child, &setup.socket, (0..PAGES).rev().collect());
    assert_eq!(read, (0..PAGES).rev().map(expected).collect::<Vec<_>>());
    let output = child_output(&mut child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let line = stdout.lines().next().unwrap_or_default();
    let micros = line
        .strip_prefix("Finished Faulting All: ")
        .and_then(|rest| rest.strip_suffix("us"))
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    assert!(micros.parse::<u64>().is_ok(), "{line}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("{PAGES} pages copied")),
        "{output:?}"
    );
}

#[test]
fn setup_failures_exit_non_zero_with_the_reason() {
    let setup = setup();
    let missing = setup.dir.path().join("no-such-file");
    let output = handler(&[&setup.socket, &missing]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Cannot open the memory file") && stderr.contains("no-such-file"),
        "{stderr}"
    );

    let taken = setup.dir.path().join("taken.sock");
    File::create(&taken).unwrap();
    let output = handler(&[&taken, &setup.memory_file]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Cannot listen on"));

    let output = handler(&[&setup.socket]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: squib-uffd-handler"));
}
