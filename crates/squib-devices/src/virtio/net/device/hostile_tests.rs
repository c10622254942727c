//! Property tests: whatever descriptors a guest writes and whatever the TAP delivers, the
//! device never panics, never completes more chains than were published, and keeps serving.

use proptest::prelude::*;

use super::tests::harness::{frame, NetHarness, MEM_SIZE};
use crate::virtio::net::features as net;
use crate::virtio::test_utils::{F_INDIRECT, F_NEXT, F_WRITE};

fn descriptor() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        0u64..MEM_SIZE as u64,
        Just(MEM_SIZE as u64 - 1),
        any::<u64>()
    ];
    let len = prop_oneof![0u32..4096, Just(u32::MAX), 0u32..70_000];
    let flags = prop::sample::select(vec![0, F_NEXT, F_WRITE, F_NEXT | F_WRITE, F_INDIRECT]);
    (addr, len, flags, 0u16..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_descriptors_never_panic(
        descs in prop::collection::vec(descriptor(), 1..16),
        frames in prop::collection::vec(0usize..3000, 0..6),
        mergeable in any::<bool>(),
    ) {
        let acked = if mergeable { 1 << net::MRG_RXBUF } else { 0 };
        let mut h = NetHarness::new(acked);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let i = i as u16;
            h.rxq.set_desc(i, addr, len, flags, next);
            h.txq.set_desc(i, addr, len, flags, next);
            h.rxq.publish(i);
            h.txq.publish(i);
        }
        for (i, &len) in frames.iter().enumerate() {
            h.host.send(&frame(len, i as u8)).unwrap();
        }
        h.net.process_tap_rx_event();
        h.net.process_tx();
        let published = descs.len() as u16;
        prop_assert!(h.rxq.used_idx() <= published);
        prop_assert!(h.txq.used_idx() <= published);
        let _ = h.host_frames();
    }
}
