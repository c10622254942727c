//! Tests of the state file: round trips, the byte layout, and every kind of damaged file.

use std::collections::BTreeMap;
use std::fs;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Transport {
    Mmio { base: u64, irq: u32 },
    Pci,
}

/// A stand-in for the VMM's state: nested structs, vectors, strings, options, enums, maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FakeState {
    mem_size_mib: u32,
    regs: Vec<[u64; 4]>,
    name: String,
    tsc_khz: Option<u32>,
    devices: Vec<Transport>,
    by_id: BTreeMap<String, u16>,
    lapic: Vec<u8>,
}

fn sample() -> FakeState {
    FakeState {
        mem_size_mib: 128,
        regs: vec![[1, 2, 3, u64::MAX], [5, 6, 7, 8]],
        name: "vm-0".into(),
        tsc_khz: Some(2_000_000),
        devices: vec![
            Transport::Mmio {
                base: 0xd000_0000,
                irq: 5,
            },
            Transport::Pci,
        ],
        by_id: [("rootfs".to_string(), 1u16), ("net0".into(), 2)].into(),
        lapic: (0..=255).collect(),
    }
}

fn decode(bytes: &[u8]) -> Result<FakeState, SnapshotError> {
    decode_state(bytes)
}

/// A valid file holding a single `u64`, with a chosen magic and version.
fn small_file(magic: u64, version: Version) -> Vec<u8> {
    encode_with(magic, version, &7u64).unwrap()
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    save_state(&path, &sample()).unwrap();
    let loaded: FakeState = load_state(&path).unwrap();
    assert_eq!(loaded, sample());
    assert_eq!(describe(&path).unwrap(), SNAPSHOT_VERSION);
}

#[test]
fn layout_is_magic_version_length_payload_crc() {
    let bytes = encode_state(&0x1122_3344_5566_7788u64).unwrap();
    assert_eq!(&bytes[0..8], b"SQUIBx86");
    assert_eq!(&bytes[8..14], &[1, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[14..22], &8u64.to_le_bytes());
    assert_eq!(&bytes[22..30], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&bytes[30..], &crc64::crc64(0, &bytes[..30]).to_le_bytes());
    assert_eq!(bytes.len(), 38);
}

#[test]
fn saving_over_an_old_file_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    save_state(&path, &sample()).unwrap();
    let mut other = sample();
    other.name = "vm-1".into();
    other.lapic.clear();
    save_state(&path, &other).unwrap();
    assert_eq!(load_state::<FakeState>(&path).unwrap(), other);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn every_single_bit_flip_is_refused() {
    let good = encode_state(&sample()).unwrap();
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            assert!(
                decode(&bad).is_err(),
                "flip of bit {bit} of byte {at} was accepted"
            );
        }
    }
}

#[test]
fn every_single_byte_flip_is_refused() {
    let good = encode_state(&sample()).unwrap();
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0xff;
        assert!(decode(&bad).is_err(), "flip of byte {at} was accepted");
    }
}

#[test]
fn every_truncation_is_too_short() {
    let good = encode_state(&sample()).unwrap();
    for len in 0..good.len() {
        let err = decode(&good[..len]).unwrap_err();
        assert!(matches!(err, SnapshotError::TooShort), "at {len}: {err}");
    }
    assert_eq!(
        SnapshotError::TooShort.to_string(),
        "IO Error: File too short to contain CRC"
    );
}

#[test]
fn truncated_file_on_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    save_state(&path, &sample()).unwrap();
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 1).unwrap();
    let err = load_state::<FakeState>(&path).unwrap_err();
    assert!(matches!(err, SnapshotError::TooShort), "{err}");
}

#[test]
fn appended_bytes_are_refused() {
    let mut bytes = encode_state(&sample()).unwrap();
    bytes.push(0);
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, SnapshotError::LengthMismatch { available, declared } if available == declared + 1),
        "{err}"
    );
}

