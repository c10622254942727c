//! Transport snapshot tests: a driver's register state and the block device behind it come
//! back on a rebuilt slot, which then serves the request published before the snapshot and
//! the next one; a guest caught mid-negotiation finishes it after the restore; states the
//! registers cannot reach are refused and leave the slot fresh.

use std::sync::{Arc, Mutex};

use tempfile::NamedTempFile;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::bus::BusDevice;
use crate::rate_limiter::RateLimiter;
use crate::virtio::block::device::tests::harness::{default_block, pattern};
use crate::virtio::block::{request_type, Block, BlockConfig, CacheMode};
use crate::virtio::mmio::reg;
use crate::virtio::rng::Entropy;
use crate::virtio::test_utils::{single_region_mem, VirtQueue, F_WRITE};
use crate::virtio::{features, GuestMemoryMmap, VirtioDevice};

const VERSION_1_HI: u32 = 1 << (features::VERSION_1 - 32);
const HDR: u64 = 0x4000;
const STATUS_BYTE: u64 = 0x6000;
const DATA: u64 = 0x8000;

/// One virtio-mmio slot with a block device, driven by hand.
struct Slot {
    mmio: MmioTransport,
    block: Arc<Mutex<Block>>,
}

impl Slot {
    fn new(block: Block, mem: &GuestMemoryMmap) -> Self {
        let block = Arc::new(Mutex::new(block));
        let device: Arc<Mutex<dyn VirtioDevice>> = block.clone();
        Self {
            mmio: MmioTransport::new(mem.clone(), device).unwrap(),
            block,
        }
    }

    /// A slot built as the VMM builds it at boot, over the same file.
    fn rebuilt(file: &NamedTempFile, mem: &GuestMemoryMmap) -> Self {
        let block = Block::new(BlockConfig {
            drive_id: "rootfs".to_owned(),
            path: file.path().to_owned(),
            read_only: false,
            cache: CacheMode::Unsafe,
            rate_limiter: None,
            engine: Default::default(),
        })
        .unwrap();
        Self::new(block, mem)
    }

    fn r(&mut self, offset: u64) -> u32 {
        let mut buf = [0u8; 4];
        self.mmio.read(offset, &mut buf);
        u32::from_le_bytes(buf)
    }

    fn w(&mut self, offset: u64, value: u32) {
        self.mmio.write(offset, &value.to_le_bytes());
    }

    fn add_status(&mut self, bits: u32) {
        let now = self.r(reg::STATUS);
        self.w(reg::STATUS, now | bits);
    }

    fn negotiate(&mut self) {
        self.add_status(status::ACKNOWLEDGE | status::DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, VERSION_1_HI);
        self.add_status(status::FEATURES_OK);
    }

    fn setup_queue(&mut self, vq: &VirtQueue<'_>) {
        let (desc, avail, used) = vq.addresses();
        self.w(reg::QUEUE_SEL, 0);
        self.w(reg::QUEUE_NUM, 16);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_AVAIL_LOW, avail),
            (reg::QUEUE_USED_LOW, used),
        ] {
            self.w(low, addr as u32);
            self.w(low + 4, (addr >> 32) as u32);
        }
        self.w(reg::QUEUE_READY, 1);
    }

    /// Let the device drain its queue, as the event loop would on its queue eventfd.
    fn serve(&self) {
        self.block.lock().unwrap().process_queue_event();
    }
}

/// Publish a read of one sector into request slot `n`.
fn read_request(mem: &GuestMemoryMmap, vq: &mut VirtQueue<'_>, n: u64, sector: u64) {
    let hdr = HDR + 16 * n;
    mem.write_obj(request_type::IN, GuestAddress(hdr)).unwrap();
    mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS_BYTE + n))
        .unwrap();
    vq.add_chain(&[
        (hdr, 16, 0),
        (DATA + 512 * n, 512, F_WRITE),
        (STATUS_BYTE + n, 1, F_WRITE),
    ]);
}

fn read_back(mem: &GuestMemoryMmap, n: u64) -> (u8, Vec<u8>) {
    let mut data = vec![0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA + 512 * n))
        .unwrap();
    (mem.read_obj(GuestAddress(STATUS_BYTE + n)).unwrap(), data)
}

