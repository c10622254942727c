//! Engine-level checks: the host probe and its messages, and the bookkeeping of short
//! transfers.

use super::*;

#[test]
fn probe_names_io_uring_when_the_sysctl_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let sysctl = dir.path().join("io_uring_disabled");
    std::fs::write(&sysctl, "2\n").unwrap();
    let err = probe_with(&sysctl).unwrap_err();
    assert!(matches!(err, UringError::Disabled));
    assert_eq!(
        err.to_string(),
        "the Async io_engine needs io_uring, which this host disables \
         (kernel.io_uring_disabled = 2); use the Sync io_engine"
    );
    // 0, or no sysctl at all (older kernels): a ring is set up to check.
    std::fs::write(&sysctl, "0\n").unwrap();
    probe_with(&sysctl).unwrap();
    probe_with(&dir.path().join("missing")).unwrap();
}

#[test]
fn setup_failure_names_io_uring_and_the_os_error() {
    let err = UringError::Setup(io::Error::from_raw_os_error(libc::ENOSYS));
    assert_eq!(
        err.to_string(),
        "the Async io_engine needs io_uring, which this host does not offer \
         (io_uring_setup: Function not implemented (os error 38)); use the Sync io_engine"
    );
}

#[test]
fn a_short_transfer_leaves_the_rest_of_its_iovecs() {
    let mut slot = Slot {
        data_len: 3000,
        iov: vec![
            IoVec {
                base: 0x1000,
                len: 1000,
            },
            IoVec {
                base: 0x8000,
                len: 2000,
            },
        ],
        ..Slot::default()
    };
    slot.advance(1500);
    assert_eq!((slot.done, slot.first), (1500, 1));
    assert_eq!((slot.iov[1].base, slot.iov[1].len), (0x8000 + 500, 1500));
    slot.advance(1500);
    assert_eq!((slot.done, slot.first), (3000, 2));
}

#[test]
fn a_new_engine_is_empty_with_room_for_a_ring_of_requests() {
    let engine = UringEngine::new().unwrap();
    assert_eq!(engine.in_flight(), 0);
    assert!(!engine.is_full());
    assert_eq!(engine.free.len(), RING_ENTRIES as usize);
}
