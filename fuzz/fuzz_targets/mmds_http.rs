//! libFuzzer entry for `squib_fuzz::mmds_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::mmds_http(data));
