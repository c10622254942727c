//! Block snapshot tests: a device driven through requests, saved, rebuilt on the same file and
//! restored serves the next request with the right data and the used ring continuing; a disk
//! of another size or another drive id is refused.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::rate_limiter::RateLimiter;
use crate::virtio::block::device::tests::harness::{default_block, pattern, BlockHarness, DATA};
use crate::virtio::block::{request_type, status, BlockConfig, CacheMode};
use crate::virtio::persist::DeviceState;
use crate::virtio::rng::Entropy;
use crate::virtio::test_utils::single_region_mem;

const DISK_SIZE: usize = 64 * 1024;

/// The data buffer of the harness's `n`th request.
fn data_addr(n: u64) -> GuestAddress {
    GuestAddress(DATA + n * 0x1_0000)
}

/// A device built as the VMM builds it at boot, on the harness's file.
fn rebuilt(h: &BlockHarness) -> Block {
    Block::new(BlockConfig {
        drive_id: "rootfs".to_owned(),
        path: h.file.path().to_owned(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: Default::default(),
    })
    .unwrap()
}

/// Put `block` in the harness in place of the saved device.
fn swap_in(h: &mut BlockHarness, block: Block) {
    h.block = Arc::new(Mutex::new(block));
}

#[test]
fn a_restored_device_reads_the_right_data_and_continues_the_used_ring() {
    let mut h = BlockHarness::new(default_block(DISK_SIZE, false));
    let first = h.read_request(0, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(first), status::OK);
    let written = h.request(request_type::OUT, 8, 512, 0);
    h.mem.write_slice(&[0x5a; 512], data_addr(1)).unwrap();
    h.simulate_queue_event();
    assert_eq!(h.status(written), status::OK);
    // Published, not yet taken by the device when the VM is paused.
    let pending = h.read_request(8, 512);

    let state = h.block.lock().unwrap().save();
    assert_eq!(state.drive_id, "rootfs");
    assert_eq!(state.nsectors, (DISK_SIZE / 512) as u64);
    assert_eq!(state.disk_path, h.file.path());
    assert_eq!(state.virtio.queues[0].next_used, 2);
    let state: BlockState = bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();

    let mut restored = rebuilt(&h);
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    restored.restore(&state, h.mem, &irq).unwrap();
    assert!(restored.is_activated());
    assert_eq!(restored.save(), state);
    assert_eq!(
        restored.queue_events()[0].read().unwrap(),
        1,
        "the restore kicks the queue"
    );
    swap_in(&mut h, restored);
    // On that kick the request published before the snapshot is served.
    h.block.lock().unwrap().process_queue_event();
    assert_eq!(h.status(pending), status::OK);
    assert_eq!(h.data(data_addr(2).0, 512), [0x5a; 512]);
    assert_eq!(h.vq.used_idx(), 3, "the used ring continues, not from 0");

    let next = h.read_request(16, 512);
    h.simulate_queue_event();
    assert_eq!(h.status(next), status::OK);
    assert_eq!(h.vq.used_idx(), 4);
    assert_eq!(h.data(data_addr(3).0, 512), pattern(16 * 512, 512));
    assert_eq!(
        irq.eventfd().read().unwrap(),
        2,
        "the restored line is used"
    );
}

#[test]
fn a_disk_of_another_size_is_refused() {
    let mut h = BlockHarness::new(default_block(DISK_SIZE, false));
    h.read_request(0, 512);
    h.simulate_queue_event();
    let state = h.block.lock().unwrap().save();
    h.file.as_file().set_len(DISK_SIZE as u64 / 2).unwrap();
    let mut restored = rebuilt(&h);
    let err = restored.restore(&state, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "block rootfs: {} has 64 sectors, the guest saw 128 when the snapshot was taken",
            h.file.path().display()
        )
    );
    assert!(!restored.is_activated());
}

#[test]
fn another_drive_id_or_device_kind_is_refused() {
    let h = BlockHarness::new(default_block(DISK_SIZE, false));
    let mut state = h.block.lock().unwrap().save();
    state.drive_id = "scratch".to_owned();
    let err = rebuilt(&h).restore(&state, h.mem, &h.irq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "block rootfs: the snapshot's drive id is scratch, the configuration's rootfs"
    );
    let entropy = Entropy::new(RateLimiter::unlimited().unwrap())
        .unwrap()
        .save();
    let err = rebuilt(&h)
        .restore_state(&DeviceState::Entropy(entropy), h.mem, &h.irq)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the snapshot holds entropy device state for a block device"
    );
}

#[test]
fn an_inactive_device_restores_inactive_with_its_half_done_setup() {
    let disk = default_block(DISK_SIZE, false);
    let mut block = disk.block;
    let q = &mut block.queues_mut()[0];
    crate::virtio::queue::set_size(q, 64).unwrap();
    let state = block.save();
    assert!(!state.virtio.activated);
    let mut restored = Block::new(BlockConfig {
        drive_id: "rootfs".to_owned(),
        path: disk.file.path().to_owned(),
        read_only: false,
        cache: CacheMode::Unsafe,
        rate_limiter: None,
        engine: Default::default(),
    })
    .unwrap();
    let mem = single_region_mem(0x1000);
    let irq = Arc::new(VirtioInterrupt::new().unwrap());
    restored.restore(&state, &mem, &irq).unwrap();
    assert!(!restored.is_activated());
    assert_eq!(restored.queues()[0].size(), 64);
    assert!(
        restored.queue_events()[0].read().is_err(),
        "nothing to kick"
    );
}
