//! MMDS V2 session tokens: `PUT /latest/api/token` mints one, every V2 `GET` must present it.
//!
//! A token is 32 bytes from OS randomness, shown to the guest as 64 hex digits: an 8-byte id
//! (the lookup key) and a 24-byte secret compared in constant time, so timing reveals at most
//! whether an id exists, never how much of a secret matched. Live tokens sit in a map bounded
//! by [`MAX_TOKENS`]; when it is full, expired tokens go first, then the one expiring soonest.
//! Expiry uses the monotonic clock; every method has an `_at(now)` form so tests inject time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest token lifetime a guest may ask for, in seconds.
pub const MIN_TOKEN_TTL_SECONDS: u32 = 1;
/// Longest token lifetime a guest may ask for, in seconds (6 hours).
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21_600;
/// The path that mints tokens.
pub const PATH_TO_TOKEN: &str = "/latest/api/token";
/// Live tokens kept at most; older ones are evicted (bounded memory against a flooding guest).
pub const MAX_TOKENS: usize = 1024;

const ID_LEN: usize = 8;
const SECRET_LEN: usize = 24;
const TOKEN_LEN: usize = ID_LEN + SECRET_LEN;
const TOKEN_HEX_LEN: usize = TOKEN_LEN * 2;

/// Why a token could not be issued. The `Display` texts are Firecracker's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The requested lifetime is outside `1..=21600` seconds.
    #[error(
        "Invalid time to live value provided for token: {0}. Please provide a value between 1 and 21600."
    )]
    InvalidTtlValue(u32),
    /// The OS random source failed.
    #[error("Failed to generate a key")]
    KeyGeneration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    secret: [u8; SECRET_LEN],
    expiry: Instant,
}

/// Issues and checks V2 session tokens.
#[derive(Debug, Default)]
pub struct TokenAuthority {
    tokens: HashMap<[u8; ID_LEN], Entry>,
}

impl TokenAuthority {
    /// An authority with no tokens issued yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Mint a token valid for `ttl_seconds` from now.
    ///
    /// # Errors
    /// [`TokenError::InvalidTtlValue`] outside `1..=21600`, [`TokenError::KeyGeneration`] if the
    /// OS random source fails.
    pub fn generate(&mut self, ttl_seconds: u32) -> Result<String, TokenError> {
        self.generate_at(ttl_seconds, Instant::now())
    }

    /// [`Self::generate`] with an explicit current time.
    ///
    /// # Errors
    /// As [`Self::generate`].
    pub fn generate_at(&mut self, ttl_seconds: u32, now: Instant) -> Result<String, TokenError> {
        if !(MIN_TOKEN_TTL_SECONDS..=MAX_TOKEN_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(TokenError::InvalidTtlValue(ttl_seconds));
        }
        let mut raw = [0u8; TOKEN_LEN];
        getrandom::fill(&mut raw).map_err(|_| TokenError::KeyGeneration)?;
        let mut id = [0u8; ID_LEN];
        let mut secret = [0u8; SECRET_LEN];
        id.copy_from_slice(&raw[..ID_LEN]);
        secret.copy_from_slice(&raw[ID_LEN..]);
        self.make_room(now);
        let expiry = now + Duration::from_secs(u64::from(ttl_seconds));
        self.tokens.insert(id, Entry { secret, expiry });
        Ok(encode_hex(&raw))
    }

    /// Whether `token` was issued here and has not expired.
    #[must_use]
    pub fn is_valid(&self, token: &str) -> bool {
        self.is_valid_at(token, Instant::now())
    }

    /// [`Self::is_valid`] with an explicit current time.
    #[must_use]
    pub fn is_valid_at(&self, token: &str, now: Instant) -> bool {
        let Some(raw) = decode_hex(token.trim()) else {
            return false;
        };
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&raw[..ID_LEN]);
        let Some(entry) = self.tokens.get(&id) else {
            return false;
        };
        constant_time_eq(&entry.secret, &raw[ID_LEN..]) && entry.expiry > now
    }

    /// Number of tokens currently held (live or not yet purged).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Keep the map under [`MAX_TOKENS`]: drop expired tokens, then the one expiring soonest.
    fn make_room(&mut self, now: Instant) {
        if self.tokens.len() < MAX_TOKENS {
            return;
        }
        self.tokens.retain(|_, entry| entry.expiry > now);
        while self.tokens.len() >= MAX_TOKENS {
            let soonest = self
                .tokens
                .iter()
                .min_by_key(|(_, entry)| entry.expiry)
                .map(|(id, _)| *id);
            match soonest {
                Some(id) => self.tokens.remove(&id),
                None => break,
            };
        }
    }
}

/// Compare two byte strings in time that depends only on their lengths.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn decode_hex(text: &str) -> Option<[u8; TOKEN_LEN]> {
    let bytes = text.as_bytes();
    if bytes.len() != TOKEN_HEX_LEN {
        return None;
    }
    let mut out = [0u8; TOKEN_LEN];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_outside_bounds_is_refused_with_firecracker_text() {
        let mut authority = TokenAuthority::new();
        assert_eq!(
            authority.generate(0).unwrap_err().to_string(),
            "Invalid time to live value provided for token: 0. Please provide a value between 1 and 21600."
        );
        assert_eq!(
            authority.generate(21_601),
            Err(TokenError::InvalidTtlValue(21_601))
        );
        assert!(authority.generate(1).is_ok());
        assert!(authority.generate(21_600).is_ok());
    }

    #[test]
    fn token_is_valid_until_its_ttl_elapses() {
        let mut authority = TokenAuthority::new();
        let t0 = Instant::now();
        let token = authority.generate_at(2, t0).unwrap();
        assert_eq!(token.len(), TOKEN_HEX_LEN);
        assert!(authority.is_valid_at(&token, t0));
        assert!(authority.is_valid_at(&token, t0 + Duration::from_millis(1999)));
        assert!(!authority.is_valid_at(&token, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn tampered_unknown_and_malformed_tokens_are_invalid() {
        let mut authority = TokenAuthority::new();
        let token = authority.generate(60).unwrap();
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(!authority.is_valid(&tampered));
        assert!(!authority.is_valid(""));
        assert!(!authority.is_valid("zz"));
        assert!(!authority.is_valid(&"g".repeat(TOKEN_HEX_LEN)));
        assert!(!authority.is_valid(&"0".repeat(TOKEN_HEX_LEN)));
        assert!(!TokenAuthority::new().is_valid(&token));
        assert!(authority.is_valid(&token.to_uppercase()));
    }

    #[test]
    fn tokens_are_distinct() {
        let mut authority = TokenAuthority::new();
        let a = authority.generate(60).unwrap();
        let b = authority.generate(60).unwrap();
        assert_ne!(a, b);
        assert!(authority.is_valid(&a) && authority.is_valid(&b));
    }

    #[test]
    fn token_map_stays_bounded_and_evicts_soonest_expiring() {
        let mut authority = TokenAuthority::new();
        let t0 = Instant::now();
        let first = authority.generate_at(1, t0).unwrap();
        for _ in 0..MAX_TOKENS + 10 {
            authority.generate_at(100, t0).unwrap();
        }
        assert!(authority.len() <= MAX_TOKENS);
        assert!(!authority.is_valid_at(&first, t0));
        let fresh = authority.generate_at(100, t0).unwrap();
        assert!(authority.is_valid_at(&fresh, t0));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
