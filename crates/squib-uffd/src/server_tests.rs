//! Tests of the checks a page server makes before serving, and of its region lookup. Serving
//! itself is tested end to end in `tests/handoff.rs`.

use super::*;

fn mapping(base: u64, size: u64, offset: u64) -> GuestRegionUffdMapping {
    GuestRegionUffdMapping {
        base_host_virt_addr: base,
        size,
        offset,
        page_size: 4096,
        page_size_kib: 4096,
    }
}

fn file_of(len: u64) -> File {
    let file = tempfile::tempfile().unwrap();
    file.set_len(len).unwrap();
    file
}

fn server(
    mappings: Vec<GuestRegionUffdMapping>,
    file_len: u64,
) -> Result<PageServer, HandlerError> {
    PageServer::new(mappings, Uffd::new().unwrap(), &file_of(file_len))
}

#[test]
fn a_memory_file_shorter_than_the_regions_is_refused() {
    let mappings = vec![
        mapping(0x10_0000, 0x4000, 0),
        mapping(0x20_0000, 0x2000, 0x4000),
    ];
    let err = server(mappings.clone(), 0x5000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "The memory file is 20480 bytes, shorter than the 24576 bytes the guest memory regions \
         need"
    );
    assert!(server(mappings, 0x6000).is_ok());
}

#[test]
fn unusable_regions_are_refused_with_the_reason() {
    let cases = [
        (
            GuestRegionUffdMapping {
                page_size: 3000,
                ..mapping(0x1000, 0x1000, 0)
            },
            "page_size is not a power of two of at least the host page size",
        ),
        (
            GuestRegionUffdMapping {
                page_size: 512,
                ..mapping(0x1000, 0x1000, 0)
            },
            "page_size is not a power of two of at least the host page size",
        ),
        (
            mapping(0x1800, 0x1000, 0),
            "base_host_virt_addr and size are not a non-empty run of whole pages",
        ),
        (
            mapping(0x1000, 0, 0),
            "base_host_virt_addr and size are not a non-empty run of whole pages",
        ),
        (
            mapping(u64::MAX - 0xfff, 0x2000, 0),
            "base_host_virt_addr + size overflows",
        ),
        (
            mapping(0x1000, 0x1000, 0x800),
            "offset is not a multiple of the host page size",
        ),
        (
            mapping(0x1000, 0x1000, u64::MAX - 0xfff),
            "offset + size overflows",
        ),
    ];
    for (bad, reason) in cases {
        match server(vec![bad], 0x10_0000) {
            Err(HandlerError::InvalidRegion { reason: got, .. }) => assert_eq!(got, reason),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    assert!(matches!(
        server(vec![], 0x1000),
        Err(HandlerError::NoRegions)
    ));
    let overlapping = vec![mapping(0x3000, 0x1000, 0x2000), mapping(0x1000, 0x3000, 0)];
    let err = server(overlapping, 0x10_0000).unwrap_err().to_string();
    assert!(err.contains("overlaps another region"), "{err}");
}

#[test]
fn regions_are_found_by_address_whatever_their_order() {
    let server = server(
        vec![
            mapping(0x40_0000, 0x2000, 0x1000),
            mapping(0x10_0000, 0x1000, 0),
        ],
        0x3000,
    )
    .unwrap();
    assert_eq!(server.regions()[0].base_host_virt_addr, 0x10_0000);
    assert_eq!(server.region_index(0x10_0fff), Some(0));
    assert_eq!(server.region_index(0x10_1000), None);
    assert_eq!(server.region_index(0x40_1fff), Some(1));
    assert_eq!(server.region_index(0x40_2000), None);
    assert_eq!(server.region_index(0), None);
}
