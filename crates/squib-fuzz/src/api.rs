//! `api_request`: the API router (`routes::parse_request`: method, path and body to a typed
//! action or a Firecracker fault) and the `--config-file` parser (`VmConfig::from_json`).
//!
//! Scenario: byte 0 picks the method (`% 8`: GET, PUT, PATCH, POST, DELETE, HEAD, OPTIONS,
//! or a word taken from the bytes up to a space), then the path up to the first newline,
//! then the body. The body is also parsed as a whole config file.

use squib_api::routes::parse_request;
use squib_api::schemas::vm_config::VmConfig;

use crate::Input;

const METHODS: [&str; 7] = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS"];

/// Split `bytes` at the first `sep` (dropped), or keep it whole.
fn split_at_byte(bytes: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == sep) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// The `api_request` target.
pub fn api_request(data: &[u8]) {
    let mut input = Input::new(data);
    let pick = usize::from(input.u8() % 8);
    let rest = input.rest();
    let (method, rest) = match METHODS.get(pick) {
        Some(&m) => (m.to_owned(), rest),
        None => {
            let (word, rest) = split_at_byte(rest, b' ');
            (String::from_utf8_lossy(word).into_owned(), rest)
        }
    };
    let (path, body) = split_at_byte(rest, b'\n');
    let path = String::from_utf8_lossy(path);
    let _ = parse_request(&method, &path, body);
    let _ = VmConfig::from_json(body);
}
