//! The hostile guest's side of a virtio device: guest memory, virtqueue contents decoded from
//! fuzzer bytes, and the virtio-mmio register accesses that set the device up.
//!
//! Layout of the small guest RAM every device target uses:
//! - `0x0000..0x1000`: up to four split virtqueues of [`QUEUE_SIZE`] entries, `0x400` apart;
//! - [`DATA`]`..`: sixteen data slots of [`SLOT`] bytes that descriptors point at (a
//!   descriptor may also carry any 64-bit address, and any length, to go out of range);
//! - [`TABLES`]`..`: sixteen indirect descriptor tables.
//!
//! Activation goes through the real [`MmioTransport`] register sequence (reset, ACKNOWLEDGE,
//! DRIVER, features, FEATURES_OK, queue addresses, DRIVER_OK), after random register accesses
//! that may leave the transport in any state first.

use squib_devices::bus::BusDevice;
use squib_devices::virtio::mmio::{reg, MmioTransport, MMIO_SLOT_SIZE};
use squib_devices::virtio::test_utils::{single_region_mem, VirtQueue};
use squib_devices::virtio::{features, status, GuestMemoryMmap};
use vm_memory::{Bytes, GuestAddress};

use crate::Input;

/// Entries in each queue the targets lay out (small, so chains wrap and overflow it).
pub const QUEUE_SIZE: u16 = 16;
/// Guest RAM of the device targets.
pub const MEM_SIZE: usize = 0x4_0000;
/// First data slot.
pub const DATA: u64 = 0x1_0000;
/// Size of one data slot.
pub const SLOT: u64 = 0x2000;
/// First indirect descriptor table.
pub const TABLES: u64 = 0x3_0000;
/// Longest chain a scenario writes (more than the queue size).
const MAX_CHAIN: u8 = 20;
/// Most bytes written into a slot with one descriptor.
const MAX_CONTENT: usize = 255;

/// Fresh guest RAM for a device target.
#[must_use]
pub fn guest_memory() -> GuestMemoryMmap {
    single_region_mem(MEM_SIZE)
}

/// Where queue `index` of a device lives.
#[must_use]
pub fn queue_addr(index: usize) -> GuestAddress {
    GuestAddress(0x400 * index as u64)
}

/// Guest address of data slot `slot` (taken modulo 16).
#[must_use]
pub fn slot_addr(slot: u8) -> u64 {
    DATA + u64::from(slot & 0xf) * SLOT
}

/// One descriptor decoded from `input`: a flags byte (bits 0-2: NEXT, WRITE, INDIRECT;
/// bits 3-6: data slot; bit 7: a raw 64-bit address and 32-bit length follow), then for a
/// slot a 16-bit length and a length-prefixed content written at the slot's start.
pub fn descriptor(input: &mut Input<'_>, mem: &GuestMemoryMmap) -> (u64, u32, u16) {
    let f = input.u8();
    let flags = u16::from(f & 7);
    if f & 0x80 != 0 {
        return (input.u64(), input.u32(), flags);
    }
    let addr = slot_addr(f >> 3);
    let len = u32::from(input.u16());
    let content = input.prefixed(MAX_CONTENT);
    write(mem, addr, content);
    (addr, len, flags)
}

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    // In range by construction (slots and tables end below `MEM_SIZE`); a failure would be a
    // harness bug, not the device's, so it is ignored rather than reported as a crash.
    let _ = mem.write_slice(bytes, GuestAddress(addr));
}