/// A slot whose driver activated the block device and had one read served, with the
/// interrupt unacknowledged, a config change seen, and a second read published, unserved.
fn running() -> (
    Slot,
    NamedTempFile,
    &'static GuestMemoryMmap,
    VirtQueue<'static>,
) {
    // Leaked so the queue builder can borrow it for the whole test.
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x10_0000)));
    let disk = default_block(4096, false);
    let mut slot = Slot::new(disk.block, mem);
    let mut vq = VirtQueue::new(mem, GuestAddress(0), 16);
    slot.negotiate();
    slot.setup_queue(&vq);
    slot.add_status(status::DRIVER_OK);
    assert!(slot.block.lock().unwrap().is_activated());
    read_request(mem, &mut vq, 0, 1);
    slot.serve();
    assert_eq!(read_back(mem, 0), (0, pattern(512, 512)));
    slot.mmio.interrupt().signal_config_change().unwrap();
    slot.w(reg::DEVICE_FEATURES_SEL, 1);
    slot.w(reg::QUEUE_SEL, 5);
    read_request(mem, &mut vq, 1, 3);
    (slot, disk.file, mem, vq)
}

#[test]
fn registers_and_device_come_back_and_serve_the_pending_and_next_requests() {
    let (slot, file, mem, mut vq) = running();
    let state = slot.mmio.save();
    let live = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    assert_eq!(state.device_status, live);
    assert_eq!((state.features_select, state.acked_features_select), (1, 1));
    assert_eq!(state.queue_select, 5);
    assert_eq!(state.interrupt_status, INTERRUPT_VRING | INTERRUPT_CONFIG);
    assert_eq!(state.config_generation, 1);
    let bytes = bincode::serialize(&state).unwrap();
    let state: MmioTransportState = bincode::deserialize(&bytes).unwrap();
    drop(slot);

    let mut slot = Slot::rebuilt(&file, mem);
    slot.mmio.restore(&state).unwrap();
    assert_eq!(slot.mmio.save(), state);
    assert_eq!(slot.r(reg::STATUS), live);
    assert_eq!(
        slot.r(reg::INTERRUPT_STATUS),
        INTERRUPT_VRING | INTERRUPT_CONFIG
    );
    assert_eq!(slot.r(reg::CONFIG_GENERATION), 1);
    assert_eq!(slot.r(reg::DEVICE_FEATURES), VERSION_1_HI);
    assert_eq!(slot.r(reg::QUEUE_NUM_MAX), 0, "QueueSel 5 names no queue");
    slot.w(reg::QUEUE_SEL, 0);
    assert_eq!(slot.r(reg::QUEUE_READY), 1);
    assert_eq!(
        slot.mmio.interrupt_evt().read().unwrap(),
        1,
        "the pending interrupt is raised again"
    );

    assert_eq!(
        slot.mmio.queue_evts().unwrap()[0].read().unwrap(),
        1,
        "the restore kicks the queue"
    );
    // On that kick the read published before the snapshot is served.
    slot.serve();
    assert_eq!(read_back(mem, 1), (0, pattern(3 * 512, 512)));
    assert_eq!(vq.used_idx(), 2);
    read_request(mem, &mut vq, 2, 5);
    slot.w(reg::QUEUE_NOTIFY, 0);
    slot.serve();
    assert_eq!(read_back(mem, 2), (0, pattern(5 * 512, 512)));
    assert_eq!(
        vq.used_idx(),
        3,
        "the used ring continues from the snapshot"
    );
    // The guest acknowledges and can reset the device as usual.
    slot.w(reg::INTERRUPT_ACK, INTERRUPT_VRING | INTERRUPT_CONFIG);
    assert_eq!(slot.r(reg::INTERRUPT_STATUS), 0);
    slot.w(reg::STATUS, 0);
    assert!(!slot.block.lock().unwrap().is_activated());
}

#[test]
fn a_driver_caught_mid_negotiation_finishes_after_restore() {
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x10_0000)));
    let disk = default_block(4096, false);
    let mut slot = Slot::new(disk.block, mem);
    slot.add_status(status::ACKNOWLEDGE | status::DRIVER);
    slot.w(reg::DRIVER_FEATURES_SEL, 1);
    slot.w(reg::DRIVER_FEATURES, VERSION_1_HI);
    let state = slot.mmio.save();
    assert!(!state.device.virtio().activated);
    drop(slot);

    let mut slot = Slot::rebuilt(&disk.file, mem);
    slot.mmio.restore(&state).unwrap();
    slot.add_status(status::FEATURES_OK);
    assert_ne!(slot.r(reg::STATUS) & status::FEATURES_OK, 0);
    let mut vq = VirtQueue::new(mem, GuestAddress(0), 16);
    slot.setup_queue(&vq);
    slot.add_status(status::DRIVER_OK);
    assert!(slot.block.lock().unwrap().is_activated());
    read_request(mem, &mut vq, 0, 2);
    slot.serve();
    assert_eq!(read_back(mem, 0), (0, pattern(2 * 512, 512)));
}

