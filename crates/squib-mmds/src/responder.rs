//! MMDS semantics on top of [`crate::http`]: which requests a guest may make and what it gets.
//!
//! Firecracker's rules (`src/vmm/src/mmds/mod.rs`): `GET` reads the store (V2 needs a valid
//! session token), `PUT /latest/api/token` mints a token (any version), anything else is 405.
//! Objects render as a listing of keys (`key/` for nested objects) or as JSON with
//! `Accept: application/json`; strings render as their text; `imds_compat` always lists.

use serde_json::Value;
use squib_logger::metrics::METRICS;

use crate::data_store::MmdsStore;
use crate::http::{MediaType, Method, Request, Response, StatusCode};
use crate::token::{TokenAuthority, PATH_TO_TOKEN};

/// `X-metadata-token` and its EC2 spelling.
pub const TOKEN_HEADERS: [&str; 2] = ["x-metadata-token", "x-aws-ec2-metadata-token"];
/// `X-metadata-token-ttl-seconds` and its EC2 spelling.
pub const TTL_HEADERS: [&str; 2] = [
    "x-metadata-token-ttl-seconds",
    "x-aws-ec2-metadata-token-ttl-seconds",
];
/// A token request carrying this header came through a proxy and is refused.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// MMDS version chosen by `PUT /mmds/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MmdsVersion {
    /// No session token needed.
    #[default]
    V1,
    /// `GET` needs a session token.
    V2,
}

/// How the guest-facing side answers: the `/mmds/config` fields that matter to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestAccess {
    /// V1 or V2.
    pub version: MmdsVersion,
    /// Always answer in the IMDS (listing/text) format, ignoring `Accept`.
    pub imds_compat: bool,
}

/// The guest-visible error texts, Firecracker's byte for byte.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MmdsRequestError {
    /// A token that is unknown, tampered or expired.
    #[error("MMDS token not valid.")]
    InvalidToken,
    /// `http://host` with no path.
    #[error("Invalid URI.")]
    InvalidUri,
    /// Neither `GET` nor `PUT`.
    #[error("Not allowed HTTP method.")]
    MethodNotAllowed,
    /// V2 `GET` without a token header.
    #[error(
        "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token."
    )]
    NoTokenProvided,
    /// Token request without a TTL header.
    #[error(
        "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime."
    )]
    NoTtlProvided,
    /// Nothing at that path.
    #[error("Resource not found: {0}.")]
    ResourceNotFound(String),
    /// Only objects and strings have a text form.
    #[error("Cannot retrieve value. The value has an unsupported type.")]
    UnsupportedValueType,
    /// A header value that cannot be used.
    #[error("Invalid value. Key:{0}; Value:{1}")]
    InvalidHeaderValue(String, String),
    /// A header MMDS refuses on token requests.
    #[error("Unsupported header name. Key: {0}")]
    UnsupportedHeader(String),
}

/// Answer one guest request.
pub fn respond(
    request: &Request,
    store: &MmdsStore,
    tokens: &mut TokenAuthority,
    access: GuestAccess,
    now: std::time::Instant,
) -> Response {
    if request.path.is_empty() {
        return error(
            request,
            StatusCode::BadRequest,
            &MmdsRequestError::InvalidUri,
        );
    }
    match request.method {
        Method::Get => {
            if access.version == MmdsVersion::V2 {
                if let Err((status, err)) = check_token(request, tokens, now) {
                    return error(request, status, &err);
                }
            }
            respond_to_get(request, store, access)
        }
        Method::Put => respond_to_put(request, tokens, now),
        Method::Head | Method::Post | Method::Patch | Method::Delete => {
            let mut response = error(
                request,
                StatusCode::MethodNotAllowed,
                &MmdsRequestError::MethodNotAllowed,
            );
            response.allow = vec![Method::Get, Method::Put];
            response
        }
    }
}

fn check_token(
    request: &Request,
    tokens: &TokenAuthority,
    now: std::time::Instant,
) -> Result<(), (StatusCode, MmdsRequestError)> {
    let Some((_, token)) = request.header(&TOKEN_HEADERS) else {
        METRICS.mmds.rx_no_token.inc();
        return Err((StatusCode::Unauthorized, MmdsRequestError::NoTokenProvided));
    };
    if tokens.is_valid_at(token, now) {
        Ok(())
    } else {
        METRICS.mmds.rx_invalid_token.inc();
        Err((StatusCode::Unauthorized, MmdsRequestError::InvalidToken))
    }
}

