//! Tests of merging sparse diffs onto their bases, with both copy methods.

use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::memory_file::{write_diff, write_full, PAGE_SIZE};

/// Filesystems track holes per 4 KiB block at best.
const BLOCK: usize = 4096;

const METHODS: [CopyMethod; 2] = [CopyMethod::CopyFileRange, CopyMethod::ReadWrite];

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn contents(file: &File) -> Vec<u8> {
    let mut buf = vec![0u8; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// A sparse file of `blocks` blocks with data only in the blocks listed.
fn sparse_diff(blocks: usize, data: &[(usize, &[u8])]) -> File {
    let file = tempfile::tempfile().unwrap();
    file.set_len((blocks * BLOCK) as u64).unwrap();
    for &(block, bytes) in data {
        file.write_all_at(bytes, (block * BLOCK) as u64).unwrap();
    }
    file
}

fn base_with(bytes: &[u8]) -> File {
    let file = tempfile::tempfile().unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file
}

#[test]
fn data_ranges_land_at_their_offsets_and_holes_keep_the_base() {
    for method in METHODS {
        let base_bytes = pattern(8 * BLOCK, 0x11);
        let base = base_with(&base_bytes);
        let one = pattern(BLOCK, 0x22);
        let two = pattern(2 * BLOCK, 0x33);
        let zeros = vec![0u8; BLOCK];
        // Data in block 1, blocks 4-5, and explicit zeros in block 7.
        let diff = sparse_diff(8, &[(1, &one), (4, &two), (7, &zeros)]);

        let copied = rebase_with(&base, &diff, method).unwrap();
        assert_eq!(copied, 4 * BLOCK as u64, "{method:?}");

        let mut expected = base_bytes.clone();
        expected[BLOCK..2 * BLOCK].copy_from_slice(&one);
        expected[4 * BLOCK..6 * BLOCK].copy_from_slice(&two);
        expected[7 * BLOCK..].copy_from_slice(&zeros);
        assert_eq!(contents(&base), expected, "{method:?}");
    }
}

#[test]
fn an_all_hole_diff_changes_nothing() {
    for method in METHODS {
        let base_bytes = pattern(4 * BLOCK, 0x44);
        let base = base_with(&base_bytes);
        let diff = sparse_diff(4, &[]);
        assert_eq!(rebase_with(&base, &diff, method).unwrap(), 0);
        assert_eq!(contents(&base), base_bytes);
    }
}

#[test]
fn empty_files_are_fine() {
    let base = tempfile::tempfile().unwrap();
    let diff = tempfile::tempfile().unwrap();
    assert_eq!(rebase(&base, &diff).unwrap(), 0);
    assert_eq!(base.metadata().unwrap().len(), 0);
}

#[test]
fn a_longer_diff_grows_the_base_and_a_longer_base_keeps_its_tail() {
    for method in METHODS {
        let base_bytes = pattern(2 * BLOCK, 0x55);
        let base = base_with(&base_bytes);
        let tail = pattern(BLOCK, 0x66);
        let diff = sparse_diff(3, &[(2, &tail)]);
        rebase_with(&base, &diff, method).unwrap();
        let mut expected = base_bytes.clone();
        expected.extend_from_slice(&tail);
        assert_eq!(contents(&base), expected);

        let short_diff = sparse_diff(1, &[(0, &pattern(BLOCK, 0x77))]);
        rebase_with(&base, &short_diff, method).unwrap();
        expected[..BLOCK].copy_from_slice(&pattern(BLOCK, 0x77));
        assert_eq!(contents(&base), expected);
    }
}

#[test]
fn a_base_not_open_for_writing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base");
    std::fs::write(&path, pattern(BLOCK, 1)).unwrap();
    let base = File::open(&path).unwrap();
    let diff = sparse_diff(1, &[(0, &pattern(BLOCK, 2))]);
    for method in METHODS {
        let err = rebase_with(&base, &diff, method).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Failed to copy the diff data to the base file: "),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), pattern(BLOCK, 1));
}

#[test]
fn a_sparse_memory_diff_rebased_onto_its_full_base_equals_a_new_full_file() {
    let ranges = [
        (GuestAddress(0), 32 * PAGE_SIZE),
        (GuestAddress(0x100_0000), 16 * PAGE_SIZE),
    ];
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    mem.write_slice(&pattern(32 * PAGE_SIZE, 9), GuestAddress(0))
        .unwrap();
    let base = tempfile::tempfile().unwrap();
    write_full(&mem, &base).unwrap();

    let dirty = [(0usize, 3usize), (0, 4), (0, 31), (1, 0), (1, 9)];
    for &(region, page) in &dirty {
        let addr = ranges[region].0.unchecked_add((page * PAGE_SIZE) as u64);
        mem.write_slice(&pattern(PAGE_SIZE, 0xc0 | page as u8), addr)
            .unwrap();
    }
    let diff = tempfile::tempfile().unwrap();
    write_diff(&mem, &diff, |r, p| dirty.contains(&(r, p))).unwrap();

    let copied = rebase(&base, &diff).unwrap();
    assert_eq!(copied, (dirty.len() * PAGE_SIZE) as u64);
    let full = tempfile::tempfile().unwrap();
    write_full(&mem, &full).unwrap();
    assert_eq!(contents(&base), contents(&full));
}

#[test]
fn a_diff_on_another_filesystem_is_merged_too() {
    // tmpfs to the test directory's filesystem: since Linux 5.19 copy_file_range refuses
    // across filesystem types (EXDEV), and the copier must fall back to pread/pwrite.
    let diff = tempfile::tempfile_in(Path::new("/dev/shm")).unwrap();
    diff.set_len(3 * BLOCK as u64).unwrap();
    diff.write_all_at(&pattern(BLOCK, 0x99), BLOCK as u64)
        .unwrap();
    let base_bytes = pattern(3 * BLOCK, 0x88);
    let base = base_with(&base_bytes);

    let mut copier = Copier {
        method: CopyMethod::CopyFileRange,
        buf: Vec::new(),
    };
    copier
        .copy_range(&diff, &base, BLOCK as u64, BLOCK as u64)
        .unwrap();
    let mut expected = base_bytes;
    expected[BLOCK..2 * BLOCK].copy_from_slice(&pattern(BLOCK, 0x99));
    assert_eq!(contents(&base), expected);
    assert_eq!(rebase(&base, &diff).unwrap(), BLOCK as u64);
    assert_eq!(contents(&base), expected);
}
