//! Crash durability without a VM: a child process (this test binary, re-run with an env var
//! selecting [`crash_child`]) serves a guest's WRITE and FLUSH in Writeback mode against a
//! real file, reports once the used ring shows the FLUSH done, and is SIGKILLed by the
//! parent, which then finds the data in the file. 200 rounds.
//!
//! What this proves, and what it cannot: SIGKILL ends the process, not the kernel, so the
//! page cache survives it and reading the file back only proves that squib keeps no
//! acknowledged data in user space (the write reached the kernel before the guest heard OK).
//! Stable storage is the kernel's promise for a successful `fdatasync`; losing power is the
//! only real test of it, which needs a VM or a failing block device (dm-flakey), not a unit
//! test. So the child also checks the device's side of that promise through the disk
//! abstraction ([`FaultyFile`] with no faults, wrapping the real fd): at the moment the FLUSH
//! shows as used, a `fdatasync` on the very fd the data went through has returned success and
//! no write came after it. The parent checks the child died of SIGKILL, so no exit-path sync
//! (the Writeback drop) ran: the sync seen is the FLUSH's.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::{NamedTempFile, TempPath};
use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{BlockHarness, TestDisk, DATA};
use crate::virtio::block::disk::DiskFile;
use crate::virtio::block::test_utils::{Faults, FaultyFile};
use crate::virtio::block::{request_type, status, Block, BlockConfig, CacheMode};

/// Selects child mode; holds the disk path.
const CHILD_ENV: &str = "SQUIB_BLK_CRASH_DISK";
/// The round number, choosing the data and where it goes.
const ROUND_ENV: &str = "SQUIB_BLK_CRASH_ROUND";
/// The child's report line prefix.
const MARKER: &str = "squib-blk-flushed";
const ROUNDS: u64 = 200;
/// How long one child may take to report.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
const SLOT: usize = 4096;
const SLOTS: u64 = 64;

fn round_data(round: u64) -> Vec<u8> {
    (0..SLOT as u64)
        .map(|i| (i.wrapping_mul(31) ^ round.wrapping_mul(0x9e37)) as u8)
        .collect()
}

fn slot_offset(round: u64) -> usize {
    (round % SLOTS) as usize * SLOT
}

/// The child: one WRITE + FLUSH, a report, then wait to be killed.
#[test]
fn crash_child() {
    let (Some(path), Some(round)) = (std::env::var_os(CHILD_ENV), std::env::var_os(ROUND_ENV))
    else {
        return; // not a child: nothing to do
    };
    let path = Path::new(&path);
    let round: u64 = round.to_str().unwrap().parse().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let size = file.metadata().unwrap().len();
    let faults = Arc::new(Faults::default());
    let io = FaultyFile::new(file.try_clone().unwrap(), faults.clone());
    let disk = DiskFile::with_io(Box::new(io), path, size, false);
    let cfg = BlockConfig {
        drive_id: "rootfs".to_owned(),
        path: path.to_owned(),
        read_only: false,
        cache: CacheMode::Writeback,
        rate_limiter: None,
        engine: Default::default(),
    };
    let block = Block::with_disk(cfg, disk).unwrap();
    // The harness wants a temp file; the process is killed before it could delete it.
    let file = NamedTempFile::from_parts(file, TempPath::try_from_path(path).unwrap());
    let mut h = BlockHarness::new(TestDisk { block, file });

    h.mem
        .write_slice(&round_data(round), GuestAddress(DATA))
        .unwrap();
    let sector = (slot_offset(round) / 512) as u64;
    let write = h.request(request_type::OUT, sector, SLOT as u32, 0);
    let flush = h.request(request_type::FLUSH, 0, 0, 0);
    h.simulate_queue_event();
    assert_eq!(h.vq.used_idx(), 2, "both requests completed");
    assert_eq!((h.status(write), h.status(flush)), (status::OK, status::OK));
    let syncs = faults.syncs.load(Ordering::SeqCst);
    let dirty = faults.dirty.load(Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARKER} syncs={syncs} dirty={dirty}").unwrap();
    out.flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Run one child round; returns its report line.
fn run_child(exe: &Path, child_test: &str, disk: &Path, round: u64) -> String {
    let mut child = Command::new(exe)
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, disk)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // libtest prints "test <name> ... " on the same line, before the test's output.
        let report = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.find(MARKER).map(|at| l[at..].to_owned()));
        let _ = tx.send(report);
    });
    // A child that hangs before reporting is killed too, and the round fails.
    let report = rx.recv_timeout(CHILD_TIMEOUT).ok().flatten();
    child.kill().unwrap(); // SIGKILL
    let exit = child.wait().unwrap();
    let report = report.unwrap_or_else(|| panic!("round {round}: no report, child {exit:?}"));
    assert_eq!(
        exit.signal(),
        Some(libc::SIGKILL),
        "round {round}: {exit:?}"
    );
    report
}

#[test]
fn flushed_writes_are_in_the_file_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; SLOT * SLOTS as usize]).unwrap();
    let exe = std::env::current_exe().unwrap();
    let module = module_path!().split_once("::").unwrap().1;
    let child_test = format!("{module}::crash_child");
    let deadline = Instant::now() + Duration::from_secs(240);

    for round in 0..ROUNDS {
        assert!(Instant::now() < deadline, "round {round}: out of time");
        let report = run_child(&exe, &child_test, &disk, round);
        assert_eq!(
            report,
            format!("{MARKER} syncs=1 dirty=false"),
            "round {round}: the FLUSH was acknowledged before its fdatasync"
        );
        let bytes = std::fs::read(&disk).unwrap();
        let at = slot_offset(round);
        assert!(
            bytes[at..at + SLOT] == round_data(round)[..],
            "round {round}: flushed data missing after SIGKILL"
        );
    }
}
