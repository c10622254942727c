//! libFuzzer entry for `squib_fuzz::virtio_net`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::virtio_net(data));
