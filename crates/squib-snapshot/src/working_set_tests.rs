//! Tests of the working-set file: runs, round trip, and every file that must be refused.

use std::fs;

use super::*;

const PAGE: u64 = PAGE_SIZE as u64;

#[test]
fn consecutive_pages_merge_into_runs() {
    let set = WorkingSet::from_pages(
        64 * PAGE,
        [0, PAGE, 2 * PAGE, 7 * PAGE, 9 * PAGE, 10 * PAGE],
    );
    assert_eq!(
        set.runs(),
        [
            PageRun {
                offset: 0,
                len: 3 * PAGE
            },
            PageRun {
                offset: 7 * PAGE,
                len: PAGE
            },
            PageRun {
                offset: 9 * PAGE,
                len: 2 * PAGE
            },
        ]
    );
    assert_eq!(set.pages(), 6);
    set.check(64 * PAGE).unwrap();
}

#[test]
fn round_trip_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws");
    assert!(load_working_set(&path, 16 * PAGE).unwrap().is_none());
    let set = WorkingSet::from_pages(16 * PAGE, [PAGE, 3 * PAGE, 4 * PAGE]);
    save_working_set(&path, &set).unwrap();
    assert_eq!(load_working_set(&path, 16 * PAGE).unwrap(), Some(set));
}

#[test]
fn damaged_foreign_and_stale_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws");
    let set = WorkingSet::from_pages(16 * PAGE, [PAGE]);
    save_working_set(&path, &set).unwrap();

    // Recorded against another memory size.
    assert!(matches!(
        load_working_set(&path, 32 * PAGE),
        Err(WorkingSetError::OtherMemory { recorded, actual }) if recorded == 16 * PAGE && actual == 32 * PAGE
    ));

    // One flipped byte: the CRC catches it.
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_working_set(&path, 16 * PAGE),
        Err(WorkingSetError::File(SnapshotError::Crc))
    ));

    // A state file of something else.
    save_state(&path, &(1u32, String::from("not a working set"))).unwrap();
    assert!(matches!(
        load_working_set(&path, 16 * PAGE),
        Err(WorkingSetError::NotAWorkingSet)
    ));
}

#[test]
fn runs_must_be_ordered_aligned_and_inside_the_memory() {
    let bad = |runs: Vec<PageRun>| WorkingSet {
        marker: WORKING_SET_MARKER,
        memory_len: 8 * PAGE,
        runs,
    };
    for (runs, index) in [
        (
            vec![PageRun {
                offset: 1,
                len: PAGE,
            }],
            0,
        ),
        (
            vec![PageRun {
                offset: 0,
                len: PAGE + 1,
            }],
            0,
        ),
        (vec![PageRun { offset: 0, len: 0 }], 0),
        (
            vec![PageRun {
                offset: 7 * PAGE,
                len: 2 * PAGE,
            }],
            0,
        ),
        (
            vec![PageRun {
                offset: u64::MAX - PAGE + 1,
                len: PAGE,
            }],
            0,
        ),
        (
            vec![
                PageRun {
                    offset: 2 * PAGE,
                    len: PAGE,
                },
                PageRun {
                    offset: PAGE,
                    len: PAGE,
                },
            ],
            1,
        ),
        (
            vec![
                PageRun {
                    offset: 0,
                    len: 2 * PAGE,
                },
                PageRun {
                    offset: PAGE,
                    len: PAGE,
                },
            ],
            1,
        ),
    ] {
        assert!(
            matches!(bad(runs.clone()).check(8 * PAGE), Err(WorkingSetError::BadRun { index: i }) if i == index),
            "{runs:?}"
        );
    }
}
