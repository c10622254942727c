//! libFuzzer entry for `squib_fuzz::virtio_vsock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::virtio_vsock(data));
