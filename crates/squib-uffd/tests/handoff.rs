//! The VMM side and the handler side together, in one process: a "VMM" thread hands
//! anonymous guest memory to a handler thread serving it from a memory file, then touches
//! guest memory, which faults into the handler.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use squib_arch::memory::{create_guest_memory_for_uffd, GuestMemoryMmap, HugePageMode};
use squib_uffd::{
    hand_off, receive_handoff, FaultMode, HandlerError, PageServer, ServeStats, UffdHandoff,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const PAGE: usize = 4096;
/// 16 pages at 0 and 8 pages at 1 MiB: the second region's contents start at file page 16.
const REGIONS: [(GuestAddress, usize); 2] = [
    (GuestAddress(0), 16 * PAGE),
    (GuestAddress(1 << 20), 8 * PAGE),
];
const TOTAL_PAGES: usize = 24;

/// The file offset of guest address `addr` in [`REGIONS`].
fn file_offset(addr: u64) -> usize {
    if addr >= 1 << 20 {
        16 * PAGE + (addr as usize - (1 << 20))
    } else {
        addr as usize
    }
}

/// The contents of file page `page`: its number plus one in every 4-byte word, then a
/// distinct last byte, so a page from the wrong offset, or a zero page, shows.
fn file_page(page: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..PAGE / 4)
        .flat_map(|_| (page as u32 + 1).to_le_bytes())
        .collect();
    bytes[PAGE - 1] = 0xa0 + page as u8;
    bytes
}

/// A temporary directory with the handler's socket path and a memory file of `pages` pages.
struct Setup {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    memory_file: PathBuf,
}

fn setup(pages: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let memory_file = dir.path().join("memory");
    let mut file = File::create(&memory_file).unwrap();
    for page in 0..pages {
        file.write_all(&file_page(page)).unwrap();
    }
    Setup {
        socket: dir.path().join("uffd.sock"),
        memory_file,
        _dir: dir,
    }
}

/// What a handler thread reports.
struct HandlerRun {
    thread: JoinHandle<Result<ServeStats, HandlerError>>,
    /// Fault-all durations, one per `on_faulted_all` call.
    faulted_all: mpsc::Receiver<Duration>,
}

/// Binds the socket now (so the VMM can connect at once), then in a thread accepts one VMM
/// and serves it with the library handler until it goes away.
fn spawn_handler(setup: &Setup, mode: FaultMode) -> HandlerRun {
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let memory_file = File::open(&setup.memory_file).unwrap();
    let (sender, faulted_all) = mpsc::channel();
    let thread = thread::spawn(move || {
        let (vmm, _) = listener.accept().unwrap();
        let handoff = receive_handoff(&vmm)?;
        let mut server = PageServer::new(handoff.mappings, handoff.uffd, &memory_file)?;
        server.serve(&vmm, mode, |took| sender.send(took).unwrap())
    });
    HandlerRun {
        thread,
        faulted_all,
    }
}

fn uffd_memory() -> GuestMemoryMmap {
    create_guest_memory_for_uffd(&REGIONS, HugePageMode::None).unwrap()
}

/// Runs `vmm` in its own thread with guest memory handed to the handler, and returns the
/// handler's result once the VMM thread dropped its hand-off. The handler is joined first:
/// if it fails, a VMM thread stuck on a fault nobody serves cannot hang the test.
fn run_vmm(
    setup: &Setup,
    handler: HandlerRun,
    vmm: impl FnOnce(&GuestMemoryMmap, &UffdHandoff) + Send + 'static,
) -> (ServeStats, Vec<Duration>) {
    let socket = setup.socket.clone();
    let vmm_thread = thread::spawn(move || {
        let mem = uffd_memory();
        let handoff = hand_off(&mem, &socket).unwrap();
        vmm(&mem, &handoff);
        // Dropping the hand-off closes the connection: the handler stops.
    });
    let stats = handler.thread.join().unwrap().unwrap();
    vmm_thread.join().unwrap();
    (stats, handler.faulted_all.try_iter().collect())
}

fn read_page(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE];
    mem.read_slice(&mut page, GuestAddress(addr)).unwrap();
    page
}

fn expected_page(addr: u64) -> Vec<u8> {
    file_page(file_offset(addr) / PAGE)
}

#[test]
fn touched_pages_come_from_the_file_and_only_they_are_copied() {
    let setup = setup(TOTAL_PAGES);
    let handler = spawn_handler(&setup, FaultMode::OnDemand);
    let (stats, faulted_all) = run_vmm(&setup, handler, |mem, handoff| {
        let mappings = handoff.mappings();
        assert_eq!(mappings.len(), 2);
        for (mapping, region) in mappings.iter().zip(mem.iter()) {
            assert_eq!(mapping.base_host_virt_addr, region.as_ptr() as u64);
            assert_eq!(mapping.size, region.len());
            assert_eq!(mapping.page_size, PAGE as u64);
        }
        assert_eq!(mappings[1].offset, 16 * PAGE as u64);
        for addr in [0, 3 * PAGE as u64, (1 << 20) + 2 * PAGE as u64] {
            assert_eq!(
                read_page(mem, addr),
                expected_page(addr),
                "page at {addr:#x}"
            );
            // Present now: reading again takes no fault.
            assert_eq!(read_page(mem, addr), expected_page(addr));
        }
    });
    assert_eq!(
        stats,
        ServeStats {
            faults: 3,
            pages_copied: 3,
            pages_zeroed: 0,
            removes: 0
        }
    );
    assert!(faulted_all.is_empty());
}

