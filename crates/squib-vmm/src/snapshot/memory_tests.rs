//! Full and Diff memory files of a real KVM guest (the counting loop of `test_guest`, which
//! stores its counter at `DATA_ADDR`) plus VMM writes standing in for device DMA: which pages
//! each snapshot writes, and that the record of changes survives a failed snapshot.

use std::fs::File;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::vstate::test_guest::{next_count, test_vm, TestVm, DATA_ADDR};

const PAGE: u64 = 4096;
/// A page no one but the test writes: the "device" writes land here.
const DEVICE_ADDR: u64 = 0x1f_3000;

fn temp_file() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().unwrap()
}

/// A VM whose guest has run once (setting the page tables' accessed and dirty bits too) and
/// whose memory then went into a Full snapshot, so that the record of changes is empty.
fn vm_after_full(track: bool) -> (TestVm, kvm_ioctls::VcpuFd) {
    let vm = test_vm(track);
    let mut fd = vm.boot_vcpu();
    next_count(&mut fd);
    let full = temp_file();
    let written = write_memory(&vm.vm, &vm.mem, full.as_file(), SnapshotType::Full).unwrap();
    assert_eq!(written, 4 << 20, "a Full snapshot writes all memory");
    (vm, fd)
}

fn diff(vm: &TestVm, file: &File) -> u64 {
    write_memory(&vm.vm, &vm.mem, file, SnapshotType::Diff).unwrap()
}

/// The page of the file at `addr` (a single region from 0: file offset == guest address).
fn file_page(file: &tempfile::NamedTempFile, addr: u64) -> Vec<u8> {
    let bytes = std::fs::read(file.path()).unwrap();
    bytes[addr as usize..(addr + PAGE) as usize].to_vec()
}

fn memory_page(vm: &TestVm, addr: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE as usize];
    vm.mem.read_slice(&mut page, GuestAddress(addr)).unwrap();
    page
}

#[test]
fn a_diff_right_after_a_snapshot_writes_nothing() {
    let (vm, _fd) = vm_after_full(true);
    let file = temp_file();
    assert_eq!(diff(&vm, file.as_file()), 0);
    assert_eq!(file.as_file().metadata().unwrap().len(), 4 << 20);
}

#[test]
fn a_diff_holds_the_page_the_guest_wrote_and_no_other() {
    let (vm, mut fd) = vm_after_full(true);
    let count = next_count(&mut fd);
    let file = temp_file();
    assert_eq!(diff(&vm, file.as_file()), PAGE);
    let stored = file_page(&file, DATA_ADDR);
    assert_eq!(u32::from_le_bytes(stored[..4].try_into().unwrap()), count);
    // Every other page is a hole of zeros.
    assert!(file_page(&file, DATA_ADDR - PAGE).iter().all(|&b| b == 0));
    assert!(file_page(&file, 0x10_0000).iter().all(|&b| b == 0));
}

#[test]
fn a_diff_holds_the_pages_the_vmm_wrote_for_a_device() {
    let (vm, _fd) = vm_after_full(true);
    // A write straddling two pages, as a device's DMA through vm-memory would do.
    vm.mem
        .write_slice(&[0xab; 16], GuestAddress(DEVICE_ADDR + PAGE - 8))
        .unwrap();
    let file = temp_file();
    assert_eq!(diff(&vm, file.as_file()), 2 * PAGE);
    assert_eq!(file_page(&file, DEVICE_ADDR), memory_page(&vm, DEVICE_ADDR));
    assert_eq!(
        file_page(&file, DEVICE_ADDR + PAGE),
        memory_page(&vm, DEVICE_ADDR + PAGE)
    );
    // Written once: the next Diff has nothing left to write.
    assert_eq!(diff(&vm, temp_file().as_file()), 0);
}

#[test]
fn a_diff_written_onto_its_base_gives_the_memory_of_now() {
    let vm = test_vm(true);
    let mut fd = vm.boot_vcpu();
    next_count(&mut fd);
    let base = temp_file();
    write_memory(&vm.vm, &vm.mem, base.as_file(), SnapshotType::Full).unwrap();
    next_count(&mut fd);
    vm.mem
        .write_obj(0x5eed_u64, GuestAddress(DEVICE_ADDR))
        .unwrap();
    // A Diff opened on the base file updates it in place.
    let merged = squib_snapshot::open_for_write(base.path()).unwrap();
    assert_eq!(diff(&vm, &merged), 2 * PAGE);
    let mut now = vec![0u8; 4 << 20];
    vm.mem.read_slice(&mut now, GuestAddress(0)).unwrap();
    assert!(std::fs::read(base.path()).unwrap() == now);
}

#[test]
fn a_full_snapshot_also_starts_a_new_record() {
    let vm = test_vm(true);
    let mut fd = vm.boot_vcpu();
    next_count(&mut fd);
    vm.mem.write_obj(1u8, GuestAddress(DEVICE_ADDR)).unwrap();
    write_memory(&vm.vm, &vm.mem, temp_file().as_file(), SnapshotType::Full).unwrap();
    next_count(&mut fd);
    // Only what the guest wrote after the Full snapshot, not the earlier device write.
    assert_eq!(diff(&vm, temp_file().as_file()), PAGE);
}

#[test]
fn a_failed_diff_keeps_every_change_for_the_next_one() {
    let (vm, mut fd) = vm_after_full(true);
    next_count(&mut fd);
    vm.mem.write_obj(1u8, GuestAddress(DEVICE_ADDR)).unwrap();
    // Opened read-only: sizing and writing the memory file fail after KVM's log was read.
    let target = temp_file();
    let read_only = File::open(target.path()).unwrap();
    let err = write_memory(&vm.vm, &vm.mem, &read_only, SnapshotType::Diff).unwrap_err();
    assert!(matches!(err, MemorySnapshotError::File(_)), "{err}");
    let file = temp_file();
    assert_eq!(diff(&vm, file.as_file()), 2 * PAGE);
    assert_eq!(file_page(&file, DATA_ADDR), memory_page(&vm, DATA_ADDR));
    assert_eq!(file_page(&file, DEVICE_ADDR), memory_page(&vm, DEVICE_ADDR));
}

#[test]
fn a_diff_without_dirty_page_tracking_is_refused_naming_the_setting() {
    let (vm, _fd) = vm_after_full(false);
    assert!(check_snapshot_type(&vm.vm, SnapshotType::Full).is_ok());
    let err = check_snapshot_type(&vm.vm, SnapshotType::Diff).unwrap_err();
    assert!(err.to_string().contains("track_dirty_pages"), "{err}");
    let file = temp_file();
    let err = write_memory(&vm.vm, &vm.mem, file.as_file(), SnapshotType::Diff).unwrap_err();
    assert!(
        matches!(err, MemorySnapshotError::DiffWithoutTracking),
        "{err}"
    );
    assert_eq!(
        file.as_file().metadata().unwrap().len(),
        0,
        "nothing written"
    );
}
