//! virtio-mmio transport tests: a driver's register sequence, feature negotiation, reset,
//! and garbage register traffic (proptest).

use proptest::prelude::*;
use vm_memory::GuestAddress;

use super::*;
use crate::virtio::block::device::tests::harness::default_block;
use crate::virtio::test_utils::{single_region_mem, VirtQueue};

const FEATURES_VERSION_1_HI: u32 = 1; // bit 32 in the high page

struct Driver {
    mmio: MmioTransport,
    mem: &'static GuestMemoryMmap,
    _file: tempfile::NamedTempFile,
}

impl Driver {
    fn new() -> Self {
        let disk = default_block(4096, false);
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x10_0000)));
        let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(disk.block));
        Self {
            mmio: MmioTransport::new(mem.clone(), device).unwrap(),
            mem,
            _file: disk.file,
        }
    }

    fn r(&mut self, offset: u64) -> u32 {
        let mut buf = [0u8; 4];
        self.mmio.read(offset, &mut buf);
        u32::from_le_bytes(buf)
    }

    fn w(&mut self, offset: u64, value: u32) {
        self.mmio.write(offset, &value.to_le_bytes());
    }

    fn set_status(&mut self, bits: u32) {
        let now = self.r(reg::STATUS);
        self.w(reg::STATUS, now | bits);
    }

    /// Negotiate features: accept `hi` (features 32..63) and `lo`.
    fn negotiate(&mut self, lo: u32, hi: u32) -> bool {
        self.w(reg::STATUS, 0);
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, lo);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, hi);
        self.set_status(status::FEATURES_OK);
        self.r(reg::STATUS) & status::FEATURES_OK != 0
    }

    fn setup_queue(&mut self, vq: &VirtQueue<'_>) {
        let (desc, avail, used) = vq.addresses();
        self.w(reg::QUEUE_SEL, 0);
        self.w(reg::QUEUE_NUM, 16);
        for (lo, value) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_AVAIL_LOW, avail),
            (reg::QUEUE_USED_LOW, used),
        ] {
            self.w(lo, value as u32);
            self.w(lo + 4, (value >> 32) as u32);
        }
        self.w(reg::QUEUE_READY, 1);
    }

    fn activated(&self) -> bool {
        self.mmio.device().lock().unwrap().is_activated()
    }
}

