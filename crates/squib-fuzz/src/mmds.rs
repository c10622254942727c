//! `mmds_http`: the guest-facing MMDS HTTP/1.x parser and responder, and the V2 session
//! tokens, driven directly (no TCP): every request found in the bytes is parsed and answered
//! from a small document, as the MMDS endpoint does on one connection.
//!
//! Scenario: byte 0 (bit 0: V2, bit 1: IMDS format, bit 2: mint a token first, its TTL the
//! next 32 bits), then the stream of request bytes; each `$T` in it is replaced by the minted
//! token so the fuzzer can present a valid one. The token authority also checks the raw
//! bytes as a token.

use std::time::{Duration, Instant};

use serde_json::json;
use squib_mmds::http::{parse_request, Parsed, Response};
use squib_mmds::responder::respond;
use squib_mmds::{GuestAccess, MmdsStore, MmdsVersion, TokenAuthority};

use crate::Input;

/// Every request the stream holds, in order (bounded by the stream's length).
fn serve(
    stream: &[u8],
    store: &MmdsStore,
    tokens: &mut TokenAuthority,
    access: GuestAccess,
    now: Instant,
) {
    let mut rest = stream;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Parsed::Complete { request, consumed } = parse_request(rest) else {
            break;
        };
        // A parser that consumes nothing would spin the endpoint forever.
        assert!(
            (1..=rest.len()).contains(&consumed),
            "parse_request consumed {consumed} of {} bytes",
            rest.len()
        );
        let response: Response = match request {
            Ok(request) => respond(&request, store, tokens, access, now),
            Err(error) => error.to_response(),
        };
        out.clear();
        response.write_to(&mut out);
        rest = &rest[consumed..];
    }
}

/// `stream` with every `$T` replaced by `token`.
fn with_token(stream: &[u8], token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        if stream[i..].starts_with(b"$T") {
            out.extend_from_slice(token.as_bytes());
            i += 2;
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

/// The `mmds_http` target.
pub fn mmds_http(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let access = GuestAccess {
        version: if mode & 1 != 0 {
            MmdsVersion::V2
        } else {
            MmdsVersion::V1
        },
        imds_compat: mode & 2 != 0,
    };
    let mut store = MmdsStore::new(51_200);
    let _ = store.put(json!({
        "latest": {"meta-data": {"hostname": "fuzz", "ami-id": "ami-1", "list": [1, "two"]}},
        "s": "text", "n": 1, "t": true, "z": null, "e": {}
    }));
    let mut tokens = TokenAuthority::new();
    let now = Instant::now();
    let token = if mode & 4 != 0 {
        tokens.generate_at(input.u32(), now).unwrap_or_default()
    } else {
        String::new()
    };
    let stream = input.rest();
    if let Ok(text) = std::str::from_utf8(stream) {
        let _ = tokens.is_valid_at(text, now);
        let _ = tokens.is_valid_at(text, now + Duration::from_secs(u64::from(u32::MAX)));
    }
    let stream = with_token(stream, &token);
    serve(&stream, &store, &mut tokens, access, now);
}
