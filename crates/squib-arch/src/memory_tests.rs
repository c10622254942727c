//! Tests of guest memory creation: layout, boot-time memory and the two restore backings.

use std::io::Write;

use vm_memory::bitmap::Bitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

use super::*;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

#[test]
fn small_guest_has_one_region_from_zero() {
    assert_eq!(
        arch_memory_regions(128 * MIB),
        vec![(GuestAddress(0), 128 * MIB)]
    );
    assert_eq!(
        arch_memory_regions(3 * GIB),
        vec![(GuestAddress(0), 3 * GIB)]
    );
}

#[test]
fn large_guest_skips_the_mmio_hole() {
    assert_eq!(
        arch_memory_regions(3 * GIB + MIB),
        vec![(GuestAddress(0), 3 * GIB), (GuestAddress(4 << 30), MIB)]
    );
}

#[test]
fn creates_writable_memory_of_the_requested_size() {
    let mem = create_guest_memory(16).unwrap();
    assert_eq!(mem.num_regions(), 1);
    let size: u64 = mem.iter().map(|r| r.len()).sum();
    assert_eq!(size, 16 << 20);
    mem.write_obj(0xdead_beef_u32, GuestAddress(0xff_fffc))
        .unwrap();
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0xff_fffc)).unwrap(),
        0xdead_beef
    );
    assert!(mem.write_obj(0u8, GuestAddress(16 << 20)).is_err());
}

#[test]
fn guest_above_3_gib_is_mapped_without_reserving_it() {
    // 4 GiB of MAP_NORESERVE memory costs nothing until touched.
    let mem = create_guest_memory(4096).unwrap();
    assert_eq!(mem.num_regions(), 2);
    mem.write_obj(7u8, GuestAddress((5u64 << 30) - 1)).unwrap();
    assert!(mem.write_obj(7u8, GuestAddress(MMIO32_START)).is_err());
}

#[test]
fn zero_and_oversized_memory_are_refused_by_name() {
    assert!(matches!(create_guest_memory(0), Err(MemoryError::ZeroSize)));
    let err = create_guest_memory(MAX_MEM_SIZE_MIB + 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "guest memory size 261121 MiB is more than the 261120 MiB supported"
    );
}

/// Two regions with a gap, as a restored guest above the MMIO hole would have.
const REGIONS: [(GuestAddress, usize); 2] = [
    (GuestAddress(0), 64 << 10),
    (GuestAddress(1 << 20), 32 << 10),
];
const REGIONS_BYTES: usize = 96 << 10;

/// A memory file whose byte `i` is `i / 4096 + 1`: every page says which page of the file
/// it is, and no page is zero.
fn pattern_file(len: usize) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i / 4096 + 1) as u8).collect();
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    file
}

#[test]
fn file_backed_memory_reads_each_region_at_its_file_offset() {
    let file = pattern_file(REGIONS_BYTES);
    let mem = create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::None).unwrap();
    assert_eq!(mem.num_regions(), 2);
    let mut guest = vec![0u8; 64 << 10];
    mem.read_slice(&mut guest, GuestAddress(0)).unwrap();
    assert_eq!(guest, std::fs::read(file.path()).unwrap()[..64 << 10]);
    // The second region starts at file offset 64 KiB, which is page 16 of the file.
    assert_eq!(mem.read_obj::<u8>(GuestAddress(1 << 20)).unwrap(), 17);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress((1 << 20) + (32 << 10) - 1))
            .unwrap(),
        24
    );
    let region = mem.find_region(GuestAddress(1 << 20)).unwrap();
    assert_eq!(region.file_offset().unwrap().start(), 64 << 10);
    assert_eq!(region.flags() & libc::MAP_SHARED, 0);
    assert_ne!(region.flags() & libc::MAP_NORESERVE, 0);
}

#[test]
fn guest_writes_stay_private_to_the_process() {
    let file = pattern_file(REGIONS_BYTES);
    let mem = create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::None).unwrap();
    mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
        .unwrap();
    mem.write_obj(0xffu8, GuestAddress(1 << 20)).unwrap();
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
        0xdead_beef
    );
    let on_disk = std::fs::read(file.path()).unwrap();
    assert_eq!(on_disk[0x1000..0x1004], [2, 2, 2, 2]);
    assert_eq!(on_disk[64 << 10], 17);
    // A second restore of the same file sees the snapshot, not the first guest's writes.
    let clone =
        create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::None).unwrap();
    assert_eq!(clone.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 2);
}