fn respond_to_get(request: &Request, store: &MmdsStore, access: GuestAccess) -> Response {
    let path = sanitize_path(&request.path);
    let pointer = path.strip_suffix('/').unwrap_or(&path);
    let root = store.get();
    let value = if pointer.is_empty() {
        Some(&root)
    } else {
        root.pointer(pointer)
    };
    let Some(value) = value else {
        let err = MmdsRequestError::ResourceNotFound(request.path.clone());
        return error(request, StatusCode::NotFound, &err);
    };
    let format = if access.imds_compat {
        MediaType::PlainText
    } else {
        request.accept
    };
    match render(value, format) {
        Ok(body) => Response {
            content_type: format,
            ..Response::text(request.version, StatusCode::Ok, body)
        },
        Err(err) => error(request, StatusCode::NotImplemented, &err),
    }
}

fn respond_to_put(
    request: &Request,
    tokens: &mut TokenAuthority,
    now: std::time::Instant,
) -> Response {
    if let Some((name, _)) = request.header(&[X_FORWARDED_FOR]) {
        let err = MmdsRequestError::UnsupportedHeader(name.to_string());
        return error(request, StatusCode::BadRequest, &err);
    }
    if sanitize_path(&request.path) != PATH_TO_TOKEN {
        let err = MmdsRequestError::ResourceNotFound(request.path.clone());
        return error(request, StatusCode::NotFound, &err);
    }
    let Some((name, value)) = request.header(&TTL_HEADERS) else {
        return error(
            request,
            StatusCode::BadRequest,
            &MmdsRequestError::NoTtlProvided,
        );
    };
    let Ok(ttl) = value.parse::<u32>() else {
        let err = MmdsRequestError::InvalidHeaderValue(name.to_string(), value.to_string());
        return error(request, StatusCode::BadRequest, &err);
    };
    match tokens.generate_at(ttl, now) {
        Ok(token) => {
            let mut response = Response::text(request.version, StatusCode::Ok, token);
            response.headers.push((name.to_string(), ttl.to_string()));
            response
        }
        Err(err) => Response::text(request.version, StatusCode::BadRequest, err.to_string()),
    }
}

fn error(request: &Request, status: StatusCode, err: &MmdsRequestError) -> Response {
    Response::text(request.version, status, err.to_string())
}

/// Collapse repeated slashes so the path is a JSON pointer (`//a///b` -> `/a/b`).
#[must_use]
pub fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        if ch == '/' && out.ends_with('/') {
            continue;
        }
        out.push(ch);
    }
    out
}