/// One driver action on `vq`, chosen by `op`: publish a chain (direct or indirect), rewrite
/// a descriptor, publish any head, set `avail.idx` or `used_event`, or write guest memory.
pub fn queue_op(input: &mut Input<'_>, mem: &GuestMemoryMmap, vq: &mut VirtQueue<'_>, op: u8) {
    match op % 7 {
        0 => {
            let b = input.u8();
            let n = if b < 200 {
                1 + b % 4
            } else {
                1 + b % MAX_CHAIN
            };
            let descs: Vec<_> = (0..n).map(|_| descriptor(input, mem)).collect();
            vq.add_chain(&descs);
        }
        1 => {
            let table = TABLES + u64::from(input.u8() & 0xf) * 0x100;
            let n = 1 + input.u8() % 16;
            let descs: Vec<_> = (0..n).map(|_| descriptor(input, mem)).collect();
            vq.add_indirect_chain(table, &descs);
        }
        2 => {
            let index = input.u16() % QUEUE_SIZE;
            let (addr, len, flags) = descriptor(input, mem);
            let flags = flags | (u16::from(input.u8()) << 8);
            vq.set_desc(index, addr, len, flags, input.u16());
        }
        3 => vq.publish(input.u16()),
        4 => vq.set_avail_idx(input.u16()),
        5 => {
            let at = DATA + u64::from(input.u16()) % (MEM_SIZE as u64 - DATA - 0x100);
            let bytes = input.prefixed(MAX_CONTENT);
            write(mem, at, bytes);
        }
        _ => vq.set_used_event(input.u16()),
    }
}

/// A 32-bit register write.
pub fn write_reg(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// A 32-bit register read.
pub fn read_reg(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

/// One register access decoded from `input`: a control byte (bit 0: write; bits 1-2: size
/// 1, 2, 4 or 8; bit 3: any offset in the slot rather than a register), the offset, and for
/// a write its bytes.
pub fn register_access(input: &mut Input<'_>, t: &mut MmioTransport) {
    let c = input.u8();
    let size = 1usize << ((c >> 1) & 3);
    let offset = if c & 8 == 0 {
        u64::from(input.u8() & !3)
    } else {
        u64::from(input.u16()) % MMIO_SLOT_SIZE
    };
    let mut data = [0u8; 8];
    if c & 1 == 1 {
        let bytes = input.bytes(size);
        data[..bytes.len()].copy_from_slice(bytes);
        t.write(offset, &data[..size]);
    } else {
        t.read(offset, &mut data[..size]);
    }
}

/// Up to `max` random register accesses (the count is the first byte).
pub fn register_accesses(input: &mut Input<'_>, t: &mut MmioTransport, max: u8) {
    for _ in 0..input.u8() % (max + 1) {
        register_access(input, t);
    }
}

/// Set the device up as a Linux driver does, with `queues` at their layouts and the offered
/// features in `wanted` (VERSION_1 always) accepted; whether DRIVER_OK stuck.
pub fn activate(t: &mut MmioTransport, queues: &[&VirtQueue<'_>], wanted: u64) -> bool {
    write_reg(t, reg::STATUS, 0);
    write_reg(t, reg::STATUS, status::ACKNOWLEDGE);
    write_reg(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    let mut offered = 0u64;
    for sel in 0..2u32 {
        write_reg(t, reg::DEVICE_FEATURES_SEL, sel);
        offered |= u64::from(read_reg(t, reg::DEVICE_FEATURES)) << (32 * sel);
    }
    let acked = offered & (wanted | 1 << features::VERSION_1);
    for sel in 0..2u32 {
        write_reg(t, reg::DRIVER_FEATURES_SEL, sel);
        write_reg(t, reg::DRIVER_FEATURES, (acked >> (32 * sel)) as u32);
    }
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    write_reg(t, reg::STATUS, s);
    for (i, vq) in queues.iter().enumerate() {
        let (desc, avail, used) = vq.addresses();
        write_reg(t, reg::QUEUE_SEL, i as u32);
        write_reg(t, reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
        for (low, value) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_AVAIL_LOW, avail),
            (reg::QUEUE_USED_LOW, used),
        ] {
            write_reg(t, low, value as u32);
            write_reg(t, low + 4, (value >> 32) as u32);
        }
        write_reg(t, reg::QUEUE_READY, 1);
    }
    write_reg(t, reg::STATUS, s | status::DRIVER_OK);
    read_reg(t, reg::STATUS) & status::DRIVER_OK != 0
}