#[test]
fn a_longer_file_is_accepted_a_shorter_one_refused() {
    let longer = pattern_file(REGIONS_BYTES + 4096);
    assert!(create_guest_memory_from_file(&REGIONS, longer.as_file(), HugePageMode::None).is_ok());
    let shorter = pattern_file(REGIONS_BYTES - 4096);
    let err =
        create_guest_memory_from_file(&REGIONS, shorter.as_file(), HugePageMode::None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Failed to restore guest memory: Total sum of memory regions exceeds largest possible \
         file offset"
    );
    let overflowing = [
        (GuestAddress(0), usize::MAX & !0xfff),
        (GuestAddress(1 << 40), 4096),
    ];
    assert!(matches!(
        create_guest_memory_from_file(&overflowing, shorter.as_file(), HugePageMode::None),
        Err(MemoryFromFileError::Memory(MemoryError::TooLarge { .. }))
    ));
}

#[test]
fn hugetlbfs_snapshots_must_use_uffd() {
    let file = pattern_file(REGIONS_BYTES);
    let err = create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::Hugetlbfs2M)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd."
    );
}

#[test]
fn transparent_huge_pages_are_a_hint_on_the_same_mapping() {
    let file = pattern_file(REGIONS_BYTES);
    let mem =
        create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::Transparent).unwrap();
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0)).unwrap(), 1);
    let anon = create_guest_memory_for_uffd(&REGIONS, HugePageMode::Transparent).unwrap();
    assert_eq!(anon.num_regions(), 2);
}

#[test]
fn bad_restored_regions_are_refused_by_name() {
    let file = pattern_file(REGIONS_BYTES);
    for regions in [
        vec![(GuestAddress(0), 0)],
        vec![(GuestAddress(0), 4095)],
        vec![(GuestAddress(0x800), 4096)],
    ] {
        assert!(matches!(
            create_guest_memory_for_uffd(&regions, HugePageMode::None),
            Err(MemoryError::Unaligned { .. })
        ));
        assert!(matches!(
            create_guest_memory_from_file(&regions, file.as_file(), HugePageMode::None),
            Err(MemoryFromFileError::Memory(MemoryError::Unaligned { .. }))
        ));
    }
    let err = create_guest_memory_for_uffd(&[(GuestAddress(0), 4096)], HugePageMode::Hugetlbfs2M)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "guest memory region at 0x0 of 0x1000 bytes is not a non-empty run of whole 0x200000-byte \
         pages"
    );
    let overlapping = [(GuestAddress(0), 8192), (GuestAddress(4096), 4096)];
    assert!(matches!(
        create_guest_memory_for_uffd(&overlapping, HugePageMode::None),
        Err(MemoryError::Regions(_))
    ));
    assert!(matches!(
        create_guest_memory_for_uffd(&[], HugePageMode::None),
        Err(MemoryError::Regions(_))
    ));
}

#[test]
fn uffd_memory_is_anonymous_private_and_unreserved() {
    let mem = create_guest_memory_for_uffd(&REGIONS, HugePageMode::None).unwrap();
    for region in mem.iter() {
        assert!(region.file_offset().is_none());
        let flags = region.flags();
        assert_eq!(
            flags
                & (libc::MAP_ANONYMOUS
                    | libc::MAP_PRIVATE
                    | libc::MAP_NORESERVE
                    | libc::MAP_SHARED),
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE
        );
        assert_eq!(region.is_hugetlbfs(), Some(false));
    }
    assert_eq!(mem.read_obj::<u64>(GuestAddress(1 << 20)).unwrap(), 0);
}

#[test]
fn uffd_memory_can_be_hugetlbfs_without_reserving_it() {
    // MAP_NORESERVE: mapping 2 MiB pages succeeds even on a host with no huge pages reserved
    // (only touching them would need one), so this is not touched.
    let mem =
        create_guest_memory_for_uffd(&[(GuestAddress(0), 4 << 20)], HugePageMode::Hugetlbfs2M)
            .unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    assert_eq!(region.is_hugetlbfs(), Some(true));
    assert_ne!(region.flags() & libc::MAP_HUGETLB, 0);
}

/// The pages of every region whose bitmap bit is set, as (region index, page index).
fn dirty_pages(mem: &GuestMemoryMmap) -> Vec<(usize, usize)> {
    mem.iter()
        .enumerate()
        .flat_map(|(index, region)| {
            let pages = region.len() as usize / DIRTY_PAGE_SIZE;
            let bitmap = MmapRegion::bitmap(region);
            (0..pages)
                .filter(move |&page| bitmap.dirty_at(page * DIRTY_PAGE_SIZE))
                .map(move |page| (index, page))
        })
        .collect()
}

