//! Bounded work against a hostile or merely busy driver, with the queue and buffers in guest
//! memory above the 32-bit MMIO hole (a second RAM region at 4 GiB, as a VM with more than
//! 3 GiB has): random batches of reads, writes and flushes (direct and indirect chains, low
//! and high buffers) are served in order and match a model of the disk; heads at or past the
//! queue size are skipped; indirect tables of the largest size virtio-queue accepts (65535
//! descriptors) are dropped after `MAX_DESCRIPTORS` reads; no event serves more than the ring.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::tests::harness::{block_with, BlockHarness, QUEUE_SIZE};
use crate::virtio::block::{request_type, status};
use crate::virtio::test_utils::{F_INDIRECT, F_NEXT, F_WRITE};
use crate::virtio::{features, GuestMemoryMmap};

/// The second RAM region starts at 4 GiB, past the MMIO hole.
const HIGH: u64 = 1 << 32;
const LOW_SIZE: usize = 2 << 20;
const HIGH_SIZE: usize = 4 << 20;
const DISK: usize = 64 * 1024;
/// Headers, status bytes, indirect tables and data, all in high memory except low buffers.
const HDRS: u64 = HIGH + 0x1000;
const STATUSES: u64 = HIGH + 0x2000;
const TABLES: u64 = HIGH + 0x1_0000;
const BUFFERS: u64 = 0x4_0000;
const MAX_TABLE: u64 = HIGH + 0x20_0000;
/// Entries of the largest indirect table virtio-queue follows.
const MAX_TABLE_LEN: u32 = u16::MAX as u32;

fn two_region_mem() -> &'static GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW_SIZE),
        (GuestAddress(HIGH), HIGH_SIZE),
    ])
    .unwrap();
    Box::leak(Box::new(mem))
}

fn harness() -> BlockHarness {
    let acked = (1 << features::VERSION_1) | (1 << features::RING_INDIRECT_DESC);
    let disk = block_with(DISK, |_| {});
    BlockHarness::with_memory(disk, acked, two_region_mem(), GuestAddress(HIGH))
}

#[derive(Clone, Debug)]
enum Op {
    /// Write `fill` to `sector..` from segments of (sectors, in high memory).
    Write {
        sector: u64,
        segs: Vec<(u8, bool)>,
        indirect: bool,
        fill: u8,
    },
    /// Read `sector..` into segments of (sectors, in high memory).
    Read {
        sector: u64,
        segs: Vec<(u8, bool)>,
        indirect: bool,
    },
    Flush,
    /// An available-ring entry that names no descriptor.
    BadHead(u16),
    /// One descriptor pointing at a 65535-entry indirect table.
    MaxIndirect,
}

fn segs() -> impl Strategy<Value = Vec<(u8, bool)>> {
    prop::collection::vec((1u8..=4, any::<bool>()), 1..=4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..112, segs(), any::<bool>(), any::<u8>())
            .prop_map(|(sector, segs, indirect, fill)| Op::Write { sector, segs, indirect, fill }),
        4 => (0u64..112, segs(), any::<bool>())
            .prop_map(|(sector, segs, indirect)| Op::Read { sector, segs, indirect }),
        1 => Just(Op::Flush),
        1 => (QUEUE_SIZE..=u16::MAX).prop_map(Op::BadHead),
        1 => Just(Op::MaxIndirect),
    ]
}

/// What the device must have done with one published op.
enum Expect {
    /// Completed with `status`; a read's buffers hold `data`.
    Done {
        status_addr: u64,
        status: u8,
        reads: Vec<(u64, Vec<u8>)>,
    },
    /// Dropped with used length 0, status untouched.
    Dropped { status_addr: u64 },
    /// Not completed at all.
    Skipped,
}

impl Expect {
    fn completes(&self) -> bool {
        !matches!(self, Self::Skipped)
    }
}

/// The driver side of one batch: builds chains for `ops` and applies them to `model`.
struct Batch<'a> {
    h: &'a mut BlockHarness,
    model: &'a mut Vec<u8>,
    max_table_built: &'a mut bool,
}

