//! libFuzzer entry for `squib_fuzz::mmio_transport`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::mmio_transport(data));
