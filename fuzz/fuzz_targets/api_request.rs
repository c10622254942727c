//! libFuzzer entry for `squib_fuzz::api_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| squib_fuzz::api_request(data));
