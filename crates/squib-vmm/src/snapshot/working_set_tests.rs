//! Tests of working-set recording and prefetch on real private file mappings.

use std::io::Write;

use squib_arch::memory::{create_guest_memory_from_file, HugePageMode};
use vm_memory::{Bytes, GuestAddress};

use super::*;

const PAGE: u64 = PAGE_SIZE as u64;
/// Two regions of 256 pages each, back to back in the file.
const REGION_PAGES: u64 = 256;

fn memory_file() -> File {
    let mut file = tempfile::tempfile().unwrap();
    let page: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
    for _ in 0..2 * REGION_PAGES {
        file.write_all(&page).unwrap();
    }
    file
}

fn restore(file: &File) -> GuestMemoryMmap {
    let size = (REGION_PAGES * PAGE) as usize;
    // The second region starts above a hole, as guest memory above the MMIO gap does.
    let regions = [
        (GuestAddress(0), size),
        (GuestAddress(16 * REGION_PAGES * PAGE), size),
    ];
    create_guest_memory_from_file(&regions, file, HugePageMode::None).unwrap()
}

/// File offsets of touched pages, as a set of page numbers.
fn touched(mem: &GuestMemoryMmap) -> Vec<u64> {
    touched_pages(&mapped_regions(mem))
        .unwrap()
        .into_iter()
        .map(|offset| offset / PAGE)
        .collect()
}

#[test]
fn regions_map_to_their_file_offsets() {
    let file = memory_file();
    let mem = restore(&file);
    let regions = mapped_regions(&mem);
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1].file_offset, REGION_PAGES * PAGE);
    // A run across the boundary of the two regions splits into two host ranges.
    let run = PageRun {
        offset: (REGION_PAGES - 1) * PAGE,
        len: 2 * PAGE,
    };
    let ranges: Vec<_> = host_ranges(&regions, run).collect();
    assert_eq!(
        ranges,
        [
            (
                regions[0].host_addr + ((REGION_PAGES - 1) * PAGE) as usize,
                PAGE_SIZE
            ),
            (regions[1].host_addr, PAGE_SIZE)
        ]
    );
}

#[test]
fn recording_finds_the_pages_the_guest_touched() {
    let file = memory_file();
    let mem = restore(&file);
    assert!(
        touched(&mem).is_empty(),
        "nothing is mapped before the guest runs"
    );
    // A read in the first region, a write (copy-on-write) in the second.
    let _: u8 = mem.read_obj(GuestAddress(3 * PAGE)).unwrap();
    mem.write_obj(7u8, GuestAddress(16 * REGION_PAGES * PAGE + 100 * PAGE))
        .unwrap();
    let pages = touched(&mem);
    assert!(pages.contains(&3), "{pages:?}");
    assert!(pages.contains(&(REGION_PAGES + 100)), "{pages:?}");
    // Read faults may map a few cached neighbours (the kernel's fault-around, up to 64 KiB);
    // pages far from both touches stay unmapped.
    assert!(
        pages
            .iter()
            .all(|p| *p < 32 || (REGION_PAGES + 64..REGION_PAGES + 128).contains(p)),
        "{pages:?}"
    );
}

#[test]
fn prefetch_maps_every_page_of_the_set_and_nothing_changes() {
    let file = memory_file();
    let mem = restore(&file);
    let wanted: Vec<u64> = (40..48)
        .chain(REGION_PAGES + 10..REGION_PAGES + 12)
        .collect();
    let set = WorkingSet::from_pages(2 * REGION_PAGES * PAGE, wanted.iter().map(|p| p * PAGE));
    let done = prefetch(&file, &mapped_regions(&mem), &set).unwrap();
    assert_eq!(done, Prefetched { pages: 10, runs: 2 });
    let pages = touched(&mem);
    for page in &wanted {
        assert!(pages.contains(page), "page {page} not mapped: {pages:?}");
    }
    // The guest sees the file's bytes, and its writes stay private.
    let byte: u8 = mem.read_obj(GuestAddress(40 * PAGE + 5)).unwrap();
    assert_eq!(byte, 5);
    mem.write_obj(0xaau8, GuestAddress(40 * PAGE + 5)).unwrap();
    let mut on_disk = [0u8; 1];
    file.read_exact_at(&mut on_disk, 40 * PAGE + 5).unwrap();
    assert_eq!(on_disk, [5]);
}

#[test]
fn a_recorded_set_prefetches_on_the_next_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorkingSetConfig {
        path: dir.path().join("ws"),
        record_ms: 1,
    };
    let file = memory_file();
    let mem = restore(&file);
    let _: u8 = mem.read_obj(GuestAddress(200 * PAGE)).unwrap();
    let recorder = WorkingSetRecorder::new(&config, mapped_regions(&mem));
    let set = recorder.record().unwrap();
    assert!(set
        .runs()
        .iter()
        .any(|r| r.offset <= 200 * PAGE && 200 * PAGE < r.offset + r.len));

    let loaded = squib_snapshot::load_working_set(&config.path, 2 * REGION_PAGES * PAGE)
        .unwrap()
        .unwrap();
    assert_eq!(loaded, set);
    let fresh = restore(&file);
    prefetch(&file, &mapped_regions(&fresh), &loaded).unwrap();
    assert!(touched(&fresh).contains(&200));
}
