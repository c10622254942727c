//! `virtio_block`: random virtio-mmio register accesses, activation through the transport,
//! then a guest's request queue (descriptor table, avail ring, headers, data) processed by
//! the block device against a temp file of a size the bytes choose.
//!
//! Scenario: byte 0 (bit 0: read-only disk, bit 1: writeback cache), a 16-bit disk size in
//! bytes (odd sizes included), register accesses, 64 bits of wanted features, then steps:
//! a byte below 0xe0 is a [`queue_op`], 0xe0 and above kicks the queue.

use std::sync::{Arc, Mutex, PoisonError};

use squib_devices::virtio::block::{Block, BlockConfig, CacheMode};
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::test_utils::VirtQueue;
use squib_devices::virtio::VirtioDevice;
use tempfile::NamedTempFile;

use crate::guest::{self, activate, queue_addr, queue_op, register_accesses, QUEUE_SIZE};
use crate::{scratch_file, Input, MAX_STEPS};

/// A block device on a fresh temp file of `size` bytes.
pub(crate) fn block_device(
    size: u64,
    read_only: bool,
    writeback: bool,
) -> Option<(Block, NamedTempFile)> {
    let file = scratch_file()?;
    file.as_file().set_len(size).ok()?;
    let cfg = BlockConfig {
        drive_id: "fuzz".to_owned(),
        path: file.path().to_owned(),
        read_only,
        cache: if writeback {
            CacheMode::Writeback
        } else {
            CacheMode::Unsafe
        },
        rate_limiter: None,
        engine: Default::default(),
    };
    Some((Block::new(cfg).ok()?, file))
}

/// Kick the request queue and let the device drain it.
fn kick(dev: &Mutex<Block>) {
    let mut block = dev.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = block.queue_events()[0].write(1);
    block.process_queue_event();
}

/// The `virtio_block` target.
pub fn virtio_block(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let size = u64::from(input.u16());
    let Some((block, _file)) = block_device(size, mode & 1 != 0, mode & 2 != 0) else {
        return;
    };
    let mem = guest::guest_memory();
    let dev = Arc::new(Mutex::new(block));
    let Ok(mut transport) = MmioTransport::new(mem.clone(), dev.clone()) else {
        return;
    };
    register_accesses(&mut input, &mut transport, 16);
    let mut vq = VirtQueue::new(&mem, queue_addr(0), QUEUE_SIZE);
    if !activate(&mut transport, &[&vq], input.u64()) {
        return;
    }
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() {
            op @ 0..0xe0 => queue_op(&mut input, &mem, &mut vq, op),
            _ => kick(&dev),
        }
    }
    kick(&dev);
}
