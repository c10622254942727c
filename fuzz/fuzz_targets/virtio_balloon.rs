//! libFuzzer entry for `squib_fuzz::virtio_balloon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::virtio_balloon(data));