impl Batch<'_> {
    fn data_addr(slot: u64, seg: usize, high: bool) -> u64 {
        let base = if high { HIGH + BUFFERS } else { BUFFERS };
        base + slot * 0x1_0000 + seg as u64 * 0x1000
    }

    fn publish(&mut self, slot: u64, op: &Op) -> Expect {
        let (hdr, status_addr) = (HDRS + 16 * slot, STATUSES + slot);
        self.h
            .mem
            .write_obj(0xffu8, GuestAddress(status_addr))
            .unwrap();
        match op {
            Op::Write {
                sector,
                segs,
                indirect,
                fill,
            } => {
                let mut at = (*sector as usize) * 512;
                let mut chain = vec![(hdr, 16, 0)];
                for (j, &(sectors, high)) in segs.iter().enumerate() {
                    let (addr, len) = (Self::data_addr(slot, j, high), usize::from(sectors) * 512);
                    self.h
                        .mem
                        .write_slice(&vec![*fill; len], GuestAddress(addr))
                        .unwrap();
                    self.model[at..at + len].fill(*fill);
                    at += len;
                    chain.push((addr, len as u32, 0));
                }
                self.add(slot, request_type::OUT, *sector, chain, *indirect);
                Expect::Done {
                    status_addr,
                    status: status::OK,
                    reads: Vec::new(),
                }
            }
            Op::Read {
                sector,
                segs,
                indirect,
            } => {
                let mut at = (*sector as usize) * 512;
                let mut chain = vec![(hdr, 16, 0)];
                let mut reads = Vec::new();
                for (j, &(sectors, high)) in segs.iter().enumerate() {
                    let (addr, len) = (Self::data_addr(slot, j, high), usize::from(sectors) * 512);
                    reads.push((addr, self.model[at..at + len].to_vec()));
                    at += len;
                    chain.push((addr, len as u32, F_WRITE));
                }
                self.add(slot, request_type::IN, *sector, chain, *indirect);
                Expect::Done {
                    status_addr,
                    status: status::OK,
                    reads,
                }
            }
            Op::Flush => {
                let chain = vec![(hdr, 16, 0)];
                self.add(slot, request_type::FLUSH, 0, chain, false);
                Expect::Done {
                    status_addr,
                    status: status::OK,
                    reads: Vec::new(),
                }
            }
            Op::BadHead(head) => {
                self.h.vq.publish(*head);
                Expect::Skipped
            }
            Op::MaxIndirect => {
                self.build_max_table(hdr, status_addr);
                self.h
                    .vq
                    .add_chain(&[(MAX_TABLE, MAX_TABLE_LEN * 16, F_INDIRECT)]);
                Expect::Dropped { status_addr }
            }
        }
    }

    fn add(
        &mut self,
        slot: u64,
        kind: u32,
        sector: u64,
        mut chain: Vec<(u64, u32, u16)>,
        indirect: bool,
    ) {
        let (hdr, status_addr) = (HDRS + 16 * slot, STATUSES + slot);
        self.h.header(hdr, kind, sector);
        chain.push((status_addr, 1, F_WRITE));
        if indirect {
            self.h.vq.add_indirect_chain(TABLES + slot * 0x100, &chain);
        } else {
            self.h.vq.add_chain(&chain);
        }
    }

    /// A well-formed read chain of 65535 descriptors (header, 65533 segments, status).
    fn build_max_table(&mut self, hdr: u64, status_addr: u64) {
        self.h.header(hdr, request_type::IN, 0);
        if std::mem::replace(self.max_table_built, true) {
            return;
        }
        let mut table = Vec::with_capacity(MAX_TABLE_LEN as usize * 16);
        for i in 0..MAX_TABLE_LEN {
            let (addr, len, flags) = match i {
                0 => (hdr, 16, F_NEXT),
                i if i + 1 == MAX_TABLE_LEN => (status_addr, 1, F_WRITE),
                _ => (HIGH + BUFFERS, 512, F_NEXT | F_WRITE),
            };
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&u32::to_le_bytes(len));
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&((i + 1) as u16).to_le_bytes());
        }
        self.h
            .mem
            .write_slice(&table, GuestAddress(MAX_TABLE))
            .unwrap();
    }
}

/// Descriptors one op takes in the ring's table.
fn ring_descs(op: &Op) -> u16 {
    match op {
        Op::Write {
            segs,
            indirect: false,
            ..
        }
        | Op::Read {
            segs,
            indirect: false,
            ..
        } => segs.len() as u16 + 2,
        Op::Write { .. } | Op::Read { .. } | Op::MaxIndirect => 1,
        Op::Flush => 2,
        Op::BadHead(_) => 0,
    }
}

