//! libFuzzer entry for `squib_fuzz::kernel_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::kernel_loader(data));
