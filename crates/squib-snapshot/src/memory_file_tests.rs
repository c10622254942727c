//! Tests of the memory file writers on real anonymous guest memory and real files.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;

use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const PAGE: u64 = PAGE_SIZE as u64;

/// Two regions around a gap, as x86 guests have around the MMIO hole: 16 pages at 0 and
/// 8 pages at 1 MiB.
const RANGES: [(GuestAddress, usize); 2] = [
    (GuestAddress(0), 16 * PAGE_SIZE),
    (GuestAddress(0x10_0000), 8 * PAGE_SIZE),
];
const TOTAL: u64 = 24 * PAGE;

/// Fills every byte of `mem` with a value that depends on its address and on `seed`.
fn fill<B: vm_memory::bitmap::Bitmap + 'static>(mem: &GuestMemoryMmap<B>, seed: u8) {
    for (start, len) in RANGES {
        let bytes: Vec<u8> = (0..len)
            .map(|i| ((start.0 as usize + i) / 7) as u8 ^ seed)
            .collect();
        mem.write_slice(&bytes, start).unwrap();
    }
}

/// What a Full file of `mem` must contain: the regions back to back.
fn expected_full<B: vm_memory::bitmap::Bitmap + 'static>(mem: &GuestMemoryMmap<B>) -> Vec<u8> {
    let mut out = Vec::new();
    for (start, len) in RANGES {
        let mut bytes = vec![0u8; len];
        mem.read_slice(&mut bytes, start).unwrap();
        out.extend(bytes);
    }
    out
}

fn plain_memory(seed: u8) -> GuestMemoryMmap<()> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&RANGES).unwrap();
    fill(&mem, seed);
    mem
}

fn file_with(bytes: &[u8]) -> File {
    let file = tempfile::tempfile().unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file
}