#[test]
fn newer_major_or_minor_is_refused_with_its_version() {
    for (version, text) in [
        (Version::new(2, 0, 0), "Invalid data version: 2.0.0"),
        (Version::new(1, 1, 0), "Invalid data version: 1.1.0"),
        (Version::new(0, 9, 3), "Invalid data version: 0.9.3"),
    ] {
        let err = decode_state::<u64>(&small_file(SNAPSHOT_MAGIC, version)).unwrap_err();
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn newer_patch_is_accepted() {
    let bytes = small_file(SNAPSHOT_MAGIC, Version::new(1, 0, 9));
    assert_eq!(decode_state::<u64>(&bytes).unwrap(), 7);
}

#[test]
fn foreign_magic_is_refused_in_decimal() {
    // Firecracker's x86_64 magic.
    let bytes = small_file(0x0710_1984_8664_0000, SNAPSHOT_VERSION);
    let err = decode_state::<u64>(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Magic value does not match arch: {}",
            0x0710_1984_8664_0000u64
        )
    );
}

#[test]
fn crc_mismatch_text() {
    let mut bytes = encode_state(&sample()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        decode(&bytes).unwrap_err().to_string(),
        "CRC64 validation failed"
    );
}

#[test]
fn oversized_file_is_refused_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.snap");
    let file = File::create(&path).unwrap();
    file.set_len(MAX_STATE_FILE_SIZE + 1).unwrap();
    let err = load_state::<FakeState>(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Snapshot size exceeds limit of 10000000 bytes"
    );
    let bytes = vec![0u8; MAX_STATE_FILE_SIZE as usize + 1];
    assert!(matches!(decode(&bytes), Err(SnapshotError::SizeLimit)));
}

#[test]
fn state_too_large_to_load_is_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    let huge = vec![0u8; MAX_STATE_FILE_SIZE as usize];
    let err = save_state(&path, &huge).unwrap_err();
    assert!(matches!(err, SnapshotError::SizeLimit), "{err}");
    assert!(!path.exists());
}

#[test]
fn largest_state_that_fits_round_trips() {
    // A Vec<u8> costs an 8-byte length prefix in the payload.
    let fits = (MAX_STATE_FILE_SIZE as usize) - HEADER_LEN - CRC_LEN - 8;
    let bytes = encode_state(&vec![0xa5u8; fits]).unwrap();
    assert_eq!(bytes.len() as u64, MAX_STATE_FILE_SIZE);
    assert_eq!(decode_state::<Vec<u8>>(&bytes).unwrap().len(), fits);
    assert!(matches!(
        encode_state(&vec![0u8; fits + 1]),
        Err(SnapshotError::SizeLimit)
    ));
}

#[test]
fn payload_of_another_type_is_a_decode_error() {
    let bytes = encode_state(&(1u8, 2u8)).unwrap();
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::Deserialize(_)), "{err}");
    assert!(err
        .to_string()
        .starts_with("An error occurred during bincode deserialization: "));
}

#[test]
fn payload_with_unread_bytes_is_a_decode_error() {
    let bytes = encode_state(&(1u64, 2u64)).unwrap();
    let err = decode_state::<u64>(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::Deserialize(_)), "{err}");
}

#[test]
fn hostile_length_prefixes_do_not_allocate_or_panic() {
    // A valid file whose payload claims a sequence of u64::MAX elements.
    let bytes = encode_state(&u64::MAX).unwrap();
    for result in [
        decode_state::<Vec<u8>>(&bytes).map(|_| ()),
        decode_state::<Vec<u64>>(&bytes).map(|_| ()),
        decode_state::<String>(&bytes).map(|_| ()),
        decode_state::<BTreeMap<u64, u64>>(&bytes).map(|_| ()),
    ] {
        assert!(matches!(result, Err(SnapshotError::Deserialize(_))));
    }
}

#[test]
fn failing_serialisation_keeps_the_old_file() {
    struct Unserialisable;
    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("device refused to save"))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    save_state(&path, &sample()).unwrap();
    let err = save_state(&path, &Unserialisable).unwrap_err();
    assert_eq!(
        err.to_string(),
        "An error occurred during bincode serialization: device refused to save"
    );
    assert_eq!(load_state::<FakeState>(&path).unwrap(), sample());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn save_into_a_missing_directory_names_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("vm.snap");
    let err = save_state(&path, &sample()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Cannot perform open on the snapshot backing file: "),
        "{err}"
    );
}

#[test]
fn load_of_a_missing_file_names_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_state::<FakeState>(&dir.path().join("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Failed to open snapshot file: No such file or directory (os error 2)"
    );
    let err = describe(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, SnapshotError::Open(_)));
}

#[test]
fn describe_ignores_magic_length_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.snap");
    let mut bytes = small_file(0xdead_beef, Version::new(3, 4, 5));
    bytes.truncate(20);
    fs::write(&path, &bytes).unwrap();
    assert_eq!(describe(&path).unwrap().to_string(), "v3.4.5");
    bytes.truncate(13);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(describe(&path), Err(SnapshotError::TooShort)));
}