#[test]
fn unreachable_register_states_are_refused_and_leave_the_slot_fresh() {
    let (slot, file, mem, _vq) = running();
    let good = slot.mmio.save();
    drop(slot);
    let refused = |state: &MmioTransportState| {
        let mut slot = Slot::rebuilt(&file, mem);
        let err = slot.mmio.restore(state).unwrap_err();
        assert_eq!(slot.r(reg::STATUS), 0);
        assert_eq!(slot.r(reg::INTERRUPT_STATUS), 0);
        assert!(!slot.block.lock().unwrap().is_activated());
        err.to_string()
    };

    let mut state = good.clone();
    state.device_status &= !status::DRIVER_OK;
    assert_eq!(
        refused(&state),
        "device status 0xb does not fit the device's state (activated: true)"
    );
    let mut state = good.clone();
    state.driver_features |= 1 << 5;
    assert!(refused(&state).starts_with("driver features 0x100000020 do not match"));
    let mut state = good.clone();
    state.interrupt_status = 4;
    assert_eq!(
        refused(&state),
        "interrupt status 0x4 has bits other than used-ring (1) and config-change (2)"
    );
    let mut state = good.clone();
    let entropy = Entropy::new(RateLimiter::unlimited().unwrap()).unwrap();
    state.device = entropy.save_state();
    state.driver_features = 0;
    state.device_status = status::ACKNOWLEDGE;
    assert_eq!(
        refused(&state),
        "the snapshot holds entropy device state for a block device"
    );
    let mut state = good.clone();
    if let crate::virtio::persist::DeviceState::Block(block) = &mut state.device {
        block.virtio.queues[0].used_ring = 0x1_0000_0000;
    }
    assert!(refused(&state).starts_with("queue 0: used ring at 0x100000000"));

    // A slot already restored (or driven) is not a restore target.
    let mut slot = Slot::rebuilt(&file, mem);
    slot.mmio.restore(&good).unwrap();
    assert!(matches!(
        slot.mmio.restore(&good),
        Err(crate::virtio::persist::RestoreError::NotFresh)
    ));
}

/// Drive `mmio` as a driver would up to DRIVER_OK, with one 16-entry queue per `queue_at`.
fn activate_by_registers(mmio: &mut MmioTransport, mem: &GuestMemoryMmap, queue_at: &[u64]) {
    let mut w = |offset: u64, value: u32| mmio.write(offset, &value.to_le_bytes());
    let driver = status::ACKNOWLEDGE | status::DRIVER;
    w(reg::STATUS, driver);
    w(reg::DRIVER_FEATURES_SEL, 1);
    w(reg::DRIVER_FEATURES, VERSION_1_HI);
    w(reg::STATUS, driver | status::FEATURES_OK);
    for (index, &at) in queue_at.iter().enumerate() {
        let (desc, avail, used) = VirtQueue::new(mem, GuestAddress(at), 16).addresses();
        w(reg::QUEUE_SEL, index as u32);
        w(reg::QUEUE_NUM, 16);
        w(reg::QUEUE_DESC_LOW, desc as u32);
        w(reg::QUEUE_AVAIL_LOW, avail as u32);
        w(reg::QUEUE_USED_LOW, used as u32);
        w(reg::QUEUE_READY, 1);
    }
    w(
        reg::STATUS,
        driver | status::FEATURES_OK | status::DRIVER_OK,
    );
}

#[test]
fn a_vsock_slot_signals_its_transport_reset_through_interrupt_status() {
    use crate::virtio::vsock::{Vsock, EVQ_INDEX};
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x10_0000)));
    let dir = tempfile::tempdir().unwrap();
    let queue_at = [0x0, 0x1000, 0x2000];
    let slot = |name: &str| {
        let vsock = Vsock::new(3, dir.path().join(name)).unwrap();
        let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(vsock));
        MmioTransport::new(mem.clone(), device).unwrap()
    };
    let mut mmio = slot("v.sock");
    activate_by_registers(&mut mmio, mem, &queue_at);
    assert!(mmio.device().lock().unwrap().is_activated());
    let mut evq = VirtQueue::new(mem, GuestAddress(queue_at[EVQ_INDEX]), 16);
    evq.add_chain(&[(0x8000, 8, F_WRITE)]);
    let state = mmio.save();
    assert_eq!(state.device.kind(), "vsock");
    assert_eq!(state.interrupt_status, 0);

    let mut restored = slot("restored.sock");
    restored.restore(&state).unwrap();
    assert_eq!(evq.used_idx(), 1, "TRANSPORT_RESET delivered");
    let mut isr = [0u8; 4];
    restored.read(reg::INTERRUPT_STATUS, &mut isr);
    assert_eq!(u32::from_le_bytes(isr), INTERRUPT_VRING);
    assert!(restored.interrupt_evt().read().is_ok());
}
