//! libFuzzer entry for `squib_fuzz::virtio_rng`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::virtio_rng(data));
