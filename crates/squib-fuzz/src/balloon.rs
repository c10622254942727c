//! `virtio_balloon`: a hostile driver on every balloon queue (page frame lists, statistics,
//! hinting command ids and ranges, reported ranges) and the host's runtime calls (new
//! target, new polling interval, hinting start and stop, the statistics tick).
//!
//! Scenario: byte 0 (bit 0: deflate on OOM, bit 1: statistics, bit 2: hinting, bit 3:
//! reporting), byte 1 the target in MiB, register accesses, wanted features, then steps: a
//! queue byte (modulo the queue count) and an op byte: below 0xc0 a [`queue_op`] on that
//! queue, 0xc0-0xdf a kick of it, 0xe0-0xe7 a new target, 0xe8-0xef a new polling interval,
//! 0xf0-0xf7 hinting start or stop, above a statistics tick and status reads. Events are
//! dispatched by a real `event_manager` loop, as in the VMM.

use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventManager, SubscriberOps};
use squib_devices::virtio::balloon::{Balloon, BalloonConfig};
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::test_utils::VirtQueue;
use squib_devices::virtio::VirtioDevice;

use crate::guest::{self, activate, queue_addr, queue_op, register_accesses, QUEUE_SIZE};
use crate::{Input, MAX_STEPS};

/// The `virtio_balloon` target.
pub fn virtio_balloon(data: &[u8]) {
    let mut input = Input::new(data);
    let bits = input.u8();
    let config = BalloonConfig {
        amount_mib: u32::from(input.u8()),
        deflate_on_oom: bits & 1 != 0,
        stats_polling_interval_s: u16::from(bits >> 1 & 1),
        free_page_hinting: bits & 4 != 0,
        free_page_reporting: bits & 8 != 0,
    };
    let Ok(balloon) = Balloon::new(config) else {
        return;
    };
    let count = balloon.queues().len();
    let mem = guest::guest_memory();
    let dev = Arc::new(Mutex::new(balloon));
    let Ok(mut em) = EventManager::<Arc<Mutex<Balloon>>>::new() else {
        return;
    };
    em.add_subscriber(dev.clone());
    let Ok(mut transport) = MmioTransport::new(mem.clone(), dev.clone()) else {
        return;
    };
    register_accesses(&mut input, &mut transport, 16);
    let mut vqs: Vec<VirtQueue<'_>> = (0..count)
        .map(|i| VirtQueue::new(&mem, queue_addr(i), QUEUE_SIZE))
        .collect();
    let refs: Vec<&VirtQueue<'_>> = vqs.iter().collect();
    if !activate(&mut transport, &refs, input.u64()) {
        return;
    }
    let lock = || dev.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let q = usize::from(input.u8()) % count;
        match input.u8() {
            op @ 0..0xc0 => queue_op(&mut input, &mem, &mut vqs[q], op),
            0xc0..0xe0 => {
                let _ = lock().queue_events()[q].write(1);
            }
            0xe0..0xe8 => {
                let _ = lock().update_size(u32::from(input.u16()));
            }
            0xe8..0xf0 => {
                let _ = lock().update_stats_interval(input.u16());
            }
            op @ 0xf0..0xf8 => {
                let _ = if op & 1 == 0 {
                    lock().start_hinting(op & 2 != 0)
                } else {
                    lock().stop_hinting()
                };
            }
            _ => {
                let mut dev = lock();
                dev.process_stats_timer();
                let _ = dev.latest_stats();
                let _ = dev.hinting_status();
            }
        }
        let _ = em.run_with_timeout(0);
    }
}
