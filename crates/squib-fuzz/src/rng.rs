//! `virtio_rng`: request chains on the entropy device's one queue, optionally behind a small
//! rate limiter (so throttled requests wait on the ring and the limiter's timer path runs).
//!
//! Scenario: byte 0 (bit 0: a limiter follows as bytes size, one-time burst and ops size),
//! register accesses, wanted features, then steps: below 0xe0 a [`queue_op`], 0xe0-0xef a
//! kick, 0xf0 and above one turn of the event loop alone (the limiter's timer, if it fired).
//! Events are dispatched by a real `event_manager` loop, as in the VMM.

use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventManager, SubscriberOps};
use squib_devices::rate_limiter::{RateLimiter, TokenBucket};
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::rng::Entropy;
use squib_devices::virtio::test_utils::VirtQueue;
use squib_devices::virtio::VirtioDevice;

use crate::guest::{self, activate, queue_addr, queue_op, register_accesses, QUEUE_SIZE};
use crate::{Input, MAX_STEPS};

/// An entropy device, throttled as `input` says.
pub(crate) fn entropy_device(input: &mut Input<'_>) -> Option<Entropy> {
    let limiter = if input.bool() {
        let bytes = TokenBucket::new(u64::from(input.u16()), u64::from(input.u16()), 100);
        let ops = TokenBucket::new(u64::from(input.u8()), 0, 100);
        RateLimiter::new(bytes, ops)
    } else {
        RateLimiter::new(None, None)
    };
    Entropy::new(limiter.ok()?).ok()
}

/// The `virtio_rng` target.
pub fn virtio_rng(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(rng) = entropy_device(&mut input) else {
        return;
    };
    let mem = guest::guest_memory();
    let dev = Arc::new(Mutex::new(rng));
    let Ok(mut em) = EventManager::<Arc<Mutex<Entropy>>>::new() else {
        return;
    };
    em.add_subscriber(dev.clone());
    let Ok(mut transport) = MmioTransport::new(mem.clone(), dev.clone()) else {
        return;
    };
    register_accesses(&mut input, &mut transport, 16);
    let mut vq = VirtQueue::new(&mem, queue_addr(0), QUEUE_SIZE);
    if !activate(&mut transport, &[&vq], input.u64()) {
        return;
    }
    let lock = || dev.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() {
            op @ 0..0xe0 => queue_op(&mut input, &mem, &mut vq, op),
            0xe0..0xf0 => {
                let _ = lock().queue_events()[0].write(1);
            }
            _ => {}
        }
        let _ = em.run_with_timeout(0);
    }
    lock().process_queue();
}