fn contents(file: &File) -> Vec<u8> {
    let len = file.metadata().unwrap().len() as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// File page numbers (across regions) of the pages in `dirty` (region, page).
fn file_page(region: usize, page: usize) -> usize {
    [0, 16][region] + page
}

#[test]
fn full_round_trip_is_byte_exact() {
    let mem = plain_memory(0x5a);
    let file = tempfile::tempfile().unwrap();
    assert_eq!(write_full(&mem, &file).unwrap(), TOTAL);
    assert_eq!(contents(&file), expected_full(&mem));
}

#[test]
fn full_onto_a_longer_file_leaves_nothing_of_it() {
    let mem = plain_memory(1);
    let file = file_with(&vec![0xee; 3 * TOTAL as usize]);
    write_full(&mem, &file).unwrap();
    assert_eq!(contents(&file), expected_full(&mem));
}

#[test]
fn full_onto_a_same_size_file_overwrites_it() {
    let mem = plain_memory(2);
    let file = file_with(&vec![0xee; TOTAL as usize]);
    write_full(&mem, &file).unwrap();
    assert_eq!(contents(&file), expected_full(&mem));
}

#[test]
fn diff_writes_only_dirty_pages_in_place() {
    let mem = plain_memory(3);
    let file = file_with(&vec![0xaa; TOTAL as usize]);
    let dirty: BTreeSet<(usize, usize)> =
        [(0, 1), (0, 2), (0, 3), (0, 7), (0, 15), (1, 0), (1, 7)].into();
    let mut asked = Vec::new();
    let written = write_diff(&mem, &file, |region, page| {
        asked.push((region, page));
        dirty.contains(&(region, page))
    })
    .unwrap();
    assert_eq!(written, dirty.len() as u64 * PAGE);
    // Every page is asked about exactly once, in file order.
    let all: Vec<(usize, usize)> = (0..16)
        .map(|p| (0, p))
        .chain((0..8).map(|p| (1, p)))
        .collect();
    assert_eq!(asked, all);

    let full = expected_full(&mem);
    let got = contents(&file);
    assert_eq!(got.len() as u64, TOTAL);
    for &(region, page) in &all {
        let at = file_page(region, page) * PAGE_SIZE;
        let got_page = &got[at..at + PAGE_SIZE];
        if dirty.contains(&(region, page)) {
            assert_eq!(got_page, &full[at..at + PAGE_SIZE], "dirty {region}/{page}");
        } else {
            assert!(got_page.iter().all(|&b| b == 0xaa), "clean {region}/{page}");
        }
    }
}

#[test]
fn diff_to_a_new_file_is_sparse_and_zero_where_clean() {
    let mem = plain_memory(4);
    let file = tempfile::tempfile().unwrap();
    write_diff(&mem, &file, |region, page| region == 1 && page == 2).unwrap();
    let got = contents(&file);
    assert_eq!(got.len() as u64, TOTAL);
    let at = file_page(1, 2) * PAGE_SIZE;
    assert_eq!(
        &got[at..at + PAGE_SIZE],
        &expected_full(&mem)[at..at + PAGE_SIZE]
    );
    assert!(got[..at]
        .iter()
        .chain(&got[at + PAGE_SIZE..])
        .all(|&b| b == 0));
    // One 4 KiB page of data (ext4 and tmpfs allocate per 4 KiB block).
    let blocks = std::os::unix::fs::MetadataExt::blocks(&file.metadata().unwrap());
    assert!(blocks * 512 <= 2 * PAGE, "{blocks} blocks allocated");
}

#[test]
fn diff_onto_a_wrong_size_file_empties_it_first() {
    let mem = plain_memory(5);
    let file = file_with(&vec![0xaa; TOTAL as usize + 1]);
    write_diff(&mem, &file, |region, page| region == 0 && page == 0).unwrap();
    let got = contents(&file);
    assert_eq!(got.len() as u64, TOTAL);
    assert_eq!(&got[..PAGE_SIZE], &expected_full(&mem)[..PAGE_SIZE]);
    assert!(got[PAGE_SIZE..].iter().all(|&b| b == 0));
}

#[test]
fn diff_merged_onto_its_base_equals_a_full_file() {
    // A bitmap-tracked memory, as the VMM uses for dirty pages; the bitmap decides the diff.
    let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&RANGES).unwrap();
    fill(&mem, 6);
    let base = tempfile::tempfile().unwrap();
    write_full(&mem, &base).unwrap();
    for region in mem.iter() {
        (**region).bitmap().reset();
    }

    // The guest runs: a few writes, two of them across page boundaries.
    mem.write_slice(&[1, 2, 3], GuestAddress(5 * PAGE - 1))
        .unwrap();
    mem.write_slice(&[9; 10], GuestAddress(0x10_0000 + 7 * PAGE))
        .unwrap();
    mem.write_slice(&[7; PAGE_SIZE + 2], GuestAddress(10 * PAGE - 1))
        .unwrap();

    let regions: Vec<_> = mem.iter().collect();
    let written = write_diff(&mem, &base, |r, page| {
        regions[r].bitmap().dirty_at(page * PAGE_SIZE)
    })
    .unwrap();
    // Pages 4, 5, 9, 10, 11 of region 0 and page 7 of region 1.
    assert_eq!(written, 6 * PAGE);

    let full = tempfile::tempfile().unwrap();
    write_full(&mem, &full).unwrap();
    assert_eq!(contents(&base), contents(&full));
    assert_eq!(contents(&full), expected_full(&mem));
}

#[test]
fn write_errors_are_reported_not_dropped() {
    let mem = plain_memory(7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mem");
    fs::write(&path, vec![0u8; TOTAL as usize]).unwrap();
    // Right size, so nothing is resized: the first pwrite fails.
    let read_only = File::open(&path).unwrap();
    let err = write_full(&mem, &read_only).unwrap_err();
    assert!(
        err.to_string().starts_with("Cannot write memory file: "),
        "{err}"
    );
    // Wrong size: the truncation fails first.
    fs::write(&path, b"short").unwrap();
    let read_only = File::open(&path).unwrap();
    let err = write_full(&mem, &read_only).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Cannot perform truncate on the memory backing file: "),
        "{err}"
    );
}

#[test]
fn open_for_write_creates_without_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mem");
    drop(open_for_write(&path).unwrap());
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    fs::write(&path, b"base").unwrap();
    drop(open_for_write(&path).unwrap());
    assert_eq!(fs::read(&path).unwrap(), b"base");
    let err = open_for_write(&dir.path().join("no").join("mem")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Cannot perform open on the memory backing file: "),
        "{err}"
    );
}

#[test]
fn written_file_passes_the_loader_length_check() {
    let mem = plain_memory(8);
    let file = tempfile::tempfile().unwrap();
    write_full(&mem, &file).unwrap();
    let layout = MemoryLayout::of_memory(&mem).unwrap();
    layout.check_file(&file).unwrap();
    file.set_len(TOTAL - PAGE).unwrap();
    assert!(matches!(
        layout.check_file(&file),
        Err(MemoryFileError::FileTooShort { .. })
    ));
}