/// Render a value: JSON text, or the IMDS form (listing for objects, text for strings).
///
/// # Errors
/// [`MmdsRequestError::UnsupportedValueType`] for numbers, booleans, arrays and null in the
/// IMDS form.
pub fn render(value: &Value, format: MediaType) -> Result<String, MmdsRequestError> {
    match (format, value) {
        (MediaType::ApplicationJson, _) => Ok(value.to_string()),
        (MediaType::PlainText, Value::Object(map)) => Ok(map
            .iter()
            .map(|(key, child)| {
                if child.is_object() {
                    format!("{key}/")
                } else {
                    key.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")),
        (MediaType::PlainText, Value::String(text)) => Ok(text.clone()),
        (MediaType::PlainText, _) => Err(MmdsRequestError::UnsupportedValueType),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::http::{parse_request, Parsed};

    fn store() -> MmdsStore {
        let mut store = MmdsStore::new(51_200);
        store
            .put(json!({"latest": {"meta-data": {"hostname": "vm1", "tags": {"a": "b"}, "n": 3}}}))
            .unwrap();
        store
    }

    fn ask(raw: &str, tokens: &mut TokenAuthority, access: GuestAccess) -> Response {
        let Parsed::Complete { request, .. } = parse_request(raw.as_bytes()) else {
            panic!("incomplete test request");
        };
        respond(&request.unwrap(), &store(), tokens, access, Instant::now())
    }

    fn body(response: &Response) -> &str {
        std::str::from_utf8(&response.body).unwrap()
    }

    const V1: GuestAccess = GuestAccess {
        version: MmdsVersion::V1,
        imds_compat: false,
    };
    const V2: GuestAccess = GuestAccess {
        version: MmdsVersion::V2,
        imds_compat: false,
    };

    #[test]
    fn objects_list_keys_strings_are_text_json_on_request() {
        let mut tokens = TokenAuthority::new();
        let listing = ask("GET /latest/meta-data/ HTTP/1.1\r\n\r\n", &mut tokens, V1);
        assert_eq!(listing.status, StatusCode::Ok);
        assert_eq!(body(&listing), "hostname\nn\ntags/");
        let text = ask(
            "GET //latest//meta-data/hostname HTTP/1.1\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(body(&text), "vm1");
        let json = ask(
            "GET /latest/meta-data/tags HTTP/1.1\r\nAccept: application/json\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(body(&json), r#"{"a":"b"}"#);
        assert_eq!(json.content_type, MediaType::ApplicationJson);
        let number = ask("GET /latest/meta-data/n HTTP/1.1\r\n\r\n", &mut tokens, V1);
        assert_eq!(number.status, StatusCode::NotImplemented);
        assert_eq!(
            body(&number),
            "Cannot retrieve value. The value has an unsupported type."
        );
    }

    #[test]
    fn imds_compat_ignores_accept() {
        let mut tokens = TokenAuthority::new();
        let access = GuestAccess {
            imds_compat: true,
            ..V1
        };
        let response = ask(
            "GET /latest/meta-data/tags HTTP/1.1\r\nAccept: application/json\r\n\r\n",
            &mut tokens,
            access,
        );
        assert_eq!(body(&response), "a");
        assert_eq!(response.content_type, MediaType::PlainText);
    }

    #[test]
    fn missing_path_and_bad_method_and_empty_uri() {
        let mut tokens = TokenAuthority::new();
        let missing = ask("GET /nope HTTP/1.1\r\n\r\n", &mut tokens, V1);
        assert_eq!(missing.status, StatusCode::NotFound);
        assert_eq!(body(&missing), "Resource not found: /nope.");
        let patch = ask("PATCH / HTTP/1.1\r\n\r\n", &mut tokens, V1);
        assert_eq!(patch.status, StatusCode::MethodNotAllowed);
        assert_eq!(patch.allow, vec![Method::Get, Method::Put]);
        let empty = ask(
            "GET http://169.254.169.254 HTTP/1.1\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(empty.status, StatusCode::BadRequest);
        assert_eq!(body(&empty), "Invalid URI.");
    }

    #[test]
    fn v2_token_flow_and_refusals() {
        let mut tokens = TokenAuthority::new();
        let no_token = ask("GET /latest HTTP/1.1\r\n\r\n", &mut tokens, V2);
        assert_eq!(no_token.status, StatusCode::Unauthorized);
        assert!(body(&no_token).starts_with("No MMDS token provided."));
        let bad = ask(
            "GET /latest HTTP/1.1\r\nX-metadata-token: x\r\n\r\n",
            &mut tokens,
            V2,
        );
        assert_eq!(bad.status, StatusCode::Unauthorized);
        assert_eq!(body(&bad), "MMDS token not valid.");

        let minted = ask(
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
            &mut tokens,
            V2,
        );
        assert_eq!(minted.status, StatusCode::Ok);
        assert_eq!(
            minted.headers,
            vec![(
                "X-aws-ec2-metadata-token-ttl-seconds".to_string(),
                "60".to_string()
            )]
        );
        let token = body(&minted).to_string();
        let ok = ask(
            &format!("GET /latest/meta-data/hostname HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"),
            &mut tokens,
            V2,
        );
        assert_eq!(body(&ok), "vm1");
    }

    #[test]
    fn expired_token_is_refused() {
        let mut tokens = TokenAuthority::new();
        let t0 = Instant::now();
        let token = tokens.generate_at(1, t0).unwrap();
        let Parsed::Complete { request, .. } = parse_request(
            format!("GET /latest HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n").as_bytes(),
        ) else {
            panic!("incomplete");
        };
        let request = request.unwrap();
        let fresh = respond(&request, &store(), &mut tokens, V2, t0);
        assert_eq!(fresh.status, StatusCode::Ok);
        let later = respond(
            &request,
            &store(),
            &mut tokens,
            V2,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(later.status, StatusCode::Unauthorized);
    }

    #[test]
    fn token_request_errors() {
        let mut tokens = TokenAuthority::new();
        let no_ttl = ask("PUT /latest/api/token HTTP/1.1\r\n\r\n", &mut tokens, V1);
        assert_eq!(no_ttl.status, StatusCode::BadRequest);
        assert!(body(&no_ttl).starts_with("Token time to live value not found."));
        let zero = ask(
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(zero.status, StatusCode::BadRequest);
        let text = ask(
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: ten\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(text.status, StatusCode::BadRequest);
        let proxied = ask(
            "PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(proxied.status, StatusCode::BadRequest);
        let elsewhere = ask(
            "PUT /latest/other HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
            &mut tokens,
            V1,
        );
        assert_eq!(elsewhere.status, StatusCode::NotFound);
        assert!(tokens.is_empty());
    }
}