#[test]
fn identification_registers() {
    let mut d = Driver::new();
    assert_eq!(d.r(reg::MAGIC), MMIO_MAGIC_VALUE);
    assert_eq!(d.r(reg::VERSION), 2);
    assert_eq!(d.r(reg::DEVICE_ID), crate::virtio::device_type::BLOCK);
    assert_eq!(d.r(reg::VENDOR_ID), 0);
    d.w(reg::QUEUE_SEL, 0);
    assert_eq!(d.r(reg::QUEUE_NUM_MAX), 256);
    d.w(reg::QUEUE_SEL, 1);
    assert_eq!(d.r(reg::QUEUE_NUM_MAX), 0, "no second queue");
    d.w(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.r(reg::DEVICE_FEATURES) & FEATURES_VERSION_1_HI, 1);
    let mut narrow = [0xffu8; 2];
    d.mmio.read(reg::MAGIC, &mut narrow);
    assert_eq!(narrow, [0, 0], "non-32-bit register reads return 0");
    let mut cap = [0u8; 8];
    d.mmio.read(CONFIG_SPACE_OFFSET, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
}

#[test]
fn driver_sequence_activates_device() {
    let mut d = Driver::new();
    let vq = VirtQueue::new(d.mem, GuestAddress(0), 16);
    assert!(d.negotiate(
        1 << crate::virtio::features::RING_EVENT_IDX,
        FEATURES_VERSION_1_HI
    ));
    d.setup_queue(&vq);
    assert_eq!(d.r(reg::QUEUE_READY), 1);
    assert!(!d.activated());
    d.set_status(status::DRIVER_OK);
    assert!(d.activated());
    assert_eq!(d.r(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    let dev = d.mmio.device().lock().unwrap();
    assert!(dev.queues()[0].event_idx_enabled());
    assert_eq!(dev.queues()[0].size(), 16);
}

#[test]
fn features_ok_refused_without_version_1_or_with_unoffered_bits() {
    let mut d = Driver::new();
    assert!(!d.negotiate(0, 0), "legacy driver");
    assert!(
        !d.negotiate(1 << 6, FEATURES_VERSION_1_HI),
        "bit 6 (BLK_F_GEOMETRY) not offered"
    );
    assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
}

#[test]
fn queue_setup_is_ignored_before_features_ok() {
    let mut d = Driver::new();
    d.set_status(status::ACKNOWLEDGE | status::DRIVER);
    d.w(reg::QUEUE_NUM, 16);
    d.w(reg::QUEUE_READY, 1);
    assert_eq!(d.r(reg::QUEUE_READY), 0);
}

#[test]
fn driver_ok_with_bad_queue_sets_needs_reset() {
    let mut d = Driver::new();
    assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
    d.w(reg::QUEUE_NUM, 16);
    d.w(reg::QUEUE_DESC_LOW, 0xffff_0000); // outside the 1 MiB of guest memory
    d.w(reg::QUEUE_READY, 1);
    d.set_status(status::DRIVER_OK);
    assert!(!d.activated());
    assert_ne!(d.r(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(
        d.r(reg::INTERRUPT_STATUS) & crate::virtio::INTERRUPT_CONFIG,
        0
    );
}

#[test]
fn status_zero_resets_device_and_transport() {
    let mut d = Driver::new();
    let vq = VirtQueue::new(d.mem, GuestAddress(0), 16);
    assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
    d.setup_queue(&vq);
    d.set_status(status::DRIVER_OK);
    d.mmio.interrupt().signal_used_queue().unwrap();
    d.w(reg::STATUS, 0);
    assert_eq!(d.r(reg::STATUS), 0);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    assert!(!d.activated());
    assert_eq!(d.r(reg::QUEUE_READY), 0);
}

#[test]
fn interrupt_ack_clears_bits_and_notify_reaches_queue_event() {
    let mut d = Driver::new();
    d.mmio.interrupt().signal_used_queue().unwrap();
    assert_eq!(d.r(reg::INTERRUPT_STATUS), crate::virtio::INTERRUPT_VRING);
    d.w(reg::INTERRUPT_ACK, crate::virtio::INTERRUPT_VRING);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    d.w(reg::QUEUE_NOTIFY, 0);
    d.w(reg::QUEUE_NOTIFY, 7); // no such queue: ignored
    let evts = d.mmio.queue_evts().unwrap();
    assert_eq!(evts.len(), 1);
    assert_eq!(evts[0].read().unwrap(), 1);
}

#[test]
fn status_cannot_clear_bits() {
    let mut d = Driver::new();
    d.set_status(status::ACKNOWLEDGE | status::DRIVER);
    d.w(reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(d.r(reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_register_traffic_never_panics(
        ops in prop::collection::vec((0u64..0x1100, any::<u32>(), 0usize..9, any::<bool>()), 1..64)
    ) {
        let mut d = Driver::new();
        for (offset, value, len, is_write) in ops {
            let bytes = value.to_le_bytes();
            let mut buf = [0u8; 8];
            let len = len.min(8);
            if is_write {
                buf[..len.min(4)].copy_from_slice(&bytes[..len.min(4)]);
                d.mmio.write(offset, &buf[..len]);
            } else {
                d.mmio.read(offset, &mut buf[..len]);
            }
        }
        // Whatever happened, the transport still identifies itself.
        prop_assert_eq!(d.r(reg::MAGIC), MMIO_MAGIC_VALUE);
    }
}

#[test]
fn transport_and_event_loop_serve_a_read_end_to_end() {
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
    use vm_memory::Bytes;

    use crate::virtio::block::{request_type, Block};
    use crate::virtio::test_utils::F_WRITE;

    let disk = default_block(4096, false);
    let mem: &'static GuestMemoryMmap = Box::leak(Box::new(single_region_mem(0x10_0000)));
    let block = Arc::new(Mutex::new(disk.block));
    let mut d = Driver {
        mmio: MmioTransport::new(mem.clone(), block.clone()).unwrap(),
        mem,
        _file: disk.file,
    };
    let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    manager.add_subscriber(block.clone() as Arc<Mutex<dyn MutEventSubscriber + Send>>);

    let mut vq = VirtQueue::new(d.mem, GuestAddress(0), 16);
    assert!(d.negotiate(
        1 << crate::virtio::features::RING_EVENT_IDX,
        FEATURES_VERSION_1_HI
    ));
    d.setup_queue(&vq);
    d.set_status(status::DRIVER_OK);
    mem.write_obj(request_type::IN, GuestAddress(0x1000))
        .unwrap();
    mem.write_obj(1u64, GuestAddress(0x1008)).unwrap();
    vq.add_chain(&[
        (0x1000, 16, 0),
        (0x4000, 512, F_WRITE),
        (0x2000, 1, F_WRITE),
    ]);
    d.w(reg::QUEUE_NOTIFY, 0); // no ioeventfd here: the transport forwards the kick

    manager.run_with_timeout(1000).unwrap();
    assert_eq!(vq.used(0), (0, 513));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x2000)).unwrap(), 0);
    assert_eq!(d.mmio.interrupt_evt().read().unwrap(), 1);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), crate::virtio::INTERRUPT_VRING);
    d.w(reg::INTERRUPT_ACK, crate::virtio::INTERRUPT_VRING);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    let _: &Block = &block.lock().unwrap();
}

mod log_flood {
    //! A guest repeating a mistake gets a rate-limited warning per call site, not a line per
    //! register write; virtio-queue's own `error!` lines are never triggered.

    use super::*;
    use crate::log_capture::{lines_logged_by, PER_SITE};

    const REPEAT: usize = 100;

    fn driver_in_queue_setup() -> Driver {
        let mut d = Driver::new();
        assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
        d.w(reg::QUEUE_SEL, 0);
        d
    }

    #[test]
    fn invalid_queue_sizes_are_ignored_without_flooding_the_log() {
        let mut d = driver_in_queue_setup();
        let lines = lines_logged_by(|| {
            for _ in 0..REPEAT {
                d.w(reg::QUEUE_NUM, 3); // not a power of two
                d.w(reg::QUEUE_NUM, 512); // above QueueNumMax
            }
        });
        assert!(lines.len() <= PER_SITE, "{} lines: {lines:?}", lines.len());
        let dev = d.mmio.device().lock().unwrap();
        assert_eq!(dev.queues()[0].size(), 256, "invalid sizes are ignored");
    }

    #[test]
    fn misaligned_rings_are_ignored_without_flooding_the_log() {
        let mut d = driver_in_queue_setup();
        let lines = lines_logged_by(|| {
            for _ in 0..REPEAT {
                d.w(reg::QUEUE_DESC_LOW, 0x1008); // descriptor table: 16-byte aligned
                d.w(reg::QUEUE_AVAIL_LOW, 0x2001); // available ring: 2-byte aligned
                d.w(reg::QUEUE_USED_LOW, 0x3002); // used ring: 4-byte aligned
            }
        });
        assert!(lines.len() <= PER_SITE, "{} lines: {lines:?}", lines.len());
        let dev = d.mmio.device().lock().unwrap();
        let q = &dev.queues()[0];
        assert_ne!(q.desc_table(), 0x1008);
        assert_ne!(q.avail_ring(), 0x2001);
        assert_ne!(q.used_ring(), 0x3002);
    }

    #[test]
    fn failed_activations_do_not_flood_the_log() {
        let mut d = Driver::new();
        let outside = VirtQueue::new(d.mem, GuestAddress(0x20_0000), 16); // past guest RAM
        let lines = lines_logged_by(|| {
            for _ in 0..REPEAT {
                assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
                d.setup_queue(&outside);
                d.set_status(status::DRIVER_OK);
                assert!(!d.activated());
                assert_ne!(d.r(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
            }
        });
        // Two call sites: the invalid layout, and the failed activation.
        assert!(
            lines.len() <= 2 * PER_SITE,
            "{} lines: {lines:?}",
            lines.len()
        );
        assert!(
            lines.iter().all(|l| !l.contains("virtio_queue")),
            "{lines:?}"
        );
    }
}

mod lock_free_registers {
    //! A vCPU reading the transport's own registers must not wait for the device lock, which
    //! the event loop holds across a whole queue drain of synchronous disk I/O.

    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::virtio::{features, INTERRUPT_VRING};

    /// Far shorter than the hold: a reader that waited for the lock misses it.
    const WAIT: Duration = Duration::from_secs(2);
    const HOLD: Duration = Duration::from_secs(10);

    #[test]
    fn transport_registers_are_served_while_the_event_loop_holds_the_device() {
        let mut d = Driver::new();
        d.set_status(status::ACKNOWLEDGE);
        d.mmio.interrupt().signal_used_queue().unwrap();
        let device = d.mmio.device().clone();
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let drain = std::thread::spawn(move || {
            let _held = device.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(HOLD); // a long drain
        });
        locked_rx.recv().unwrap();

        let (done_tx, done_rx) = mpsc::channel();
        let vcpu = std::thread::spawn(move || {
            let irq = d.r(reg::INTERRUPT_STATUS);
            d.w(reg::INTERRUPT_ACK, INTERRUPT_VRING);
            let ids = [reg::MAGIC, reg::VERSION, reg::DEVICE_ID, reg::VENDOR_ID].map(|r| d.r(r));
            d.w(reg::DEVICE_FEATURES_SEL, 1);
            let features_hi = d.r(reg::DEVICE_FEATURES);
            d.w(reg::QUEUE_SEL, 0);
            let queue = (d.r(reg::QUEUE_NUM_MAX), d.r(reg::QUEUE_READY));
            d.set_status(status::DRIVER);
            d.w(reg::DRIVER_FEATURES_SEL, 1);
            d.w(reg::DRIVER_FEATURES, FEATURES_VERSION_1_HI);
            d.w(reg::QUEUE_NOTIFY, 0);
            let after = (
                d.r(reg::INTERRUPT_STATUS),
                d.r(reg::STATUS),
                d.r(reg::CONFIG_GENERATION),
            );
            done_tx.send((irq, ids, features_hi, queue, after)).unwrap();
            d
        });
        let served = done_rx.recv_timeout(WAIT);
        release_tx.send(()).unwrap();
        drain.join().unwrap();
        let d = vcpu.join().unwrap();

        let (irq, ids, features_hi, queue, after) =
            served.expect("a register access waited for the device lock");
        assert_eq!(irq, INTERRUPT_VRING);
        assert_eq!(
            ids,
            [MMIO_MAGIC_VALUE, 2, crate::virtio::device_type::BLOCK, 0]
        );
        assert_ne!(features_hi & (1 << (features::VERSION_1 - 32)), 0);
        assert_eq!(queue, (256, 0));
        assert_eq!(after, (0, status::ACKNOWLEDGE | status::DRIVER, 0));
        assert_eq!(d.mmio.queue_evts().unwrap()[0].read().unwrap(), 1);
    }

    #[test]
    fn queue_ready_reads_follow_writes_and_reset() {
        let mut d = Driver::new();
        let vq = VirtQueue::new(d.mem, GuestAddress(0), 16);
        assert!(d.negotiate(0, FEATURES_VERSION_1_HI));
        d.setup_queue(&vq);
        assert_eq!(d.r(reg::QUEUE_READY), 1);
        d.w(reg::QUEUE_READY, 0);
        assert_eq!(d.r(reg::QUEUE_READY), 0);
        assert!(!d.mmio.device().lock().unwrap().queues()[0].ready());
        d.w(reg::QUEUE_READY, 1);
        d.w(reg::STATUS, 0);
        assert_eq!(d.r(reg::QUEUE_READY), 0, "reset clears ready");
        assert!(!d.mmio.device().lock().unwrap().queues()[0].ready());
    }
}
