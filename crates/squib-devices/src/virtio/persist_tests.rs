//! Tests of the shared virtio snapshot state: queue conversions, and every check that keeps a
//! corrupt or hostile snapshot from building a queue the device would misuse.

use vm_memory::GuestAddress;

use super::*;
use crate::virtio::test_utils::{single_region_mem, VirtQueue};

const MEM_SIZE: usize = 0x1_0000;
const OFFERED: u64 = (1 << features::VERSION_1) | (1 << features::RING_EVENT_IDX);

/// Two queues of at most 16, both configured and ready at 0x0 and 0x1000, as a driver would.
fn configured(mem: &GuestMemoryMmap) -> VirtioState {
    let mut state = VirtioState::new(2, 16, OFFERED).unwrap();
    VirtQueue::new(mem, GuestAddress(0), 8).configure(&mut state.queues[0]);
    VirtQueue::new(mem, GuestAddress(0x1000), 16).configure(&mut state.queues[1]);
    state.acked_features = 1 << features::VERSION_1;
    state
}

fn saved(mem: &GuestMemoryMmap) -> VirtioDeviceState {
    let mut state = configured(mem);
    state.queues[0].set_next_avail(5);
    state.queues[0].set_next_used(3);
    state.save(true)
}

fn check(saved: &VirtioDeviceState, mem: &GuestMemoryMmap) -> Result<Vec<Queue>, RestoreError> {
    VirtioState::new(2, 16, OFFERED)
        .unwrap()
        .check_restore(saved, mem)
}

#[test]
fn queue_state_mirrors_virtio_queue_both_ways() {
    let mem = single_region_mem(MEM_SIZE);
    let state = saved(&mem);
    let q = state.queues[0];
    assert_eq!((q.max_size, q.size, q.ready), (16, 8, true));
    assert_eq!((q.next_avail, q.next_used), (5, 3));
    assert_eq!(VirtqueueState::from(QueueState::from(q)), q);
    let queue = Queue::try_from(q).unwrap();
    assert_eq!(VirtqueueState::from(&queue), q);
}

#[test]
fn a_valid_state_restores_every_queue_with_its_positions() {
    let mem = single_region_mem(MEM_SIZE);
    let state = saved(&mem);
    let queues = check(&state, &mem).unwrap();
    let mut fresh = VirtioState::new(2, 16, OFFERED).unwrap();
    fresh.install(queues, &state);
    assert_eq!(fresh.save(true), state);
}

#[test]
fn queue_count_and_max_size_must_match_the_device() {
    let mem = single_region_mem(MEM_SIZE);
    let mut state = saved(&mem);
    state.queues.pop();
    let err = check(&state, &mem).unwrap_err();
    assert_eq!(err.to_string(), "the device has 2 queues, the snapshot 1");

    let mut state = saved(&mem);
    state.queues[1].max_size = 1024;
    let err = check(&state, &mem).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue 1: the device's maximum size is 16, the snapshot's 1024"
    );
}

#[test]
fn sizes_and_alignment_virtio_queue_refuses_are_refused() {
    let mem = single_region_mem(MEM_SIZE);
    for corrupt in [
        |q: &mut VirtqueueState| q.size = 3,
        |q: &mut VirtqueueState| q.size = 32,
        |q: &mut VirtqueueState| q.size = 0,
        |q: &mut VirtqueueState| q.desc_table = 0x1008,
        |q: &mut VirtqueueState| q.used_ring = 0x2002,
    ] {
        let mut state = saved(&mem);
        corrupt(&mut state.queues[0]);
        assert!(
            matches!(
                check(&state, &mem),
                Err(RestoreError::InvalidQueue { index: 0, .. })
            ),
            "{:?}",
            state.queues[0]
        );
    }
}

#[test]
fn an_activated_device_needs_ready_queues_inside_guest_memory() {
    let mem = single_region_mem(MEM_SIZE);
    let mut state = saved(&mem);
    state.queues[1].used_ring = 0xfff0;
    let err = check(&state, &mem).unwrap_err();
    assert!(
        matches!(err, RestoreError::QueueLayout { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("outside guest memory"), "{err}");

    let mut state = saved(&mem);
    state.queues[1].desc_table = 0x10_0000_0000;
    assert!(matches!(
        check(&state, &mem),
        Err(RestoreError::QueueLayout { index: 1, .. })
    ));

    let mut state = saved(&mem);
    state.queues[0].ready = false;
    assert!(matches!(
        check(&state, &mem),
        Err(RestoreError::QueueNotReady { index: 0 })
    ));

    // A device the driver had not activated yet may hold half-configured queues: the
    // transport checks them at DRIVER_OK, as for a booted guest.
    let mut state = saved(&mem);
    state.activated = false;
    state.queues[0].ready = false;
    state.queues[1].used_ring = 0xfff0;
    assert!(check(&state, &mem).is_ok());
}

#[test]
fn features_must_be_offered_and_event_idx_must_match_them() {
    let mem = single_region_mem(MEM_SIZE);
    let mut state = saved(&mem);
    state.acked_features |= 1 << 40;
    let err = check(&state, &mem).unwrap_err();
    assert!(
        matches!(err, RestoreError::UnofferedFeatures { .. }),
        "{err}"
    );

    let mut state = saved(&mem);
    state.queues[1].event_idx_enabled = true;
    assert!(matches!(
        check(&state, &mem),
        Err(RestoreError::EventIdx {
            index: 1,
            enabled: true
        })
    ));
}

#[test]
fn kick_queues_writes_the_named_eventfds() {
    let state = VirtioState::new(3, 16, OFFERED).unwrap();
    state.kick_queues(&[0, 2, 7]).unwrap();
    assert_eq!(state.queue_evts[0].read().unwrap(), 1);
    assert!(state.queue_evts[1].read().is_err());
    assert_eq!(state.queue_evts[2].read().unwrap(), 1);
}

#[test]
fn device_state_round_trips_through_bincode() {
    let mem = single_region_mem(MEM_SIZE);
    let state = DeviceState::Entropy(EntropyState {
        virtio: saved(&mem),
    });
    let bytes = bincode::serialize(&state).unwrap();
    let back: DeviceState = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.kind(), "entropy");
    assert_eq!(back.virtio(), &saved(&mem));
    // A truncated blob is an error, not a panic.
    assert!(bincode::deserialize::<DeviceState>(&bytes[..bytes.len() / 2]).is_err());
}