/// Every constructor's memory records VMM writes, page by page, region by region; a write
/// across a page boundary dirties both pages.
fn assert_writes_are_tracked(mem: &GuestMemoryMmap, second_region: u64) {
    assert_eq!(dirty_pages(mem), []);
    mem.write_obj(1u8, GuestAddress(0x2fff)).unwrap();
    mem.write_obj(0u32, GuestAddress(0x4ffe)).unwrap();
    mem.write_obj(1u8, GuestAddress(second_region + 0x1000))
        .unwrap();
    assert_eq!(dirty_pages(mem), [(0, 2), (0, 4), (0, 5), (1, 1)]);
    // Reading is not a change.
    mem.read_obj::<u64>(GuestAddress(0x7000)).unwrap();
    assert_eq!(dirty_pages(mem).len(), 4);
}

#[test]
fn boot_memory_tracks_vmm_writes_per_4k_page() {
    let mem = create_guest_memory(4096).unwrap();
    assert_writes_are_tracked(&mem, RAM_64BIT_START);
    for region in mem.iter() {
        let pages = region.len() as usize / DIRTY_PAGE_SIZE;
        assert_eq!(
            MmapRegion::bitmap(region).len(),
            pages,
            "one bit per 4 KiB page"
        );
    }
}

#[test]
fn restored_memory_tracks_vmm_writes_but_starts_clean() {
    let file = pattern_file(REGIONS_BYTES);
    let from_file =
        create_guest_memory_from_file(&REGIONS, file.as_file(), HugePageMode::None).unwrap();
    assert_writes_are_tracked(&from_file, 1 << 20);
    let for_uffd = create_guest_memory_for_uffd(&REGIONS, HugePageMode::None).unwrap();
    assert_writes_are_tracked(&for_uffd, 1 << 20);
}

#[test]
fn hugetlbfs_memory_still_tracks_4k_pages() {
    // KVM logs 4 KiB pages whatever backs them; the bitmap must count the same pages.
    let mem =
        create_guest_memory_for_uffd(&[(GuestAddress(0), 4 << 20)], HugePageMode::Hugetlbfs2M)
            .unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    assert_eq!(
        MmapRegion::bitmap(region).len(),
        (4 << 20) / DIRTY_PAGE_SIZE
    );
}

/// The `VmFlags` line of this process's `/proc/self/smaps` entry for the mapping at `addr`.
fn vm_flags(addr: *const u8) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{:x}-", addr as usize);
    let entry = smaps
        .split_inclusive('\n')
        .skip_while(|line| !line.starts_with(&start))
        .find(|line| line.starts_with("VmFlags:"))
        .unwrap_or_else(|| panic!("no smaps entry at {start}"));
    entry.to_owned()
}

#[test]
fn boot_memory_can_ask_for_transparent_huge_pages() {
    let mem = create_guest_memory_backed(64, HugePageMode::Transparent).unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    assert!(
        vm_flags(region.as_ptr()).contains(" hg"),
        "MADV_HUGEPAGE on the region: {}",
        vm_flags(region.as_ptr())
    );
    mem.write_obj(7u64, GuestAddress(32 << 20)).unwrap();
    assert_eq!(mem.read_obj::<u64>(GuestAddress(32 << 20)).unwrap(), 7);
    let plain = create_guest_memory_backed(64, HugePageMode::None).unwrap();
    let region = plain.find_region(GuestAddress(0)).unwrap();
    assert!(!vm_flags(region.as_ptr()).contains(" hg"));
}

#[test]
fn hugetlbfs_boot_memory_is_reserved_from_the_pool_or_refused_saying_why() {
    // 64 MiB needs 32 pages of 2 MiB. The host's pool is not changed here: with enough free
    // pages the mapping takes them (reserved, without MAP_NORESERVE); without, the error names
    // the shortfall. Either way one branch is checked for real.
    let available = available_huge_pages_2m();
    match create_guest_memory_backed(64, HugePageMode::Hugetlbfs2M) {
        Ok(mem) => {
            assert!(available >= 32, "mapped with only {available} free pages");
            let region = mem.find_region(GuestAddress(0)).unwrap();
            assert_eq!(region.is_hugetlbfs(), Some(true));
            assert_eq!(region.flags() & libc::MAP_NORESERVE, 0, "reserved at mmap");
            assert!(
                available_huge_pages_2m() + 32 <= available,
                "pages left the pool"
            );
        }
        Err(e) => {
            assert!(available < 32, "refused with {available} free pages: {e}");
            assert!(
                matches!(
                    e,
                    MemoryError::HugePagesUnavailable {
                        mem_size_mib: 64,
                        needed: 32,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("/proc/sys/vm/nr_hugepages"), "{e}");
        }
    }
    // An odd number of MiB cannot be made of 2 MiB pages.
    assert!(matches!(
        create_guest_memory_backed(65, HugePageMode::Hugetlbfs2M),
        Err(MemoryError::Unaligned { .. })
    ));
}