#[test]
fn a_write_fault_gets_the_file_page_under_the_write() {
    let setup = setup(TOTAL_PAGES);
    let handler = spawn_handler(&setup, FaultMode::OnDemand);
    let (stats, _) = run_vmm(&setup, handler, |mem, _| {
        let addr = (1 << 20) + 5 * PAGE as u64;
        mem.write_obj(0xdead_beef_u32, GuestAddress(addr + 8))
            .unwrap();
        let mut expected = expected_page(addr);
        expected[8..12].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        assert_eq!(read_page(mem, addr), expected);
    });
    assert_eq!(stats.pages_copied, 1);
}

#[test]
fn racing_threads_get_each_page_copied_once() {
    let setup = setup(TOTAL_PAGES);
    let handler = spawn_handler(&setup, FaultMode::OnDemand);
    let (stats, _) = run_vmm(&setup, handler, |mem, _| {
        thread::scope(|scope| {
            for reader in 0..4u64 {
                scope.spawn(move || {
                    // Each reader walks the first region from a different page.
                    for step in 0..16u64 {
                        let addr = (step + reader * 4) % 16 * PAGE as u64;
                        assert_eq!(read_page(mem, addr), expected_page(addr));
                    }
                });
            }
        });
    });
    assert_eq!(stats.pages_copied, 16);
    assert!(stats.faults >= 16, "{stats:?}");
}

#[test]
fn discarded_memory_reads_as_zeros_afterwards() {
    let setup = setup(TOTAL_PAGES);
    let handler = spawn_handler(&setup, FaultMode::OnDemand);
    let (stats, _) = run_vmm(&setup, handler, |mem, _| {
        let page = PAGE as u64;
        assert_eq!(read_page(mem, page), expected_page(page));
        // Discard pages 1 (present) and 2 (never touched), as a balloon would.
        let host = mem.get_host_address(GuestAddress(page)).unwrap();
        // SAFETY: two pages of guest memory this thread owns and holds no reference into;
        // MADV_DONTNEED drops their contents, which is the point.
        let ret = unsafe { libc::madvise(host.cast(), 2 * PAGE, libc::MADV_DONTNEED) };
        assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(read_page(mem, page), vec![0; PAGE]);
        assert_eq!(read_page(mem, 2 * page), vec![0; PAGE]);
        assert_eq!(read_page(mem, 3 * page), expected_page(3 * page));
    });
    assert_eq!(
        stats,
        ServeStats {
            faults: 4,
            pages_copied: 2,
            pages_zeroed: 2,
            removes: 1
        }
    );
}

#[test]
fn fault_all_copies_everything_at_the_first_fault() {
    let setup = setup(TOTAL_PAGES);
    let handler = spawn_handler(&setup, FaultMode::FaultAll);
    let (stats, faulted_all) = run_vmm(&setup, handler, |mem, _| {
        let first = (1 << 20) + 7 * PAGE as u64;
        assert_eq!(read_page(mem, first), expected_page(first));
        for (addr, size) in REGIONS {
            for offset in (0..size as u64).step_by(PAGE) {
                assert_eq!(
                    read_page(mem, addr.0 + offset),
                    expected_page(addr.0 + offset)
                );
            }
        }
    });
    assert_eq!(stats.faults, 1);
    assert_eq!(stats.pages_copied, TOTAL_PAGES as u64);
    assert_eq!(faulted_all.len(), 1);
}

#[test]
fn the_message_is_what_a_firecracker_handler_parses() {
    let setup = setup(TOTAL_PAGES);
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let mem = uffd_memory();
    let handoff = hand_off(&mem, &setup.socket).unwrap();
    let (handler, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 1024];
    let (len, fd) = handler.recv_with_fd(&mut buf).unwrap();
    let fd = fd.expect("the userfaultfd travels with the message");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(link.to_str().unwrap(), "anon_inode:[userfaultfd]");

    let message: serde_json::Value = serde_json::from_slice(&buf[..len]).unwrap();
    let regions = message.as_array().expect("a JSON array");
    assert_eq!(regions.len(), 2);
    let mut offset = 0;
    for (region, guest) in regions.iter().zip(mem.iter()) {
        let fields = region.as_object().expect("objects");
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "base_host_virt_addr",
                "offset",
                "page_size",
                "page_size_kib",
                "size"
            ]
        );
        assert_eq!(region["base_host_virt_addr"], guest.as_ptr() as u64);
        assert_eq!(region["size"], guest.len());
        assert_eq!(region["offset"], offset);
        // The deprecated field carries bytes, like its replacement.
        assert_eq!(region["page_size"], 4096);
        assert_eq!(region["page_size_kib"], 4096);
        offset += guest.len();
    }
    drop(handoff);
}

#[test]
fn a_handler_refuses_a_memory_file_shorter_than_the_regions() {
    let setup = setup(TOTAL_PAGES - 1);
    let handler = spawn_handler(&setup, FaultMode::OnDemand);
    let mem = uffd_memory();
    // The hand-off itself succeeds: the VMM does not see the file. Nothing is touched.
    let handoff = hand_off(&mem, &setup.socket).unwrap();
    let err = handler.thread.join().unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "The memory file is 94208 bytes, shorter than the 98304 bytes the guest memory \
         regions need"
    );
    drop(handoff);
}
