//! Tests of the userfaultfd wrapper against the running kernel, single-threaded: no fault is
//! ever taken, pages are filled before anything reads them.

use vm_memory::mmap::MmapRegion;

use super::*;
use crate::sys::{host_page_size, _UFFDIO_COPY, _UFFDIO_ZEROPAGE, UFFD_FEATURE_EVENT_REMOVE};

/// A ready userfaultfd with `pages` pages of anonymous memory registered.
fn registered(pages: u64) -> (Uffd, MmapRegion, u64) {
    let page = host_page_size();
    let uffd = Uffd::new().expect("userfaultfd must be usable on this host");
    let features = uffd.api(UFFD_FEATURE_EVENT_REMOVE).unwrap();
    assert_ne!(features & UFFD_FEATURE_EVENT_REMOVE, 0);
    let memory = MmapRegion::<()>::new((pages * page) as usize).unwrap();
    let start = memory.as_ptr() as u64;
    let ioctls = uffd.register_missing(start, pages * page).unwrap();
    assert_ne!(ioctls & (1 << _UFFDIO_COPY), 0);
    assert_ne!(ioctls & (1 << _UFFDIO_ZEROPAGE), 0);
    (uffd, memory, start)
}

#[test]
fn copy_fills_a_missing_page_once() {
    let page = host_page_size();
    let (uffd, memory, start) = registered(2);
    let source = vec![0x5au8; page as usize];
    // SAFETY: `source` is `page` readable bytes.
    let fill = unsafe { uffd.copy(start, source.as_ptr(), page) }.unwrap();
    assert_eq!(fill, Fill::Done);
    // SAFETY: as above.
    let again = unsafe { uffd.copy(start, source.as_ptr(), page) }.unwrap();
    assert_eq!(again, Fill::Exists { filled: 0 });
    assert_eq!(uffd.zeropage(start + page, page).unwrap(), Fill::Done);
    uffd.wake(start, 2 * page).unwrap();
    let mut bytes = [0u8; 2];
    let slice = vm_memory::VolatileMemory::get_slice(&memory, page as usize - 1, 2).unwrap();
    vm_memory::Bytes::read_slice(&slice, &mut bytes, 0).unwrap();
    assert_eq!(bytes, [0x5a, 0]);
    let mut events = Vec::new();
    uffd.read_events(&mut events).unwrap();
    assert!(events.is_empty(), "no fault was taken: {events:?}");
}

#[test]
fn unregistered_memory_is_reported_unmapped() {
    let page = host_page_size();
    let (uffd, _memory, start) = registered(2);
    uffd.unregister(start, page).unwrap();
    assert_eq!(uffd.zeropage(start, page).unwrap(), Fill::Unmapped);
    assert_eq!(uffd.zeropage(start + page, page).unwrap(), Fill::Done);
}

#[test]
fn a_bad_range_is_an_os_error() {
    let (uffd, _memory, start) = registered(1);
    let err = uffd.zeropage(start + 1, 4096).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    assert!(uffd.register_missing(start + 1, 4096).is_err());
}

#[test]
fn messages_decode_by_event() {
    let fault = UffdMsg {
        event: UFFD_EVENT_PAGEFAULT,
        arg: [UFFD_PAGEFAULT_FLAG_WRITE, 0x7f00_1234, 42],
        ..Default::default()
    };
    assert_eq!(
        UffdEvent::from(&fault),
        UffdEvent::PageFault {
            address: 0x7f00_1234,
            write: true
        }
    );
    let remove = UffdMsg {
        event: UFFD_EVENT_REMOVE,
        arg: [0x1000, 0x3000, 0],
        ..Default::default()
    };
    assert_eq!(
        UffdEvent::from(&remove),
        UffdEvent::Remove {
            start: 0x1000,
            end: 0x3000
        }
    );
    let fork = UffdMsg {
        event: 0x13,
        ..Default::default()
    };
    assert_eq!(UffdEvent::from(&fork), UffdEvent::Other { event: 0x13 });
}