/// Kick once; returns how many chains the event completed.
fn one_event(h: &BlockHarness) -> u16 {
    let before = h.vq.used_idx();
    let started = Instant::now();
    h.simulate_queue_event();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "one event ran for {:?}",
        started.elapsed()
    );
    h.vq.used_idx().wrapping_sub(before)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn batches_above_4_gib_are_served_in_order_and_bounded(
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut h = harness();
        let mut model = super::tests::harness::pattern(0, DISK);
        let mut max_table_built = false;
        let mut pending: Vec<Expect> = Vec::new();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() || !pending.is_empty() {
            // The driver fills the ring (descriptor table and available slots) ...
            let (mut descs, mut avail) = (0u16, 0u16);
            while let Some(op) = ops.peek() {
                if descs + ring_descs(op) > QUEUE_SIZE || avail == QUEUE_SIZE {
                    break;
                }
                descs += ring_descs(op);
                avail += 1;
                let op = ops.next().unwrap();
                let mut batch = Batch { h: &mut h, model: &mut model, max_table_built: &mut max_table_built };
                pending.push(batch.publish(u64::from(avail - 1), &op));
            }
            // ... and the device drains it in bounded events.
            let want = pending.iter().filter(|e| e.completes()).count() as u16;
            let start = h.vq.used_idx();
            let mut events = 0;
            while h.vq.used_idx().wrapping_sub(start) < want {
                let served = one_event(&h);
                prop_assert!(served <= QUEUE_SIZE);
                events += 1;
                prop_assert!(events <= 4, "the device stalled");
            }
            prop_assert_eq!(h.vq.used_idx().wrapping_sub(start), want);
            let mut used = start;
            for expect in pending.drain(..) {
                match expect {
                    Expect::Done { status_addr, status: want_status, reads } => {
                        prop_assert_eq!(h.status(status_addr), want_status);
                        for (addr, bytes) in reads {
                            prop_assert!(h.data(addr, bytes.len()) == bytes, "read at {:#x}", addr);
                        }
                        used = used.wrapping_add(1);
                    }
                    Expect::Dropped { status_addr } => {
                        prop_assert_eq!(h.status(status_addr), 0xff);
                        prop_assert_eq!(h.vq.used(used).1, 0);
                        used = used.wrapping_add(1);
                    }
                    Expect::Skipped => {}
                }
            }
        }
        let file = std::fs::read(h.file.path()).unwrap();
        prop_assert!(file == model, "the disk differs from the model");
    }
}

#[test]
fn a_ring_of_maximum_indirect_tables_is_dropped_in_bounded_time() {
    let mut h = harness();
    let mut model = vec![0u8; DISK];
    let mut built = false;
    let mut batch = Batch {
        h: &mut h,
        model: &mut model,
        max_table_built: &mut built,
    };
    for slot in 0..u64::from(QUEUE_SIZE) {
        let _ = batch.publish(slot, &Op::MaxIndirect);
    }
    assert_eq!(one_event(&h), QUEUE_SIZE);
    let m = h.block.lock().unwrap().metrics();
    assert_eq!(m.invalid_reqs_count.count(), u64::from(QUEUE_SIZE));
    assert_eq!(m.read_count.count(), 0);
}

#[test]
fn a_driver_refilling_the_ring_above_4_gib_gets_every_read_served_in_bounded_events() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::virtio::test_utils::VirtQueue;
    use crate::virtio::VirtioDevice;

    const TOTAL: u16 = 3_000;
    let mut h = harness();
    // Ring descriptor i is a 3-entry indirect read of sector i into high memory.
    for i in 0..QUEUE_SIZE {
        let slot = u64::from(i);
        let (hdr, status_addr) = (HDRS + 16 * slot, STATUSES + slot);
        h.header(hdr, request_type::IN, slot);
        let data = Batch::data_addr(slot, 0, true);
        let chain = [
            (hdr, 16, 0),
            (data, 512, F_WRITE),
            (status_addr, 1, F_WRITE),
        ];
        h.vq.add_indirect_chain(TABLES + slot * 0x100, &chain);
    }
    // Reset the ring: the driver thread publishes from here on.
    let (desc, avail, _) = h.vq.addresses();
    h.mem.write_obj(0u16, GuestAddress(avail + 2)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mem = h.mem;
    let driver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let vq = VirtQueue::new(mem, GuestAddress(desc), QUEUE_SIZE);
            for n in 0..TOTAL {
                while n.wrapping_sub(vq.used_idx()) >= QUEUE_SIZE {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                vq.publish(n % QUEUE_SIZE);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.vq.used_idx() != TOTAL && Instant::now() < deadline {
        let served = one_event(&h);
        assert!(served <= QUEUE_SIZE, "one event served {served} chains");
        let _ = h.block.lock().unwrap().queue_events()[0].read();
    }
    stop.store(true, Ordering::Relaxed);
    driver.join().unwrap();
    assert_eq!(h.vq.used_idx(), TOTAL);
    assert!((0..QUEUE_SIZE).all(|i| h.vq.used(i).1 == 513));
    let m = h.block.lock().unwrap().metrics();
    assert_eq!(m.read_count.count(), u64::from(TOTAL));
    assert_eq!(m.invalid_reqs_count.count(), 0);
    let slot = 5;
    assert_eq!(
        h.data(Batch::data_addr(slot, 0, true), 512),
        super::tests::harness::pattern(slot * 512, 512)
    );
}
